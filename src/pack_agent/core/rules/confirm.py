"""Safety and usage: a short run of confirming readings, seconds rather than days."""

from __future__ import annotations

from typing import Any

from pack_agent.config.rules import SafetyRule, UsageRule
from pack_agent.core.events import iso_time
from pack_agent.core.readings import Reading
from pack_agent.core.rules.base import Evidence, RuleEngine, Stream, compare
from pack_agent.core.trend import median


class ConfirmEngine(RuleEngine):
    """Safety and usage: ``confirm_readings`` in a row on the bad side, spanning at least
    ``confirm_s``. One good reading starts again: a glitch is never a decision."""

    def __init__(self, rule: SafetyRule | UsageRule) -> None:
        self.rule = rule
        self.metric = rule.metric
        self.stream = Stream()
        self.run: list[tuple[float, float]] = []

    def observe(self, r: Reading, code: str | None) -> Evidence | None:
        rule = self.rule
        if not self.stream.fresh(r.time):
            return None
        if not compare(r.value, rule.comparison, rule.threshold):
            self.run.clear()
            return None
        self.run.append((r.time, r.value))
        if len(self.run) > rule.confirm_readings:
            self.run = [self.run[0], *self.run[-(rule.confirm_readings - 1) :]]
        count = len(self.run)
        if count < rule.confirm_readings or self.run[-1][0] - self.run[0][0] < rule.confirm_s:
            return None
        values = [v for _, v in self.run]
        return {
            "metric": rule.metric,
            "comparison": rule.comparison,
            "threshold": rule.threshold,
            "statistic": {"median": median(values), "min": min(values), "max": max(values)},
            "sample_count": count,
            "confirm_s": rule.confirm_s,
            "first_reading_time": iso_time(self.run[0][0]),
            "last_reading_time": iso_time(self.run[-1][0]),
            "samples": [{"time": iso_time(t), "value": v} for t, v in self.run],
        }

    def to_state(self) -> dict[str, Any]:
        return {"last": self.stream.last, "run": list(self.run)}

    def load_state(self, s: dict[str, Any]) -> None:
        self.stream.last = s.get("last")
        self.run = [(float(t), float(v)) for t, v in s.get("run", [])]
