"""Recorded CAN logs: detect the format, read frames, and serve them as a ``Source``.

Formats: every text or binary log python-can reads (``.asc``, ``.blf``,
``.log`` candump, ``.trc``, ``.csv``, ``.mf4`` with asammdf) and SavvyCAN's
GVRET CSV (``Time Stamp,ID,Extended,Bus,LEN,D1..D8``, microseconds, hex), read
by our own reader because python-can has none and the reader drops unmapped
ids before it builds a message.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pack_agent.canbus.source import Frame, Source
from pack_agent.config import AgentConfig
from pack_agent.errors import PackAgentError

if TYPE_CHECKING:
    import can


FORMATS = ("gvret", "asc", "blf", "candump", "trc", "csv", "mf4")
_BY_SUFFIX = {".asc": "asc", ".blf": "blf", ".log": "candump", ".trc": "trc", ".mf4": "mf4"}
GVRET_HEADER = "Time Stamp,ID,Extended,Bus,LEN"


class LogError(PackAgentError):
    """The log cannot be read on; names the file and the line (or frame) where it broke."""


# -- reading logs -----------------------------------------------------------------


def detect_format(path: Path) -> str:
    """By extension; a ``.csv`` is GVRET when its first line is GVRET's header, else
    python-can's own CSV."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        try:
            with path.open(encoding="utf-8", errors="replace") as f:
                first = f.readline()
        except OSError as exc:
            raise LogError(f"{path}: cannot read: {exc.strerror}") from None
        return (
            "gvret" if first.replace(" ", "").startswith(GVRET_HEADER.replace(" ", "")) else "csv"
        )
    if suffix in _BY_SUFFIX:
        return _BY_SUFFIX[suffix]
    raise LogError(
        f"{path}: unknown log format {suffix or '(no extension)'!r}; "
        f"give --format ({', '.join(FORMATS)})"
    )


@dataclass
class LogFilter:
    """The software twin of the kernel filters: the frame ids wanted per log channel.

    Frames of other ids are dropped while the log is parsed, before a ``can.Message``
    is built, as the kernel drops them on a live bus. One frame every ``marker_s``
    of log time is let through anyway, so the agent's timers (BMS silence) still see
    the log's clock advance while the BMS is quiet.
    """

    by_channel: dict[str, frozenset[int]]  # str(log channel) -> wanted ids
    any_channel: frozenset[int] | None = None  # one bus: every channel is that bus
    marker_s: float = 0.01  # a fifth of the agent's tick

    def ids(self, channel: Any) -> frozenset[int] | None:
        """Wanted ids on ``channel``; None when the channel is not a configured bus."""
        if self.any_channel is not None:
            return self.any_channel
        return self.by_channel.get(str(channel))


@dataclass
class ReadStats:
    """Every frame read, per log channel (as text), filtered or not."""

    frames: int = 0
    per_channel: dict[str, int] = field(default_factory=dict)


def read_gvret(
    path: Path, log_filter: LogFilter | None = None, stats: ReadStats | None = None
) -> Iterator[can.Message]:
    """SavvyCAN GVRET CSV: one frame a line; time in microseconds, id and bytes in hex,
    ``Bus`` becomes ``Message.channel``. A bad line raises ``LogError`` with its number
    (the data bytes of a frame the filter drops are not parsed)."""
    import can

    stats = stats if stats is not None else ReadStats()
    counts = stats.per_channel
    by_text = log_filter.by_channel if log_filter is not None else {}
    any_ids = log_filter.any_channel if log_filter is not None else None
    marker_us = round(log_filter.marker_s * 1e6) if log_filter is not None else 0
    last_us = -(1 << 62)
    try:
        f = path.open(encoding="ascii", errors="strict", newline="")
    except OSError as exc:
        raise LogError(f"{path}: cannot read: {exc.strerror}") from None
    message = can.Message
    with f:
        lineno = 1
        try:
            header = f.readline()
            if not header.replace(" ", "").startswith(GVRET_HEADER.replace(" ", "")):
                raise LogError(f"{path}:1: not a GVRET CSV header ({GVRET_HEADER},D1..D8)")
            for lineno, line in enumerate(f, start=2):
                try:
                    parts = line.split(",", 5)
                    ch = parts[3]
                    counts[ch] = counts.get(ch, 0) + 1
                    if log_filter is not None:
                        wanted = any_ids if any_ids is not None else by_text.get(ch)
                        if wanted is None:
                            int(parts[4])  # still a frame line, or an error
                            continue
                        if int(parts[1], 16) not in wanted:
                            t_us = int(parts[0])
                            if t_us - last_us < marker_us:
                                continue
                    t_us = int(parts[0])
                    last_us = t_us
                    n = int(parts[4])
                    data = bytes.fromhex(parts[5].replace(",", " ")) if n else b""
                    if len(data) != n:
                        raise ValueError(f"LEN {n} but {len(data)} data bytes")
                    ext = parts[2]
                    if ext != "false" and ext != "true":
                        ext = ext.strip().lower()
                        if ext not in ("true", "false"):
                            raise ValueError(f"Extended is {parts[2]!r}, not true/false")
                    yield message(
                        timestamp=t_us / 1e6,
                        arbitration_id=int(parts[1], 16),
                        is_extended_id=ext == "true",
                        channel=int(ch),
                        dlc=n,
                        data=data,
                        is_fd=n > 8,
                        check=False,
                    )
                except (ValueError, IndexError) as exc:
                    raise LogError(
                        f"{path}:{lineno}: bad GVRET line {line.strip()!r}: {exc}"
                    ) from None
        except UnicodeDecodeError as exc:
            raise LogError(f"{path}:{lineno + 1}: not ASCII text ({exc.reason})") from None
        finally:
            stats.frames = sum(counts.values())


def filtered(
    messages: Iterator[can.Message],
    log_filter: LogFilter | None,
    stats: ReadStats,
    path: Path | None = None,
) -> Iterator[can.Message]:
    """The same filter and counts for python-can's readers (after the Message is built)."""
    last = -math.inf
    counts = stats.per_channel
    for msg in messages:
        ch = str(msg.channel)
        counts[ch] = counts.get(ch, 0) + 1
        stats.frames += 1
        if not math.isfinite(msg.timestamp):  # NaN or inf: every time rule would misjudge
            raise LogError(
                f"{path or 'log'}: frame {stats.frames}: time stamp {msg.timestamp} is not a time"
            )
        if log_filter is not None:
            wanted = log_filter.ids(msg.channel)
            if wanted is None:
                continue
            if msg.arbitration_id not in wanted and msg.timestamp - last < log_filter.marker_s:
                continue
        last = msg.timestamp
        yield msg


class _CountingFile:
    """A text file that knows which line python-can's reader is on (for error messages)."""

    def __init__(self, f: IO[str]) -> None:
        self._f = f
        self.lineno = 0

    def __iter__(self) -> _CountingFile:
        return self

    def __next__(self) -> str:
        line = next(self._f)
        self.lineno += 1
        return line

    def readline(self, *args: Any) -> str:
        line = self._f.readline(*args)
        if line:
            self.lineno += 1
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def read_python_can(path: Path, fmt: str) -> Iterator[can.Message]:
    """A log python-can reads; a reader error names the line (text formats) or the frame."""
    import can

    text_readers: dict[str, Callable[..., Any]] = {
        "asc": lambda f: can.ASCReader(f, relative_timestamp=False),
        "candump": can.CanutilsLogReader,
        "trc": can.TRCReader,
        "csv": can.CSVReader,
    }
    counting: _CountingFile | None = None
    try:
        if fmt in text_readers:
            counting = _CountingFile(path.open(encoding="utf-8", errors="strict"))
            reader = text_readers[fmt](counting)
        elif fmt == "blf":
            reader = can.BLFReader(str(path))
            _check_blf_size(path, reader)
        elif fmt == "mf4":
            reader = can.MF4Reader(str(path))
        else:
            raise LogError(f"{path}: unknown format {fmt!r} ({', '.join(FORMATS)})")
    except LogError:
        raise
    except OSError as exc:
        raise LogError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except Exception as exc:  # python-can raises ValueError, ImportError (mf4), BLFParseError...
        raise LogError(f"{path}: cannot read as {fmt}: {_why(exc)}") from None
    n = 0
    try:
        for msg in reader:
            n += 1
            yield msg
    except Exception as exc:
        where = f"{path}:{counting.lineno}" if counting is not None else f"{path}: frame {n + 1}"
        raise LogError(f"{where}: bad {fmt} record: {_why(exc)}") from None
    finally:
        reader.stop()


def _why(exc: Exception) -> str:
    """python-can's message, or the exception's name when it has none (BLFParseError())."""
    return str(exc).strip() or type(exc).__name__


def _check_blf_size(path: Path, reader: Any) -> None:
    """A BLF header states the file's size: a shorter file was cut (a copy that stopped,
    a recording never closed). python-can would read the frames up to the cut and stop
    without a word; refuse the log before any frame is replayed."""
    stated = int(getattr(reader, "file_size", 0) or 0)
    actual = path.stat().st_size
    if stated and actual < stated:
        reader.stop()
        raise LogError(
            f"{path}: truncated at byte {actual}: the BLF header says {stated} bytes "
            f"({getattr(reader, 'object_count', '?')} objects)"
        )


def read_log(
    path: Path,
    fmt: str | None = None,
    log_filter: LogFilter | None = None,
    stats: ReadStats | None = None,
) -> Iterator[can.Message]:
    """Frames of a log, in file order, by ``fmt`` or the file's extension; with a
    ``log_filter``, only the wanted ones (and the time markers)."""
    fmt = fmt or detect_format(path)
    stats = stats if stats is not None else ReadStats()
    if fmt == "gvret":
        return read_gvret(path, log_filter, stats)
    return filtered(read_python_can(path, fmt), log_filter, stats, path)


# -- the source -------------------------------------------------------------------


def channel_map(config: AgentConfig) -> dict[Any, str]:
    """Log channel -> bus name: ``log_channel`` where given, else the bus's position
    (0, 1...) and its ``channel`` name (``can0``), so candump logs map by interface name."""
    out: dict[Any, str] = {}
    for i, bus in enumerate(config.buses):
        if bus.log_channel is not None:
            out[bus.log_channel] = bus.name
        else:
            out.setdefault(i, bus.name)
            out.setdefault(bus.channel, bus.name)
    # an explicit log_channel wins over positional defaults
    for bus in config.buses:
        if bus.log_channel is not None:
            out[bus.log_channel] = bus.name
    out.setdefault(None, config.buses[0].name)  # a log without channels: the first bus
    return out


class LogSource(Source):
    """Frames of a recorded log, tagged with the configured bus; ``stop`` is set at the end."""

    def __init__(
        self,
        frames: Iterator[can.Message],
        config: AgentConfig,
        stop: threading.Event | None = None,
    ) -> None:
        self._frames = frames
        self._map = channel_map(config)
        self._single = config.buses[0].name if len(config.buses) == 1 else None
        self.stop = stop or threading.Event()
        self.first_time: float | None = None
        self.last_time: float | None = None

    def recv(self, timeout: float) -> Frame | None:
        for msg in self._frames:
            name = self._single or self._map.get(msg.channel)
            if name is not None:
                if self.first_time is None:
                    self.first_time = msg.timestamp
                self.last_time = msg.timestamp
                return name, msg
        self.stop.set()
        return None


def log_filter(config: AgentConfig, wanted: dict[str, list[tuple[int, bool]]]) -> LogFilter:
    """The filter for ``wanted`` ids per bus name, keyed by the log channels of each bus."""
    ids = {bus: frozenset(fid for fid, _ in frames) for bus, frames in wanted.items()}
    if len(config.buses) == 1:
        return LogFilter({}, any_channel=ids.get(config.buses[0].name, frozenset()))
    return LogFilter(
        {str(ch): ids.get(bus, frozenset()) for ch, bus in channel_map(config).items()}
    )
