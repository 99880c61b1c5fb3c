"""The original rule form: ``consecutive`` samples below a line, one per interval."""

from __future__ import annotations

from typing import Any

from pack_agent.config.rules import ConsecutiveRule
from pack_agent.core.events import iso_time
from pack_agent.core.readings import Reading
from pack_agent.core.rules.base import Evidence, RuleEngine
from pack_agent.core.trend import median


class ConsecutiveEngine(RuleEngine):
    """Samples at least ``sample_interval_s`` apart; any sample at or above the line
    starts the count again."""

    def __init__(self, rule: ConsecutiveRule) -> None:
        self.rule = rule
        self.metric = rule.metric
        self.run: list[tuple[float, float]] = []
        self.last_sample: float | None = None

    def observe(self, r: Reading, code: str | None) -> Evidence | None:
        rule = self.rule
        if self.last_sample is not None:
            if r.time <= self.last_sample:
                return None
            if r.time - self.last_sample < rule.sample_interval_s:
                return None
        self.last_sample = r.time
        if r.value >= rule.below:
            self.run.clear()
            return None
        self.run.append((r.time, r.value))
        if len(self.run) < rule.consecutive:
            return None
        samples, self.run = self.run, []
        values = [v for _, v in samples]
        return {
            "metric": rule.metric,
            "comparison": "below",
            "threshold": rule.below,
            "statistic": {"median": median(values), "min": min(values), "max": max(values)},
            "sample_count": len(values),
            "first_reading_time": iso_time(samples[0][0]),
            "last_reading_time": iso_time(samples[-1][0]),
            "samples": [{"time": iso_time(t), "value": v} for t, v in samples],
        }

    def to_state(self) -> dict[str, Any]:
        return {"run": list(self.run), "last_sample": self.last_sample}

    def load_state(self, s: dict[str, Any]) -> None:
        self.run = [(float(t), float(v)) for t, v in s.get("run", [])]
        self.last_sample = s.get("last_sample")
