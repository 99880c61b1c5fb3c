"""Scrapping conditions: pure rules that take readings and time, and return decisions.

A decision is never taken on one reading: a rule needs ``consecutive``
samples below its threshold, at most one sample per ``sample_interval_s``,
and any sample at or above the threshold starts the count again. Once met, a
rule is latched until the pack is replaced; the latch is the caller's to
persist (``latched_rules``) and to restore.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pack_agent.config import ScrapRule
from pack_agent.decoder import Reading
from pack_agent.events import utc_from_timestamp


@dataclass(frozen=True)
class ScrapDecision:
    """A rule met, with the evidence a backend or an auditor needs to check it."""

    rule_id: str
    severity: str
    metric: str
    threshold: float
    samples: tuple[tuple[float, float], ...]  # (time, value)
    pack_code: str | None
    description_en: str
    description_zh: str

    @property
    def time(self) -> float:
        return self.samples[-1][0]

    def evidence(self) -> dict[str, Any]:
        values = [v for _, v in self.samples]
        return {
            "rule_id": self.rule_id,
            "severity": self.severity,
            "description": {"en": self.description_en, "zh": self.description_zh},
            "metric": self.metric,
            "comparison": "below",
            "threshold": self.threshold,
            "statistic": {
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
            },
            "sample_count": len(values),
            "first_reading_time": utc_from_timestamp(self.samples[0][0]).isoformat(),
            "last_reading_time": utc_from_timestamp(self.samples[-1][0]).isoformat(),
            "samples": [
                {"time": utc_from_timestamp(t).isoformat(), "value": v} for t, v in self.samples
            ],
            "pack_code": self.pack_code,
        }


@dataclass
class _RuleState:
    run: list[tuple[float, float]] = field(default_factory=list)
    last_sample: float | None = None


class ScrapPolicy:
    """Evaluates every configured rule on each reading of its metric."""

    def __init__(self, rules: Sequence[ScrapRule], latched: Iterable[str] = ()) -> None:
        self._rules = list(rules)
        self._by_metric: dict[str, list[ScrapRule]] = {}
        for rule in self._rules:
            self._by_metric.setdefault(rule.metric, []).append(rule)
        self._state = {r.id: _RuleState() for r in self._rules}
        self._latched: set[str] = set(latched)

    @property
    def metrics(self) -> frozenset[str]:
        return frozenset(self._by_metric)

    @property
    def latched_rules(self) -> frozenset[str]:
        return frozenset(self._latched)

    def reset(self) -> None:
        """A new pack: every latch and every partial run is forgotten."""
        self._latched.clear()
        self._state = {r.id: _RuleState() for r in self._rules}

    def observe(self, reading: Reading, pack_code: str | None) -> list[ScrapDecision]:
        decisions = []
        for rule in self._by_metric.get(reading.metric, ()):
            decision = self._observe_rule(rule, reading, pack_code)
            if decision is not None:
                decisions.append(decision)
        return decisions

    def _observe_rule(
        self, rule: ScrapRule, reading: Reading, pack_code: str | None
    ) -> ScrapDecision | None:
        if rule.id in self._latched:
            return None
        st = self._state[rule.id]
        if st.last_sample is not None:
            if reading.time <= st.last_sample:
                return None  # repeated or out-of-order time: not new evidence
            if reading.time - st.last_sample < rule.sample_interval_s:
                return None
        st.last_sample = reading.time
        if reading.value >= rule.below:
            st.run.clear()
            return None
        st.run.append((reading.time, reading.value))
        if len(st.run) < rule.consecutive:
            return None
        self._latched.add(rule.id)
        samples = tuple(st.run)
        st.run.clear()
        return ScrapDecision(
            rule_id=rule.id,
            severity=rule.severity,
            metric=rule.metric,
            threshold=rule.below,
            samples=samples,
            pack_code=pack_code,
            description_en=rule.description_en,
            description_zh=rule.description_zh,
        )
