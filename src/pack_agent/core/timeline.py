"""The time line: which stamps are the vehicle's time, and when a clock step is real.

A vehicle clock (RTC, GNSS, NTP, or the BMS's own stamps with ``clock = "frames"``)
can be wrong once (a stray frame, a bad GNSS fix) or step for good (a correction after
a wrong time). A single wild stamp must never move the line; a step that persists is
adopted, so that neither the rules nor the events stay blind for years behind a time
that was never real. Pure: the times come in as arguments, nothing is read or written.

- A stamp at or after the newest time, and less than ``leap_s`` after it, is on the
  line.
- A stamp up to ``tolerance_s`` behind the newest is late (a repeat, a late frame): not
  new evidence, and a sign that the current line is alive.
- A stamp more than ``tolerance_s`` behind starts (or continues) a candidate line
  behind. The candidate is adopted when ``confirm_times`` distinct, increasing stamps
  spanning at least ``confirm_s`` arrive with no stamp on the current line between them
  (``REBASED``). A stamp on the current line drops the candidate: noise never flaps.
- A stamp more than ``leap_s`` ahead is held until a later stamp continues it (a lone
  stamp in 2035 is never taken); a line that starts before ``trusted_from`` (a gateway
  at 1970) takes a leap at once: that is the clock being set.
- Never evidence (``LATE``, nothing changes): a stamp that is not a finite number or is
  past ``MAX_TIME``, and, once the line is at or after ``trusted_from``, a stamp before
  it (a gateway that booted at 1970 and runs for minutes before NTP must not make the
  rules go back to 1970 and forget what they knew).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

DAY = 86400.0
# Readings that come up to a minute late are late frames, not a clock step.
TOLERANCE_S = 60.0
# A step back is adopted after five distinct stamps over five minutes of their own time,
# with nothing on the old line between them: one trip's worth of frames, never one frame.
CONFIRM_TIMES = 5
CONFIRM_S = 300.0
# A stamp more than 30 days ahead waits for a second one that continues it.
LEAP_S = 30 * DAY
# No vehicle clock means a time past 2200-01-01: such a stamp is garbage, never a line.
MAX_TIME = 7_258_118_400.0


class Verdict(Enum):
    ON_LINE = "on_line"  # new evidence: judge it
    LATE = "late"  # behind the newest, within the tolerance: not new evidence
    HELD = "held"  # part of a candidate line (behind, or a leap ahead): wait
    AHEAD = "ahead"  # a leap ahead confirmed by this stamp: judge the held ones, then it
    REBASED = "rebased"  # a line behind confirmed: the newest time is abandoned


@dataclass
class TimeLine:
    """The newest time on the adopted line and the candidate line, if any."""

    tolerance_s: float = TOLERANCE_S
    confirm_times: int = CONFIRM_TIMES
    confirm_s: float = CONFIRM_S
    leap_s: float = LEAP_S
    trusted_from: float = 0.0  # a line before this time takes a leap at once
    newest: float | None = None
    # the candidate line: its first and last stamps and how many distinct ones (bounded
    # memory, whatever the stream)
    candidate_first: float | None = None
    candidate_last: float | None = None
    candidate_count: int = 0
    candidate_ahead: bool = False
    abandoned: float | None = None  # the newest time of the last line left behind
    adopted_from: float | None = None  # the first stamp of the last line adopted
    started: bool = False  # the last stamp started a new candidate (the old one is dropped)

    def judge(self, t: float) -> Verdict:
        self.started = False
        newest = self.newest
        if not (math.isfinite(t) and t <= MAX_TIME):
            return Verdict.LATE
        if newest is not None and t < self.trusted_from <= newest:
            return Verdict.LATE  # an unset clock after a set one: not a time line
        if newest is None:
            self.newest = t
            return Verdict.ON_LINE
        if t > newest + self.leap_s and newest >= self.trusted_from:
            return self._candidate(t, ahead=True)
        if t >= newest:
            self._drop_candidate()
            self.newest = t
            return Verdict.ON_LINE
        if t >= newest - self.tolerance_s:
            self._drop_candidate()
            return Verdict.LATE
        return self._candidate(t, ahead=False)

    def _drop_candidate(self) -> None:
        self.candidate_first = self.candidate_last = None
        self.candidate_count = 0

    def _candidate(self, t: float, ahead: bool) -> Verdict:
        last = self.candidate_last
        if last is not None and (self.candidate_ahead != ahead or t < last):
            self._drop_candidate()  # not a continuation: a new candidate
        self.candidate_ahead = ahead
        self.started = self.candidate_count == 0
        if self.candidate_first is None:
            self.candidate_first = self.candidate_last = t
            self.candidate_count = 1
        elif t > self.candidate_last:  # type: ignore[operator]
            self.candidate_last = t
            self.candidate_count += 1
        first, last = self.candidate_first, self.candidate_last
        assert first is not None and last is not None
        if ahead:
            if self.candidate_count < 2:
                return Verdict.HELD
            self.adopted_from, self.newest = first, last
            self._drop_candidate()
            return Verdict.AHEAD
        if self.candidate_count < self.confirm_times or last - first < self.confirm_s:
            return Verdict.HELD
        self.abandoned, self.adopted_from, self.newest = self.newest, first, last
        self._drop_candidate()
        return Verdict.REBASED

    def to_state(self) -> dict[str, Any]:
        return {"newest": self.newest, "abandoned": self.abandoned, "from": self.adopted_from}

    def load_state(self, s: dict[str, Any]) -> None:
        """A candidate is not kept across a restart: it starts again (a few minutes)."""
        self.newest = s.get("newest")
        self.abandoned = s.get("abandoned")
        self.adopted_from = s.get("from")
        self._drop_candidate()
