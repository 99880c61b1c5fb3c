"""The policy's memory: saved state, checkpoints before gaps, a clock step undone.

Owns :class:`PolicyState`, the half of :class:`pack_agent.core.policy.ScrapPolicy`
that keeps what the rules know rather than deciding: ``to_state()`` and loading it
back, the checkpoints taken before every gap between readings and the rebase to
one when a step back of the clock is adopted (``pack_agent.core.timeline``), and
the save requests (ignition Off, a new day, a rebase) that tell the caller to save
now. The decision wiring (engines, gate, latches, combinations, forecasts) stays in
``policy``; this mixin only reads and resets the attributes it sets up. Pure: no
clock, no I/O.
"""

from __future__ import annotations

from typing import Any

from pack_agent.config.rules import ForecastRule
from pack_agent.core.ignition import IgnitionGate, IgnitionSpec
from pack_agent.core.rules import RuleEngine, Stream, engine_for
from pack_agent.core.timeline import TimeLine
from pack_agent.core.trend import SohHistory, day_of

__all__ = [
    "CHECKPOINT_GAP_S",
    "IGNITION_OFF_SAVE_GAP_S",
    "MAX_CHECKPOINTS",
    "SAVED_CHECKPOINTS",
    "STATE_VERSION",
    "PolicyState",
]

STATE_VERSION = 1
# At most one save asked for at ignition Off per 5 minutes (of reading time): a flapping
# ignition signal costs at most 12 extra saves an hour; a stop of a few minutes is saved.
IGNITION_OFF_SAVE_GAP_S = 300.0
# The rules' state is remembered (in memory and in the saved state) before every gap of
# more than 10 minutes between readings: a clock that jumped ahead and came back is
# undone from the newest such checkpoint before the new line begins. At most eight are
# kept, thinned so that their spacing grows with their age (an hour apart lately, months
# apart years back): a jump of any size finds one close before it. The checkpoint at a
# leap ahead is the one with the widest gap after it, so it is the last to go.
CHECKPOINT_GAP_S = 600.0
MAX_CHECKPOINTS = 8
# Two of them are saved with the state (it is written hourly, and at 100x speed in the
# simulator on every trip): the newest, and the one before the widest gap (a leap ahead).
SAVED_CHECKPOINTS = 2


class PolicyState:
    """Persistence, checkpoints and save requests for :class:`ScrapPolicy` (a mixin:
    the attributes below are set up by the policy's ``__init__`` and ``_build``)."""

    pack_code: str | None
    history: SohHistory
    _rules: dict[str, Any]
    _engines: dict[str, RuleEngine]
    _latched: dict[str, dict[str, Any]]
    _ignition_metric: str | None
    _ignition: IgnitionSpec | None
    _gate: IgnitionGate | None
    _trend_stream: Stream
    _forecasts: list[ForecastRule]
    _forecast_since: dict[str, float | None]
    _forecast_week: int | None
    _checkpoints: list[dict[str, Any]]
    _line: TimeLine
    _save_asked: str | None
    _off_asked_at: float | None
    _day: int | None
    _rebased: tuple[float, float] | None

    # -- a clock step ---------------------------------------------------------------

    def _checkpoint(self, t: float) -> None:
        """What the rules know at ``t``, the newest reading before a gap (a stop, or a
        clock that jumps ahead). Thinned by relative spacing, newest and oldest kept."""
        # engines' to_state() gives fresh lists (of immutable items), and their load_state()
        # builds its own: a checkpoint shares nothing with the live engines, no deep copy
        # a latched rule's engine is not asked again: not kept
        self._checkpoints.append({"t": t, **self._rules_state(skip_latched=True)})
        cps = self._checkpoints
        while len(cps) > MAX_CHECKPOINTS:  # drop the one whose neighbours are closest,
            del cps[  # relative to its age
                min(
                    range(1, len(cps) - 1),
                    key=lambda i: (cps[i + 1]["t"] - cps[i - 1]["t"]) / max(t - cps[i]["t"], 1.0),
                )
            ]

    def _rebase(self) -> None:
        """A step back is confirmed: the rules go back to the newest checkpoint at or
        before the new line's first stamp; what they learnt after it was stamped by a
        wrong clock. Latches stay (a decision is never taken back)."""
        line = self._line
        start = line.adopted_from
        assert start is not None and line.abandoned is not None
        self._checkpoints = [cp for cp in self._checkpoints if cp["t"] <= start]
        cp = self._checkpoints[-1] if self._checkpoints else None
        for rid in list(self._engines):  # fresh, then what the checkpoint knew
            engine = engine_for(self._rules[rid])
            assert engine is not None
            self._engines[rid] = engine
        self._gate = IgnitionGate(self._ignition) if self._ignition else None
        self._trend_stream = Stream()
        self._forecast_since = {r.id: None for r in self._forecasts}
        self._forecast_week = None
        if cp is not None:
            self._load_rules_state(cp)
        self.history.drop_after(cp["t"] if cp is not None else start)
        self._day, self._off_asked_at = None, None  # both may lie in the abandoned future
        self._save_asked = "rebased"
        self._rebased = (line.abandoned, start)

    def _saved_checkpoints(self) -> list[dict[str, Any]]:
        cps = self._checkpoints
        if len(cps) <= SAVED_CHECKPOINTS:
            return list(cps)
        widest = max(range(len(cps) - 1), key=lambda i: cps[i + 1]["t"] - cps[i]["t"])
        return [cps[widest], cps[-1]]

    def take_rebase(self) -> tuple[float, float] | None:
        """``(abandoned, start)`` once after a step back was adopted: the newest time of
        the line left behind and the first stamp of the new one."""
        rebased, self._rebased = self._rebased, None
        return rebased

    # -- when the state is worth saving at once ----------------------------------------

    def take_save_request(self) -> str | None:
        """Why the caller should save ``to_state()`` now, once: ``"ignition_off"`` (the
        gated rules take nothing more until the next trip), ``"new_day"`` (a reading of
        a day the state does not have yet; the last day's aggregates are final) or
        ``"rebased"`` (a clock step back was adopted); None when
        nothing asked since the last call."""
        asked, self._save_asked = self._save_asked, None
        return asked

    def _ignition_off(self, t: float) -> None:
        """A gateway often loses power soon after the ignition goes Off (an ECU writes its
        non-volatile data then, too). A flapping ignition asks once per gap."""
        if self._off_asked_at is None or t - self._off_asked_at >= IGNITION_OFF_SAVE_GAP_S:
            self._off_asked_at = t
            self._save_asked = "ignition_off"

    def _day_seen(self, t: float) -> None:
        """The first reading of a day the state does not have yet (which closes the last
        day's aggregates) asks once a day. Across restarts too, and on a fresh state: a
        life that sees one burst of readings a day saves it."""
        day = day_of(t)
        if self._day is None or day > self._day:
            self._day = day
            self._save_asked = self._save_asked or "new_day"

    # -- persistence ------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "pack_code": self.pack_code,
            "latched": self._latched,
            **self._rules_state(),
            "history": self.history.to_state(),
            "save_asked": {"ignition_off_at": self._off_asked_at, "day": self._day},
            "line": self._line.to_state(),
            "checkpoints": self._saved_checkpoints(),
        }

    def _rules_state(self, skip_latched: bool = False) -> dict[str, Any]:
        """What the rules know: the saved state's part that a checkpoint keeps too."""
        return {
            "engines": {
                rid: e.to_state()
                for rid, e in self._engines.items()
                if not (skip_latched and rid in self._latched)
            },
            "gate": self._gate.to_state() if self._gate is not None else None,
            "trend_last": self._trend_stream.last,
            "forecast_since": dict(self._forecast_since),
            "forecast_week": self._forecast_week,
        }

    def _load_rules_state(self, s: dict[str, Any]) -> None:
        for rid, es in s.get("engines", {}).items():
            if rid in self._engines:
                self._engines[rid].load_state(es)
        if self._gate is not None and s.get("gate"):
            self._gate.load_state(s["gate"])
        self._trend_stream.last = s.get("trend_last")
        for rid, since in s.get("forecast_since", {}).items():
            if rid in self._forecast_since:
                self._forecast_since[rid] = since
        self._forecast_week = s.get("forecast_week")

    def _load(self, s: dict[str, Any]) -> None:
        for rid, ev in s.get("latched", {}).items():
            if rid in self._rules:
                self._latched[rid] = ev
        self._load_rules_state(s)
        self.history.load_state(s.get("history", {}))
        asked = s.get("save_asked") or {}  # absent in a state from an earlier version
        self._off_asked_at = asked.get("ignition_off_at")
        self._day = asked.get("day")
        # absent in a state from an earlier version: the line starts at the next reading
        self._line.load_state(s.get("line") or {})
        self._checkpoints = list(s.get("checkpoints") or [])
