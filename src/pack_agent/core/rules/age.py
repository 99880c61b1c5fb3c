"""Pack age from the production date in the GB/T 34014 code."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pack_agent.config.rules import AgeRule
from pack_agent.core.codes import check_code
from pack_agent.core.events import iso_time, utc_from_timestamp
from pack_agent.core.readings import Reading
from pack_agent.core.rules.base import Evidence, RuleEngine, Stream
from pack_agent.core.trend import DAY, YEAR_DAYS


class AgeEngine(RuleEngine):
    """Pack age from the code's production date, held for ``confirm_days`` of readings
    (a clock that jumps forward once is not an old pack). Sees every reading: any
    reading is a time at which the pack is that old."""

    def __init__(self, rule: AgeRule) -> None:
        self.rule = rule
        self.stream = Stream()
        self.bad_since: float | None = None
        self.seen = 0
        self._code: str | None = None
        self._made: float | None = None

    def _production(self, code: str) -> float | None:
        if code != self._code:
            self._code, self._made = code, None
            report = check_code(code)
            if report.fields is not None:
                d = report.fields.production_date
                self._made = dt.datetime(d.year, d.month, d.day, tzinfo=dt.timezone.utc).timestamp()
        return self._made

    def observe(self, r: Reading, code: str | None) -> Evidence | None:
        if code is None or not self.stream.fresh(r.time):
            return None
        made = self._production(code)
        if made is None:
            return None
        age = (r.time - made) / DAY / YEAR_DAYS
        if age < self.rule.threshold:
            self.bad_since, self.seen = None, 0
            return None
        if self.bad_since is None:
            self.bad_since = r.time
        self.seen += 1
        if self.seen < 2 or r.time - self.bad_since < self.rule.confirm_days * DAY:
            return None
        return {
            "metric": "pack_age_years",
            "comparison": "at_least",
            "threshold": self.rule.threshold,
            "statistic": {"age_years": round(age, 3)},
            "production_date": utc_from_timestamp(made).date().isoformat(),
            "sample_count": self.seen,
            "first_reading_time": iso_time(self.bad_since),
            "last_reading_time": iso_time(r.time),
        }

    def to_state(self) -> dict[str, Any]:
        return {"last": self.stream.last, "bad_since": self.bad_since, "seen": self.seen}

    def load_state(self, s: dict[str, Any]) -> None:
        self.stream.last = s.get("last")
        self.bad_since = s.get("bad_since")
        self.seen = int(s.get("seen", 0))
