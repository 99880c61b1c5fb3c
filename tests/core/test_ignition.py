"""The ignition as a state (``core.ignition``) and the policy's gate built on it."""

from __future__ import annotations

from pack_agent.config.rules import CapacityRule
from pack_agent.core.ignition import IgnitionSpec, IgnitionState
from pack_agent.core.policy import ScrapPolicy
from pack_agent.core.readings import Reading

T = 1_800_000_000.0


def test_the_last_value_holds_until_its_frame_is_overdue() -> None:
    s = IgnitionState(IgnitionSpec(on_values=frozenset({1.0}), cycle_s=30.0))
    assert s.at(T) is None  # nothing heard: unknown
    assert s.update(T, 1.0) is None
    assert s.at(T + 29.0) is True and s.at(T + 89.0) is True  # 3 cycles of 30 s
    assert s.at(T + 91.0) is None  # overdue: the bus went quiet
    s.update(T + 60.0, 0.0)
    assert s.at(T + 61.0) is False and s.at(T + 149.0) is False and s.at(T + 151.0) is None


def test_the_cycle_is_measured_when_not_given() -> None:
    s = IgnitionState(IgnitionSpec(on_values=frozenset({1.0}), stale_cycles=3.0, window_s=5.0))
    s.update(T, 1.0)
    assert s.cycle_s() is None and s.holds_for_s() == 5.0  # before a second frame
    for k in range(1, 6):
        s.update(T + 20.0 * k, 1.0)
    s.update(T + 8 * 3600.0, 1.0)  # a parking gap is one outlier
    s.update(T + 8 * 3600.0 + 20.0, 1.0)
    assert s.cycle_s() == 20.0 and s.holds_for_s() == 60.0
    assert s.at(T + 8 * 3600.0 + 79.0) is True and s.at(T + 8 * 3600.0 + 81.0) is None


def test_on_min_and_a_state_that_survives_a_restart() -> None:
    spec = IgnitionSpec(on_min=9.0, cycle_s=1.0)  # terminal 15 as a voltage
    s = IgnitionState(spec)
    s.update(T, 12.4)
    assert s.on
    again = IgnitionState(spec)
    again.load_state(s.to_state())
    assert again.at(T + 2.0) is True
    s.update(T + 1.0, 0.3)
    assert s.at(T + 1.5) is False


def capacity() -> CapacityRule:
    return CapacityRule(
        kind="capacity", id="cap", threshold=80.0, window_days=7, min_readings=100,
        min_span_days=1, description_en="t", description_zh="t",
    )  # fmt: skip


def test_a_slow_ignition_lets_every_reading_between_its_frames_be_judged() -> None:
    """An ignition frame every 30 s (its cycle from the DBC): each of the 100 SOH readings
    a second between them is judged; with the frames gone (overdue) none is."""
    spec = IgnitionSpec(on_values=frozenset({1.0}), cycle_s=30.0)
    p = ScrapPolicy([capacity()], ignition=spec)
    out = []
    for i in range(100):
        t = T + i
        if i % 30 == 0:
            out += p.observe(Reading("ignition", 1.0, t), None)
        out += p.observe(Reading("soh", 70.0, t + 0.5), None)
    assert [d.rule_id for d in out] == ["cap"] and out[0].data["sample_count"] == 100
    q = ScrapPolicy([capacity()], ignition=spec)
    q.observe(Reading("ignition", 1.0, T), None)
    for i in range(200):  # no ignition frame after the first: overdue after 90 s
        assert q.observe(Reading("soh", 70.0, T + 100 + i), None) == []


def test_a_reading_before_the_first_ignition_frame_waits_for_it() -> None:
    spec = IgnitionSpec(on_values=frozenset({1.0}), cycle_s=30.0, window_s=5.0)
    rule = capacity()
    rule.min_readings = 2
    p = ScrapPolicy([rule], ignition=spec)
    assert p.observe(Reading("soh", 70.0, T), None) == []  # held: state unknown
    assert p.observe(Reading("soh", 70.0, T + 1), None) == []  # held (the newest)
    out = p.observe(Reading("ignition", 1.0, T + 3), None)
    out += p.observe(Reading("soh", 70.0, T + 4), None)
    assert [d.rule_id for d in out] == ["cap"]
