"""The agent's time line, and what an adopted clock step back does to the schedules.

``AgentClock`` owns the agent's ``TimeLine`` (``pack_agent.core.timeline``: which
stamps are trusted; this life only) and the rebase that follows a confirmed step
back, whether the line itself saw it (the event times) or the rules' readings did:
it tells every schedule to start again on the new time (the ``listeners``: health
sampler, save schedule, notice dispatcher, the tracker's silence watch), logs it, and
keeps the report for the status file and the next ``pack.health``. Time is always an
argument.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from pack_agent.core.events import PLAUSIBLE_SINCE, utc_from_timestamp
from pack_agent.core.timeline import TimeLine, Verdict

log = logging.getLogger(__name__)


class AgentClock:
    def __init__(self, listeners: Sequence[Callable[[float], None]]) -> None:
        # a step back that persists is adopted, a lone wild stamp never is
        self.line = TimeLine(trusted_from=PLAUSIBLE_SINCE)
        self.listeners = list(listeners)  # each gets the new time, in this order
        self.rebased: dict[str, Any] | None = None  # the last adopted step back
        self._unreported = False  # goes into the next pack.health

    def judge(self, now: float) -> bool:
        """True when ``now`` is on the line (events stamped with it are not
        ``time_unsure``); a step back the line adopts here is a rebase of the events."""
        verdict = self.line.judge(now)
        if verdict is Verdict.REBASED:
            assert self.line.abandoned is not None and self.line.adopted_from is not None
            self.rebase("events", self.line.abandoned, self.line.adopted_from, now)
        return verdict in (Verdict.ON_LINE, Verdict.AHEAD, Verdict.REBASED)

    @property
    def newest(self) -> float | None:
        return self.line.newest

    def rebase(self, by: str, abandoned: float, start: float, now: float) -> None:
        """A clock step back was confirmed (``by`` the rules' readings or the agent's own
        ``events`` time): logged, and reported in the status file and the next
        ``pack.health``. Every schedule starts again on the new time."""
        for listener in self.listeners:
            listener(now)
        self._unreported = True
        self.rebased = {
            "by": by,
            "abandoned": utc_from_timestamp(abandoned).isoformat(),
            "start": utc_from_timestamp(start).isoformat(),
        }
        log.warning(
            "clock stepped back from %s to %s and stayed: the %s continue on the new time",
            self.rebased["abandoned"],
            self.rebased["start"],
            "rules" if by == "rules" else "event times",
        )

    def take_unreported(self) -> dict[str, Any] | None:
        """The last rebase if no ``pack.health`` carried it yet (once)."""
        if not self._unreported or self.rebased is None:
            return None
        self._unreported = False
        return self.rebased
