"""The ignition as a state: pure, time passed in.

One definition (``[ignition]``) serves the rules' gate, the owner notices and the BMS
silence watch. The state holds its last value until a new frame changes it, as long as
the frame is not overdue by more than ``stale_cycles`` of its cycles: a 30-second
ignition frame keeps every reading between two frames judged, and a bus that went quiet
(the car asleep, the gateway unplugged) leaves the state unknown, not On for ever. The
cycle is the configured one, else the DBC's ``GenMsgCycleTime``, else measured (the
median of the last intervals between frames: a parking gap is one outlier).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from statistics import median
from typing import Any

__all__ = ["IgnitionSpec", "IgnitionState"]

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
