"""The pack as the agent knows it: identity, latest health, freshness of the BMS.

Pure: it takes codes, readings and time, and returns what happened as
``(event type, data)`` pairs; the agent turns them into stored events.

Identity never misattributes (docs/mqtt-api.md, "Pack identity"): ``code`` is the
known pack; while the BMS presents any other code (valid or not) its readings are
not the known pack's (``attributed`` is False). A different code presented in
``replaced_after_trips`` trips in a row (a trip starts at an ignition Off->On, or
with BMS frames after a silence longer than the BMS timeout), the known one never
in between, is a replaced pack; a
different code that does not last is forgotten, and the known pack carries on.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pack_agent.core.codes import CodeReport, check_pack_code, check_serial
from pack_agent.core.events import PLAUSIBLE_SINCE
from pack_agent.core.readings import Reading

Happening = tuple[str, dict[str, Any]]
CODE_WAIT_S = 60.0  # after a wake-up, the longest readings wait for the code
MAX_HELD = 20_000  # readings held while waiting (the oldest go beyond)


def _trusted_date(now: float) -> dt.date | None:
    """The vehicle's date, when its clock is plausible (else no date check)."""
    if now < PLAUSIBLE_SINCE:
        return None
    return dt.datetime.fromtimestamp(now, dt.timezone.utc).date()


def _identity(report: CodeReport) -> dict[str, Any]:
    """What a pack event says about a code: valid or not, why, and its warnings."""
    return {
        "valid": report.valid,
        "errors": list(report.errors),
        "warnings": list(report.warnings),
        "production_date_in_future": any("production date" in w for w in report.warnings),
    }


class PackTracker:
    def __init__(
        self,
        known_code: str | None,
        bms_timeout_s: float,
        max_age: dict[str, float] | None = None,
        replaced_after_trips: int = 2,
        state: dict[str, Any] | None = None,
        code_wait_s: float | None = None,
        ignition_mapped: bool = False,
        code_format: str = "gbt34014",
    ) -> None:
        """``ignition_mapped``: the ignition tells when the vehicle is awake (without it,
        and without any other ECU's frame, silence alone makes ``bms.silent``).
        ``code_format``: ``"serial"`` for a BMS whose identity is a maker's serial (no
        GB/T 34014 validation; identity and swaps work the same)."""
        self.code = known_code
        self._serial = code_format == "serial"
        self._replaced_after = replaced_after_trips
        # after a wake-up, readings wait for the code (None: no code is read, never wait):
        # the BMS may present another pack, whose first readings must not be the known one's
        self._code_wait = code_wait_s
        self._awaiting_since: float | None = None
        self._held: list[Reading] = []
        self.held_dropped = 0
        state = state or {}
        same = state.get("known") == known_code
        # the code the BMS presents now (None: none heard since the known pack was)
        self.presented: str | None = state.get("presented") if same else None
        # a different code on its way to a replacement: code, trips counted, last trip
        self._candidate: dict[str, Any] | None = state.get("candidate") if same else None
        self.ignition_mapped = ignition_mapped
        self.latest: dict[str, Reading] = {}
        self._timeout = bms_timeout_s
        self._max_age = max_age or {}  # per metric, for polled (UDS) metrics
        self._silent_sources: set[str] = set()
        self._last_frame: float | None = None
        # the newest frame of another ECU on the bus (the ignition, the head unit...):
        # proof that the vehicle is awake while the BMS says nothing
        self._last_other: float | None = None
        self._longest_age = max([bms_timeout_s, *self._max_age.values()])
        self._silent = False
        self._last_invalid: str | None = None
        # the first mapped frame after a silence of more than the timeout (a wake-up), and
        # the last time a code was confirmed (the same, a new or an invalid one)
        self.awake_since: float | None = None
        self.code_heard_at: float | None = None
        self.trip_started: float | None = None  # the current trip's start (this life)

    def to_state(self) -> dict[str, Any]:
        """What must survive a restart: the code presented and a replacement on its way."""
        return {"known": self.code, "presented": self.presented, "candidate": self._candidate}

    @property
    def attributed(self) -> bool:
        """Readings now are the known pack's: the BMS presents its code (or none yet)."""
        return self.presented is None or self.presented == self.code

    def on_code(self, text: str, now: float) -> list[Happening]:
        """A confirmed code from the BMS: the known pack, a first pack, another code (not
        yet a replacement), a replacement, or not a valid pack code (reported once each
        time it differs from the last invalid one)."""
        self.code_heard_at = now
        self._awaiting_since = None
        report = check_serial(text) if self._serial else check_pack_code(text, _trusted_date(now))
        out: list[Happening] = []
        if not report.valid:
            if text != self._last_invalid:
                self._last_invalid = text
                out.append(("pack.code_invalid", {"raw": text, **_identity(report)}))
        else:
            self._last_invalid = None
        self.presented = text
        if text == self.code:
            self._candidate = None  # a different code that did not last: forgotten
            return out
        if self.code is None and report.valid:
            return out + self._adopt(text, report)
        if self.trip_started is None:
            self.trip_started = now  # this life's first trip
        trip = self.trip_started
        cand = self._candidate
        if cand is None or cand["code"] != text:
            cand = {"code": text, "trips": 0, "trip": None}
        if cand["trip"] != trip:
            cand["trips"] += 1
            cand["trip"] = trip
        self._candidate = cand
        if cand["trips"] >= self._replaced_after:
            return out + self._adopt(text, report)
        return out

    def _adopt(self, text: str, report: CodeReport) -> list[Happening]:
        fields = report.fields.to_dict() if report.fields is not None else None
        previous, self.code = self.code, text
        self._candidate = None
        self.latest.clear()
        data = {"pack_code": text, **_identity(report), "fields": fields}
        if previous is None:
            return [("pack.identified", data)]
        return [("pack.replaced", {"previous_code": previous, **data})]

    def on_reading(self, reading: Reading) -> list[Happening]:
        """Liveness from any reading; the reading is the known pack's only if its code is
        the one presented (``attributed``) and no wake-up waits for the code."""
        out = self.on_frame(reading.time)
        if self.attributed and self._awaiting_since is None:
            self.latest[reading.metric] = reading
        return out

    def awaiting_code(self, now: float) -> bool:
        """A wake-up, and no code confirmed since (for at most ``code_wait_s``): whose the
        readings are is not known yet, so they are held (``hold``)."""
        since = self._awaiting_since
        return since is not None and self._code_wait is not None and now - since <= self._code_wait

    def hold(self, reading: Reading) -> None:
        self._held.append(reading)
        if len(self._held) > MAX_HELD:
            del self._held[0]
            self.held_dropped += 1

    def release(self, now: float, code_heard: bool = False) -> list[Reading]:
        """The held readings, once the code is confirmed (``code_heard``) or the wait is
        over (no code came: nothing says another pack is there). Those the agent may
        attribute go into ``latest`` too."""
        if not self._held or (not code_heard and self.awaiting_code(now)):
            return []
        self._awaiting_since = None
        out, self._held = self._held, []
        if self.attributed:
            for r in out:
                self.latest[r.metric] = r
        return out

    def on_trip_start(self, now: float) -> None:
        """An ignition Off->On: a new trip (for counting a different code's trips)."""
        self.trip_started = now

    def on_frame(self, now: float) -> list[Happening]:
        """Any mapped BMS frame proves the BMS is alive."""
        if self._last_frame is None or now - self._last_frame > self._timeout:
            self.awake_since = now
            self.trip_started = now
            if self._code_wait is not None and self.code is not None:
                self._awaiting_since = now  # (no known pack: nothing to misattribute)
        self._last_frame = now if self._last_frame is None else max(self._last_frame, now)
        if self._silent:
            self._silent = False
            return [("bms.recovered", {"pack_code": self.code})]
        return []

    def on_other_frame(self, now: float) -> None:
        """A frame of another ECU (the ignition's, the head unit's): the vehicle is awake."""
        self._last_other = now if self._last_other is None else max(self._last_other, now)

    def on_vehicle_reading(self, reading: Reading, on_bms_bus: bool = True) -> None:
        """A reading from another ECU (the ignition, the odometer): kept for the health
        sample, and (on the BMS's bus) proof that the vehicle is awake; it says nothing of
        the BMS."""
        self.latest[reading.metric] = reading
        if on_bms_bus:
            self.on_other_frame(reading.time)

    def rebase(self, now: float) -> None:
        """A clock step back was adopted: what was stamped after ``now`` came from the
        abandoned time line (it would look fresh for years, and the BMS never silent)."""
        if self._last_frame is not None and self._last_frame > now:
            self._last_frame = now
        if self._last_other is not None and self._last_other > now:
            self._last_other = now
        if self.awake_since is not None and self.awake_since > now:
            self.awake_since = now
        if self.trip_started is not None and self.trip_started > now:
            self.trip_started = now
        if self.code_heard_at is not None and self.code_heard_at > now:
            self.code_heard_at = None
        self.latest = {m: r for m, r in self.latest.items() if r.time <= now}

    def check_silence(self, now: float, ignition: bool | None = None) -> list[Happening]:
        """``bms.silent`` once when the BMS stopped while the vehicle is awake. ``ignition``
        is the ignition's state now (None: not mapped, or its frame is overdue)."""
        if self._silent or self._last_frame is None:
            return []
        if now - self._last_frame > self._timeout and self.vehicle_awake(now, ignition):
            self._silent = True
            return [
                (
                    "bms.silent",
                    {"pack_code": self.code, "silent_for_s": round(now - self._last_frame, 3)},
                )
            ]
        return []

    def on_source_answer(self, source: str, now: float) -> list[Happening]:
        """A polled source (``uds:soh``) answered, even negatively: the BMS is there."""
        if source in self._silent_sources:
            self._silent_sources.discard(source)
            return [("bms.recovered", {"pack_code": self.code, "source": source})]
        return []

    def on_source_failure(self, source: str, now: float, detail: str) -> list[Happening]:
        """A polled source gave no answer after every retry: ``bms.silent`` once."""
        if source in self._silent_sources:
            return []
        self._silent_sources.add(source)
        return [("bms.silent", {"pack_code": self.code, "source": source, "detail": detail})]

    def vehicle_awake(self, now: float, ignition: bool | None) -> bool:
        """Whether the BMS should be speaking: the ignition is On; or, while its state is
        unknown, other frames still flow on the bus longer than the timeout after the
        BMS's last one. A car that parks (everything stops together, or the ignition
        goes Off first) is asleep, not a silent BMS. With no ignition mapped and no other
        frame ever heard nothing tells the two apart: silence alone counts (as before)."""
        if ignition is not None:
            return ignition
        other, last = self._last_other, self._last_frame
        if other is None:
            return not self.ignition_mapped
        assert last is not None
        return now - other <= self._timeout and other - last > self._timeout

    @property
    def bms_silent(self) -> bool:
        return self._silent

    def max_age(self, metric: str) -> float:
        return self._max_age.get(metric, self._timeout)

    def is_stale(self, reading: Reading, now: float) -> bool:
        """Judged by the reading's own time: older than its metric's max age, or from the
        future beyond the same margin (a clock jump), it must not feed a decision."""
        return abs(now - reading.time) > self.max_age(reading.metric)

    def fresh(self, metric: str, now: float) -> Reading | None:
        """The latest reading of ``metric`` unless it is older than the BMS timeout."""
        r = self.latest.get(metric)
        if r is None or now - r.time > self.max_age(metric):
            return None
        return r

    @property
    def last_frame(self) -> float | None:
        """The newest mapped frame's time (readings and code pages)."""
        return self._last_frame

    def heard_lately(self, now: float) -> bool:
        """Whether any reading can still be fresh: O(1), for a tick while the car is parked
        (no reading turns fresh again without a new one)."""
        return self._last_frame is not None and now - self._last_frame <= self._longest_age

    def health_snapshot(self, now: float) -> dict[str, Any]:
        values = {
            m: r.value for m, r in sorted(self.latest.items()) if now - r.time <= self.max_age(m)
        }
        return {"pack_code": self.code, "metrics": values}
