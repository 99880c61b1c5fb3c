"""Checking a configuration against its CAN databases: every mapped message and signal
exists, the ignition's On values fit its signal, the agent's own frames clash with no
vehicle frame, ranges that cannot drop invalid values are named. Loading the files is
``dbc``; ``load_all`` and ``load_and_check`` load and check in one call. The seams, if
it grows: the ignition's checks and resolution (``ignition_signal`` ... ``vehicle_metrics``)
and the agent's own frame ids (``own_id_clashes``, ``own_id_moves``) could each stand alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pack_agent.canbus.dbc import (
    ACK_SIGNALS,
    NOTICE_SIGNALS,
    OWN_IDS,
    TEXT_SIGNALS,
    Databases,
    Loaded,
    OperandError,
    _load_notice,
    _load_vehicle,
    _same_file,
    _source,
    closest,
    load_file,
    resolve_operand,
)
from pack_agent.config import AgentConfig, resolve_path
from pack_agent.config.settings import CAN_ID_MAX
from pack_agent.errors import ConfigError

if TYPE_CHECKING:
    import cantools.database

    from pack_agent.core.ignition import IgnitionSpec


def check_against_database(
    config: AgentConfig, db: cantools.database.Database, notice_db: Any | None = None
) -> list[str]:
    """Every mapped message and signal must exist in the vehicle's namespace, the
    ignition's values must be ones its signal can take; returns problems with their keys.
    ``notice_db``: the answer id joins the frame-id check. Findings that do not stop the
    agent (signals without a range) go to ``config.warnings``."""
    problems: list[str] = []

    def check(key: str, message: str, signals: list[str], signal_key: str | None = None) -> None:
        try:
            msg = db.get_message_by_name(message)
        except KeyError:
            hint = closest(message, (m.name for m in db.messages))
            problems.append(f"{key}: message {message!r} is not in the database(s){hint}")
            return
        names = {s.name for s in msg.signals}
        for sig in signals:
            if sig not in names:
                problems.append(
                    f"{signal_key or key}: signal {sig!r} is not in message {message!r}"
                    + closest(sig, sorted(names))
                )

    for metric, ref in config.metrics.items():
        if ref.message is not None and ref.signal is not None:
            check(
                f"metrics.{metric}.message", ref.message, [ref.signal], f"metrics.{metric}.signal"
            )
        elif ref.expression is not None:
            problems += _expression_problems(f"metrics.{metric}.expression", ref.expression, db)
    pc = config.pack_code
    if pc.source == "pages" and pc.page_signals:
        n = len(problems)
        check("pack_code.message", pc.message, [pc.mux_signal, *pc.page_signals], "pack_code")
        if len(problems) == n:
            msg = db.get_message_by_name(pc.message)
            for i, name in enumerate(pc.page_signals):
                if msg.get_signal_by_name(name).length != 8:
                    problems.append(f"pack_code.page_signals[{i}]: signal {name!r} is not one byte")
    elif pc.source == "pages":
        n = len(problems)
        check("pack_code.message", pc.message, [pc.mux_signal, *pc.pages], "pack_code")
    if pc.source == "pages" and not pc.page_signals and len(problems) == n:
        msg = db.get_message_by_name(pc.message)
        for i, page in enumerate(pc.pages):
            sig = msg.get_signal_by_name(page)
            if not sig.multiplexer_ids:
                problems.append(f"pack_code.pages[{i}]: signal {page!r} is not multiplexed")
            if sig.length % 8:
                problems.append(f"pack_code.pages[{i}]: signal {page!r} is not whole bytes")
    problems += _e2e_problems(config, db, notice_db)
    if not problems:
        problems += _frame_id_clashes(config, db, notice_db)
        problems += _ignition_problems(config, db)
        _range_findings(config, db)
    return problems


def notice_problems(config: AgentConfig, notice_db: Any) -> list[str]:
    """The agent's own messages, in its own namespace, carry the handshake's signals
    and have three different ids."""
    problems: list[str] = []
    n = config.notice
    own: list[tuple[str, str, tuple[str, ...]]] = [("notice.message", n.message, NOTICE_SIGNALS)]
    own.append(("notice.ack_message", n.ack_message, ACK_SIGNALS))
    if n.text_message:
        own.append(("notice.text_message", n.text_message, TEXT_SIGNALS))
    ids: dict[tuple[int, bool], str] = {}
    for key, name, signals in own:
        try:
            msg = notice_db.get_message_by_name(name)
        except KeyError:
            problems.append(f"{key}: message {name!r} is not in notice.database ({n.database})")
            continue
        names = {s.name for s in msg.signals}
        problems += [
            f"{key}: signal {sig!r} is not in message {name!r}"
            for sig in signals
            if sig not in names
        ]
        other = ids.setdefault((msg.frame_id, msg.is_extended_frame), name)
        if other != name:
            problems.append(
                f"{key}: message {name!r} has frame id 0x{msg.frame_id:X}, like {other!r}"
            )
    return problems


def _e2e_problems(
    config: AgentConfig, db: cantools.database.Database, notice_db: Any | None = None
) -> list[str]:
    """Each ``[e2e.<message>]`` names a message of the databases, with fitting signals. A
    section for a message no metric reads is allowed (a reference configuration whose
    metrics moved to UDS keeps working); it checks nothing. The agent's own messages (the
    answer) are looked up in their own namespace, ``notice_db``."""
    from pack_agent.canbus.e2e import config_problems

    problems: list[str] = []
    for name, settings in config.e2e.items():
        key = f"e2e.{name}"
        n = config.notice
        own = name in (n.message, n.ack_message, n.text_message)
        if own and notice_db is None:
            continue  # [notice] channel = "none": no answer frame to check
        source = notice_db if own and notice_db is not None else db
        try:
            msg = source.get_message_by_name(name)
        except KeyError:
            problems.append(f"{key}: message {name!r} is not in the database(s)")
            continue
        problems += config_problems(key, msg, settings)
    return problems


def ignition_signal(config: AgentConfig, db: cantools.database.Database) -> tuple[Any, Any]:
    """(message, signal) of the ignition metric, or (None, None) (not mapped, an expression)."""
    ref = config.metrics.get(config.ignition.metric)
    if ref is None or ref.message is None or ref.signal is None:
        return None, None
    try:
        msg = db.get_message_by_name(ref.message)
        return msg, msg.get_signal_by_name(ref.signal)
    except KeyError:
        return None, None


def _signal_values(sig: Any) -> tuple[float, float]:
    """The lowest and highest value a signal can carry: its DBC range, else its bits."""
    if sig.is_signed:
        raw_lo, raw_hi = -(1 << (sig.length - 1)), (1 << (sig.length - 1)) - 1
    else:
        raw_lo, raw_hi = 0, (1 << sig.length) - 1
    ends = sorted((raw_lo * sig.scale + sig.offset, raw_hi * sig.scale + sig.offset))
    lo = ends[0] if sig.minimum is None else max(ends[0], sig.minimum)
    hi = ends[1] if sig.maximum is None else min(ends[1], sig.maximum)
    return float(lo), float(hi)


def _describe(msg: Any, sig: Any) -> str:
    lo, hi = _signal_values(sig)
    table = ""
    if sig.choices:
        table = ", ".join(f'{k} "{v}"' for k, v in sorted(sig.choices.items()))
        table = f"; values {table}"
    return f"{msg.name}.{sig.name} ({lo:g}..{hi:g}{table})"


def resolve_on_values(config: AgentConfig, sig: Any) -> tuple[list[float], list[str]]:
    """``ignition.on_values`` as numbers (labels looked up in the value table) and the
    problems: a label not in the table, a value the signal cannot take."""
    values: list[float] = []
    problems: list[str] = []
    choices = {str(v): k for k, v in (sig.choices or {}).items()} if sig is not None else {}
    for i, v in enumerate(config.ignition.on()):
        key = f"ignition.on_values[{i}]"
        if isinstance(v, str):
            if v not in choices:
                labels = ", ".join(repr(c) for c in choices) or "none: it has no value table"
                problems.append(f"{key}: {v!r} is not a label of the ignition signal ({labels})")
                continue
            raw = choices[v]
            values.append(float(raw * sig.scale + sig.offset))
        else:
            values.append(float(v))
    return values, problems


def _ignition_problems(config: AgentConfig, db: cantools.database.Database) -> list[str]:
    """The ignition can be On: ``on_values`` (or ``on_min``) are values its signal can take.
    The default ``[2]`` on a 0/1 signal would pass unseen and never decide."""
    msg, sig = ignition_signal(config, db)
    ign = config.ignition
    if sig is None:
        if any(isinstance(v, str) for v in ign.on()) and ign.metric in config.metrics:
            return ["ignition.on_values: labels need the ignition to be a DBC signal"]
        return []
    _, problems = resolve_on_values(config, sig)
    lo, hi = _signal_values(sig)
    what = _describe(msg, sig)
    if ign.on_min is not None:
        if ign.on_min > hi:
            problems.append(f"ignition.on_min: {ign.on_min:g} is above every value of {what}")
        return problems
    for i, v in enumerate(ign.on()):
        if isinstance(v, str):
            continue
        raw = (float(v) - sig.offset) / sig.scale
        bad = v < lo - 1e-9 or v > hi + 1e-9 or abs(raw - round(raw)) > 1e-6
        if not bad and sig.choices and round(raw) not in sig.choices:
            bad = True
        if bad:
            given = "" if ign.on_values is not None else " (the default)"
            problems.append(
                f"ignition.on_values[{i}]: {v:g}{given} is not a value of {what}: the "
                "ignition would never be On; set ignition.on_values to its On value(s)"
            )
    return problems


def resolve_ignition(config: AgentConfig, db: cantools.database.Database) -> IgnitionSpec | None:
    """``[ignition]`` for the core: labels as numbers, the cycle from the configuration or
    the DBC's ``GenMsgCycleTime`` (else measured by the state). None: not mapped."""
    from pack_agent.core.ignition import IgnitionSpec

    ign = config.ignition
    if ign.metric not in config.metrics:
        return None
    msg, sig = ignition_signal(config, db)
    values, _ = resolve_on_values(config, sig)
    cycle = ign.cycle_s
    if cycle is None and msg is not None and msg.cycle_time:
        cycle = msg.cycle_time / 1000.0
    return IgnitionSpec(
        ign.metric, frozenset(values), ign.on_min, ign.stale_cycles, cycle, ign.window_s
    )


def bms_bus(config: AgentConfig) -> str:
    """The bus the BMS speaks on: the pack code's, else the trend metric's, else the first."""
    trend = config.metrics.get(config.policy.trend_metric)
    return (
        config.pack_code.bus
        or (trend.bus if trend is not None and trend.uds is None else None)
        or config.buses[0].name
    )


def vehicle_metrics(config: AgentConfig, db: cantools.database.Database) -> frozenset[str]:
    """Metrics that come from other ECUs than the BMS (their frames prove the vehicle
    awake, not the BMS alive): the ignition, and every signal metric whose message's
    senders are known and are not the BMS's. The BMS is the sender of the pack code's
    message, else of the trend metric's (``BU_`` nodes in the DBC)."""
    out = {config.ignition.metric} & set(config.metrics)

    def senders(message: str | None) -> set[str]:
        if message is None:
            return set()
        try:
            return set(db.get_message_by_name(message).senders or ())
        except KeyError:
            return set()

    pc = config.pack_code
    bms = senders(pc.message) if pc.source == "pages" else set()
    trend = config.metrics.get(config.policy.trend_metric)
    if not bms and trend is not None:
        bms = senders(trend.message)
    if not bms:
        return frozenset(out)
    for metric, ref in config.metrics.items():
        own = senders(ref.message)
        if own and not own & bms:
            out.add(metric)
    return frozenset(out)


def _range_findings(config: AgentConfig, db: cantools.database.Database) -> None:
    """A mapped signal without a range (``[0|0]``, common in hand-made DBCs) cannot drop
    a "not available" value (0x7FF would read as a number): a finding, unless the metric
    has its own ``minimum``/``maximum`` or ``invalid_raw``."""
    from pack_agent.canbus.expression import parse_expression

    for metric, ref in config.metrics.items():
        if metric == config.ignition.metric:
            continue  # its values are checked against on_values
        guarded = ref.minimum is not None or ref.maximum is not None
        signals: list[tuple[str, Any, Any]] = []
        if ref.message is not None and ref.signal is not None:
            msg = db.get_message_by_name(ref.message)
            signals.append((ref.signal, msg, msg.get_signal_by_name(ref.signal)))
            guarded = guarded or bool(ref.invalid_raw)
        elif ref.expression is not None:
            for operand in parse_expression(ref.expression).operands:
                msg, sig = resolve_operand(db, operand)
                raw = ref.invalid_raw
                own = bool(raw.get(operand)) if isinstance(raw, dict) else bool(raw)
                signals.append((operand, msg, sig) if not own else (operand, None, None))
        for _name, msg, sig in signals:
            if sig is None or guarded or sig.minimum is not None or sig.maximum is not None:
                continue
            if sig.is_float or sig.choices:
                continue  # a float or a value table: no "not available" raw to guess
            full = (1 << sig.length) - 1
            config.warnings.append(
                f"metrics.{metric}: signal {msg.name}.{sig.name} has no range in the "
                f"database ([0|0]), so it cannot drop invalid values (raw 0x{full:X} would "
                f"read as {full * sig.scale + sig.offset:g}); set metrics.{metric}.minimum/"
                f"maximum or invalid_raw"
            )


def _frame_id_clashes(config: AgentConfig, db: Any, notice_db: Any | None) -> list[str]:
    """Two different mapped messages with one frame id on one bus cannot both be decoded
    (the answer frame counts: the agent takes every frame with its id for an answer)."""
    default = config.buses[0].name
    used: list[tuple[str, str, str, int]] = []  # (key, bus, message name, frame id)

    def use(key: str, bus: str, name: str, source: Any = db) -> None:
        used.append((key, bus, name, source.get_message_by_name(name).frame_id))

    for metric, ref in config.metrics.items():
        bus = ref.bus or default
        if ref.message is not None:
            use(f"metrics.{metric}.message", bus, ref.message)
        elif ref.expression is not None:
            from pack_agent.canbus.expression import parse_expression

            for operand in parse_expression(ref.expression).operands:
                msg, _ = resolve_operand(db, operand)
                use(f"metrics.{metric}.expression", bus, msg.name)
    pc = config.pack_code
    if pc.source == "pages":
        use("pack_code.message", pc.bus or default, pc.message)
    n = config.notice
    if notice_db is not None and n.ack_message in {m.name for m in notice_db.messages}:
        use("notice.ack_message", n.bus or default, n.ack_message, notice_db)
    seen: dict[tuple[str, int], tuple[str, str]] = {}
    problems = []
    for key, bus, name, frame_id in used:
        other = seen.setdefault((bus, frame_id), (key, name))
        if other[1] != name:
            problems.append(
                f"{key}: message {name!r} has frame id 0x{frame_id:X}, like {other[1]!r} "
                f"({other[0]}) on bus {bus!r}"
            )
    return problems


def own_id_clashes(
    config: AgentConfig, loaded: Loaded, notice_db: Any
) -> tuple[list[str], list[str]]:
    """(problems, findings): a frame the agent transmits on an id that a vehicle database
    also uses (two senders on one id: both frames are garbage to every receiver) is an
    error; the answer id shared with a vehicle message is a finding (those frames are
    taken for answers). The agent's own messages in its own file, when an older
    configuration lists it in ``databases``, are not the vehicle's; nor is a vehicle
    message of the same name on the same id (a vehicle database that describes the
    agent's frames, a copy of the reference one)."""
    n = config.notice
    bus = n.bus or config.buses[0].name
    own_file = resolve_path(n.database, config.base_dir)
    own_names = {n.message, n.text_message, n.ack_message}
    vehicle: dict[tuple[int, bool], list[tuple[str, str, str]]] = {}
    for key, path, db in loaded:
        for m in db.messages:
            if m.name in own_names and _same_file(path, own_file):
                continue
            vehicle.setdefault((m.frame_id, m.is_extended_frame), []).append(
                (key, path.name, m.name)
            )
    taken = {fid for fid, _ in vehicle} | {m.frame_id for m in notice_db.messages}
    problems: list[str] = []
    findings: list[str] = []
    for name_key, id_key in OWN_IDS:
        name = getattr(n, name_key)
        if not name:
            continue
        msg = notice_db.get_message_by_name(name)
        where = f"0x{msg.frame_id:X}{' (extended)' if msg.is_extended_frame else ''}"
        for key, file, other in vehicle.get((msg.frame_id, msg.is_extended_frame), []):
            if other == name:
                continue  # the vehicle's database describes the agent's frame itself
            free = _free_id(msg.frame_id, msg.is_extended_frame, taken)
            taken.add(free)  # two moves are never offered the same id
            change = (
                f"choose another id with [notice] {id_key} (0x{free:X} is free in every "
                "database) or use the maker's own head-unit messages ([notice] database, "
                "message, text_message, ack_message)"
            )
            if id_key == "ack_message_id":
                findings.append(
                    f"notice.{name_key}: the agent reads answers from {name!r} at frame id "
                    f"{where} on bus {bus!r}, the id of {other!r} in {key} ({file}): those "
                    f"frames would be taken for answers; {change}"
                )
            else:
                problems.append(
                    f"notice.{name_key}: the agent would transmit {name!r} at frame id "
                    f"{where} on bus {bus!r}, the id of {other!r} in {key} ({file}): two "
                    f"senders on one id garble both; {change}"
                )
    return problems, findings


def own_id_moves(vehicle_db: Any) -> dict[str, int]:
    """The ``[notice]`` id overrides that keep the agent's default frames (the built-in
    database's) off every id ``vehicle_db`` uses; {} where none is taken (``pack-agent
    map`` writes them into a starter configuration)."""
    from pack_agent.config import DATA_DIR, NoticeSettings

    notice_db = load_file(DATA_DIR / "pack_agent_reference.dbc", True)
    defaults = NoticeSettings()
    used = {(m.frame_id, m.is_extended_frame) for m in vehicle_db.messages}
    taken = {fid for fid, _ in used} | {m.frame_id for m in notice_db.messages}
    moves: dict[str, int] = {}
    for name_key, id_key in OWN_IDS:
        msg = notice_db.get_message_by_name(getattr(defaults, name_key))
        if (msg.frame_id, msg.is_extended_frame) in used:
            moves[id_key] = _free_id(msg.frame_id, msg.is_extended_frame, taken)
            taken.add(moves[id_key])
    return moves


def _free_id(start: int, extended: bool, taken: set[int]) -> int:
    """The first id above ``start`` that no database uses (wrapping below it if needed)."""
    top = CAN_ID_MAX if extended else 0x7FF
    for candidate in [*range(start + 1, top + 1), *range(start - 1, -1, -1)]:
        if candidate not in taken:
            return candidate
    return start  # pragma: no cover - every id taken


def _expression_problems(key: str, text: str, db: cantools.database.Database) -> list[str]:
    from pack_agent.canbus.expression import ExpressionError, parse_expression

    try:
        expr = parse_expression(text)
    except ExpressionError as exc:
        return [f"{key}: {exc}"]
    problems = []
    for operand in expr.operands:
        try:
            resolve_operand(db, operand)
        except OperandError as exc:
            problems.append(f"{key}: {exc.args[0]}")
    return problems


def load_all(config: AgentConfig) -> Databases:
    """Both namespaces, checked: the mapping against the vehicle's, the agent's own
    messages against theirs, the agent's ids against every vehicle database. Raises
    ``ConfigError`` listing every problem; warnings come back as ``findings``."""
    findings: list[str] = []
    problems: list[str] = []
    vehicle, loaded = _load_vehicle(config, findings, problems)
    notice = _load_notice(config, findings, problems)
    if problems:
        raise ConfigError(problems, _source(config))
    if notice is not None:
        problems += notice_problems(config, notice)
    problems += check_against_database(config, vehicle, notice)
    if notice is not None and not problems:
        clashes, more = own_id_clashes(config, loaded, notice)
        problems += clashes
        findings += more
    if problems:
        raise ConfigError(problems, _source(config))
    # printed by check-config, logged by the daemon at start, like every other finding
    config.warnings += [f for f in findings if f not in config.warnings]
    return Databases(vehicle, notice, findings)


def load_and_check(config: AgentConfig) -> cantools.database.Database:
    """The vehicle's namespace, checked (``load_all`` for both and the findings)."""
    return load_all(config).vehicle
