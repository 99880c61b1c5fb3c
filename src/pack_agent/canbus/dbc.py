"""Loading CAN databases (DBC, KCD, SYM, ARXML) and checking a configuration against them."""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pack_agent.config import AgentConfig, resolve_path
from pack_agent.config.settings import CAN_ID_MAX
from pack_agent.errors import ConfigError

if TYPE_CHECKING:
    import can
    import cantools.database

    from pack_agent.core.ignition import IgnitionSpec


# The owner-notice handshake is part of the reference database's contract.
NOTICE_SIGNALS = (
    "PA_NoticeSeq",
    "PA_NoticeId",
    "PA_NoticeSeverity",
    "PA_NoticeAction",
    "PA_NoticeAttempt",
    "PA_NoticeChallenge",
)
ACK_SIGNALS = ("HU_AckSeq", "HU_AckResponse", "HU_AckChallenge", "HU_AckFreshness", "HU_AckMac")
TEXT_SIGNALS = ("PA_TextSeq", "PA_TextPage", "PA_TextPageCount", "PA_TextData")


@dataclass
class Databases:
    """The two namespaces a configuration loads. ``vehicle``: every file of ``databases``
    (what the mapping reads). ``notice``: the agent's own frames from ``[notice] database``
    alone, with the ``[notice]`` id overrides applied; None when ``[notice] channel`` is
    "none". Never merged, so a vehicle message cannot replace the agent's and the agent's
    cannot replace a vehicle's. ``findings``: warnings of the check (cantools' own among
    them), each naming its key; errors are raised as ``ConfigError`` instead."""

    vehicle: cantools.database.Database
    notice: cantools.database.Database | None
    findings: list[str] = field(default_factory=list)


Loaded = list[tuple[str, Path, Any]]  # (key, file, cantools database) per vehicle file


def load_databases(config: AgentConfig, findings: list[str] | None = None) -> Any:
    """The vehicle's namespace: the files of ``databases`` in one cantools database;
    errors name the ``databases[i]`` key, warnings go to ``findings``."""
    problems: list[str] = []
    db, _ = _load_vehicle(config, [] if findings is None else findings, problems)
    if problems:
        raise ConfigError(problems, _source(config))
    return db


def _load_vehicle(
    config: AgentConfig, findings: list[str], problems: list[str]
) -> tuple[Any, Loaded]:
    """One message per name. A name in two files: where one of them is the agent's own
    database (listed in ``databases`` by an older configuration), the vehicle's message
    is kept and the clash is a finding; two vehicle files defining a mapped message is an
    error (the mapping cannot tell which is meant), an unmapped one a finding."""
    import cantools

    own = resolve_path(config.notice.database, config.base_dir)
    loaded: Loaded = []
    for i, path in enumerate(config.database_paths()):
        db = _load_one(f"databases[{i}]", path, config, findings, problems)
        if db is not None:
            loaded.append((f"databases[{i}]", path, db))
    several = len(loaded) > 1
    mapped = _mapped_names(config)
    n = config.notice
    agents = {n.message, n.text_message, n.ack_message}
    chosen: dict[str, tuple[str, Path, Any]] = {}
    for key, path, db in loaded:
        for message in db.messages:
            name = message.name
            if several and name in agents and _same_file(path, own):
                continue  # the agent's own frames live in their own namespace
            first = chosen.get(name)
            if first is None:
                chosen[name] = (key, path, message)
                continue
            fkey, fpath, _ = first
            if fkey == key:
                continue  # twice in one file: cantools' own warning is a finding already
            if several and _same_file(fpath, own) and not _same_file(path, own):
                if not _same_message(first[2], message):
                    findings.append(_own_name_finding(config, fkey, key, path, name))
                chosen[name] = (key, path, message)  # the vehicle's message wins
            elif several and _same_file(path, own) and not _same_file(fpath, own):
                if not _same_message(first[2], message):
                    findings.append(_own_name_finding(config, key, fkey, fpath, name))
            elif name in mapped:
                problems.append(
                    f"{key}: message {name!r} is also in {fkey} ({fpath.name}): the mapping "
                    "cannot tell which one is meant; keep one of the files or rename it"
                )
            else:
                findings.append(
                    f"{key}: message {name!r} is also in {fkey} ({fpath.name}); "
                    f"{fkey}'s is used (the message is not mapped)"
                )
    db = cantools.database.Database(strict=config.strict_databases)
    db.messages.extend(m for _, _, m in chosen.values())
    with _cantools_findings("databases", findings):
        db.refresh()
    return db, loaded


def _same_message(a: Any, b: Any) -> bool:
    """One frame described twice (a vehicle file that copies the reference one)."""

    def layout(m: Any) -> tuple[Any, ...]:
        signals = sorted(
            (x.name, x.start, x.length, x.byte_order, x.scale, x.offset) for x in m.signals
        )
        return (m.frame_id, m.is_extended_frame, m.length, signals)

    return layout(a) == layout(b)


def _own_name_finding(config: AgentConfig, own_key: str, key: str, path: Path, name: str) -> str:
    listed = config.databases[int(own_key[len("databases[") : -1])]
    return (
        f"{own_key}: message {name!r} of {listed} is also in {key} ({path.name}): the "
        f"vehicle's is used. The agent's own frames come from [notice] database: {listed} "
        "need not be in databases"
    )


def _mapped_names(config: AgentConfig) -> set[str]:
    """The message names the mapping reads (a clash of one of those is an error)."""
    from pack_agent.canbus.expression import ExpressionError, parse_expression

    names = {ref.message for ref in config.metrics.values() if ref.message is not None}
    for ref in config.metrics.values():
        if ref.expression is None:
            continue
        try:
            operands = parse_expression(ref.expression).operands
        except ExpressionError:
            continue  # reported by the check
        names |= {op.split(".", 1)[0] for op in operands if "." in op}
    if config.pack_code.source == "pages":
        names.add(config.pack_code.message)
    return names


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _load_one(
    key: str, path: Path, config: AgentConfig, findings: list[str], problems: list[str]
) -> Any | None:
    import cantools

    if not path.is_file():
        problems.append(f"{key}: file not found: {path}")
        return None
    try:
        with _cantools_findings(key, findings):
            loaded = load_file(path, config.strict_databases)
    except Exception as exc:  # cantools raises many types for bad files
        problems.append(f"{key}: cannot load {path.name}: {_load_error(path, exc, config)}")
        return None
    if not isinstance(loaded, cantools.database.can.Database):
        problems.append(f"{key}: {path.name} is not a CAN database")
        return None
    return loaded


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextmanager
def _cantools_findings(key: str, findings: list[str]) -> Iterator[None]:
    """cantools' warnings while loading (its ``logging`` records, Python warnings) become
    findings named by ``key``, never loose lines on stderr."""
    logger = logging.getLogger("cantools")
    handler = _Records()
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
        lines = handler.lines + [str(w.message) for w in caught]
        findings += [f"{key}: cantools: {line}" for line in dict.fromkeys(lines)]


OWN_IDS = (
    ("message", "message_id"),
    ("text_message", "text_message_id"),
    ("ack_message", "ack_message_id"),
)


def load_notice_database(config: AgentConfig, findings: list[str] | None = None) -> Any | None:
    """The agent's own namespace: ``[notice] database`` alone, the ``[notice]`` id
    overrides applied; None when ``[notice] channel`` is "none"."""
    problems: list[str] = []
    db = _load_notice(config, [] if findings is None else findings, problems)
    if problems:
        raise ConfigError(problems, _source(config))
    return db


def _load_notice(config: AgentConfig, findings: list[str], problems: list[str]) -> Any | None:
    n = config.notice
    if n.channel == "none":
        return None
    path = resolve_path(n.database, config.base_dir)
    db = _load_one("notice.database", path, config, findings, problems)
    if db is None:
        return None
    for name_key, id_key in OWN_IDS:
        name, frame_id = getattr(n, name_key), getattr(n, id_key)
        if not name or frame_id is None:
            continue
        try:
            msg = db.get_message_by_name(name)
        except KeyError:
            continue  # the check names the missing message
        msg.is_extended_frame = msg.is_extended_frame or frame_id > 0x7FF
        msg.frame_id = frame_id
    with _cantools_findings("notice.database", findings):
        db.refresh()
    return db


_NODES_LINE = re.compile(r"^BU_\s*:", re.MULTILINE)
_FIRST_MESSAGE = re.compile(r"^BO_ ", re.MULTILINE)


def load_file(path: Path, strict: bool) -> Any:
    """cantools' loader, tolerant of two common flaws of community DBC files (opendbc
    style): no ``BU_:`` (nodes) line, which cantools' grammar requires before the
    messages; and 29-bit ids written without the extended flag (bit 31), which cantools
    refuses as "standard frame id ... more than 11 bits": an id above 0x7FF can only be
    an extended one, so it is read as such."""
    import cantools

    if path.suffix.lower() == ".dbc":
        text = path.read_text(encoding="cp1252", errors="replace")
        fixed = _EXTENDED_WITHOUT_FLAG.sub(_flag_extended, text)
        first = _FIRST_MESSAGE.search(fixed)
        if first is not None and not _NODES_LINE.search(fixed):
            fixed = fixed[: first.start()] + "BS_:\n\nBU_:\n\n" + fixed[first.start() :]
        if fixed != text:
            return cantools.database.load_string(fixed, database_format="dbc", strict=strict)
    return cantools.database.load_file(str(path), strict=strict)


_LINE_NO = re.compile(r"\bline (\d+)")


def _load_error(path: Path, exc: Exception, config: AgentConfig) -> str:
    """cantools' reason, plus what to do: a file only strict mode rejects names
    ``strict_databases = false``; a syntax error shows its line."""
    why = _first_line(exc)
    if config.strict_databases:
        try:
            load_file(path, strict=False)
        except Exception:  # not a strict-mode problem: reported as it is
            pass
        else:
            return (
                f"{why} (cantools' strict check; set strict_databases = false to load it "
                "as it is, overlapping or oversized signals included)"
            )
    found = _LINE_NO.search(str(exc))
    if found is not None:
        n = int(found.group(1))
        try:
            lines = path.read_text(encoding="cp1252", errors="replace").splitlines()
        except OSError:
            lines = []
        if 0 < n <= len(lines) and lines[n - 1].strip() not in why:
            why += f" [line {n}: {lines[n - 1].strip()!r}]"
    return why


def closest(name: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'A' or 'B'?)`` for the nearest names, or ``""``."""
    import difflib

    names = list(candidates)
    near = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    if not near:  # a case slip, or a prefix the DBC's author added
        low = name.lower()
        near = [c for c in names if low in c.lower() or c.lower() in low][:3]
    return f" (did you mean {' or '.join(repr(c) for c in near)}?)" if near else ""


# BO_, SG_MUL_VAL_, BA_ "..." BO_, CM_ BO_, VAL_ and SIG_VALTYPE_ lines name a message by id
_EXTENDED_WITHOUT_FLAG = re.compile(
    r"^(BO_ |CM_ BO_ |CM_ SG_ |VAL_ |SIG_VALTYPE_ |SG_MUL_VAL_ |BA_ \"[^\"]*\" (?:BO_|SG_) )(\d+)",
    re.MULTILINE,
)


def _flag_extended(m: re.Match[str]) -> str:
    frame_id = int(m.group(2))
    if 0x7FF < frame_id <= 0x1FFFFFFF:
        frame_id |= 0x80000000
    return m.group(1) + str(frame_id)


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


class OperandError(LookupError):
    """An expression operand that names no signal, or several."""


def resolve_operand(db: cantools.database.Database, name: str) -> tuple[Any, Any]:
    """``Signal`` (unique across the databases) or ``Message.Signal`` -> (message, signal)."""
    if "." in name:
        message_name, signal_name = name.split(".", 1)
        try:
            msg = db.get_message_by_name(message_name)
        except KeyError:
            hint = closest(message_name, (m.name for m in db.messages))
            raise OperandError(
                f"message {message_name!r} is not in the database(s){hint}"
            ) from None
        try:
            return msg, msg.get_signal_by_name(signal_name)
        except KeyError:
            hint = closest(signal_name, (s.name for s in msg.signals))
            raise OperandError(
                f"signal {signal_name!r} is not in message {message_name!r}{hint}"
            ) from None
    found = [(m, s) for m in db.messages for s in m.signals if s.name == name]
    if not found:
        hint = closest(name, sorted({s.name for m in db.messages for s in m.signals}))
        raise OperandError(f"unknown signal {name!r}{hint}")
    if len(found) > 1:
        where = ", ".join(sorted(m.name for m, _ in found))
        raise OperandError(
            f"signal {name!r} is in several messages ({where}): write Message.{name}"
        )
    return found[0]


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


def signal_default(sig: Any) -> float:
    """The value to encode for a signal nobody set: its initial value, kept inside its range."""
    value = sig.raw_to_scaled(sig.raw_initial or 0, decode_choices=False)
    if sig.minimum is not None and value < sig.minimum:
        return float(sig.minimum)
    if sig.maximum is not None and value > sig.maximum:
        return float(sig.maximum)
    return value


def complete_values(message: Any, values: dict[str, Any]) -> dict[str, Any]:
    """cantools encodes only complete frames: fill every signal not given (and, in a
    multiplexed message, only those of the selected page)."""
    out = {}
    for sig in message.signals:
        if sig.name in values:
            out[sig.name] = values[sig.name]
        elif not sig.multiplexer_ids or values.get(sig.multiplexer_signal) in sig.multiplexer_ids:
            out[sig.name] = signal_default(sig)
    return out


def decode_signals(message: cantools.database.Message, data: bytes) -> dict[str, Any]:
    """The raw signal values of one frame of a plain (not container) message: cantools'
    ``decode`` is typed for containers too, whose result is a list, not a mapping."""
    values = message.decode(data, decode_choices=False)
    assert isinstance(values, dict), f"{message.name} is a container message"
    return values


def encode_message(
    db: cantools.database.Database, name: str, values: dict[str, Any], t: float
) -> can.Message:
    """A frame of message ``name`` at time ``t``; signals not given take their defaults."""
    import can

    msg = db.get_message_by_name(name)
    return can.Message(
        arbitration_id=msg.frame_id,
        is_extended_id=msg.is_extended_frame,
        data=msg.encode(complete_values(msg, values)),
        timestamp=t,
    )


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


def _source(config: AgentConfig) -> str:
    return config.source


def _first_line(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
