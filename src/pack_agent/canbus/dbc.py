"""Loading CAN databases (DBC, KCD, SYM, ARXML): the vehicle's and the agent's own.

Checking a configuration against them is ``checks``. The seam, at ~420 lines: the
tolerant file reader (``load_file`` and its fixes for community DBCs) apart from the two
namespaces' loading.
"""

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
from pack_agent.errors import ConfigError

if TYPE_CHECKING:
    import can
    import cantools.database



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


def _source(config: AgentConfig) -> str:
    return config.source


def _first_line(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
