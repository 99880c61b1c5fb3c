"""Loading CAN databases (DBC, KCD, SYM, ARXML) and checking a configuration against them."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pack_agent.config import AgentConfig
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


def load_databases(config: AgentConfig) -> cantools.database.Database:
    """All configured files merged into one database; errors name the ``databases[i]`` key."""
    import cantools

    db = cantools.database.Database(strict=config.strict_databases)
    problems: list[str] = []
    for i, path in enumerate(config.database_paths()):
        key = f"databases[{i}]"
        if not path.is_file():
            problems.append(f"{key}: file not found: {path}")
            continue
        try:
            loaded = load_file(path, config.strict_databases)
        except Exception as exc:  # cantools raises many types for bad files
            problems.append(f"{key}: cannot load {path.name}: {_first_line(exc)}")
            continue
        if not isinstance(loaded, cantools.database.can.Database):
            problems.append(f"{key}: {path.name} is not a CAN database")
            continue
        for message in loaded.messages:
            try:
                db.get_message_by_name(message.name)
            except KeyError:
                db.messages.append(message)
            else:
                problems.append(f"{key}: message {message.name!r} is defined twice")
    if problems:
        raise ConfigError(problems, _source(config))
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


def check_against_database(config: AgentConfig, db: cantools.database.Database) -> list[str]:
    """Every mapped message and signal must exist; returns problems with their keys."""
    problems: list[str] = []

    def check(key: str, message: str, signals: list[str], signal_key: str | None = None) -> None:
        try:
            msg = db.get_message_by_name(message)
        except KeyError:
            problems.append(f"{key}: message {message!r} is not in the database(s)")
            return
        names = {s.name for s in msg.signals}
        for sig in signals:
            if sig not in names:
                elsewhere = sorted(
                    m.name for m in db.messages if any(x.name == sig for x in m.signals)
                )
                hint = f" (it is in {', '.join(map(repr, elsewhere))})" if elsewhere else ""
                problems.append(
                    f"{signal_key or key}: signal {sig!r} is not in message {message!r}{hint}"
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
                    problems.append(
                        f"pack_code.page_signals[{i}]: signal {name!r} is not one byte"
                    )
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
    notice = config.notice
    check("notice.message", notice.message, list(NOTICE_SIGNALS))
    check("notice.ack_message", notice.ack_message, list(ACK_SIGNALS))
    if notice.text_message:
        check("notice.text_message", notice.text_message, list(TEXT_SIGNALS))
    problems += _e2e_problems(config, db)
    if not problems:
        problems += _frame_id_clashes(config, db)
    return problems


def _e2e_problems(config: AgentConfig, db: cantools.database.Database) -> list[str]:
    """Each ``[e2e.<message>]`` names a message of the databases, with fitting signals. A
    section for a message no metric reads is allowed (a reference configuration whose
    metrics moved to UDS keeps working); it checks nothing."""
    from pack_agent.canbus.e2e import config_problems

    problems: list[str] = []
    for name, settings in config.e2e.items():
        key = f"e2e.{name}"
        try:
            msg = db.get_message_by_name(name)
        except KeyError:
            problems.append(f"{key}: message {name!r} is not in the database(s)")
            continue
        problems += config_problems(key, msg, settings)
    return problems


def _frame_id_clashes(config: AgentConfig, db: cantools.database.Database) -> list[str]:
    """Two different mapped messages with one frame id on one bus cannot both be decoded."""
    default = config.buses[0].name
    used: list[tuple[str, str, str]] = []  # (key, bus, message name)
    for metric, ref in config.metrics.items():
        bus = ref.bus or default
        if ref.message is not None:
            used.append((f"metrics.{metric}.message", bus, ref.message))
        elif ref.expression is not None:
            from pack_agent.canbus.expression import parse_expression

            for operand in parse_expression(ref.expression).operands:
                msg, _ = resolve_operand(db, operand)
                used.append((f"metrics.{metric}.expression", bus, msg.name))
    pc = config.pack_code
    if pc.source == "pages":
        used.append(("pack_code.message", pc.bus or default, pc.message))
    used.append(("notice.ack_message", config.notice.bus or default, config.notice.ack_message))
    seen: dict[tuple[str, int], tuple[str, str]] = {}
    problems = []
    for key, bus, name in used:
        msg = db.get_message_by_name(name)
        other = seen.setdefault((bus, msg.frame_id), (key, name))
        if other[1] != name:
            problems.append(
                f"{key}: message {name!r} has frame id 0x{msg.frame_id:X}, like {other[1]!r} "
                f"({other[0]}) on bus {bus!r}"
            )
    return problems


class OperandError(LookupError):
    """An expression operand that names no signal, or several."""


def resolve_operand(db: cantools.database.Database, name: str) -> tuple[Any, Any]:
    """``Signal`` (unique across the databases) or ``Message.Signal`` -> (message, signal)."""
    if "." in name:
        message_name, signal_name = name.split(".", 1)
        try:
            msg = db.get_message_by_name(message_name)
        except KeyError:
            raise OperandError(f"message {message_name!r} is not in the database(s)") from None
        try:
            return msg, msg.get_signal_by_name(signal_name)
        except KeyError:
            raise OperandError(
                f"signal {signal_name!r} is not in message {message_name!r}"
            ) from None
    found = [(m, s) for m in db.messages for s in m.signals if s.name == name]
    if not found:
        raise OperandError(f"unknown signal {name!r}")
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


def load_and_check(config: AgentConfig) -> cantools.database.Database:
    db = load_databases(config)
    problems = check_against_database(config, db)
    if problems:
        raise ConfigError(problems, _source(config))
    return db


def _source(config: AgentConfig) -> str:
    return config.source


def _first_line(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
