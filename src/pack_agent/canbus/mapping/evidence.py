"""What a recorded log says of each candidate: values seen, and contradictions.

A candidate that the log contradicts (an SOH that moves like a state of charge, an
odometer that goes back) is never proposed; the contradiction names what the values did.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import cantools.database

from pack_agent.canbus.mapping.metrics import PROFILE_BY_METRIC
from pack_agent.canbus.mapping.profiles import CodeCandidate, Proposal


@dataclass
class Seen:
    """The values one signal took in a log."""

    count: int = 0
    low: float = math.inf
    high: float = -math.inf
    first_time: float | None = None
    last_time: float | None = None
    distinct: set[float] = field(default_factory=set)
    went_back: int = 0  # times the value fell below the previous one
    last: float | None = None
    steps: int = 0  # changes of value

    def add(self, value: float, t: float) -> None:
        self.count += 1
        self.low, self.high = min(self.low, value), max(self.high, value)
        self.first_time = t if self.first_time is None else self.first_time
        self.last_time = t
        if len(self.distinct) <= 64:
            self.distinct.add(value)
        if self.last is not None and value != self.last:
            self.steps += 1
            if value < self.last:
                self.went_back += 1
        self.last = value

    @property
    def span_s(self) -> float:
        if self.first_time is None or self.last_time is None:
            return 0.0
        return self.last_time - self.first_time


def contradiction(metric: str, seen: Seen) -> str | None:
    """Why these values cannot be ``metric``; None when they can."""
    if seen.count == 0:
        return None
    values = f"took {seen.low:g}..{seen.high:g} over {seen.span_s:.0f} s"
    profile = PROFILE_BY_METRIC[metric]
    if metric == "soh":
        if seen.low < 40 or seen.high > 105:
            return f"{values}: an SOH stays within 40-105 %"
        if seen.high - seen.low > max(3.0, seen.span_s / 86400 * 1.0):
            return f"{values}: an SOH moves by at most a few points a day"
    if metric == "capacity" and (seen.low <= 0 or seen.high > 1.05 * seen.low + 1):
        return f"{values}: a capacity is positive and moves slowly"
    if metric == "soc" and (seen.low < -1 or seen.high > 101):
        return f"{values}: an SOC stays within 0-100 %"
    if metric == "pack_voltage" and (seen.high < 50 or seen.low < 0 or seen.high > 1500):
        return f"{values}: a traction pack's voltage is 50-1500 V"
    if metric == "pack_current" and max(abs(seen.low), abs(seen.high)) > 5000:
        return f"{values}: more than 5000 A"
    if metric == "odometer" and seen.went_back:
        return f"{values} and went back {seen.went_back} times: an odometer never goes back"
    if profile.max_distinct is not None and len(seen.distinct) > profile.max_distinct:
        return f"{values} with {len(seen.distinct)} or more distinct values: not a state or flag"
    if metric in ("ignition", "thermal_event", "insulation_alarm") and any(
        v != int(v) for v in seen.distinct
    ):
        return f"{values}: a state takes whole values"
    return None


def check_against_log(
    proposal: Proposal, db: cantools.database.Database, frames: Iterable[Any]
) -> Proposal:
    """Decode every candidate's message in ``frames`` (python-can messages) and drop the
    candidates the values contradict. Frames whose length does not match are skipped."""
    wanted: dict[int, Any] = {}
    for found in proposal.candidates.values():
        for c in found:
            wanted.setdefault(c.frame_id, db.get_message_by_name(c.message))
    for cc in proposal.code:
        code_msg = db.get_message_by_name(cc.message)
        wanted.setdefault(code_msg.frame_id, code_msg)
    seen: dict[tuple[str, str, str], Seen] = {}  # (log channel, message, signal)
    counts: dict[tuple[str, str], int] = {}  # (log channel, message)
    pages: dict[str, dict[str, str]] = {}
    total = 0
    for frame in frames:
        total += 1
        if frame.is_error_frame or frame.is_remote_frame:
            continue
        msg = wanted.get(frame.arbitration_id)
        if msg is None or bool(frame.is_extended_id) != bool(msg.is_extended_frame):
            continue
        if len(frame.data) != msg.length:
            continue
        try:
            decoded = msg.decode(bytes(frame.data), decode_choices=False, scaling=True)
        except Exception:
            continue
        channel = str(frame.channel)
        counts[channel, msg.name] = counts.get((channel, msg.name), 0) + 1
        for name, value in decoded.items():
            if isinstance(value, (int, float)) and math.isfinite(float(value)):
                seen.setdefault((channel, msg.name, name), Seen()).add(
                    float(value), frame.timestamp
                )
        for cc in proposal.code:
            if cc.message == msg.name:
                _collect_page(cc, msg, bytes(frame.data), pages.setdefault(cc.message, {}))
    # a log may hold several buses, and an id may be another message on another bus: the
    # database describes the bus on which most of its messages appear
    kinds: dict[str, int] = {}
    for channel, _name in counts:
        kinds[channel] = kinds.get(channel, 0) + 1
    bus = max(sorted(kinds), key=lambda ch: kinds[ch]) if kinds else None
    busiest = {name: ch for ch, name in counts if ch == bus}
    for metric, found in proposal.candidates.items():
        for c in found:
            on = busiest.get(c.message)
            c.seen = counts.get((on, c.message), 0) if on is not None else 0
            if on is None or c.seen == 0:
                c.score = round(max(0.0, c.score - 0.1), 2)
                c.reasons.append("its message is not in the log")
                continue
            s = seen.get((on, c.message, c.signal), Seen())
            c.contradiction = contradiction(metric, s)
            if c.contradiction is None:
                c.score = round(min(1.0, c.score + 0.15), 2)
                c.reasons.append(f"log: {s.count} values, {s.low:g}..{s.high:g}")
        found.sort(key=lambda c: (c.contradiction is not None, -c.score, c.message, c.signal))
    for cc in proposal.code:
        texts = pages.get(cc.message, {})
        if not texts:
            continue
        if any(not t.isascii() or not t.isprintable() for t in texts.values()):
            cc.contradiction = "pages in the log are not printable ASCII"
        elif all(p in texts for p in cc.pages):
            cc.text = "".join(texts[p] for p in cc.pages)
            cc.reasons.append(f"log: read {cc.text!r}")
    proposal.log_frames = total
    return proposal


def _collect_page(cc: CodeCandidate, msg: Any, data: bytes, into: dict[str, str]) -> None:
    try:
        decoded = msg.decode(data, decode_choices=False, scaling=False)
    except Exception:
        return
    for sig_name in cc.pages:
        if sig_name in decoded:
            sig = msg.get_signal_by_name(sig_name)
            raw = int(decoded[sig_name]).to_bytes(
                sig.length // 8, "little" if sig.byte_order == "little_endian" else "big"
            )
            into[sig_name] = raw.decode("latin-1").rstrip("\x00 ")
