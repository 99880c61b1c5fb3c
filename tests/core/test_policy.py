"""The scrapping-condition policy: every rule kind, the latch, and noise that must not decide."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from pack_agent.config.rules import ConsecutiveRule, RuleConfig
from pack_agent.core.codes import make_code
from pack_agent.core.policy import IGNITION_OFF_SAVE_GAP_S, ScrapDecision, ScrapPolicy
from pack_agent.core.readings import Reading

DAY = 86400.0
T0 = datetime(2027, 1, 1, 8, tzinfo=timezone.utc).timestamp()
CODE = make_code("0RJ", "P", "E", "A0", "0HAU0AA", date(2026, 3, 2), 1955)
RULE = TypeAdapter(RuleConfig)


def rule(**kw: Any) -> ConsecutiveRule:
    base: dict[str, Any] = dict(
        id="capacity-80",
        metric="soh",
        below=80.0,
        consecutive=5,
        sample_interval_s=DAY,
        description_en="e",
        description_zh="z",
    )
    base.update(kw)
    return ConsecutiveRule(**base)


def make(**kw: Any) -> Any:
    kw.setdefault("description_en", "e")
    kw.setdefault("description_zh", "z")
    return RULE.validate_python(kw)


def capacity(**kw: Any) -> Any:
    base: dict[str, Any] = dict(
        id="capacity-80",
        kind="capacity",
        threshold=80.0,
        window_days=28,
        min_readings=14,
        min_span_days=14,
        persistence_days=14,
    )
    base.update(kw)
    return make(**base)


def feed(policy: ScrapPolicy, values: list[float], step: float = DAY, t0: float = 1e9):
    out = []
    for i, v in enumerate(values):
        out += policy.observe(Reading("soh", v, t0 + i * step), "CODE")
    return out


def daily(
    policy: ScrapPolicy,
    values: list[float],
    metric: str = "soh",
    t0: float = T0,
    code: str | None = CODE,
) -> list[ScrapDecision]:
    """One reading a day; the ignition is not mapped in these policies."""
    out = []
    for i, v in enumerate(values):
        out += policy.observe(Reading(metric, v, t0 + i * DAY), code)
    return out


# -- the original consecutive form ---------------------------------------------------


def test_decides_after_consecutive_samples_with_evidence():
    p = ScrapPolicy([rule()])
    decisions = feed(p, [81, 79.5, 79.4, 79.0, 78.9, 79.2])
    assert len(decisions) == 1
    ev = decisions[0].evidence()
    assert ev["rule_id"] == "capacity-80" and ev["threshold"] == 80.0
    assert ev["sample_count"] == 5 and ev["statistic"]["median"] == 79.2
    assert ev["pack_code"] == "CODE"
    assert ev["first_reading_time"] < ev["last_reading_time"]


def test_one_reading_never_decides():
    p = ScrapPolicy([rule(consecutive=2)])
    assert feed(p, [50.0]) == []


def test_a_reading_at_the_line_restarts_the_count():
    p = ScrapPolicy([rule()])
    assert feed(p, [79, 79, 79, 79, 80, 79, 79, 79, 79]) == []


def test_readings_closer_than_the_interval_count_once():
    p = ScrapPolicy([rule()])
    # 50 readings an hour apart: about two days, not five samples
    assert feed(p, [70.0] * 50, step=3600) == []


def test_latched_until_reset_and_restored_from_state():
    p = ScrapPolicy([rule()])
    assert len(feed(p, [70] * 5)) == 1
    assert feed(p, [70] * 20, t0=2e9) == []
    restored = ScrapPolicy([rule()], latched=p.latched_rules)
    assert feed(restored, [70] * 20) == []
    restored.reset()
    assert len(feed(restored, [70] * 5, t0=3e9)) == 1


def test_repeated_and_backwards_time_is_not_new_evidence():
    p = ScrapPolicy([rule()])
    out = []
    for _ in range(10):
        out += p.observe(Reading("soh", 70, 1e9), None)
    out += p.observe(Reading("soh", 70, 1e9 - 5 * DAY), None)
    assert out == []


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=200),
    st.integers(min_value=2, max_value=20),
)
def test_never_decides_without_a_full_run_below(values, n):
    p = ScrapPolicy([rule(consecutive=n)])
    decisions = feed(p, values)
    run = best = 0
    for v in values:
        run = run + 1 if v < 80 else 0
        best = max(best, run)
    assert bool(decisions) == (best >= n)
    assert len(decisions) <= 1
    for d in decisions:
        samples = d.data["samples"]
        assert all(s["value"] < 80 for s in samples) and len(samples) == n


# -- capacity: a robust statistic over a window, held ----------------------------------


def test_capacity_rule_decides_on_the_window_median_held_for_its_persistence():
    p = ScrapPolicy([capacity()])
    values = [82.0] * 30 + [79.0] * 60
    decisions = daily(p, values)
    assert len(decisions) == 1
    d = decisions[0]
    # the 28-day median goes below on the day the below days are a majority (day 30+14),
    # and must stay there 14 days more
    assert d.time == T0 + (30 + 14 + 14) * DAY
    ev = d.evidence()
    assert ev["kind"] == "capacity" and ev["comparison"] == "below" and ev["threshold"] == 80.0
    assert ev["statistic"]["median"] == 79.0 and ev["sample_count"] == 28
    assert ev["first_reading_time"] == "2027-02-01T08:00:00+00:00"
    assert ev["last_reading_time"] == "2027-02-28T08:00:00+00:00"
    assert ev["pack_code"] == CODE and ev["condition_since"] == "2027-02-14T08:00:00+00:00"
    assert d.event_type == "scrap.condition_met"
    json.dumps(ev)  # the evidence is an event body


def test_capacity_needs_enough_readings_and_span():
    # 13 days, however low: below min_readings and min_span_days
    assert daily(ScrapPolicy([capacity(persistence_days=0)]), [50.0] * 13) == []
    # 14 readings on one day are not 14 days
    p = ScrapPolicy([capacity(persistence_days=0)])
    out = []
    for i in range(40):
        out += p.observe(Reading("soh", 50.0, T0 + i * 60), CODE)
    assert out == []


def test_capacity_against_rated_capacity():
    p = ScrapPolicy([capacity(metric="capacity", rated_capacity=150.0, persistence_days=0)])
    assert daily(p, [121.0] * 20, metric="capacity") == []  # 80.7 %
    decisions = daily(p, [118.0] * 20, metric="capacity", t0=T0 + 20 * DAY)  # 78.7 %
    assert len(decisions) == 1
    ev = decisions[0].evidence()
    assert ev["rated_capacity"] == 150.0 and ev["statistic"]["median"] == pytest.approx(
        78.667, 1e-3
    )


def test_a_reading_on_the_good_side_of_the_window_restarts_persistence():
    p = ScrapPolicy([capacity(window_days=14, min_readings=7, min_span_days=7)])
    # 10 days below, 10 above (window median back above), then below again
    values = [79.0] * 10 + [81.0] * 10 + [79.0] * 10
    assert daily(p, values) == []


# -- resistance growth ---------------------------------------------------------------


def resistance_50(**kw: Any) -> Any:
    """Growth over 50 % against a baseline, judged on 14-day windows of 7+ readings."""
    args = {"window_days": 14, "min_readings": 7, "min_span_days": 7, **kw}
    return make(id="resistance-50", kind="resistance", threshold=50.0, **args)


def test_resistance_growth_against_the_first_window():
    r = resistance_50(persistence_days=7)
    p = ScrapPolicy([r])
    assert daily(p, [60.0] * 30, metric="internal_resistance") == []
    assert daily(p, [85.0] * 30, metric="internal_resistance", t0=T0 + 30 * DAY) == []  # +42 %
    decisions = daily(p, [95.0] * 30, metric="internal_resistance", t0=T0 + 60 * DAY)
    assert len(decisions) == 1
    ev = decisions[0].evidence()
    assert ev["baseline"] == 60.0 and ev["baseline_source"] == "first"
    assert ev["growth_percent"] == pytest.approx(58.333, 1e-3)


def test_a_bms_that_reports_zero_resistance_at_first_gives_no_baseline():
    """Until the BMS has an estimate it may send 0: no baseline of 0 (a division by zero
    that failed every later frame), and a state that saved one learns it again."""
    r = resistance_50()
    p = ScrapPolicy([r])
    assert daily(p, [0.0] * 20 + [60.0] * 20, metric="internal_resistance") == []
    decisions = daily(p, [95.0] * 30, metric="internal_resistance", t0=T0 + 40 * DAY)
    assert len(decisions) == 1 and decisions[0].data["baseline"] == 60.0
    state = ScrapPolicy([r]).to_state()
    state["engines"]["resistance-50"]["baseline"] = 0.0  # as an earlier version saved it
    q = ScrapPolicy([r], state=state, pack_code=CODE)
    assert daily(q, [60.0] * 20, metric="internal_resistance") == []
    assert q.to_state()["engines"]["resistance-50"]["baseline"] == 60.0


def test_resistance_against_a_configured_beginning_of_life_value():
    r = resistance_50(baseline=40.0)
    decisions = daily(ScrapPolicy([r]), [61.0] * 8, metric="internal_resistance")
    assert len(decisions) == 1 and decisions[0].data["baseline"] == 40.0


# -- use and age ---------------------------------------------------------------------


def test_usage_counter_needs_confirming_readings():
    r = make(id="cycles", kind="usage", metric="full_cycles", threshold=3000, confirm_readings=3)
    p = ScrapPolicy([r])
    # one corrupt value far past the line, between good ones: nothing
    assert daily(p, [2990, 16000, 2991, 2992], metric="full_cycles") == []
    decisions = daily(p, [3000, 3001, 3002], metric="full_cycles", t0=T0 + 10 * DAY)
    assert [d.rule_id for d in decisions] == ["cycles"]


def test_pack_age_from_the_production_date_in_the_code():
    r = make(id="age-10", kind="age", threshold=10.0, confirm_days=1)
    p = ScrapPolicy([r])
    made = datetime(2026, 3, 2, tzinfo=timezone.utc).timestamp()
    ten = made + 10 * 365.25 * DAY
    assert daily(p, [90.0] * 5, t0=ten - 6 * DAY) == []
    out = daily(p, [90.0] * 3, t0=ten + 1)
    assert len(out) == 1
    ev = out[0].evidence()
    assert ev["production_date"] == "2026-03-02" and ev["statistic"]["age_years"] >= 10
    # no code known: no age
    q = ScrapPolicy([r])
    assert daily(q, [90.0] * 5, t0=ten + 1, code=None) == []


def test_a_clock_that_jumps_forward_once_is_not_an_old_pack():
    r = make(id="age-10", kind="age", threshold=10.0, confirm_days=1)
    p = ScrapPolicy([r])
    assert p.observe(Reading("soh", 90, T0 + 20 * 365 * DAY), CODE) == []


# -- safety --------------------------------------------------------------------------


def thermal(**kw: Any) -> Any:
    base: dict[str, Any] = dict(
        id="thermal-event",
        kind="safety",
        metric="thermal_event",
        comparison="at_least",
        threshold=1,
        confirm_readings=2,
        confirm_s=0.4,
    )
    base.update(kw)
    return make(**base)


def alarms(p: ScrapPolicy, flags: list[int], t0: float = T0, metric: str = "thermal_event"):
    out = []
    for i, f in enumerate(flags):
        out += p.observe(Reading(metric, float(f), t0 + i * 0.5), CODE)
    return out


def test_thermal_event_is_critical_after_a_short_confirmation():
    p = ScrapPolicy([thermal()])
    assert alarms(p, [0, 0, 1, 0, 0, 1, 0]) == []  # single frames: glitches
    decisions = alarms(p, [1, 1], t0=T0 + 60)
    assert len(decisions) == 1
    d = decisions[0]
    assert d.severity == "critical" and d.notify and d.time == T0 + 60.5
    assert d.evidence()["sample_count"] == 2


def test_safety_ignores_the_ignition():
    p = ScrapPolicy([thermal()], ignition_metric="ignition")
    p.observe(Reading("ignition", 0.0, T0 - 1), CODE)  # parked
    assert len(alarms(p, [1, 1, 1])) == 1


def test_insulation_fault_must_persist():
    r = thermal(id="insulation", metric="insulation_alarm", confirm_readings=10, confirm_s=30)
    p = ScrapPolicy([r])
    assert alarms(p, [1] * 40 + [0] + [1] * 40, metric="insulation_alarm") == []  # 20 s runs
    assert len(alarms(p, [1] * 61, t0=T0 + 100, metric="insulation_alarm")) == 1


# -- combinations --------------------------------------------------------------------


def test_all_of_silent_building_blocks():
    low = make(
        id="soh-85",
        kind="capacity",
        threshold=85.0,
        window_days=14,
        min_readings=7,
        min_span_days=7,
        notify=False,
        publish=False,
    )
    old = make(
        id="cycles-1000",
        kind="usage",
        metric="full_cycles",
        threshold=1000,
        notify=False,
        publish=False,
        confirm_readings=2,
        confirm_s=0,
    )
    both = make(id="worn", kind="all", rules=["soh-85", "cycles-1000"])
    p = ScrapPolicy([low, old, both])
    first = daily(p, [84.0] * 10)
    assert [(d.rule_id, d.notify, d.publish) for d in first] == [("soh-85", False, False)]
    second = daily(p, [1000, 1001], metric="full_cycles", t0=T0 + 20 * DAY)
    assert [d.rule_id for d in second] == ["cycles-1000", "worn"]
    ev = second[1].evidence()
    assert ev["combination"] == "all"
    assert [r["rule_id"] for r in ev["rules"]] == ["soh-85", "cycles-1000"]
    assert second[1].notify and second[1].publish


def test_any_of_rules():
    a = thermal(id="a", notify=False, publish=False)
    b = thermal(id="b", metric="insulation_alarm", notify=False, publish=False)
    either = make(id="either", kind="any", rules=["a", "b"], severity="critical")
    p = ScrapPolicy([a, b, either])
    out = alarms(p, [1, 1], metric="insulation_alarm")
    assert [d.rule_id for d in out] == ["b", "either"]


# -- the ignition --------------------------------------------------------------------


def with_ignition(p: ScrapPolicy, values: list[float], ignition: float, t0: float = T0):
    """The BMS's SOH, then the VCU's ignition 0.2 s later (as the virtual vehicle sends)."""
    out = []
    for i, v in enumerate(values):
        t = t0 + i * DAY
        out += p.observe(Reading("soh", v, t), CODE)
        out += p.observe(Reading("ignition", ignition, t + 0.2), CODE)
    return out


def test_readings_with_the_ignition_off_are_not_judged():
    r = capacity(persistence_days=0)
    assert with_ignition(ScrapPolicy([r], ignition_metric="ignition"), [50.0] * 60, 0.0) == []
    on = with_ignition(ScrapPolicy([r], ignition_metric="ignition"), [50.0] * 60, 2.0)
    assert len(on) == 1


def test_a_reading_after_a_recent_ignition_on_is_judged_at_once():
    p = ScrapPolicy([capacity(persistence_days=0)], ignition_metric="ignition")
    out = []
    for i in range(20):
        t = T0 + i * DAY
        out += p.observe(Reading("ignition", 2.0, t), CODE)
        out += p.observe(Reading("soh", 50.0, t + 1), CODE)
    assert len(out) == 1 and out[0].time == T0 + 13 * DAY + 1


# -- noise never decides on its own (property-based) ---------------------------------


def no_majority_below(raw: list[float], window: int, line: float) -> list[float]:
    """Jitter around the line in which no window of daily values has a majority below."""
    vals = list(raw)
    changed = True
    while changed:
        changed = False
        for i in range(len(vals)):
            lo = max(0, i - window + 1)
            win = vals[lo : i + 1]
            if sum(v < line for v in win) > len(win) // 2:
                j = max(k for k in range(lo, i + 1) if vals[k] < line)
                vals[j] = line + (line - vals[j])
                changed = True
    return vals


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(min_value=77.0, max_value=83.0), min_size=20, max_size=150))
def test_jitter_around_the_line_never_decides(raw):
    values = no_majority_below(raw, 28, 80.0)
    p = ScrapPolicy([capacity(persistence_days=0)])
    assert daily(p, values) == []


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(min_value=70.0, max_value=90.0), max_size=150))
def test_a_decision_always_rests_on_a_held_majority_below(values):
    p = ScrapPolicy([capacity()])
    for d in daily(p, values):
        samples = d.data["samples"]
        assert sum(s["value"] < 80 for s in samples) > len(samples) / 2
        assert d.data["sample_count"] >= 14
        since = datetime.fromisoformat(d.data["condition_since"]).timestamp()
        assert d.time - since >= 14 * DAY


OUTLIERS = st.sampled_from([0.0, 255.0, -30.0, 30.0])  # absolute, or a jump of 30 points


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(min_value=81.0, max_value=84.0), min_size=30, max_size=120),
    st.lists(st.tuples(st.integers(0, 119), OUTLIERS), max_size=60),
    st.integers(1, 6),
)
def test_single_outliers_never_decide(healthy, outliers, per_day):
    """A healthy pack read ``per_day`` times a day, with at most one wild value a day."""
    p = ScrapPolicy([capacity(persistence_days=0, min_readings=10, min_span_days=7)])
    wild = dict(outliers)
    out = []
    for day, v in enumerate(healthy):
        for k in range(per_day):
            out += p.observe(Reading("soh", v, T0 + day * DAY + k * 600), CODE)
        if day in wild:
            w = wild[day]
            value = w if w in (0.0, 255.0) else v + w
            out += p.observe(Reading("soh", value, T0 + day * DAY + 7200), CODE)
    assert out == []


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(min_value=81.0, max_value=84.0), min_size=30, max_size=90),
    st.lists(st.tuples(st.integers(0, 89), st.floats(0, 3 * DAY), st.integers(1, 5)), max_size=40),
)
def test_repeated_and_out_of_order_stamps_never_decide(healthy, replays):
    """Low values stamped at or before the newest reading (repeats, late frames)."""
    p = ScrapPolicy([capacity(persistence_days=0, min_readings=10, min_span_days=7), thermal()])
    at = {}
    for day, back, n in replays:
        at.setdefault(day, []).append((back, n))
    out = []
    for day, v in enumerate(healthy):
        t = T0 + day * DAY
        out += p.observe(Reading("soh", v, t), CODE)
        out += p.observe(Reading("thermal_event", 0.0, t), CODE)
        for back, n in at.get(day, []):
            for _ in range(n):
                out += p.observe(Reading("soh", 40.0, t - back), CODE)
                out += p.observe(Reading("thermal_event", 1.0, t - back), CODE)
    assert out == []


@settings(max_examples=50, deadline=None, derandomize=True)
@given(st.floats(2 * DAY, 400 * DAY), st.integers(10, 80))  # back to 2026 at most
def test_a_clock_that_jumps_back_decides_only_on_its_new_line(jump, days):
    """A step back that stays is adopted after five readings; what the rules knew from
    after the new line's start (stamped by the abandoned clock) is not evidence."""
    p = ScrapPolicy([capacity(persistence_days=0), thermal()])
    for i in range(60):
        assert p.observe(Reading("soh", 82.0, T0 + i * DAY), CODE) == []
        assert p.observe(Reading("thermal_event", 0.0, T0 + i * DAY + 1), CODE) == []
    back = T0 + 60 * DAY - jump
    out = daily(p, [50.0] * days, t0=back)
    out += alarms(p, [1] * 10, t0=back + 1)
    newest = T0 + 59 * DAY + 1
    if back + 4 * DAY >= newest - 60:  # the new line caught up with the old one first
        assert p.take_rebase() is None
        assert all(d.time > newest for d in out)  # only readings after the newest count
        return
    assert p.take_rebase() == (newest, back)  # still behind at the fifth reading: adopted
    for d in out:
        assert d.time >= back + 4 * DAY  # not before the step was confirmed
        for sample in d.data["samples"]:
            if _t(sample["time"]) >= (back // DAY + 1) * DAY:  # days after the step: new only
                assert sample["value"] in (50.0, 1.0)
    # the rules went back to a checkpoint at most a few days before the step (checkpoints
    # are thinned): 15 days of 50 % are a majority of any 28-day window after it
    assert [d.rule_id for d in out].count("capacity-80") == 1 or days < 15


def _t(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


# -- latch and state across restarts ---------------------------------------------------


def reference_rules() -> list[Any]:
    return [
        capacity(),
        resistance_50(),
        make(id="age-12", kind="age", threshold=12.0),
        thermal(),
        make(id="worn", kind="any", rules=["capacity-80", "resistance-50"]),
    ]


def series(n: int) -> list[Reading]:
    out = []
    for i in range(n):
        t = T0 + i * DAY
        soh = 84.0 - 6.0 * i / n
        out.append(Reading("soh", soh if i % 17 else 0.0, t))  # an outlier now and then
        out.append(Reading("internal_resistance", 60 + 0.05 * i, t + 1))
        out.append(Reading("thermal_event", 0.0, t + 2))
    return out


def run(p: ScrapPolicy, readings: list[Reading]) -> list[tuple[str, float]]:
    out = []
    for r in readings:
        out += [(d.rule_id, d.time) for d in p.observe(r, CODE)]
    return out


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 3 * 200))
def test_a_restart_anywhere_gives_the_same_decisions(cut):
    readings = series(200)
    whole = run(ScrapPolicy(reference_rules()), readings)
    assert [rid for rid, _ in whole] == ["capacity-80", "worn"]
    first = ScrapPolicy(reference_rules())
    before = run(first, readings[:cut])
    state = json.loads(json.dumps(first.to_state()))  # what the store keeps
    second = ScrapPolicy(
        reference_rules(), first.latched_rules, state=state, pack_code=first.pack_code
    )
    after = run(second, readings[cut:])
    assert before + after == whole
    # and once met, never again
    assert run(second, series(200)[-5:]) == []


def test_state_of_another_pack_is_not_restored():
    p = ScrapPolicy([capacity(persistence_days=0)])
    daily(p, [70.0] * 13)
    other = ScrapPolicy([capacity(persistence_days=0)], state=p.to_state(), pack_code="OTHER")
    assert daily(other, [70.0], t0=T0 + 13 * DAY) == []


def test_reset_forgets_latches_windows_and_history():
    p = ScrapPolicy([capacity(persistence_days=0)])
    assert len(daily(p, [70.0] * 20)) == 1
    p.reset("NEW")
    assert p.latched_rules == frozenset() and p.history.series() == []
    assert daily(p, [70.0] * 13, t0=T0 + 30 * DAY) == []


# -- forecast ------------------------------------------------------------------------


def test_forecast_rule_gives_an_early_notice():
    fc = make(
        id="capacity-80-forecast",
        kind="forecast",
        rule="capacity-80",
        within_days=90,
        min_history_days=180,
        persistence_days=7,
    )
    p = ScrapPolicy([capacity(), fc], trend_min_days=60)
    # 5 %/year from 90 %: the line is crossed after two years
    values = [90.0 - 5.0 * i / 365.25 for i in range(800)]
    decisions = daily(p, values)
    kinds = [(d.rule_id, d.event_type) for d in decisions]
    assert kinds == [
        ("capacity-80-forecast", "scrap.forecast"),
        ("capacity-80", "scrap.condition_met"),
    ]
    early, met = decisions
    crossing = T0 + 2 * 365.25 * DAY
    assert crossing - 90 * DAY <= early.time <= crossing - 70 * DAY
    ev = early.evidence()
    assert ev["forecast_date"] == "2028-12-31" and ev["rate_per_year"] == pytest.approx(-5.0, 1e-3)
    assert ev["earliest"] <= ev["forecast_date"] <= ev["latest"]
    assert early.notify and early.publish  # the reference config asks for an early notice
    assert met.time > crossing
    report = p.trend(met.time)
    assert report["status"] == "ok" and report["forecasts"][0]["rule_id"] == "capacity-80"


def test_no_forecast_on_a_flat_pack():
    fc = make(id="fc", kind="forecast", rule="capacity-80", min_history_days=100)
    p = ScrapPolicy([capacity(), fc])
    assert daily(p, [85.0 + (i % 3) * 0.1 for i in range(400)]) == []


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0.0, 100.0),
            st.sampled_from([0.0, 1.0, 3.0]),
            st.floats(-30.0, 30.0),
        ),
        max_size=120,
    )
)
def test_readings_without_the_ignition_on_never_decide(steps):
    """Any SOH, with the ignition Off, Acc or Start before or after it: never judged."""
    p = ScrapPolicy([capacity(persistence_days=0)], ignition_metric="ignition")
    out = []
    for i, (soh, ignition, offset) in enumerate(steps):
        t = T0 + i * DAY / 4
        out += p.observe(Reading("ignition", ignition, t + offset), CODE)
        out += p.observe(Reading("soh", soh, t), CODE)
    assert out == []
    assert p.history.series() == []


# -- the saved state format ------------------------------------------------------------

STATE_V1 = Path(__file__).resolve().parents[1] / "data" / "policy_state_v1.json"


def every_kind() -> list[Any]:
    """One rule of every kind, and the ignition: every part of the state is used."""
    return [
        rule(id="consecutive-80", below=80.0, sample_interval_s=DAY / 2),
        capacity(),
        capacity(id="capacity-ah", metric="capacity", rated_capacity=150.0, window_days=14),
        make(id="resistance-30", kind="resistance", threshold=30.0, window_days=14),
        make(id="cycles-100", kind="usage", metric="full_cycles", threshold=100),
        make(id="age-1", kind="age", threshold=1.0, confirm_days=3),
        thermal(),
        make(id="worn", kind="all", rules=["capacity-80", "cycles-100"]),
        make(id="soon", kind="forecast", rule="capacity-80", min_history_days=40),
    ]


def every_kind_readings(days: int = 140) -> list[Reading]:
    """Daily trips (ignition On, two SOH readings, the BMS's other values) and a parked
    reading at night; the SOH fades through 80 %, resistance grows, cycles pass 100."""
    out = []
    for d in range(days):
        t = T0 + d * DAY
        soh = 86.0 - 8.0 * d / days + (0.3 if d % 3 else -0.2)
        out += [
            Reading("ignition", 2.0, t),
            Reading("soh", soh, t + 1),
            Reading("capacity", 1.5 * soh, t + 1),
            Reading("internal_resistance", 60.0 + 0.2 * d, t + 1),
            Reading("full_cycles", float(d), t + 1),
            Reading("odometer", 40.0 * d, t + 1),
            Reading("thermal_event", 1.0 if d % 10 == 0 else 0.0, t + 2),
            Reading("soh", soh + 0.1, t + 600),
            Reading("ignition", 2.0, t + 601),
            Reading("ignition", 0.0, t + 1200),
            Reading("soh", 40.0, t + 7200),  # parked: not judged, held for the next ignition
        ]
    return out


def every_kind_policy(**kw: Any) -> ScrapPolicy:
    return ScrapPolicy(every_kind(), ignition_metric="ignition", trend_min_days=20, **kw)


def decide(p: ScrapPolicy, readings: list[Reading]) -> list[dict[str, Any]]:
    out = []
    for r in readings:
        out += [
            {"rule": d.rule_id, "time": d.time, "evidence": d.evidence()}
            for d in p.observe(r, CODE)
        ]
    return out


STATE_V1_CUT = 70 * 11  # day 70 begins: a parked reading is held by the ignition gate


def test_a_state_saved_by_an_earlier_version_is_read_and_continued():
    """A store written before the rules moved to ``pack_agent.core.rules`` (this file was
    written by that code) is restored and continues to the same decisions."""
    readings = every_kind_readings()
    whole = decide(every_kind_policy(), readings)
    assert {d["rule"] for d in whole} >= {"capacity-80", "cycles-100", "worn", "soon"}
    saved = json.loads(STATE_V1.read_text())
    p = every_kind_policy()
    before = decide(p, readings[:STATE_V1_CUT])
    assert sorted(p.latched_rules) == saved["latched"]
    now = json.loads(json.dumps(p.to_state()))
    # the same format; the ignition gate adds the frame intervals it measures its cycle from
    assert isinstance(now["gate"].pop("intervals"), list)
    assert {k: now[k] for k in saved["state"]} == saved["state"]
    restored = every_kind_policy(latched=saved["latched"], state=saved["state"], pack_code=CODE)
    assert before + decide(restored, readings[STATE_V1_CUT:]) == whole


# -- when the policy asks for its state to be saved ------------------------------------


def trip(p: ScrapPolicy, t0: float, minutes: float, soh: float = 85.0) -> list[str | None]:
    """Ignition On with an SOH reading every minute, then Off; what the policy asked for
    after each reading."""
    asked = []
    for i in range(int(minutes)):
        p.observe(Reading("ignition", 2.0, t0 + i * 60), CODE)
        p.observe(Reading("soh", soh, t0 + i * 60 + 1), CODE)
        asked.append(p.take_save_request())
    p.observe(Reading("ignition", 0.0, t0 + minutes * 60), CODE)
    asked.append(p.take_save_request())
    return asked


def test_the_ignition_going_off_asks_for_a_save_once():
    p = ScrapPolicy([capacity()], ignition_metric="ignition")
    assert trip(p, T0, 20) == ["new_day"] + [None] * 19 + ["ignition_off"]
    p.observe(Reading("ignition", 0.0, T0 + 1300), CODE)  # still Off: nothing new
    p.observe(Reading("ignition", 1.0, T0 + 1301), CODE)  # Acc is not On either
    assert p.take_save_request() is None
    # a stall two minutes later: not again before IGNITION_OFF_SAVE_GAP_S has passed
    assert trip(p, T0 + 1320, 2)[-1] is None
    assert trip(p, T0 + 1200 + IGNITION_OFF_SAVE_GAP_S, 1)[-1] == "ignition_off"


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0.01, 400.0), st.sampled_from([0.0, 1.0, 2.0, 3.0]))))
def test_a_flapping_ignition_asks_at_most_once_per_gap(steps):
    p = ScrapPolicy([capacity(), thermal()], ignition_metric="ignition")
    t, asked = T0, []
    for dt_s, value in steps:
        t += dt_s
        p.observe(Reading("ignition", value, t), CODE)
        if p.take_save_request() == "ignition_off":
            asked.append(t)
    assert all(b - a >= IGNITION_OFF_SAVE_GAP_S for a, b in pairwise(asked))


def test_the_first_reading_of_each_day_asks_for_a_save_once():
    p = ScrapPolicy([capacity(), thermal()])
    asked = []
    for i in range(3 * 24):  # hourly readings for three days
        p.observe(Reading("soh", 85.0, T0 + i * 3600), CODE)
        p.observe(Reading("thermal_event", 0.0, T0 + i * 3600 + 1), CODE)
        asked.append(p.take_save_request())
    days = [i for i, a in enumerate(asked) if a is not None]
    assert {asked[i] for i in days} == {"new_day"}
    assert days == [0, 16, 40, 64]  # the first reading; T0 is 08:00: each midnight after
    # a rule without daily aggregates keeps no day: no save for it
    q = ScrapPolicy([thermal()])
    for i in range(3 * 24):
        q.observe(Reading("thermal_event", 0.0, T0 + i * 3600), CODE)
        assert q.take_save_request() is None


def test_readings_with_the_ignition_off_begin_no_day():
    p = ScrapPolicy([capacity()], ignition_metric="ignition")
    assert trip(p, T0, 3)[-1] == "ignition_off"
    for d in range(1, 4):  # parked for days: the BMS's estimates are not judged
        p.observe(Reading("ignition", 0.0, T0 + d * DAY), CODE)
        p.observe(Reading("soh", 40.0, T0 + d * DAY + 1), CODE)
        assert p.take_save_request() is None
    assert trip(p, T0 + 4 * DAY, 2)[0] == "new_day"  # the next trip's first reading


def test_a_restart_remembers_the_day_and_the_last_ignition_off():
    """A life that sees one burst of readings a day saves it: its day is new."""
    p = ScrapPolicy([capacity()], ignition_metric="ignition")
    trip(p, T0, 3)
    state = json.loads(json.dumps(p.to_state()))
    again = ScrapPolicy([capacity()], ignition_metric="ignition", state=state, pack_code=CODE)
    assert trip(again, T0 + 240, 1) == [None, None]  # within the gap, the same day
    again = ScrapPolicy([capacity()], ignition_metric="ignition", state=state, pack_code=CODE)
    assert trip(again, T0 + DAY, 1) == ["new_day", "ignition_off"]


def test_without_an_ignition_metric_only_days_ask():
    p = ScrapPolicy([capacity()])
    # the ignition is not mapped: not a signal
    assert trip(p, T0, 10) == ["new_day"] + [None] * 10


def test_a_boot_at_1970_that_runs_for_minutes_forgets_nothing():
    """A gateway without a real-time clock boots at 1970 and drives a while before NTP:
    those stamps are not a time line to go back to (the rules would lose their windows
    and the SOH history for good). Then the clock is set, and the decision still comes."""
    p = ScrapPolicy([capacity(persistence_days=0)])
    assert daily(p, [82.0] * 40) == []
    before = p.to_state()
    boot = 30.0  # 1970-01-01T00:00:30Z
    for i in range(72):  # 12 minutes of readings at 10 s
        assert p.observe(Reading("soh", 50.0, boot + i * 10.0), CODE) == []
    assert p.take_rebase() is None
    after = p.to_state()
    assert (after["engines"], after["history"]) == (before["engines"], before["history"])
    out = daily(p, [50.0] * 20, t0=T0 + 40 * DAY)  # NTP set the clock: the story goes on
    assert [d.rule_id for d in out] == ["capacity-80"]
