"""The ignition as a state, and the policy's gate on it: pure, time passed in.

One definition (``[ignition]``) serves the rules' gate, the owner notices and the BMS
silence watch. The state holds its last value until a new frame changes it, as long as
the frame is not overdue by more than ``stale_cycles`` of its cycles: a 30-second
ignition frame keeps every reading between two frames judged, and a bus that went quiet
(the car asleep, the gateway unplugged) leaves the state unknown, not On for ever. The
cycle is the configured one, else the DBC's ``GenMsgCycleTime``, else measured (the
median of the last intervals between frames: a parking gap is one outlier).

:class:`IgnitionGate` is the gate :class:`pack_agent.core.policy.ScrapPolicy` puts in
front of its gated rules; its state is part of the policy's saved state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from statistics import median
from typing import Any

from pack_agent.core.readings import Reading

__all__ = ["IgnitionGate", "IgnitionSpec", "IgnitionState"]

MEASURED_INTERVALS = 9  # intervals kept to measure the cycle


@dataclass(frozen=True)
class IgnitionSpec:
    """What On means and how long a value holds. ``on_values`` are numbers (labels are
    resolved against the DBC's value table before they get here)."""

    metric: str = "ignition"
    on_values: frozenset[float] = frozenset({2.0})
    on_min: float | None = None  # when set: On for every value from it (on_values unused)
    stale_cycles: float = 3.0
    cycle_s: float | None = None  # configured or from the DBC; None: measured
    window_s: float = 5.0  # how long a value holds before a cycle is known

    @classmethod
    def of(
        cls,
        metric: str,
        on_values: Iterable[float | str],
        on_min: float | None = None,
        stale_cycles: float = 3.0,
        cycle_s: float | None = None,
        window_s: float = 5.0,
    ) -> IgnitionSpec:
        """Numbers only: a label left unresolved is a configuration error upstream."""
        values = frozenset(float(v) for v in on_values if not isinstance(v, str))
        return cls(metric, values, on_min, stale_cycles, cycle_s, window_s)

    def is_on(self, value: float) -> bool:
        if self.on_min is not None:
            return value >= self.on_min
        return float(value) in self.on_values


class IgnitionState:
    """The last ignition value and when it came; ``at(t)`` says On, Off or unknown."""

    def __init__(self, spec: IgnitionSpec) -> None:
        self.spec = spec
        self.last_t: float | None = None
        self.on = False
        self._intervals: list[float] = []

    def update(self, t: float, value: float) -> bool | None:
        """A frame's value at ``t``; returns the previous state at ``t`` (None: unknown).
        A frame older than the last one changes nothing."""
        before = self.at(t)
        if self.last_t is not None:
            if t <= self.last_t:
                return before
            self._intervals.append(t - self.last_t)
            del self._intervals[:-MEASURED_INTERVALS]
        self.last_t, self.on = t, self.spec.is_on(value)
        return before

    def cycle_s(self) -> float | None:
        """The frame's cycle: configured, from the DBC, else measured (None: not yet)."""
        if self.spec.cycle_s is not None:
            return self.spec.cycle_s
        return median(self._intervals) if self._intervals else None

    def holds_for_s(self) -> float:
        """How long after its frame a value still holds."""
        cycle = self.cycle_s()
        if cycle is None:
            return self.spec.window_s
        return max(self.spec.stale_cycles * cycle, self.spec.window_s)

    def at(self, t: float) -> bool | None:
        """True/False while the last frame holds; None before any frame, when the frame is
        overdue, or for a time more than ``window_s`` before the last frame."""
        if self.last_t is None:
            return None
        if t >= self.last_t:
            return self.on if t - self.last_t <= self.holds_for_s() else None
        return self.on if self.last_t - t <= self.spec.window_s else None

    def to_state(self) -> dict[str, Any]:
        return {"last_t": self.last_t, "on": self.on, "intervals": list(self._intervals)}

    def load_state(self, s: dict[str, Any]) -> None:
        self.last_t = s.get("last_t")
        self.on = bool(s.get("on", False))
        self._intervals = [float(x) for x in s.get("intervals", [])][-MEASURED_INTERVALS:]


class IgnitionGate:
    """Judges a reading only while the ignition state (``core.ignition``) says On at its
    time: the last ignition value holds until a new frame changes it or its frame is
    overdue. A reading while the state is unknown waits (one per metric) for the next
    ignition frame, and is judged if that says On within ``window_s`` of it."""

    def __init__(self, spec: IgnitionSpec) -> None:
        self.state = IgnitionState(spec)
        self.window_s = spec.window_s
        self.pending: dict[str, Reading] = {}

    @property
    def on(self) -> bool:
        return self.state.on

    def on_ignition(self, r: Reading) -> list[Reading]:
        if self.state.last_t is not None and r.time <= self.state.last_t:
            return []
        self.state.update(r.time, r.value)
        on = self.state.on
        out = [p for p in self.pending.values() if on and abs(r.time - p.time) <= self.window_s]
        self.pending.clear()
        return sorted(out, key=lambda p: p.time)

    def to_state(self) -> dict[str, Any]:
        return {
            **self.state.to_state(),
            "pending": [[p.metric, p.value, p.time] for p in self.pending.values()],
        }

    def load_state(self, s: dict[str, Any]) -> None:
        """A clean stop between a reading and the ignition frame that confirms it loses
        nothing: the held readings are part of the saved state."""
        self.state.load_state(s)
        self.pending = {m: Reading(m, v, t) for m, v, t in s.get("pending", [])}

    def admit(self, r: Reading) -> bool:
        """True: judge now. False: ignition off, or held until the state is known."""
        on = self.state.at(r.time)
        if on is None:
            last = self.state.last_t
            if last is None or r.time > last:  # a later frame may still tell
                self.pending[r.metric] = r
            return False
        return on
