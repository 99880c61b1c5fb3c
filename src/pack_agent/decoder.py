"""Frames to readings: only mapped frame ids are decoded, everything else costs one dict miss.

The decoder knows cantools and the metric mapping; it knows nothing of rules,
events or MQTT. Values outside the signal's DBC range are dropped and counted,
never passed on: a BMS sending 0x3FF for "SOH unknown" must not look like 102.3 %.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pack_agent.config import AgentConfig

if TYPE_CHECKING:
    import can
    import cantools.database


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of one metric at one time (seconds since the epoch)."""

    metric: str
    value: float
    time: float


@dataclass(frozen=True, slots=True)
class CodePage:
    """One page of the multiplexed pack code: page number and its text."""

    page: int
    text: str
    time: float


@dataclass(slots=True)
class _Route:
    message: Any  # cantools Message
    metrics: list[tuple[str, Any]]  # (metric, cantools Signal)
    code_pages: dict[int, int] | None = None  # mux value -> page index
    code_signals: dict[int, Any] | None = None  # mux value -> cantools Signal


@dataclass
class DecoderStats:
    frames: int = 0
    readings: int = 0
    dropped: Counter[str] = field(default_factory=Counter)


class Decoder:
    """Decodes the frames the mapping uses; keyed by (bus name, frame id)."""

    def __init__(self, config: AgentConfig, db: cantools.database.Database) -> None:
        self.stats = DecoderStats()
        self._routes: dict[tuple[str, int], _Route] = {}
        default_bus = config.buses[0].name
        for metric, ref in config.metrics.items():
            msg = db.get_message_by_name(ref.message)
            route = self._route(ref.bus or default_bus, msg)
            route.metrics.append((metric, msg.get_signal_by_name(ref.signal)))
        pc = config.pack_code
        msg = db.get_message_by_name(pc.message)
        route = self._route(pc.bus or default_bus, msg)
        route.code_pages, route.code_signals = {}, {}
        for index, name in enumerate(pc.pages):
            sig = msg.get_signal_by_name(name)
            for mux_value in sig.multiplexer_ids or ():
                route.code_pages[mux_value] = index
                route.code_signals[mux_value] = sig
        self._mux_signal = pc.mux_signal

    def _route(self, bus: str, message: Any) -> _Route:
        key = (bus, message.frame_id)
        if key not in self._routes:
            self._routes[key] = _Route(message=message, metrics=[])
        return self._routes[key]

    def frame_ids(self, bus: str) -> list[tuple[int, bool]]:
        """(frame id, extended) for every frame this decoder wants from ``bus``: the filters."""
        return sorted(
            (fid, r.message.is_extended_frame) for (b, fid), r in self._routes.items() if b == bus
        )

    def decode(self, bus: str, frame: can.Message, now: float) -> list[Reading | CodePage]:
        route = self._routes.get((bus, frame.arbitration_id))
        if route is None or frame.is_error_frame or frame.is_remote_frame:
            return []
        self.stats.frames += 1
        message = route.message
        if len(frame.data) < message.length:
            self._drop(f"{message.name}: {len(frame.data)} bytes, expected {message.length}")
            return []
        try:
            values = message.decode(bytes(frame.data), decode_choices=False)
        except Exception:  # cantools: DecodeError, KeyError for unknown mux values, ...
            self._drop(f"{message.name}: undecodable")
            return []
        out: list[Reading | CodePage] = []
        for metric, sig in route.metrics:
            value = values.get(sig.name)
            if value is None:
                continue
            if not _in_range(sig, value):
                self._drop(f"{message.name}.{sig.name}: {value} outside DBC range")
                continue
            out.append(Reading(metric, float(value), now))
        if route.code_pages is not None and route.code_signals is not None:
            mux = values.get(self._mux_signal)
            if mux in route.code_pages:
                sig = route.code_signals[mux]
                out.append(CodePage(route.code_pages[mux], _text(values[sig.name], sig), now))
        self.stats.readings += len(out)
        return out

    def _drop(self, reason: str) -> None:
        self.stats.dropped[reason] += 1


def _in_range(sig: Any, value: float) -> bool:
    lo, hi = sig.minimum, sig.maximum
    if lo is not None and value < lo - 1e-9:
        return False
    return not (hi is not None and value > hi + 1e-9)


def _text(raw: Any, sig: Any) -> str:
    """A whole-byte integer signal holding ASCII, first character in the lowest byte."""
    data = int(raw).to_bytes(
        sig.length // 8, "little" if sig.byte_order == "little_endian" else "big"
    )
    return data.decode("latin-1").rstrip("\x00 ")


class CodeAssembler:
    """Rebuilds a multi-page code; accepts it only after ``confirmations`` complete, equal sets.

    Pages may arrive in any order, interleaved, some lost; a page that changes
    mid-set starts a new set, so a mixed old/new code is never accepted.
    """

    def __init__(self, pages: int, confirmations: int) -> None:
        self._n = pages
        self._need = confirmations
        self._current: dict[int, str] = {}
        self._candidate: str | None = None
        self._seen = 0

    def feed(self, page: CodePage) -> str | None:
        """Returns the code each time it is (re)confirmed, else None."""
        old = self._current.get(page.page)
        if old is not None and old != page.text:
            self._current = {}
            self._candidate, self._seen = None, 0
        self._current[page.page] = page.text
        if len(self._current) < self._n:
            return None
        code = "".join(self._current[i] for i in range(self._n))
        self._current = {}
        if code != self._candidate:
            self._candidate, self._seen = code, 0
        self._seen += 1
        return code if self._seen >= self._need else None
