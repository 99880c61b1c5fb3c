"""The time line: a clock step that persists is adopted, a lone wild stamp never is.

Pure tests of ``TimeLine`` and of the policy on it (derandomized property tests), then the
agent over a real SQLite store fed the 1000-day ``ageing`` scenario with its clock in 2035
for a day: the capacity decision comes as in a run whose clock never jumped, events on
the corrected clock are not ``time_unsure``, and the same through a restart.
"""

from __future__ import annotations

import json
import math
from typing import Any

import can
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_agent_notices import Rig
from test_agent_policy import AGEING, Run, _health, _t, config
from test_policy import CODE, T0, capacity, make, thermal

from pack_agent.canbus.checks import load_and_check
from pack_agent.canbus.decoder import Decoder
from pack_agent.canbus.logs import LogSource
from pack_agent.core.policy import ScrapPolicy
from pack_agent.core.readings import Reading
from pack_agent.core.timeline import (
    CONFIRM_S,
    CONFIRM_TIMES,
    LEAP_S,
    TOLERANCE_S,
    TimeLine,
    Verdict,
)
from pack_agent.dev.sim.vehicle import code_pages, encode
from pack_agent.runtime.agent import Agent, run_loop
from pack_agent.store import Store

DAY = 86400.0
YEAR = 365 * DAY


# -- the time line --------------------------------------------------------------------


def test_a_step_back_is_adopted_after_five_stamps_over_five_minutes():
    line = TimeLine()
    assert line.judge(T0) is Verdict.ON_LINE
    back = T0 - YEAR
    verdicts = [line.judge(back + i * 100.0) for i in range(5)]
    assert verdicts == [Verdict.HELD] * 4 + [Verdict.REBASED]
    assert (line.abandoned, line.adopted_from, line.newest) == (T0, back, back + 400.0)
    assert line.judge(back + 500.0) is Verdict.ON_LINE


def test_a_late_frame_is_late_and_the_old_line_alive_drops_the_candidate():
    line = TimeLine()
    line.judge(T0)
    assert line.judge(T0 - TOLERANCE_S / 2) is Verdict.LATE
    for i in range(CONFIRM_TIMES - 1):
        assert line.judge(T0 - DAY + i * 100.0) is Verdict.HELD
    assert line.judge(T0 + 1) is Verdict.ON_LINE  # the old line is alive
    assert line.judge(T0 - DAY + 900.0) is Verdict.HELD  # starts again
    assert (line.candidate_first, line.candidate_count) == (T0 - DAY + 900.0, 1)


def test_a_leap_ahead_waits_for_a_second_stamp_unless_the_clock_was_unset():
    line = TimeLine(trusted_from=T0 - YEAR)
    line.judge(T0)
    assert line.judge(T0 + 8 * YEAR) is Verdict.HELD
    assert line.judge(T0 + 8 * YEAR) is Verdict.HELD  # the same instant: one frame
    assert line.judge(T0 + 10) is Verdict.ON_LINE  # the real line: the stray is gone
    assert line.judge(T0 + 8 * YEAR) is Verdict.HELD
    assert line.judge(T0 + 8 * YEAR + 1) is Verdict.AHEAD
    assert line.newest == T0 + 8 * YEAR + 1
    unset = TimeLine(trusted_from=T0 - YEAR)
    unset.judge(1000.0)  # booted at 1970
    assert unset.judge(T0) is Verdict.ON_LINE  # NTP: taken at once


def test_the_line_survives_a_restart():
    line = TimeLine()
    line.judge(T0)
    again = TimeLine()
    again.load_state(json.loads(json.dumps(line.to_state())))
    assert again.newest == T0 and again.judge(T0 - 30) is Verdict.LATE


WILD = st.one_of(
    st.floats(TOLERANCE_S + 1, 60 * YEAR),  # behind: an RTC reset, a bad fix
    st.floats(LEAP_S + 1, 60 * YEAR).map(lambda d: -d),  # ahead: 2035, a GNSS rollover
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.booleans(), WILD), min_size=1, max_size=300))
def test_single_wild_stamps_never_move_the_line(steps):
    """A good stamp every 10 s, and now and then one wild stamp between two good ones."""
    line = TimeLine()
    t = T0
    for wild, off in steps:
        assert line.judge(t) is Verdict.ON_LINE
        if wild:
            # held, or never evidence at all (before the epoch, past 2200)
            assert line.judge(t - off) in (Verdict.HELD, Verdict.LATE)
        t += 10.0
    assert line.newest == t - 10.0 and line.abandoned is None


def _mixed_rules() -> list[Any]:
    return [
        capacity(persistence_days=0, min_readings=5, min_span_days=3),
        thermal(),
        make(id="age-1", kind="age", threshold=1.0, confirm_days=0),
    ]


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    st.lists(st.floats(81.0, 84.0), min_size=20, max_size=60),
    st.lists(st.tuples(st.integers(0, 59), WILD, st.integers(1, 8)), max_size=40),
)
def test_single_wild_stamps_never_decide_or_rebase(healthy, wild):
    """A healthy pack read every 10 minutes; now and then one frame (several readings at
    one wild instant: SOH 40 %, a thermal alarm) between two good readings."""
    p = ScrapPolicy(_mixed_rules())
    at = {i: (off, n) for i, off, n in wild}
    out = []
    for i, v in enumerate(healthy):
        t = T0 + i * 600.0
        out += p.observe(Reading("soh", v, t), CODE)
        out += p.observe(Reading("thermal_event", 0.0, t + 1), CODE)
        if i in at:
            off, n = at[i]
            for _ in range(n):
                out += p.observe(Reading("soh", 40.0, t + 2 - off), CODE)
                out += p.observe(Reading("thermal_event", 1.0, t + 2 - off), CODE)
    assert out == [] and p.take_rebase() is None


@pytest.mark.parametrize(
    ("offset", "days"),
    [(8 * YEAR, 1), (3 * DAY, 2), (40 * DAY, 3), (2 * 3600.0, 1)],
    ids=["2035-for-a-day", "3-days-ahead-for-2", "40-days-ahead-for-3", "2-hours-ahead"],
)
def test_a_clock_ahead_then_back_keeps_the_window_and_its_persistence(offset, days):
    """Pure: the rules' checkpoint from before the leap comes back; the days stamped by
    the wrong clock are dropped, the latches stay. The SOH is below the line from day 30:
    the clock is ahead from day 50, during the persistence."""
    rules = [capacity(), thermal()]
    straight, jumped = ScrapPolicy(rules), ScrapPolicy(rules)
    out_straight: list[Any] = []
    out_jumped: list[Any] = []
    for day in range(80):
        soh = 82.0 if day < 30 else 79.0
        ahead = offset if 50 <= day < 50 + days else 0.0
        for k in range(6):  # a trip: six readings over 50 minutes
            t = T0 + day * DAY + k * 600.0
            out_straight += straight.observe(Reading("soh", soh, t), CODE)
            if day == 40 and k == 0:
                out_jumped += jumped.observe(Reading("thermal_event", 1.0, t), CODE)
                out_jumped += jumped.observe(Reading("thermal_event", 1.0, t + 1), CODE)
            out_jumped += jumped.observe(Reading("soh", soh, t + ahead), CODE)
    assert [d.rule_id for d in out_straight] == ["capacity-80"]
    assert [d.rule_id for d in out_jumped] == ["thermal-event", "capacity-80"]
    abandoned = T0 + (50 + days - 1) * DAY + 5 * 600.0 + offset
    if offset > 2 * 3600.0:
        assert jumped.take_rebase() == (abandoned, T0 + (50 + days) * DAY)
    else:  # two hours ahead: the next trip is later still, nothing to undo
        assert jumped.take_rebase() is None
    assert "thermal-event" in jumped.latched_rules
    decided = out_jumped[1]
    # the days on the wrong clock are missing from the window; the decision comes as
    # in the straight run, on the real time line
    assert abs(decided.time - out_straight[0].time) <= days * DAY
    assert all(_t(s["time"]) < T0 + 81 * DAY for s in decided.data["samples"])


# -- the agent over a real store, the ageing scenario ------------------------------------

JUMP_DAY = 926  # the median crossed 80 % on day 920: the day falls in the persistence


def _day(f: can.Message) -> int:
    return int((f.timestamp - AGEING.start) // DAY)


def _jumped(frames: list[can.Message]) -> list[can.Message]:
    """The scenario with the gateway's clock in 2035 for day ``JUMP_DAY`` (a bad GNSS
    fix), then corrected back."""
    out = []
    for f in frames:
        if _day(f) == JUMP_DAY:
            f = can.Message(
                timestamp=f.timestamp + 7 * YEAR,
                arbitration_id=f.arbitration_id,
                data=f.data,
                is_extended_id=f.is_extended_id,
            )
        out.append(f)
    return out


@pytest.mark.parametrize("restart", [None, "in-2035", "in-2035-crash", "confirming"])
def test_a_day_in_2035_decides_as_a_run_whose_clock_never_jumped(
    tmp_path, ageing_frames, uninterrupted, restart
):
    expected = uninterrupted.decisions()
    frames = _jumped(ageing_frames)
    cut = {
        None: len(frames),
        "in-2035": next(i for i, f in enumerate(frames) if _day(f) == JUMP_DAY + 7 * 365) + 20,
        "confirming": next(i for i, f in enumerate(frames) if _day(f) == JUMP_DAY + 1) + 5,
    }[restart if restart != "in-2035-crash" else "in-2035"]
    cfg = config(tmp_path, "jumped")
    first = Run(cfg)
    first.feed(frames[:cut])
    first.close(flush=restart != "in-2035-crash")
    runs = [first]
    if cut < len(frames):
        second = Run(cfg, first.db)
        second.feed(frames[cut:])
        second.close()
        runs.append(second)
    seen = [d for r in runs for d in r.decisions()]
    assert [(k, r) for k, r, _, _ in seen] == [(k, r) for k, r, _, _ in expected]
    decided, reference = _t(seen[1][2]), _t(expected[1][2])
    assert abs(decided - reference) <= 2 * DAY  # within days of the unjumped run
    assert decided < AGEING.start + (JUMP_DAY + 20) * DAY  # on the real time line
    events = [e for r in runs for e in r.events]
    back = AGEING.start + (JUMP_DAY + 2) * DAY
    later = [e for e in events if back <= e.time.timestamp() < AGEING.start + 2000 * DAY]
    assert later and not any(e.time_unsure for e in later)
    assert sum(e.type == "pack.health" for e in later) >= 2  # the schedule came back
    returned = AGEING.start + (JUMP_DAY + 1) * DAY  # the clock is back
    health = [
        e
        for e in events
        if e.type == "pack.health" and returned <= e.time.timestamp() < AGEING.start + 2000 * DAY
    ]
    interval = cfg.health.publish_interval_s
    first_interval = [e for e in health if e.time.timestamp() < returned + interval]
    assert len(first_interval) == 1 and not first_interval[0].time_unsure  # no double sample
    assert any(e.data.get("clock_rebased", {}).get("by") == "rules" for e in health)
    rebased = runs[-1].agent.clock_rebased or runs[0].agent.clock_rebased
    assert rebased is not None and rebased["abandoned"].startswith("2035-")


def test_events_during_the_confirmation_are_unsure_then_not(tmp_path):
    """The agent's own clock (system time): a step back of a year is flagged until five
    minutes of the new time have confirmed it; then the events are sure again and the
    status says when the clock was rebased."""
    rig = Rig(tmp_path)
    try:
        t = T0 + YEAR
        rig.identify(t)
        rig.agent.tick(t + 2)
        back = T0
        for i in range(12):
            rig.agent.tick(back + i * 60.0)
            rig.agent.record("store.reset", {"i": i}, back + i * 60.0 + 1)
        flags = [e.time_unsure for e in rig.events if e.type == "store.reset"]
        confirmed = next(i for i in range(12) if i * 60.0 >= CONFIRM_S)
        assert flags == [True] * confirmed + [False] * (12 - confirmed)
        assert rig.agent.clock_rebased == {
            "by": "events",
            "abandoned": "2028-01-01T08:00:02+00:00",
            "start": "2027-01-01T08:00:00+00:00",
        }
        # the BMS silence watch runs on the new time (before, it waited for 2028); the
        # ignition is On: the vehicle is awake, so the BMS should be speaking
        rig.ignition(True, back + 720.0 + rig.cfg.health.bms_timeout_s)
        silent = [e for e in rig.events if e.type == "bms.silent"]
        assert len(silent) == 1  # (1000 days later here: the rig's timeout)
    finally:
        rig.close()


def test_a_stray_frame_in_2035_does_not_stop_the_frame_clock(tmp_path):
    """``clock = "frames"`` (the daemon's loop with ``clock=None``, as in replay): one BMS
    frame stamped 2035 among a day of frames. Before, the loop's clock stayed in 2035:
    one health sample stamped 2035, then none. Now the samples go on, hourly, on time."""
    cfg = config(tmp_path, "frames")
    cfg.health.publish_interval_s = 3600.0
    db = load_and_check(cfg)
    start = T0 + 0.5
    frames = code_pages(db, AGEING.code, start)
    for i in range(24 * 6):  # BMS_Health every 10 minutes for a day
        t = start + 10 + i * 600.0
        frames.append(encode(db, "BMS_Health", _health(90.0, 1), t))
        if i == 36:  # one stray frame, 7 years ahead
            frames.append(encode(db, "BMS_Health", _health(20.0, 1), t + 7 * YEAR))
    store = Store(cfg.store_path())
    events: list[Any] = []
    try:
        agent = Agent(cfg, Decoder(cfg, db), store, on_event=events.append)
        source = LogSource(iter(frames), cfg)
        run_loop(agent, source, None, source.stop, clock=None)
    finally:
        store.close()
    health = [e for e in events if e.type == "pack.health"]
    assert 22 <= len(health) <= 25
    assert all(start <= e.time.timestamp() <= start + DAY for e in health)
    assert not any(e.time_unsure for e in events)
    assert not any(e.type.startswith("scrap.") for e in events)


def test_a_stray_frame_ahead_does_not_keep_a_silent_bms_alive(tmp_path):
    """One frame stamped 7 years ahead, then the BMS goes quiet: ``bms.silent`` still
    comes after ``bms_timeout_s`` (the stray stamp proved nothing: the line held it)."""
    cfg = config(tmp_path, "silence")
    cfg.health.bms_timeout_s = 600.0
    db = load_and_check(cfg)
    frames = code_pages(db, AGEING.code, T0)
    frames += [encode(db, "BMS_Health", _health(90.0, 1), T0 + 10 + i * 60.0) for i in range(10)]
    frames.append(encode(db, "BMS_Health", _health(20.0, 1), T0 + 700 + 7 * YEAR))
    store = Store(cfg.store_path())
    events: list[Any] = []
    try:
        agent = Agent(cfg, Decoder(cfg, db), store, on_event=events.append)
        for f in frames:
            agent.handle_frame("powertrain", f, f.timestamp)
        for minute in range(12, 60):  # the BMS says nothing more; the ignition is On
            t = T0 + minute * 60.0
            on = encode(db, "VCU_Vehicle", {"VCU_Odometer": 1000.0, "VCU_Ignition": 2}, t)
            agent.handle_frame("powertrain", on, t)
            agent.tick(t)
    finally:
        store.close()
    assert [e.type for e in events].count("bms.silent") == 1
    assert not any(e.type.startswith("scrap.") for e in events)


def test_stamps_that_are_no_time_at_all_change_nothing():
    line = TimeLine(trusted_from=T0 - YEAR)
    for t in (math.nan, math.inf, -math.inf, 1e18):
        assert line.judge(t) is Verdict.LATE and line.newest is None  # not even a first
    line.judge(T0)
    for t in (math.nan, 1e18, 30.0, -5.0):  # garbage, and an unset clock after a set one
        assert line.judge(t) is Verdict.LATE
    assert (line.newest, line.candidate_count) == (T0, 0)
    for i in range(100_000):  # a candidate behind keeps three numbers, not every stamp
        line.judge(T0 - DAY + i * 0.001)
    assert line.candidate_count == 100_000 and line.newest == T0


def test_an_ignition_stamped_on_the_abandoned_line_is_forgotten(tmp_path):
    """An ignition frame stamped a year ahead, then the clock steps back and stays: the
    ignition state starts again on the new time (else it would ignore every frame for a
    year and the BMS silence watch would never see the ignition On)."""
    rig = Rig(tmp_path)
    try:
        rig.ignition(True, T0 + YEAR)
        assert rig.agent.ignition is not None and rig.agent.ignition.last_t == T0 + YEAR
        for i in range(12):  # the old time, confirmed
            rig.agent.tick(T0 + i * 60.0)
        assert rig.agent.clock_rebased is not None
        rig.ignition(True, T0 + 720.0)
        assert rig.agent.ignition.last_t == T0 + 720.0
        assert rig.agent.ignition.at(T0 + 721.0) is True
    finally:
        rig.close()
