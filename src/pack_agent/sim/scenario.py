"""Scenarios: what the virtual pack does, day by day, in simulated time."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

from pack_agent.codes import make_code

DAY = 86400.0


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
            out.append(
                DayState(
                    day=day,
                    time=self.start + day * DAY + 8 * 3600,  # the car starts at 08:00
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
                )
            )
        return out


# An invalid GB/T 34014 code, as a counterfeit or re-labelled pack might report it:
# production month "D" does not exist (1-9, A-C) and position 4 is not P/M/C.
FORGED_CODE = "0RJXEA00HAU0AAFD31001955"

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
    ),
    "healthy": Scenario(
        name="healthy",
        description="a young pack that stays well above every line",
        days=400,
        soh_per_year=2.0,
    ),
    "safety-fault": Scenario(
        name="safety-fault",
        description="a healthy pack that reports a thermal event (BMS_Alarms) on day 90",
        days=150,
        soh_per_year=2.5,
        fault_day=90,
        fault="thermal",
    ),
    "insulation-fault": Scenario(
        name="insulation-fault",
        description="a healthy pack whose insulation resistance fails on day 90 (BMS_Alarms)",
        days=150,
        soh_per_year=2.5,
        fault_day=90,
        fault="insulation",
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
        f"({FORGED_CODE}): a forged or re-labelled pack",
        days=120,
        soh_per_year=3.0,
        swap_day=60,
        new_code=FORGED_CODE,
        expect=("pack.identified", "pack.code_invalid"),
    ),
}
