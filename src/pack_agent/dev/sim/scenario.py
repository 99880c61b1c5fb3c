"""Scenarios: what the virtual pack does, day by day, in simulated time."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

from pack_agent.core.codes import make_code

DAY = 86400.0
HOUR = 3600.0
# Two trips a day (seconds after midnight, UTC): ignition On, then Off, as VCU_Ignition
# shows it. The agent sees an Off->On at each trip's start.
COMMUTE: tuple[tuple[float, float], ...] = (
    (8 * HOUR, 8 * HOUR + 40 * 60),
    (17.5 * HOUR, 18 * HOUR + 10 * 60),
)


@dataclass(frozen=True)
class DayState:
    """What the BMS and VCU report on one simulated day."""

    day: int
    time: float
    code: str
    soh: float
    capacity_ah: float
    resistance_mohm: float
    full_cycles: int
    odometer_km: float
    soc: float
    fault: str | None = None  # None, "thermal" or "insulation": what BMS_Alarms reports
    trips: tuple[tuple[float, float], ...] = ()  # (ignition On, ignition Off), absolute times
    fault_from: float | None = None  # ``fault`` is reported from this time on (None: all day)
    glitch: tuple[float, str] | None = None  # (time, fault): one stray alarm frame, then clean
    stop_after_fault_s: float = 60.0  # the driver stops (ignition Acc) this long after the alarm

    def faulty(self, t: float) -> bool:
        """True when BMS_Alarms reports ``fault`` at time ``t``."""
        return self.fault is not None and (self.fault_from is None or t >= self.fault_from)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    days: int
    start: float = field(
        default_factory=lambda: datetime(2026, 4, 1, tzinfo=timezone.utc).timestamp()
    )
    code: str = make_code("0RJ", "P", "E", "A0", "0HAU0AA", date(2026, 3, 2), 1955)
    new_code: str = make_code("0RJ", "P", "E", "A0", "0HAU0AA", date(2028, 8, 20), 4242)
    soh_start: float = 96.0
    soh_per_year: float = 5.2
    soh_noise: float = 0.35
    swap_day: int | None = None
    seed: int = 7
    rated_capacity_ah: float = 150.0
    fault_day: int | None = None  # from this day on the BMS reports ``fault``
    fault: str | None = None  # "thermal" (thermal event) or "insulation" (insulation failure)
    expect: tuple[str, ...] = ("pack.identified",)  # events a correct agent publishes
    trips: tuple[tuple[float, float], ...] = COMMUTE  # every day's trips (time of day)
    fault_at_s: float = 8 * HOUR + 20 * 60  # the alarm starts 20 minutes into the fault day
    fault_watch_s: float = 3.5 * HOUR  # then the car stands (Acc) this long, then Off, towed
    glitch_day: int | None = None  # one stray alarm frame (a single reading) on this day
    # the head unit's answers to each notice's showings (None: not answered), and how long
    # after a showing the owner taps the answer
    answers: tuple[str | None, ...] = (None, "seen", "service_booked")
    answer_delay_s: float = 180.0
    expect_ignition_repeat: bool = False  # the story shows a repeat at an ignition Off->On

    def states(self) -> list[DayState]:
        """Every day of the scenario, deterministic for a given seed."""
        rng = random.Random(self.seed)
        out = []
        swapped_at = None
        for day in range(self.days):
            if self.swap_day is not None and day >= self.swap_day and swapped_at is None:
                swapped_at = day
            age_days = day - (swapped_at or 0)
            code = self.new_code if swapped_at is not None else self.code
            start = 99.0 if swapped_at is not None else self.soh_start
            # capacity fade: faster at first (SEI growth), then roughly linear
            years = age_days / 365.0
            fade = self.soh_per_year * (years + 0.6 * (1 - math.exp(-years * 3)))
            soh = max(0.0, min(100.0, start - fade + rng.gauss(0, self.soh_noise)))
            midnight = self.start + day * DAY
            trips = tuple((midnight + on, midnight + off) for on, off in self.trips)
            fault_from = None
            if self.fault is not None and day == self.fault_day:
                fault_from = midnight + self.fault_at_s
                # the driver stops; the car stands with the alarm on, then is towed
                trips = ((trips[0][0], fault_from + self.fault_watch_s),)
            glitch = None
            if self.fault is not None and day == self.glitch_day:
                glitch = (midnight + self.fault_at_s, self.fault)
            out.append(
                DayState(
                    day=day,
                    time=trips[0][0] if trips else midnight + 8 * HOUR,  # the first trip
                    code=code,
                    soh=round(soh, 1),
                    capacity_ah=round(self.rated_capacity_ah * soh / 100, 1),
                    resistance_mohm=round(62.0 * (1 + 0.004 * age_days / 30), 1),
                    full_cycles=int(age_days * 0.45),
                    odometer_km=round(day * 48.3, 1),
                    soc=round(55 + 35 * math.sin(day), 1),
                    fault=self.fault
                    if self.fault_day is not None and day >= self.fault_day
                    else None,
                    trips=trips,
                    fault_from=fault_from,
                    glitch=glitch,
                )
            )
        return out


# An invalid GB/T 34014 code, as a counterfeit or re-labelled pack might report it:
# production month "D" does not exist (1-9, A-C) and position 4 is not P/M/C.
FORGED_CODE = "0RJXEA00HAU0AAFD31001955"

# A safety fault: the decision, the critical notice on the head unit and the owner's answer.
SAFETY_STORY = (
    "pack.identified",
    "scrap.condition_met",
    "owner.notified",
    "owner.acknowledged",
)

SCENARIOS: dict[str, Scenario] = {
    "ageing": Scenario(
        name="ageing",
        description="a pack that ages to its 80 % line in about three years, "
        "then is replaced by a new one",
        days=1000,
        swap_day=960,
        expect=(
            "pack.identified",
            "scrap.condition_met",
            "owner.notified",
            "owner.acknowledged",
            "pack.replaced",
        ),
        expect_ignition_repeat=True,
    ),
    "healthy": Scenario(
        name="healthy",
        description="a young pack that stays well above every line",
        days=400,
        soh_per_year=2.0,
    ),
    "safety-fault": Scenario(
        name="safety-fault",
        description="a healthy pack: one stray alarm frame on day 60 (no decision), then a "
        "thermal event (BMS_Alarms) on day 90 at 08:20; the driver stops, the car is towed",
        days=91,
        soh_per_year=2.5,
        glitch_day=60,
        fault_day=90,
        fault="thermal",
        expect=SAFETY_STORY,
    ),
    "insulation-fault": Scenario(
        name="insulation-fault",
        description="a healthy pack: one stray alarm frame on day 60 (no decision), then its "
        "insulation resistance fails on day 90 at 08:20 (BMS_Alarms); the car is towed",
        days=91,
        soh_per_year=2.5,
        glitch_day=60,
        fault_day=90,
        fault="insulation",
        expect=SAFETY_STORY,
    ),
    "pack-swap": Scenario(
        name="pack-swap",
        description="a pack replaced by another one at a swap station on day 120",
        days=240,
        soh_per_year=3.0,
        swap_day=120,
        expect=("pack.identified", "pack.replaced"),
    ),
    "forged-code": Scenario(
        name="forged-code",
        description="on day 60 the BMS starts reporting an invalid GB/T 34014 code "
        f"({FORGED_CODE}): a forged or re-labelled pack, a replacement once it lasts",
        days=120,
        soh_per_year=3.0,
        swap_day=60,
        new_code=FORGED_CODE,
        expect=("pack.identified", "pack.code_invalid", "pack.replaced"),
    ),
}
