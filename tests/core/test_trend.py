"""The SOH history, the robust fit and the forecast."""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pack_agent.core.events import iso_date
from pack_agent.core.trend import (
    DAY,
    MAX_FIT_POINTS,
    SohHistory,
    crossing,
    forecast,
    histogram_median,
    median,
    soh_trend,
    theil_sen,
    trend_report,
)

T0 = datetime(2027, 1, 1, 8, tzinfo=timezone.utc).timestamp()


@given(st.lists(st.integers(0, 1000), min_size=1, max_size=200))
def test_histogram_median_is_the_median(values):
    floats = [v / 10 for v in values]
    assert histogram_median(Counter(floats)) == pytest.approx(median(floats))


def test_theil_sen_recovers_a_line_exactly():
    xs = [float(i) for i in range(50)]
    fit = theil_sen(xs, [90 - 0.02 * x for x in xs])
    assert fit is not None
    assert fit.slope == pytest.approx(-0.02) and fit.intercept == pytest.approx(90)
    assert fit.slope_lo == pytest.approx(-0.02) and fit.slope_hi == pytest.approx(-0.02)


def test_theil_sen_shrugs_off_outliers_that_break_least_squares():
    rng = random.Random(3)
    xs = [float(i) for i in range(100)]
    ys = [90 - 0.05 * x + rng.gauss(0, 0.3) for x in xs]
    for i in range(0, 100, 9):  # 12 % wild values: 0 and 30-point jumps
        ys[i] = 0.0 if i % 2 else ys[i] + 30
    fit = theil_sen(xs, ys)
    assert fit is not None and fit.slope == pytest.approx(-0.05, abs=0.01)
    assert fit.slope_lo <= fit.slope <= fit.slope_hi


def test_slope_interval_covers_the_true_slope_most_of_the_time():
    covered = 0
    for seed in range(40):
        rng = random.Random(seed)
        xs = [float(i) for i in range(60)]
        ys = [85 - 0.01 * x + rng.gauss(0, 0.5) for x in xs]
        fit = theil_sen(xs, ys)
        assert fit is not None
        covered += fit.slope_lo <= -0.01 <= fit.slope_hi
    assert covered >= 34  # a 95 % interval: about 38 of 40


def test_too_few_points_or_no_spread_is_no_fit():
    assert theil_sen([1.0, 2.0], [3.0, 4.0]) is None
    assert theil_sen([1.0, 1.0, 1.0], [3.0, 4.0, 5.0]) is None


def test_fit_cost_is_bounded():
    xs = [float(i) for i in range(5000)]
    fit = theil_sen(xs, [80 - 0.001 * x for x in xs])
    assert fit is not None and fit.n == MAX_FIT_POINTS
    assert fit.slope == pytest.approx(-0.001)


def test_crossing_and_its_band():
    xs = [float(i) for i in range(100)]
    rng = random.Random(1)
    fit = theil_sen(xs, [90 - 0.1 * x + rng.gauss(0, 0.5) for x in xs])
    assert fit is not None
    central, earliest, latest = crossing(fit, 80.0)
    assert central is not None and earliest is not None and latest is not None
    assert earliest <= central <= latest
    assert central == pytest.approx(100, abs=5)


def test_a_flat_or_rising_trend_never_crosses():
    xs = [float(i) for i in range(30)]
    fit = theil_sen(xs, [85.0 + 0.01 * x for x in xs])
    assert fit is not None
    assert crossing(fit, 80.0) == (None, None, None)


def daily_history(days: int, rate_per_year: float = 5.0, per_day: int = 3) -> SohHistory:
    h = SohHistory()
    for d in range(days):
        soh = 95 - rate_per_year * d / 365.25
        for k in range(per_day):
            h.add(T0 + d * DAY + k * 3600, round(soh, 1))
        h.add_odometer(T0 + d * DAY, 40.0 * d)
    return h


def test_history_stays_bounded_over_fifteen_years():
    h = daily_history(15 * 365, per_day=1)
    levels = Counter(p.level for p in h.points)
    assert len(h.points) < 120 + 730 // 7 + 15 * 365 // 28
    assert levels[0] <= 120 + 7 and levels[1] <= 730 // 7 + 4 and levels[2] > 0
    ts = [p.t for p in h.points]
    assert ts == sorted(ts)


def test_history_gives_rates_against_time_and_odometer():
    h = daily_history(400)
    by_time, by_km = soh_trend(h, 60)
    assert by_time is not None and by_km is not None
    assert by_time.slope * 365.25 == pytest.approx(-5.0, abs=0.05)
    assert by_km.slope * 10_000 == pytest.approx(-5.0 / 365.25 / 40 * 10_000, abs=0.05)


def test_report_for_pack_health():
    h = daily_history(400)
    now = T0 + 399 * DAY
    report = trend_report(h, {"capacity-80": 80.0}, now, 60)
    assert report["status"] == "ok" and report["rate_per_year"] == pytest.approx(-5.0, abs=0.05)
    lo, hi = report["rate_per_year_band"]
    assert lo <= report["rate_per_year"] <= hi
    f = report["forecasts"][0]
    # 95 % -> 80 % at 5 %/year: three years after T0 (within rounding of SOH to 0.1)
    assert f["date"] in {iso_date(T0 + (3 * 365.25 + k) * DAY) for k in range(-5, 6)}
    assert f["earliest"] <= f["date"] <= f["latest"]
    assert f["days"] == pytest.approx(3 * 365.25 - 399, abs=10)
    json.dumps(report)


def test_report_says_when_history_is_short():
    report = trend_report(daily_history(20), {"capacity-80": 80.0}, T0 + 20 * DAY, 60)
    assert report["status"] == "insufficient_history" and report["points"] == 20


def test_forecast_in_seconds():
    h = daily_history(400)
    fit, _ = soh_trend(h, 60)
    assert fit is not None
    f = forecast(fit, 80.0)
    assert f.time is not None and f.days_from(T0) == pytest.approx(3 * 365.25, abs=5)


def test_repeated_and_old_stamps_are_not_history():
    h = SohHistory()
    h.add(T0, 90.0)
    assert h.add(T0, 10.0) is False and h.add(T0 - DAY, 10.0) is False
    assert [p.value for p in h.series()] == [90.0]


@settings(max_examples=12, deadline=None)
@given(st.integers(1, 900))
def test_state_round_trip_anywhere(cut):
    whole = daily_history(900, per_day=1)
    h = SohHistory()
    for d in range(cut):
        h.add(T0 + d * DAY, round(95 - 5.0 * d / 365.25, 1))
        h.add_odometer(T0 + d * DAY, 40.0 * d)
    again = SohHistory()
    again.load_state(json.loads(json.dumps(h.to_state())))
    for d in range(cut, 900):
        again.add(T0 + d * DAY, round(95 - 5.0 * d / 365.25, 1))
        again.add_odometer(T0 + d * DAY, 40.0 * d)
    assert again.series() == whole.series()
