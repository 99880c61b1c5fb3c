"""Scrapping conditions: pure rules that take readings and time, and return decisions.

A decision never rests on one reading. Each rule kind (see docs/policy.md and
``ruleconfig``) has its own engine in ``pack_agent.core.rules`` and its own debounce:
a robust statistic over a window of daily aggregates held for days (capacity,
resistance), a short run of confirming readings (safety, usage), or a condition
that holds over days (age, forecast). Readings dated at or before the newest one
a rule has seen are not evidence, so repeats and out-of-order frames decide nothing;
a clock that steps back and stays is adopted after a confirmation, from a checkpoint
(``pack_agent.core.timeline``, docs/policy.md "A clock that steps").

This module wires the engines to the readings, gates them by the ignition,
latches what they find (until the pack is replaced), judges combinations and
forecasts, and keeps the state. Everything a rule remembers (windows, baselines,
latches and their evidence, the SOH history) is in ``to_state()``; the caller
persists it on its own schedule and when the policy asks (``take_save_request``:
the ignition went Off, a new day), and passes it back on start. No clock and
no I/O here: replaying the same readings gives the same decisions.

The module is split along one seam: this one decides (the wiring above, the
ignition gate in ``pack_agent.core.ignition``); ``pack_agent.core.policy_state``
remembers (the saved state, checkpoints and a clock step undone, save requests),
as the :class:`~pack_agent.core.policy_state.PolicyState` mixin ScrapPolicy
inherits. The constants callers import stay importable from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pack_agent.config.rules import CapacityRule, ForecastRule, combination_order
from pack_agent.core.events import PLAUSIBLE_SINCE, iso_date, iso_time
from pack_agent.core.ignition import IgnitionGate, IgnitionSpec
from pack_agent.core.policy_state import (
    CHECKPOINT_GAP_S,
    IGNITION_OFF_SAVE_GAP_S,
    MAX_CHECKPOINTS,
    SAVED_CHECKPOINTS,
    STATE_VERSION,
    PolicyState,
)
from pack_agent.core.readings import Reading
from pack_agent.core.rules import RuleEngine, Stream, engine_for
from pack_agent.core.timeline import TimeLine, Verdict
from pack_agent.core.trend import DAY, YEAR_DAYS, SohHistory, day_of, soh_trend, trend_report
from pack_agent.core.trend import forecast as trend_forecast

if TYPE_CHECKING:
    from pack_agent.config import AgentConfig

__all__ = [
    "CHECKPOINT_GAP_S",
    "IGNITION_OFF_SAVE_GAP_S",
    "MAX_CHECKPOINTS",
    "SAVED_CHECKPOINTS",
    "STATE_VERSION",
    "ScrapDecision",
    "ScrapPolicy",
]

FORECAST_EVERY_DAYS = 7
MAX_HELD = 512  # readings held while a step is confirmed (a few minutes of frames)


@dataclass(frozen=True)
class ScrapDecision:
    """A rule met, with the evidence a backend or an auditor needs to check it."""

    rule_id: str
    kind: str
    severity: str
    time: float  # the time of the last reading that made it
    pack_code: str | None
    description_en: str
    description_zh: str
    data: dict[str, Any]
    notify: bool = True  # open an owner notice
    publish: bool = True  # publish an event

    @property
    def event_type(self) -> str:
        return "scrap.forecast" if self.kind == "forecast" else "scrap.condition_met"

    def evidence(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "kind": self.kind,
            "severity": self.severity,
            "description": {"en": self.description_en, "zh": self.description_zh},
            **self.data,
            "pack_code": self.pack_code,
        }


class ScrapPolicy(PolicyState):
    """Evaluates every configured rule on each reading of its metric."""

    def __init__(
        self,
        rules: Sequence[Any],
        latched: Iterable[str] = (),
        *,
        state: dict[str, Any] | None = None,
        pack_code: str | None = None,
        ignition_metric: str | None = None,
        ignition_on_values: Sequence[float] = (2.0,),
        ignition_window_s: float = 5.0,
        ignition: IgnitionSpec | None = None,
        trend_metric: str = "soh",
        trend_min_days: float = 60.0,
    ) -> None:
        """``ignition`` (the configuration's ``[ignition]``, resolved) gates the rules
        with ``ignition_on_only``; ``ignition_metric``/``ignition_on_values``/
        ``ignition_window_s`` are the short form (tests) of the same."""
        self._rules = {r.id: r for r in rules}
        if ignition is None and ignition_metric is not None:
            ignition = IgnitionSpec.of(
                ignition_metric, ignition_on_values, window_s=ignition_window_s
            )
        self._ignition = ignition
        self._ignition_metric = ignition.metric if ignition is not None else None
        self._trend_metric = trend_metric
        self._trend_min_days = trend_min_days
        self._combos = combination_order(list(rules))
        self._forecasts = [r for r in rules if isinstance(r, ForecastRule)]
        self._build()
        self._latched: dict[str, dict[str, Any]] = {rid: {} for rid in latched}
        self.pack_code = pack_code
        self._save_asked: str | None = None  # why the state should be saved now
        self._off_asked_at: float | None = None  # the last save asked at ignition Off
        self._day: int | None = None  # the newest day that went into a daily aggregate
        self._line = TimeLine(trusted_from=PLAUSIBLE_SINCE)
        self._held: list[Reading] = []  # readings of a candidate time line
        self._rebased: tuple[float, float] | None = None  # (abandoned newest, new line start)
        if state and state.get("version") == STATE_VERSION and state.get("pack_code") == pack_code:
            self._load(state)

    @classmethod
    def from_config(
        cls,
        config: AgentConfig,
        state: dict[str, Any] | None,
        latched: Iterable[str],
        pack_code: str | None,
        ignition: IgnitionSpec | None = None,
    ) -> ScrapPolicy:
        """The policy for a configuration, with the state the store kept (if any).
        ``ignition``: the ``[ignition]`` resolved against the DBC (labels, the cycle);
        without it, the numbers in the configuration."""
        p = config.policy
        if ignition is None and config.ignition.metric in config.metrics:
            i = config.ignition
            ignition = IgnitionSpec.of(
                i.metric, i.on(), i.on_min, i.stale_cycles, i.cycle_s, i.window_s
            )
        return cls(
            config.rules,
            latched,
            state=state,
            pack_code=pack_code,
            ignition=ignition,
            trend_metric=p.trend_metric,
            trend_min_days=p.trend_min_days,
        )

    def _build(self) -> None:
        self._engines: dict[str, RuleEngine] = {}
        for rule in self._rules.values():
            engine = engine_for(rule)
            if engine is not None:
                self._engines[rule.id] = engine
        self._by_metric: dict[str, list[str]] = {}
        self._every: list[str] = []  # rules that see every reading (age)
        for rid, eng in self._engines.items():
            if eng.metric is None:
                self._every.append(rid)
            else:
                self._by_metric.setdefault(eng.metric, []).append(rid)
        self._gate = IgnitionGate(self._ignition) if self._ignition else None
        self.history = SohHistory()
        self._trend_stream = Stream()
        self._forecast_since: dict[str, float | None] = {r.id: None for r in self._forecasts}
        self._forecast_week: int | None = None
        self._checkpoints: list[dict[str, Any]] = []

    # -- what is known -------------------------------------------------------------

    @property
    def metrics(self) -> frozenset[str]:
        extra = {self._trend_metric, "odometer"}
        if self._ignition_metric:
            extra.add(self._ignition_metric)
        return frozenset(self._by_metric) | extra

    @property
    def latched_rules(self) -> frozenset[str]:
        return frozenset(self._latched)

    def reset(self, pack_code: str | None = None) -> None:
        """A new pack: every latch, window, baseline and the SOH history are forgotten."""
        self._latched.clear()
        self._build()
        self.pack_code = pack_code

    def restore(self, pack_code: str | None, state: dict[str, Any] | None) -> None:
        """Another pack in the vehicle: start afresh for it, or (a pack that comes back)
        from the state saved for it when it left (``to_state``)."""
        self.reset(pack_code)
        if state and state.get("version") == STATE_VERSION and state.get("pack_code") == pack_code:
            self._load(state)

    # -- readings --------------------------------------------------------------------

    def observe(self, reading: Reading, pack_code: str | None) -> list[ScrapDecision]:
        """One reading in; the decisions it completes out (latched, never repeated).

        Its time is judged first (``pack_agent.core.timeline``): a stamp of a candidate time
        line is held until the line is confirmed, then judged; a confirmed step back
        restores the rules to the newest checkpoint before the new line (docs/policy.md,
        "Time")."""
        self.pack_code = pack_code
        before = self._line.newest
        verdict = self._line.judge(reading.time)
        if verdict is Verdict.HELD:
            if self._line.started:
                self._held.clear()  # the last candidate was not continued: noise
            if len(self._held) < MAX_HELD:
                self._held.append(reading)
            return []
        held, self._held = self._held, []
        if verdict is Verdict.REBASED:
            self._rebase()
        elif before is not None and reading.time - before > CHECKPOINT_GAP_S:
            self._checkpoint(before)
        out: list[ScrapDecision] = []
        if verdict in (Verdict.AHEAD, Verdict.REBASED):
            for r in sorted(held, key=lambda r: r.time):
                out += self._observe(r)
        return out + self._observe(reading)

    def _observe(self, reading: Reading) -> list[ScrapDecision]:
        if self._gate is not None and reading.metric == self._ignition_metric:
            out: list[ScrapDecision] = []
            was_on = self._gate.on
            released = self._gate.on_ignition(reading)
            if was_on and not self._gate.on:
                self._ignition_off(reading.time)
            for held in released:
                out += self._judge(held, gated=True)
            out += self._judge(reading, gated=False)
            return out
        admitted = self._gate is None or self._gate.admit(reading)
        out = self._judge(reading, gated=False)
        if admitted:
            out += self._judge(reading, gated=True)
        return out

    def _judge(self, r: Reading, gated: bool) -> list[ScrapDecision]:
        """Gated rules (and the SOH history) see a reading in the ``gated=True`` pass,
        the others in the ``gated=False`` pass; each reading passes each way once."""
        met: list[tuple[str, dict[str, Any], float]] = []
        daily = False  # the reading goes into a daily aggregate
        for rid in self._by_metric.get(r.metric, ()):
            eng = self._engines[rid]
            if eng.gated != gated or rid in self._latched:
                continue
            daily = daily or eng.daily
            ev = eng.observe(r, self.pack_code)
            if ev is not None:
                met.append((rid, ev, r.time))
        if not gated:
            for rid in self._every:
                if rid not in self._latched:
                    ev = self._engines[rid].observe(r, self.pack_code)
                    if ev is not None:
                        met.append((rid, ev, r.time))
            if r.metric == "odometer":
                self.history.add_odometer(r.time, r.value)
        if gated and r.metric == self._trend_metric and self._trend_stream.fresh(r.time):
            daily = True
            if self.history.add(r.time, r.value):
                week = day_of(r.time) // FORECAST_EVERY_DAYS
                if week != self._forecast_week:  # a forecast moves slowly: once a week
                    self._forecast_week = week
                    met += self._check_forecasts(r.time)
        if daily:
            self._day_seen(r.time)
        decisions = [self._latch(rid, ev, t) for rid, ev, t in met]
        if decisions:
            decisions += self._check_combinations(r.time)
        return decisions

    def _latch(self, rid: str, ev: dict[str, Any], t: float) -> ScrapDecision:
        rule = self._rules[rid]
        self._latched[rid] = ev
        return ScrapDecision(
            rule_id=rid,
            kind=rule.kind,
            severity=rule.severity,
            time=t,
            pack_code=self.pack_code,
            description_en=rule.description_en,
            description_zh=rule.description_zh,
            data=ev,
            notify=rule.notify,
            publish=rule.publish,
        )

    def _check_combinations(self, t: float) -> list[ScrapDecision]:
        out = []
        for combo in self._combos:
            if combo.id in self._latched:
                continue
            met = [rid for rid in combo.rules if rid in self._latched]
            if (combo.kind == "any" and met) or (
                combo.kind == "all" and len(met) == len(combo.rules)
            ):
                ev = {
                    "combination": combo.kind,
                    "rules": [
                        {"rule_id": rid, "kind": self._rules[rid].kind, **self._latched[rid]}
                        for rid in met
                    ],
                }
                out.append(self._latch(combo.id, ev, t))
        return out

    def _check_forecasts(self, t: float) -> list[tuple[str, dict[str, Any], float]]:
        """Once a day (when the history closes a day): is a capacity line in sight?"""
        out: list[tuple[str, dict[str, Any], float]] = []
        pending = [r for r in self._forecasts if r.id not in self._latched]
        if not pending:
            return out
        fit, _ = soh_trend(self.history, self._trend_min_days)
        pts = self.history.series()
        span = (pts[-1].t - pts[0].t) / DAY if pts else 0.0
        for rule in pending:
            target = self._rules[rule.rule]
            if fit is None or span < rule.min_history_days or rule.rule in self._latched:
                self._forecast_since[rule.id] = None
                continue
            f = trend_forecast(fit, target.threshold)
            days = f.days_from(t)
            if days is None or days > rule.within_days:
                self._forecast_since[rule.id] = None
                continue
            since = self._forecast_since[rule.id]
            if since is None:
                since = self._forecast_since[rule.id] = t
            if t - since < rule.persistence_days * DAY:
                continue
            out.append(
                (
                    rule.id,
                    {
                        "metric": self._trend_metric,
                        "forecast_of": rule.rule,
                        "threshold": target.threshold,
                        "within_days": rule.within_days,
                        "forecast_date": iso_date(f.time),
                        "earliest": iso_date(f.earliest),
                        "latest": iso_date(f.latest),
                        "days_left": round(days, 1),
                        "rate_per_year": round(fit.slope * YEAR_DAYS, 3),
                        "sample_count": sum(p.n for p in pts),
                        "first_reading_time": iso_time(pts[0].t),
                        "last_reading_time": iso_time(t),
                        "condition_since": iso_time(since),
                    },
                    t,
                )
            )
        return out

    # -- the trend for pack.health ----------------------------------------------------

    def trend(self, now: float) -> dict[str, Any]:
        """Degradation rate and a forecast for each capacity line on the trend metric."""
        thresholds = {
            r.id: r.threshold
            for r in self._rules.values()
            if isinstance(r, CapacityRule)
            and r.metric == self._trend_metric
            and r.rated_capacity is None
        }
        report = trend_report(self.history, thresholds, now, self._trend_min_days)
        report["metric"] = self._trend_metric
        return report
