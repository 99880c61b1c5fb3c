"""The agent with its real decoder and a real SQLite store, fed the virtual vehicle's frames
directly (no bus, no broker): decisions are deterministic, latched, persisted and explained."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import can
import pytest

from pack_agent.canbus.checks import load_and_check
from pack_agent.canbus.decoder import Decoder
from pack_agent.config import AgentConfig, load_config, reference_config_path
from pack_agent.core.policy import IGNITION_OFF_SAVE_GAP_S
from pack_agent.dev.sim import SCENARIOS, Scenario
from pack_agent.dev.sim.logfile import scenario_frames, write_log
from pack_agent.dev.sim.vehicle import code_pages, encode
from pack_agent.runtime.agent import HEALTH_SAMPLED_KEY, Agent
from pack_agent.store import Store

DAY = 86400.0
AGEING = SCENARIOS["ageing"]  # 1000 days: the 80 % line about day 935, a new pack on day 960


def config(tmp_path: Path, name: str) -> AgentConfig:
    cfg = load_config(reference_config_path())
    cfg.store.path = str(tmp_path / f"{name}.db")
    cfg.health.bms_timeout_s = 3 * DAY  # one frame burst a simulated day
    cfg.health.publish_interval_s = 30 * DAY
    return cfg


def state_writes(store: Store) -> list[str]:
    """The keys ``store.put_state`` writes from now on, in order (flash wear)."""
    writes: list[str] = []
    put = store.put_state

    def counting_put(key: str, value: Any) -> None:
        writes.append(key)
        put(key, value)

    store.put_state = counting_put  # type: ignore[method-assign]
    return writes


class Run:
    """An agent on a store; frames in, events out."""

    def __init__(self, cfg: AgentConfig, db: Any = None) -> None:
        self.cfg = cfg
        self.db = db or load_and_check(cfg)
        self.store = Store(cfg.store_path())
        self.events: list[Any] = []
        self.agent = Agent(cfg, Decoder(cfg, self.db), self.store, on_event=self.events.append)

    def feed(self, frames: list[can.Message]) -> None:
        for f in frames:
            self.agent.handle_frame("powertrain", f, f.timestamp)
            self.agent.tick(f.timestamp)

    def close(self, flush: bool = True) -> None:
        if flush:
            self.agent.flush()
        self.store.close()

    def decisions(self) -> list[tuple[str, str, str, dict[str, Any]]]:
        return [
            (e.type, e.data["rule_id"], e.time.isoformat(), e.data)
            for e in self.events
            if e.type.startswith("scrap.")
        ]


# the fixtures ageing_frames and uninterrupted (one run of the whole ageing scenario, the
# reference for the others) are session-scoped in tests/conftest.py: this module and
# tests/core/test_timeline.py share one computation


def test_a_multi_year_scenario_decides_the_same_at_the_same_frame_time(
    tmp_path, ageing_frames, uninterrupted
):
    second = Run(config(tmp_path, "second"))
    second.feed(ageing_frames)
    second.close()
    runs = [uninterrupted, second]
    first, second = (r.decisions() for r in runs)
    assert [(kind, rule) for kind, rule, _, _ in first] == [
        ("scrap.forecast", "capacity-80-forecast"),
        ("scrap.condition_met", "capacity-80"),
    ]
    assert first == second  # same rules, same frame times, same evidence
    # and every other event too (pack.health with its trend included), apart from ids
    assert [(e.type, e.time, e.data) for e in runs[0].events] == [
        (e.type, e.time, e.data) for e in runs[1].events
    ]
    _, _, when, ev = first[1]
    decided_day = (_t(when) - AGEING.start) // DAY
    assert 900 < decided_day < 960  # the 80 % line, before the swap
    assert ev["statistic"]["median"] < 80.0 and ev["sample_count"] >= 14
    assert ev["pack_code"] == AGEING.code and ev["persistence_days"] == 14
    for key in ("threshold", "first_reading_time", "last_reading_time", "condition_since"):
        assert ev[key] is not None
    assert [e.type for e in runs[0].events if e.type.startswith("pack.")].count(
        "pack.replaced"
    ) == 1


def test_pack_health_carries_the_trend(tmp_path, ageing_frames):
    run = Run(config(tmp_path, "health"))
    run.feed(ageing_frames[: len(ageing_frames) * 9 // 10])
    run.close()
    health = [e.data for e in run.events if e.type == "pack.health"]
    trend = health[-1]["trend"]
    assert trend["status"] == "ok" and trend["metric"] == "soh"
    assert -6.5 < trend["rate_per_year"] < -4.5  # the scenario fades about 5.2 %/year
    lo, hi = trend["rate_per_year_band"]
    assert lo <= trend["rate_per_year"] <= hi
    assert trend["rate_per_10000km"] < 0
    (f,) = trend["forecasts"]
    assert f["rule_id"] == "capacity-80" and f["earliest"] <= f["date"] <= f["latest"]
    assert health[0]["trend"]["status"] == "insufficient_history"


@pytest.mark.parametrize("flush", [True, False], ids=["clean-stop", "crash"])
def test_a_restart_neither_forgets_nor_repeats(tmp_path, ageing_frames, uninterrupted, flush):
    expected = uninterrupted.decisions()
    decided = next(i for i, f in enumerate(ageing_frames) if f.timestamp >= _t(expected[1][2]))

    cfg = config(tmp_path, "restarted")
    seen: list[Any] = []
    for part in (
        ageing_frames[: decided - 300],
        ageing_frames[decided - 300 : decided + 50],
        ageing_frames[decided + 50 :],
    ):
        run = Run(cfg)
        run.feed(part)
        run.close(flush=flush)
        seen += run.decisions()
    assert [(k, r) for k, r, _, _ in seen] == [(k, r) for k, r, _, _ in expected]
    if flush:  # windows saved at shutdown: exactly the uninterrupted decisions
        assert seen == expected
    else:  # windows saved hourly (daily here): the same day at worst a day later
        assert abs(_t(seen[1][2]) - _t(expected[1][2])) <= 2 * DAY


def _t(iso: str) -> float:
    from pack_agent.core.events import parse_time

    return parse_time(iso).timestamp()


def test_one_life_a_day_decides_as_an_uninterrupted_run(tmp_path, ageing_frames, uninterrupted):
    """The soak run's finding: a process that lives for one burst of frames a day (the
    ignition On throughout, never Off) and is killed before its hourly save. The first
    reading of each new day is saved, so every day counts, as in one uninterrupted run."""
    cfg = config(tmp_path, "daily-lives")
    db = uninterrupted.db
    by_day: dict[float, list[can.Message]] = {}
    for f in ageing_frames:
        by_day.setdefault((f.timestamp - AGEING.start) // DAY, []).append(f)
    seen: list[Any] = []
    for frames in by_day.values():
        life = Run(cfg, db)
        life.feed(frames)
        life.close(flush=False)
        seen += life.decisions()
    assert seen == uninterrupted.decisions()


def test_policy_state_is_written_about_once_an_hour(tmp_path):
    """1 Hz health and ignition frames for three hours: a few writes, not 10,800."""
    cfg = config(tmp_path, "writes")
    cfg.health.bms_timeout_s = 10.0
    cfg.health.publish_interval_s = 3600.0
    run = Run(cfg)
    writes = state_writes(run.store)
    t0 = AGEING.start
    frames = []
    for s in range(3 * 3600):
        t = t0 + s
        frames.append(encode(run.db, "BMS_Health", {"BMS_SOH": 91.0 + (s % 3) * 0.1}, t))
        frames.append(encode(run.db, "VCU_Vehicle", {"VCU_Ignition": 2, "VCU_Odometer": 10}, t))
    run.feed(frames)
    assert 2 <= writes.count("policy.state") <= 4
    run.close()
    with Store(cfg.store_path()) as store:
        state = store.get_state("policy.state")
    assert state["history"]["today"]["values"]  # the day's readings survived the stop


def alarm_frames(db: Any, t0: float, flags: list[int]) -> list[can.Message]:
    return [
        encode(db, "BMS_Alarms", {"BMS_AlarmThermalEvent": f}, t0 + i * 0.5)
        for i, f in enumerate(flags)
    ]


def test_a_thermal_event_is_decided_in_a_second_and_a_glitch_is_not(tmp_path):
    run = Run(config(tmp_path, "thermal"))
    young = Scenario(name="young", description="test", days=3)
    run.feed(list(scenario_frames(young, run.db)))
    t = young.start + 3 * DAY
    run.feed(alarm_frames(run.db, t, [0, 1, 0, 0, 1, 0]))
    assert run.decisions() == []
    run.feed(alarm_frames(run.db, t + 10, [1, 1, 1]))
    (decision,) = run.decisions()
    kind, rule, when, ev = decision
    assert (kind, rule, ev["severity"]) == ("scrap.condition_met", "thermal-event", "critical")
    assert _t(when) == t + 10.5
    assert [(n.rule_id, n.severity) for n in run.agent.notices.notices] == [
        ("thermal-event", "critical")
    ]
    run.close()
    # latched and persisted: a restart with the alarm still on does not decide again
    again = Run(config(tmp_path, "thermal"))
    again.feed(alarm_frames(again.db, t + 20, [1, 1, 1, 1]))
    assert again.decisions() == []
    again.close()


@pytest.mark.parametrize("suffix", [".log", ".asc"])
def test_a_written_log_replays_to_the_same_decisions(
    tmp_path, ageing_frames, uninterrupted, suffix
):
    direct = uninterrupted
    path = tmp_path / f"ageing{suffix}"
    assert write_log(path, AGEING) == len(ageing_frames)
    reader = (
        can.ASCReader(str(path), relative_timestamp=False)
        if suffix == ".asc"
        else can.LogReader(str(path))
    )
    replayed = Run(config(tmp_path, f"replay{suffix[1:]}"))
    replayed.feed(list(reader))
    replayed.close()
    strip = [(k, r, w, json.dumps(e, sort_keys=True)) for k, r, w, e in direct.decisions()]
    again = [(k, r, w, json.dumps(e, sort_keys=True)) for k, r, w, e in replayed.decisions()]
    assert again == strip and len(again) == 2


# -- short trips: a gateway that loses power after every trip ---------------------------

TRIP_DAYS = 62  # the SOH drops below 80 % on day 30: decided on day 58
TRIP_S = 20 * 60.0
TRIP_STEP_S = 10.0
TRIP_STARTS_H = [7.5, 17.75, 12.2, 23.8, 9.0, 6.3, 19.4]  # one at 23:48: over midnight


def trip_config(tmp_path: Path, name: str) -> AgentConfig:
    cfg = load_config(reference_config_path())
    cfg.store.path = str(tmp_path / f"{name}.db")
    cfg.health.bms_timeout_s = 30.0
    return cfg


def trip_frames(db: Any, day: int) -> list[can.Message]:
    """One trip: the BMS wakes and sends its code; SOH and the ignition On every 10 s for
    20 minutes; then ignition Off, and the parked BMS's wild estimate 3 s later."""
    t0 = AGEING.start + day * DAY + TRIP_STARTS_H[day % len(TRIP_STARTS_H)] * 3600
    code = [f for t in (t0, t0 + 1) for f in _code(db, t)]
    frames = code
    base = 82.0 if day < 30 else 79.0
    steps = int(TRIP_S / TRIP_STEP_S)
    for i in range(steps):
        t = t0 + 2 + i * TRIP_STEP_S
        soh = base + ((i + day) % 5 - 2) * 0.1
        frames.append(encode(db, "BMS_Health", _health(soh, day), t))
        odometer = day * 30 + i * 0.2
        frames.append(
            encode(db, "VCU_Vehicle", {"VCU_Ignition": 2, "VCU_Odometer": odometer}, t + 0.2)
        )
    end = t0 + 2 + steps * TRIP_STEP_S
    frames.append(encode(db, "VCU_Vehicle", {"VCU_Ignition": 0, "VCU_Odometer": odometer}, end))
    frames.append(encode(db, "BMS_Health", _health(40.0, day), end + 3))
    return frames


def _health(soh: float, day: int) -> dict[str, float]:
    return {
        "BMS_SOH": soh,
        "BMS_Capacity": 1.5 * soh,
        "BMS_InternalResistance": 62.0,
        "BMS_FullCycles": day,
    }


def _code(db: Any, t: float) -> list[can.Message]:
    return code_pages(db, AGEING.code, t)


def test_short_trips_that_end_in_a_power_cut_decide_on_the_same_day(tmp_path):
    """Every day one life of the process: a 20-minute trip, ignition Off, and the power
    goes (no SIGTERM, no flush). The windows must survive each life, so the capacity
    rule decides on the same day, with the same evidence, as one uninterrupted run."""
    whole = Run(trip_config(tmp_path, "whole"))
    for day in range(TRIP_DAYS):
        whole.feed(trip_frames(whole.db, day))
    whole.close()
    expected = whole.decisions()
    assert [rule for _, rule, _, _ in expected] == ["capacity-80"]
    _, _, when, _ = expected[0]
    assert (_t(when) - AGEING.start) // DAY == 58  # 14 days held after a majority below

    cfg = trip_config(tmp_path, "lives")
    seen: list[tuple[str, str, str, dict[str, Any]]] = []
    saves = []
    for day in range(TRIP_DAYS):
        life = Run(cfg)
        writes = state_writes(life.store)
        life.feed(trip_frames(life.db, day))
        life.close(flush=False)  # the power goes: no shutdown path
        seen += life.decisions()
        saves.append(writes.count("policy.state"))
    assert seen == expected
    assert max(saves) <= 3  # a new day, the ignition Off (and a decision's or a new pack's)


def test_a_flapping_ignition_cannot_wear_the_flash(tmp_path):
    """An hour of the ignition On and Off every 10 s (a loose connector), SOH at 1 Hz:
    the policy state is saved at most once per IGNITION_OFF_SAVE_GAP_S, plus hourly."""
    cfg = trip_config(tmp_path, "flapping")
    run = Run(cfg)
    writes = state_writes(run.store)
    t0 = AGEING.start + 8 * 3600
    frames = _code(run.db, t0) + _code(run.db, t0 + 1)
    for s in range(3600):
        t = t0 + 2 + s
        frames.append(encode(run.db, "BMS_Health", _health(85.0, 0), t))
        ignition = 2 if (s // 10) % 2 == 0 else 0
        frames.append(encode(run.db, "VCU_Vehicle", {"VCU_Ignition": ignition}, t + 0.2))
    run.feed(frames)
    commits = run.store.commits
    run.close(flush=False)
    gaps = 3600 / IGNITION_OFF_SAVE_GAP_S
    # every gap's first Off; the pack identified, the first reading's day, the hourly save
    assert gaps <= writes.count("policy.state") <= gaps + 3
    # 360 ignition changes are not 360 commits: the agent's own ignition save (for the
    # notices' Off->On across a reboot) is bounded by the same gap
    print(f"flapping ignition, one hour: {commits} commits")
    assert commits <= 2 * gaps + 6


def _hourly_config(tmp_path: Path, name: str) -> AgentConfig:
    cfg = config(tmp_path, name)
    cfg.health.bms_timeout_s = 10.0
    cfg.health.publish_interval_s = 3600.0
    return cfg


def _samples(run: Run) -> list[Any]:
    return [e for e in run.events if e.type == "pack.health"]


def test_a_car_on_short_trips_reports_its_health_on_every_trip(tmp_path):
    """Two 40-minute trips a day, the BMS heard only then: the hourly sample waits for the
    trip instead of falling, by chance, between two trips (it did: none for days)."""
    run = Run(_hourly_config(tmp_path, "trips"))
    ten_days = dataclasses.replace(AGEING, days=10)
    run.feed(list(scenario_frames(ten_days, run.db)))
    run.close()
    trips = [trip for state in ten_days.states() for trip in state.trips]
    assert len(trips) == 20
    health = _samples(run)
    assert len(health) == len(trips)  # one a trip: the trips are more than an hour apart
    for sample, (on, off) in zip(health, trips, strict=True):
        assert on <= sample.time.timestamp() < off
        assert sample.data["pack_code"] == AGEING.code
        assert "soh" in sample.data["metrics"], sample.data


def _wake(db: Any, t: float, code: str, soh: float) -> list[can.Message]:
    """12 s after a wake-up, at the reference DBC's cycle times: one code page a second
    (the code is confirmed by its second full set, 7 s in), the status every 100 ms, and
    the SOH (``BMS_Health``) every second from 1.5 s."""
    status = {"BMS_SOC": 60.0, "BMS_PackVoltage": 355.0, "BMS_PackCurrent": 1.0}
    health = {"BMS_SOH": soh, "BMS_Capacity": 120.0, "BMS_InternalResistance": 80.0}
    health |= {"BMS_FullCycles": 300, "BMS_EndOfLife": 0}
    pages = code_pages(db, code, 0.0)
    frames = [
        can.Message(
            arbitration_id=pages[k % 4].arbitration_id,
            data=pages[k % 4].data,
            is_extended_id=False,
            timestamp=t + k,
        )
        for k in range(12)
    ]
    frames += [encode(db, "BMS_Status", status, t + 0.05 + k / 10) for k in range(120)]
    frames += [encode(db, "BMS_Health", health, t + 1.5 + k) for k in range(11)]
    return sorted(frames, key=lambda f: f.timestamp)


def test_a_sample_after_a_wake_up_waits_for_the_soh_and_the_code(tmp_path):
    """The status (100 ms) comes before the SOH; the code takes 7 s to confirm. After a
    pack swap, the new pack's readings never go out under the old pack's code: the first
    trip with the new code is withheld, the second makes it the replacement."""
    run = Run(_hourly_config(tmp_path, "wake"))
    t0 = AGEING.start
    new_code = SCENARIOS["pack-swap"].new_code or ""
    assert new_code and new_code != AGEING.code
    run.feed(_wake(run.db, t0, AGEING.code, 90.0))
    run.feed(_wake(run.db, t0 + 5 * 3600, new_code, 99.5))  # swapped while parked
    run.feed(_wake(run.db, t0 + 10 * 3600, new_code, 99.0))  # its second trip
    run.close()
    samples = _samples(run)
    identified = next(e for e in run.events if e.type == "pack.identified")
    replaced = next(e for e in run.events if e.type == "pack.replaced")
    assert identified.time.timestamp() == pytest.approx(t0 + 7)
    first = samples[0]
    assert first.time.timestamp() == pytest.approx(t0 + 7.5)  # the first SOH after that
    assert first.data["pack_code"] == AGEING.code and first.data["metrics"]["soh"] == 90.0
    for s in samples:  # the new pack's 99.5 % never under the old code
        if s.data["pack_code"] == AGEING.code:
            assert s.data["metrics"].get("soh") in (None, 90.0)
    assert replaced.time.timestamp() == pytest.approx(t0 + 10 * 3600 + 7)
    last = samples[-1]
    assert last.time.timestamp() == pytest.approx(t0 + 10 * 3600 + 7.5)
    assert last.data["pack_code"] == new_code and last.data["metrics"]["soh"] == 99.0


def test_a_bms_that_never_sends_the_soh_reports_its_other_metrics_hourly(tmp_path):
    """After a wake-up the sample waits ``bms_timeout_s`` for the SOH, then goes without
    it; later samples keep the hourly schedule (no wait while the BMS keeps talking)."""
    run = Run(_hourly_config(tmp_path, "no-soh"))
    t0 = AGEING.start
    status = {"BMS_SOC": 60.0, "BMS_PackVoltage": 355.0, "BMS_PackCurrent": 1.0}
    frames = code_pages(run.db, AGEING.code, t0) + code_pages(run.db, AGEING.code, t0 + 1)
    frames += [encode(run.db, "BMS_Status", status, t0 + 2 + s) for s in range(0, 7300, 2)]
    run.feed(frames)
    run.close()
    first, second, third = (e.time.timestamp() - t0 for e in _samples(run))
    assert 10 <= first < 13  # awake at t0, then bms_timeout_s (10 s) for the SOH
    assert 3600 <= second - first < 3602 and 3600 <= third - second < 3602
    assert all("soc" in e.data["metrics"] and "soh" not in e.data["metrics"] for e in _samples(run))


def test_a_restart_does_not_add_a_sample_within_the_interval(tmp_path):
    """The last sample's time is saved with it: a gateway restarting every few minutes
    (a crash loop, a power-cycled unit) still samples once an hour."""
    cfg = _hourly_config(tmp_path, "restarts")
    t0 = AGEING.start
    samples = []
    for life in range(8):  # a restart every 20 minutes
        run = Run(cfg)
        start = t0 + life * 1200
        run.feed(_wake(run.db, start, AGEING.code, 90.0))
        run.close(flush=life % 2 == 0)  # half of them killed
        samples += [e.time.timestamp() - t0 for e in _samples(run)]
    # the first life samples at the first SOH after the code is identified (7.5 s), each
    # later one once an interval has passed since: the lives at 3600 s and 7200 s (at
    # their first SOH 7.5 s in), the five in between not at all
    assert samples == [7.5, 3607.5, 7207.5]


def test_a_sample_time_stored_by_a_clock_that_was_ahead_does_not_block_samples(tmp_path):
    cfg = _hourly_config(tmp_path, "ahead")
    t0 = AGEING.start
    run = Run(cfg)
    run.store.put_state(HEALTH_SAMPLED_KEY, t0 + 7 * 365 * DAY)  # a life in 2035
    run.feed(_wake(run.db, t0, AGEING.code, 90.0))
    run.close()
    assert [e.time.timestamp() - t0 for e in _samples(run)] == [7.5]


def test_a_parked_car_writes_nothing(tmp_path):
    """A trip, then a day parked with the agent ticking: no reading, so no save (the rules'
    state has not changed) and no sample (nothing fresh)."""
    run = Run(_hourly_config(tmp_path, "parked"))
    t0 = AGEING.start
    run.feed(_wake(run.db, t0, AGEING.code, 90.0))
    for k in range(1, 2 * 60):  # the hourly save of the trip's last frames
        run.agent.tick(t0 + 12 + 60 * k)
    # the whole car went quiet (its ignition frame too): asleep, not a silent BMS
    assert "bms.silent" not in [e.type for e in run.events]
    commits = run.store.commits
    for k in range(2 * 60, 24 * 60):
        run.agent.tick(t0 + 12 + 60 * k)
    assert run.store.commits == commits  # 22 hours parked: not one commit (it was 22)
    assert len(_samples(run)) == 1
    run.close()
