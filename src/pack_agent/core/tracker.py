"""The pack as the agent knows it: identity, latest health, freshness of the BMS.

Pure: it takes codes, readings and time, and returns what happened as
``(event type, data)`` pairs; the agent turns them into stored events.
"""

from __future__ import annotations

from typing import Any

from pack_agent.core.codes import check_code
from pack_agent.core.readings import Reading

Happening = tuple[str, dict[str, Any]]


class PackTracker:
    def __init__(
        self,
        known_code: str | None,
        bms_timeout_s: float,
        max_age: dict[str, float] | None = None,
        ignition_mapped: bool = False,
    ) -> None:
        """``ignition_mapped``: the ignition tells when the vehicle is awake (without it,
        and without any other ECU's frame, silence alone makes ``bms.silent``)."""
        self.code = known_code
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

    def on_code(self, text: str, now: float) -> list[Happening]:
        """A confirmed code from the BMS: new, the same, a different pack, or not a valid code."""
        self.code_heard_at = now
        report = check_code(text)
        if not report.valid:
            if text == self._last_invalid:
                return []
            self._last_invalid = text
            return [("pack.code_invalid", {"raw": text, "errors": list(report.errors)})]
        self._last_invalid = None
        if text == self.code:
            return []
        fields = report.fields.to_dict() if report.fields is not None else {}
        previous, self.code = self.code, text
        self.latest.clear()
        if previous is None:
            return [("pack.identified", {"pack_code": text, "fields": fields})]
        return [("pack.replaced", {"previous_code": previous, "pack_code": text, "fields": fields})]

    def on_reading(self, reading: Reading) -> list[Happening]:
        self.latest[reading.metric] = reading
        return self.on_frame(reading.time)

    def on_frame(self, now: float) -> list[Happening]:
        """Any mapped BMS frame proves the BMS is alive."""
        if self._last_frame is None or now - self._last_frame > self._timeout:
            self.awake_since = now
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
