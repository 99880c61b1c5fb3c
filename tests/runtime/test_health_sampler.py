"""HealthSampler on its own: a real Store in tmp_path, the real tracker and policy, simulated
time. When a ``pack.health`` is due, what it carries, and that its schedule is stored."""

from __future__ import annotations

from pathlib import Path

import pytest

from pack_agent.config import AgentConfig, as_data, load_config, parse_config, reference_config_path
from pack_agent.core.policy import ScrapPolicy
from pack_agent.core.readings import Reading
from pack_agent.core.tracker import PackTracker
from pack_agent.runtime.health_sampler import HEALTH_SAMPLED_KEY, SAMPLE_WAIT_S, HealthSampler
from pack_agent.store.database import Store

HOUR = 3600.0
T0 = 1_800_000_000.0
CODE = "0RJPEA00HAU0AAF131001955"
TIMEOUT = 300.0  # the BMS timeout: readings stay fresh this long


def make_config(tmp_path: Path) -> AgentConfig:
    data = as_data(load_config(reference_config_path()))
    data["store"]["path"] = str(tmp_path / "agent.db")
    data["health"] = {"publish_interval_s": HOUR, "bms_timeout_s": TIMEOUT}
    return parse_config(data, reference_config_path().parent, "test")


class Bench:
    def __init__(self, tmp_path: Path, code: str | None = None) -> None:
        self.cfg = make_config(tmp_path)
        self.code = code
        self.open()

    def open(self) -> None:
        self.store = Store(self.cfg.store_path())
        self.tracker = PackTracker(self.code, TIMEOUT)
        self.policy = ScrapPolicy.from_config(self.cfg, None, [], self.code)
        self.sampler = HealthSampler(self.cfg, self.store, self.tracker, self.policy)

    def restart(self) -> None:
        self.store.close()
        self.open()

    def identify(self, t: float) -> None:
        """The code confirmed at ``t`` (a new code empties the tracker: call it first)."""
        self.tracker.on_code(CODE, t)

    def read(self, metric: str, value: float, t: float) -> None:
        self.tracker.on_reading(Reading(metric, value, t))

    def take(self, now: float) -> None:
        with self.store.transaction():
            self.sampler.taken(now)


@pytest.fixture
def bench(tmp_path: Path):  # type: ignore[no-untyped-def]
    b = Bench(tmp_path)
    yield b
    b.store.close()


def test_nothing_is_due_while_the_car_is_parked(bench: Bench) -> None:
    assert bench.sampler.due(T0) == (None, False)
    bench.identify(T0)
    bench.read("soh", 90.0, T0)
    assert bench.sampler.due(T0 + TIMEOUT + 1) == (None, False)  # nothing fresh any more


def test_a_sample_carries_the_fresh_metrics_the_code_and_the_trend(bench: Bench) -> None:
    bench.identify(T0)
    bench.read("soh", 90.0, T0)
    bench.read("pack_voltage", 400.0, T0)
    snapshot, waiting = bench.sampler.due(T0 + 1)
    assert not waiting and snapshot is not None
    assert snapshot["pack_code"] == CODE
    assert snapshot["metrics"] == {"pack_voltage": 400.0, "soh": 90.0}
    assert snapshot["trend"]["metric"] == "soh"


def test_one_sample_an_interval_and_the_schedule_survives_a_restart(bench: Bench) -> None:
    bench.identify(T0)
    bench.read("soh", 90.0, T0)
    assert bench.sampler.due(T0)[0] is not None
    bench.take(T0)
    assert bench.store.get_state(HEALTH_SAMPLED_KEY) == T0
    bench.restart()
    t = T0 + HOUR - 1
    bench.identify(t)
    bench.read("soh", 90.0, t)
    assert bench.sampler.due(t) == (None, False)  # an hour after the last, not at start
    assert bench.sampler.due(T0 + HOUR)[0] is not None


def test_after_a_wake_up_it_waits_for_the_code_then_goes_without_it(bench: Bench) -> None:
    bench.read("soh", 90.0, T0)  # the code is not confirmed again yet
    assert bench.sampler.due(T0 + SAMPLE_WAIT_S - 1) == (None, True)
    snapshot, waiting = bench.sampler.due(T0 + SAMPLE_WAIT_S)
    assert not waiting and snapshot is not None and snapshot["pack_code"] is None


def test_after_a_wake_up_it_waits_for_the_soh_up_to_its_freshness(bench: Bench) -> None:
    bench.identify(T0)
    bench.read("pack_voltage", 400.0, T0)
    assert bench.sampler.due(T0 + TIMEOUT - 1) == (None, True)
    bench.read("pack_voltage", 401.0, T0 + TIMEOUT - 1)
    snapshot, waiting = bench.sampler.due(T0 + TIMEOUT)
    assert not waiting and snapshot is not None and "soh" not in snapshot["metrics"]


def test_a_time_stored_by_a_clock_that_was_ahead_makes_one_due_at_once(tmp_path: Path) -> None:
    b = Bench(tmp_path)
    try:
        b.store.put_state(HEALTH_SAMPLED_KEY, T0 + 365 * 86400.0)
        b.restart()
        b.identify(T0)
        b.read("soh", 90.0, T0)
        assert b.sampler.due(T0)[0] is not None
    finally:
        b.store.close()


def test_a_1970_time_is_never_stored_as_the_schedule(bench: Bench) -> None:
    bench.take(1000.0)
    assert bench.sampler.sampled_at == 1000.0
    assert bench.store.get_state(HEALTH_SAMPLED_KEY) is None


def test_a_rebase_before_the_last_sample_makes_one_due_at_once(bench: Bench) -> None:
    bench.sampler.due(T0)  # this life's clock is plausible: the stored time is checked once
    bench.take(T0)
    back = T0 - 30 * 86400.0
    bench.identify(back)
    bench.read("soh", 90.0, back)
    assert bench.sampler.due(back) == (None, False)  # the clock is behind the last sample
    bench.sampler.rebase(back)
    assert bench.sampler.due(back)[0] is not None
