"""Capacity and resistance: a robust statistic over a window of daily medians, held."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from pack_agent.config.rules import CapacityRule, ResistanceRule
from pack_agent.core.events import iso_time
from pack_agent.core.readings import Reading
from pack_agent.core.rules.base import Evidence, RuleEngine, Stream, compare
from pack_agent.core.trend import DAY, DayAccumulator, day_of


@dataclass
class DayMedian:
    """A day's aggregate: its median and the readings behind it."""

    day: int
    median: float
    n: int
    first: float
    last: float


class WindowEngine(RuleEngine):
    """Capacity and resistance: the median of daily medians over ``window_days``, with
    at least ``min_readings`` spanning ``min_span_days``, on the bad side for
    ``persistence_days``. The median taken is the conservative one (the higher of the
    two middle days for "below", the lower for "above"): more than half the days must
    be on the bad side, so jitter around the line cannot pass."""

    daily = True

    def __init__(self, rule: CapacityRule | ResistanceRule) -> None:
        self.rule = rule
        self.metric = rule.metric
        self.gated = rule.ignition_on_only
        self.stream = Stream()
        self.days: deque[DayMedian] = deque()
        self.today: DayAccumulator | None = None
        self.bad_since: float | None = None
        self.baseline: float | None = (
            None
            if isinstance(rule, CapacityRule) or rule.baseline == "first"
            else float(rule.baseline)
        )

    def _value(self, raw: float) -> float:
        rule = self.rule
        if isinstance(rule, CapacityRule) and rule.rated_capacity:
            return 100.0 * raw / rule.rated_capacity
        return raw

    def observe(self, r: Reading, code: str | None) -> Evidence | None:
        if not self.stream.fresh(r.time):
            return None
        day = day_of(r.time)
        if self.today is not None and self.today.day != day:
            acc = self.today
            assert acc.first is not None and acc.last is not None
            self.days.append(DayMedian(acc.day, acc.median(), acc.n, acc.first, acc.last))
            self.today = None
        if self.today is None:
            self.today = DayAccumulator(day)
        self.today.add(self._value(r.value), r.time)
        while self.days and self.days[0].day <= day - self.rule.window_days:
            self.days.popleft()
        return self._judge(r.time)

    def window(self) -> list[DayMedian]:
        days = list(self.days)
        acc = self.today
        if acc is not None and acc.first is not None and acc.last is not None:
            days.append(DayMedian(acc.day, acc.median(), acc.n, acc.first, acc.last))
        return days

    def _judge(self, t: float) -> Evidence | None:
        rule = self.rule
        days = self.window()
        n = sum(d.n for d in days)
        span = days[-1].day - days[0].day + 1 if days else 0
        if n < rule.min_readings or span < rule.min_span_days:
            self.bad_since = None  # not enough evidence either way: start again
            return None
        meds = sorted(d.median for d in days)
        below = rule.comparison == "below"
        stat = meds[len(meds) // 2] if below else meds[(len(meds) - 1) // 2]
        if isinstance(rule, ResistanceRule) and self.baseline is None:
            # resistance against the pack's first judged window; a BMS that sends 0 until
            # it has an estimate gives no baseline (growth against 0 means nothing)
            if stat > 0:
                self.baseline = stat
            return None
        if isinstance(rule, CapacityRule):
            judged = stat
        else:
            assert self.baseline is not None  # configured, or the first window's (set above)
            judged = 100.0 * (stat / self.baseline - 1)
        if not compare(judged, rule.comparison, rule.threshold):
            self.bad_since = None
            return None
        if self.bad_since is None:
            self.bad_since = t
        if t - self.bad_since < rule.persistence_days * DAY:
            return None
        ev: Evidence = {
            "metric": rule.metric,
            "comparison": rule.comparison,
            "threshold": rule.threshold,
            "statistic": {
                "median": round(stat, 4),
                "min": round(meds[0], 4),
                "max": round(meds[-1], 4),
                "of": "daily medians",
            },
            "sample_count": n,
            "day_count": len(days),
            "first_reading_time": iso_time(days[0].first),
            "last_reading_time": iso_time(days[-1].last),
            "window_days": rule.window_days,
            "persistence_days": rule.persistence_days,
            "condition_since": iso_time(self.bad_since),
            "samples": [
                {"time": iso_time(d.last), "value": round(d.median, 4), "n": d.n} for d in days
            ],
        }
        if isinstance(rule, ResistanceRule):
            ev["baseline"] = self.baseline
            ev["baseline_source"] = "first" if rule.baseline == "first" else "configured"
            ev["growth_percent"] = round(judged, 3)
        elif rule.rated_capacity:
            ev["rated_capacity"] = rule.rated_capacity
        return ev

    def to_state(self) -> dict[str, Any]:
        return {
            "last": self.stream.last,
            "days": [[d.day, d.median, d.n, d.first, d.last] for d in self.days],
            "today": self.today.to_state() if self.today else None,
            "bad_since": self.bad_since,
            "baseline": self.baseline,
        }

    def load_state(self, s: dict[str, Any]) -> None:
        self.stream.last = s.get("last")
        self.days = deque(
            DayMedian(int(d), m, int(n), f, la) for d, m, n, f, la in s.get("days", [])
        )
        self.today = DayAccumulator.from_state(s["today"]) if s.get("today") else None
        self.bad_since = s.get("bad_since")
        if s.get("baseline") is not None and float(s["baseline"]) > 0:  # 0: saved before
            self.baseline = float(s["baseline"])  # the check above, learnt again
