"""The ignition gate: which readings a gated rule may judge, by the ignition's state.

Owns :class:`IgnitionGate`, used by :class:`pack_agent.core.policy.ScrapPolicy`:
a reading counts for a gated rule only if the ignition was On within a window of
it; one arriving before the ignition state is known is held (one per metric) for
the next ignition reading. Its state is part of the policy's saved state. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pack_agent.core.readings import Reading

__all__ = ["IgnitionGate"]


class IgnitionGate:
    """Judges a reading only if the ignition was On within ``window_s`` of it. A reading
    that arrives before the ignition state is known waits (one per metric) for the next
    ignition reading."""

    def __init__(self, on_values: Sequence[float], window_s: float) -> None:
        self.on_values = {float(v) for v in on_values}
        self.window_s = window_s
        self.last_t: float | None = None
        self.on = False
        self.pending: dict[str, Reading] = {}

    def on_ignition(self, r: Reading) -> list[Reading]:
        if self.last_t is not None and r.time <= self.last_t:
            return []
        self.last_t, self.on = r.time, r.value in self.on_values
        out = [
            p for p in self.pending.values() if self.on and abs(r.time - p.time) <= self.window_s
        ]
        self.pending.clear()
        return sorted(out, key=lambda p: p.time)

    def to_state(self) -> dict[str, Any]:
        return {
            "last_t": self.last_t,
            "on": self.on,
            "pending": [[p.metric, p.value, p.time] for p in self.pending.values()],
        }

    def load_state(self, s: dict[str, Any]) -> None:
        """A clean stop between a reading and the ignition frame that confirms it loses
        nothing: the held readings are part of the saved state."""
        self.last_t = s.get("last_t")
        self.on = bool(s.get("on", False))
        self.pending = {m: Reading(m, v, t) for m, v, t in s.get("pending", [])}

    def admit(self, r: Reading) -> bool:
        """True: judge now. False: ignition off, or held until the state is known."""
        if self.last_t is not None and abs(r.time - self.last_t) <= self.window_s:
            return self.on
        self.pending[r.metric] = r
        return False
