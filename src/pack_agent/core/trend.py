"""SOH history and forecast: compact per-pack history, a robust fit, crossing dates.

Pure and clock-free: time is the readings' own time stamps, so a replayed log
gives the same figures. Cost is bounded: the history keeps daily points for
``daily_days``, then 7-day points, then 28-day points (a 15-year-old pack is
a few hundred points), and the fit uses at most ``MAX_FIT_POINTS`` of them.

The fit is Theil–Sen (the median of pairwise slopes, Sen 1968), with Sen's
distribution-free confidence interval for the slope: one outlier day, or a
run of wrong SOH estimates, moves it little. The forecast band comes from
that interval, pivoting on the centre of the data.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from pack_agent.core.events import iso_date

DAY = 86400.0
YEAR_DAYS = 365.25
MAX_FIT_POINTS = 120  # Theil–Sen is O(n^2): 120 points are 7,140 pairs
Z95 = 1.959964
_KEY_CAP = 512  # distinct values kept for one day's median before coarser rounding


def day_of(t: float) -> int:
    """The UTC day number of a time stamp."""
    return int(t // DAY)


class DayAccumulator:
    """One day's readings as a histogram: an exact median in bounded memory
    (CAN signals are quantised, so a day has few distinct values)."""

    def __init__(self, day: int) -> None:
        self.day = day
        self.values: Counter[float] = Counter()
        self.n = 0
        self.first: float | None = None
        self.last: float | None = None

    def add(self, value: float, t: float) -> None:
        key = round(value, 3)
        if key not in self.values and len(self.values) >= _KEY_CAP:
            key = round(value, 1)
        self.values[key] += 1
        self.n += 1
        self.first = t if self.first is None else min(self.first, t)
        self.last = t if self.last is None else max(self.last, t)

    def median(self) -> float:
        return histogram_median(self.values)

    def to_state(self) -> dict[str, Any]:
        return {
            "day": self.day,
            "values": [[k, c] for k, c in sorted(self.values.items())],
            "first": self.first,
            "last": self.last,
        }

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> DayAccumulator:
        acc = cls(int(s["day"]))
        for k, c in s["values"]:
            acc.values[float(k)] += int(c)
        acc.n = sum(acc.values.values())
        acc.first, acc.last = s.get("first"), s.get("last")
        return acc


def histogram_median(values: Counter[float]) -> float:
    n = sum(values.values())
    if n == 0:
        raise ValueError("median of nothing")
    lo_rank, hi_rank = (n - 1) // 2, n // 2
    lo = hi = None
    seen = 0
    for v in sorted(values):
        seen += values[v]
        if lo is None and seen > lo_rank:
            lo = v
        if seen > hi_rank:
            hi = v
            break
    assert lo is not None and hi is not None
    return (lo + hi) / 2


def median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


@dataclass
class HistoryPoint:
    """One aggregate: ``level`` 0 a day, 1 seven days, 2 twenty-eight days."""

    level: int
    key: int  # day, day // 7 or day // 28
    t: float  # representative time (median of the members' times)
    value: float  # median SOH
    n: int  # readings behind it
    odometer: float | None = None


_SPAN = (1, 7, 28)


class SohHistory:
    """Bounded SOH (and odometer) history of one pack."""

    def __init__(self, daily_days: int = 120, weekly_days: int = 730) -> None:
        self.daily_days = daily_days
        self.weekly_days = weekly_days
        self.points: list[HistoryPoint] = []
        self.today: DayAccumulator | None = None
        self.today_odometer: float | None = None
        self.last_time: float | None = None
        self._odo: tuple[int, float] | None = None  # (day, km): the latest odometer

    def add(self, t: float, value: float) -> bool:
        """One judged SOH reading. Returns True when it closed a day (a new point)."""
        if self.last_time is not None and t <= self.last_time:
            return False  # repeated or out-of-order: not new evidence
        self.last_time = t
        closed = False
        day = day_of(t)
        if self.today is not None and day != self.today.day:
            self._close()
            closed = True
        if self.today is None:
            self.today = DayAccumulator(day)
            if self._odo is not None and self._odo[0] == day:
                self.today_odometer = self._odo[1]
        self.today.add(value, t)
        return closed

    def add_odometer(self, t: float, km: float) -> None:
        """The odometer of the day (the highest seen), also when it comes before SOH."""
        day = day_of(t)
        if self._odo is None or day != self._odo[0] or km > self._odo[1]:
            self._odo = (day, km)
        if self.today is not None and day == self.today.day:
            self.today_odometer = max(km, self.today_odometer or km)

    def _today_point(self) -> HistoryPoint | None:
        acc = self.today
        if acc is None or acc.first is None or acc.last is None:
            return None
        t = (acc.first + acc.last) / 2
        return HistoryPoint(0, acc.day, t, acc.median(), acc.n, self.today_odometer)

    def _close(self) -> None:
        point = self._today_point()
        assert point is not None
        self.points.append(point)
        self.today, self.today_odometer = None, None
        self._compact(point.key)

    def _compact(self, newest_day: int) -> None:
        for level, keep_days in ((0, self.daily_days), (1, self.weekly_days)):
            span = _SPAN[level + 1]
            cutoff = newest_day - keep_days
            groups: dict[int, list[HistoryPoint]] = {}
            for p in self.points:
                if p.level != level:
                    continue
                first_day = p.key * _SPAN[level]
                bucket = first_day // span
                if (bucket + 1) * span - 1 < cutoff:  # the whole bucket is old
                    groups.setdefault(bucket, []).append(p)
            if not groups:
                continue
            merged = [_merge(level + 1, b, ps) for b, ps in groups.items()]
            gone = {id(p) for ps in groups.values() for p in ps}
            self.points = sorted(
                [p for p in self.points if id(p) not in gone] + merged, key=lambda p: p.t
            )

    def series(self) -> list[HistoryPoint]:
        """Closed points plus today's partial day, oldest first."""
        today = self._today_point()
        return [*self.points, today] if today is not None else list(self.points)

    def drop_after(self, t: float) -> None:
        """A clock step back was adopted: points stamped after ``t`` came from a clock
        that was wrong and are dropped (a day that straddles ``t`` goes with them)."""
        self.points = [p for p in self.points if p.t <= t]
        if self.today is not None and (self.today.last is None or self.today.last > t):
            self.today, self.today_odometer = None, None
        if self.last_time is not None and self.last_time > t:
            self.last_time = t
        if self._odo is not None and self._odo[0] > day_of(t):
            self._odo = None

    def to_state(self) -> dict[str, Any]:
        return {
            "points": [[p.level, p.key, p.t, p.value, p.n, p.odometer] for p in self.points],
            "today": self.today.to_state() if self.today else None,
            "today_odometer": self.today_odometer,
            "last_time": self.last_time,
            "odo": list(self._odo) if self._odo else None,
        }

    def load_state(self, s: dict[str, Any]) -> None:
        self.points = [
            HistoryPoint(int(a), int(b), c, d, int(e), f)
            for a, b, c, d, e, f in s.get("points", [])
        ]
        today = s.get("today")
        self.today = DayAccumulator.from_state(today) if today else None
        self.today_odometer = s.get("today_odometer")
        self.last_time = s.get("last_time")
        odo = s.get("odo")
        self._odo = (int(odo[0]), float(odo[1])) if odo else None


def _merge(level: int, key: int, ps: list[HistoryPoint]) -> HistoryPoint:
    odos = [p.odometer for p in ps if p.odometer is not None]
    return HistoryPoint(
        level,
        key,
        median([p.t for p in ps]),
        median([p.value for p in ps]),
        sum(p.n for p in ps),
        median(odos) if odos else None,
    )


@dataclass(frozen=True)
class Fit:
    """A robust line y = intercept + slope * x, with Sen's 95 % slope interval."""

    slope: float
    intercept: float
    slope_lo: float
    slope_hi: float
    n: int
    x_centre: float
    y_centre: float

    def at(self, x: float) -> float:
        return self.intercept + self.slope * x


def theil_sen(xs: list[float], ys: list[float]) -> Fit | None:
    """Theil–Sen fit; None with fewer than 3 points or no spread in x."""
    pts = sorted(zip(xs, ys, strict=True))
    if len(pts) > MAX_FIT_POINTS:  # evenly thinned: bounded cost, deterministic
        step = (len(pts) - 1) / (MAX_FIT_POINTS - 1)
        pts = [pts[round(i * step)] for i in range(MAX_FIT_POINTS)]
    n = len(pts)
    if n < 3:
        return None
    xs_, ys_ = [p[0] for p in pts], [p[1] for p in pts]
    slopes: list[float] = []
    for i in range(n):
        xi, yi = xs_[i], ys_[i]
        slopes += [(ys_[j] - yi) / (xs_[j] - xi) for j in range(i + 1, n) if xs_[j] > xi]
    if not slopes:
        return None
    slopes.sort()
    m = len(slopes)
    slope = slopes[m // 2] if m % 2 else (slopes[m // 2 - 1] + slopes[m // 2]) / 2
    intercept = median([y - slope * x for x, y in pts])
    c = Z95 * math.sqrt(n * (n - 1) * (2 * n + 5) / 18)
    lo_rank = max(0, min(m - 1, math.floor((m - c) / 2)))
    hi_rank = max(0, min(m - 1, math.ceil((m + c) / 2)))
    x_c = median([x for x, _ in pts])
    return Fit(slope, intercept, slopes[lo_rank], slopes[hi_rank], n, x_c, intercept + slope * x_c)


def crossing(fit: Fit, threshold: float) -> tuple[float | None, float | None, float | None]:
    """x where the line reaches ``threshold`` going down: (central, earliest, latest).
    None where the slope (or that edge of its interval) does not decline."""

    def through_centre(slope: float) -> float | None:
        if slope >= 0:
            return None
        return fit.x_centre + (threshold - fit.y_centre) / slope

    central = None if fit.slope >= 0 else (threshold - fit.intercept) / fit.slope
    # the steepest decline crosses first, the shallowest last (or never)
    a, b = through_centre(fit.slope_lo), through_centre(fit.slope_hi)
    known = [x for x in (a, b) if x is not None]
    earliest = min(known) if known else None
    latest = None if b is None or a is None else max(a, b)
    return central, earliest, latest


@dataclass(frozen=True)
class Forecast:
    """When the trend reaches a threshold, as time stamps (None: not in sight)."""

    threshold: float
    time: float | None
    earliest: float | None
    latest: float | None

    def days_from(self, now: float) -> float | None:
        return None if self.time is None else (self.time - now) / DAY


def soh_trend(history: SohHistory, min_days: float) -> tuple[Fit | None, Fit | None]:
    """(SOH per day against time, SOH per km against odometer), or None where too short."""
    pts = history.series()
    if len(pts) < 3 or (pts[-1].t - pts[0].t) / DAY < min_days:
        return None, None
    by_time = theil_sen([p.t / DAY for p in pts], [p.value for p in pts])
    odo = [p for p in pts if p.odometer is not None]
    by_km = None
    if len(odo) >= 3 and odo[-1].odometer != odo[0].odometer:
        by_km = theil_sen([p.odometer for p in odo], [p.value for p in odo])  # type: ignore[misc]
    return by_time, by_km


def forecast(fit: Fit, threshold: float) -> Forecast:
    central, earliest, latest = crossing(fit, threshold)
    return Forecast(
        threshold,
        None if central is None else central * DAY,
        None if earliest is None else earliest * DAY,
        None if latest is None else latest * DAY,
    )


def trend_report(
    history: SohHistory, thresholds: dict[str, float], now: float, min_days: float
) -> dict[str, Any]:
    """What ``pack.health`` carries: rates, level and a forecast per capacity rule."""
    pts = history.series()
    span = (pts[-1].t - pts[0].t) / DAY if pts else 0.0
    out: dict[str, Any] = {"points": len(pts), "span_days": round(span, 1)}
    by_time, by_km = soh_trend(history, min_days)
    if by_time is None:
        out["status"] = "insufficient_history"
        return out
    out["status"] = "ok"
    out["level"] = round(by_time.at(now / DAY), 2)
    out["rate_per_year"] = round(by_time.slope * YEAR_DAYS, 3)
    out["rate_per_year_band"] = [
        round(by_time.slope_lo * YEAR_DAYS, 3),
        round(by_time.slope_hi * YEAR_DAYS, 3),
    ]
    if by_km is not None:
        out["rate_per_10000km"] = round(by_km.slope * 10_000, 3)
        out["rate_per_10000km_band"] = [
            round(by_km.slope_lo * 10_000, 3),
            round(by_km.slope_hi * 10_000, 3),
        ]
    forecasts = []
    for rule_id, threshold in thresholds.items():
        f = forecast(by_time, threshold)
        forecasts.append(
            {
                "rule_id": rule_id,
                "threshold": threshold,
                "date": iso_date(f.time),
                "earliest": iso_date(f.earliest),
                "latest": iso_date(f.latest),
                "days": None if f.time is None else round(f.days_from(now) or 0.0, 1),
            }
        )
    out["forecasts"] = forecasts
    return out
