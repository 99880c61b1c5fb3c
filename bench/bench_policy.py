"""Cost of the scrapping policy and the SOH trend, as ratios against baselines run in the
same process (the machine is shared and noisy).

- per-reading cost of the reference rules (capacity window, resistance, usage, age,
  safety, forecast) against the original one-rule ``consecutive`` policy;
- one Theil–Sen fit at its bound (120 points) against sorting the same number of
  floats it has to sort (7,140);
- the persisted policy state after 15 years of daily history, in bytes.

    PYTHONPATH=src python bench/bench_policy.py [--readings 20000]
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from datetime import datetime, timezone

from pack_agent.config import load_config, reference_config_path
from pack_agent.config.rules import ConsecutiveRule
from pack_agent.core.policy import ScrapPolicy
from pack_agent.core.readings import Reading
from pack_agent.core.trend import MAX_FIT_POINTS, theil_sen

DAY = 86400.0
T0 = datetime(2027, 1, 1, tzinfo=timezone.utc).timestamp()
CODE = "0RJPEA00HAU0AAG320001955"


def readings(n: int) -> list[Reading]:
    """1 Hz: SOH, resistance, cycles, an alarm flag and the ignition, as a BMS sends them."""
    rng = random.Random(1)
    out = []
    for i in range(n):
        t = T0 + i
        out += [
            Reading("soh", round(90 + rng.gauss(0, 0.3), 1), t),
            Reading("internal_resistance", 62.0, t + 0.01),
            Reading("full_cycles", 400.0, t + 0.02),
            Reading("thermal_event", 0.0, t + 0.03),
            Reading("ignition", 2.0, t + 0.04),
        ]
    return out


def per_reading(policy: ScrapPolicy, rs: list[Reading]) -> float:
    start = time.perf_counter()
    for r in rs:
        policy.observe(r, CODE)
    return (time.perf_counter() - start) / len(rs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--readings", type=int, default=20_000, help="seconds of 1 Hz readings per policy"
    )
    args = ap.parse_args()
    cfg = load_config(reference_config_path())
    rs = readings(args.readings)
    one = ConsecutiveRule(id="c", below=80, description_en="e", description_zh="z")
    baseline = ScrapPolicy([one])
    reference = ScrapPolicy.from_config(cfg, None, (), CODE)
    base_s = per_reading(baseline, rs)
    ref_s = per_reading(reference, rs)

    rng = random.Random(2)
    xs = [float(i) for i in range(MAX_FIT_POINTS)]
    ys = [90 - 0.01 * x + rng.gauss(0, 0.3) for x in xs]
    pairs = MAX_FIT_POINTS * (MAX_FIT_POINTS - 1) // 2
    floats = [rng.random() for _ in range(pairs)]
    start = time.perf_counter()
    for _ in range(20):
        sorted(floats)
    sort_s = (time.perf_counter() - start) / 20
    start = time.perf_counter()
    for _ in range(20):
        theil_sen(xs, ys)
    fit_s = (time.perf_counter() - start) / 20

    long = ScrapPolicy.from_config(cfg, None, (), CODE)
    for d in range(15 * 365):
        t = T0 + d * DAY
        for r in (
            Reading("soh", 95 - d / 365.25, t),
            Reading("internal_resistance", 62 + d / 100, t + 0.01),
            Reading("odometer", 40.0 * d, t + 0.02),
            Reading("ignition", 2.0, t + 0.03),
        ):
            long.observe(r, CODE)
    state_bytes = len(json.dumps(long.to_state()))

    figures = {
        "reading_us_reference_rules": round(ref_s * 1e6, 2),
        "reading_us_one_consecutive_rule": round(base_s * 1e6, 2),
        "reading_ratio": round(ref_s / base_s, 2),
        "theil_sen_ms_at_bound": round(fit_s * 1e3, 2),
        "theil_sen_over_sorting_its_slopes": round(fit_s / sort_s, 2),
        "state_bytes_after_15_years": state_bytes,
        "history_points_after_15_years": len(long.history.points),
    }
    for k, v in figures.items():
        print(f"{k:40} {v}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
