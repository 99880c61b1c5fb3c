"""SaveSchedule on its own: a real Store in tmp_path (its commit counter is the flash
writes), the real tracker and policy, and the real notice dispatcher as the lazy owner
of the ignition. When the policy state is saved: hourly while changed, when the policy
asks (ignition Off, a new day), at shutdown."""

from __future__ import annotations

from pathlib import Path

import pytest

from pack_agent.config import AgentConfig, as_data, load_config, parse_config, reference_config_path
from pack_agent.core.policy import ScrapPolicy
from pack_agent.core.readings import Reading
from pack_agent.core.tracker import PackTracker
from pack_agent.runtime.notice_dispatch import NoticeDispatcher
from pack_agent.runtime.save_schedule import SaveSchedule
from pack_agent.store.database import Store

HOUR = 3600.0
DAY = 86400.0
T0 = 1_800_000_000.0 - 1_800_000_000.0 % DAY + 8 * HOUR  # 08:00 UTC
CODE = "0RJPEA00HAU0AAF131001955"


def make_config(tmp_path: Path) -> AgentConfig:
    data = as_data(load_config(reference_config_path()))
    data["store"]["path"] = str(tmp_path / "agent.db")
    data["policy"]["persist_interval_s"] = HOUR
    return parse_config(data, reference_config_path().parent, "test")


class Bench:
    def __init__(self, tmp_path: Path) -> None:
        self.cfg = make_config(tmp_path)
        self.store = Store(self.cfg.store_path())
        self.tracker = PackTracker(CODE, self.cfg.health.bms_timeout_s)
        self.policy = ScrapPolicy.from_config(self.cfg, None, [], CODE)
        self.policy.take_save_request()  # a fresh policy's own request, not under test
        self.owner = NoticeDispatcher(
            self.cfg, self.store, [], lambda *a: None, lambda *a: None, lambda: CODE
        )
        self.saves = SaveSchedule(self.cfg, self.store, self.policy, self.tracker, [self.owner])

    def read(self, metric: str, value: float, t: float) -> None:
        reading = Reading(metric, value, t)
        self.tracker.on_reading(reading)
        self.policy.observe(reading, CODE)

    def trip_soh(self, t: float) -> None:
        """An SOH reading with the ignition On: the SOH history (a daily aggregate) takes it."""
        self.read("ignition", 2.0, t - 1)
        self.read("soh", 90.0, t)

    def tick(self, now: float, waiting: bool = False) -> bool:
        """The agent's tick, as far as the save goes: True when it saved."""
        hourly, asked = self.saves.due(now, waiting)
        if hourly or asked:
            with self.store.transaction():
                self.saves.save(now, restart=hourly)
        return hourly or asked


@pytest.fixture
def bench(tmp_path: Path):  # type: ignore[no-untyped-def]
    b = Bench(tmp_path)
    yield b
    b.store.close()


def test_hourly_while_something_changed_and_never_while_parked(bench: Bench) -> None:
    assert not bench.tick(T0)  # the schedule starts at the first tick
    bench.read("soh", 90.0, T0 + 10)
    bench.policy.take_save_request()  # the day's first reading asks: not this test
    assert not bench.tick(T0 + HOUR - 1)
    commits = bench.store.commits
    assert bench.tick(T0 + HOUR)
    assert bench.store.commits == commits + 1
    assert bench.store.get_state("policy.state") == bench.policy.to_state()
    for k in range(2, 30):  # parked for a day: nothing new, nothing written
        assert not bench.tick(T0 + k * HOUR)
    assert bench.store.commits == commits + 1


def test_a_waiting_health_sample_holds_the_hourly_save(bench: Bench) -> None:
    bench.tick(T0)
    bench.read("soh", 90.0, T0 + 10)
    bench.policy.take_save_request()
    assert not bench.tick(T0 + HOUR, waiting=True)
    assert bench.tick(T0 + HOUR + 5)


def test_the_lazy_owners_values_ride_on_the_save(bench: Bench) -> None:
    bench.owner.on_ignition(True, T0)  # the first change is written at once
    bench.owner.on_ignition(False, T0 + 60)  # within the gap: kept in memory
    assert bench.store.get_state("ignition.on") is True
    assert not bench.tick(T0 + 60)
    assert bench.saves.unsaved_changes()  # no frame came, but the owner has news
    assert bench.tick(T0 + 60 + HOUR)
    assert bench.store.get_state("ignition.on") is False
    assert not bench.saves.unsaved_changes()


def test_ignition_off_asks_for_a_save_at_once(bench: Bench) -> None:
    bench.tick(T0)
    bench.read("ignition", 2.0, T0 + 10)
    bench.read("ignition", 0.0, T0 + 20)
    assert bench.tick(T0 + 21)
    assert bench.store.get_state("policy.state") == bench.policy.to_state()
    # the ask keeps the hourly schedule: it still runs from T0
    assert bench.saves.scheduled_at == T0


def test_a_new_day_is_saved_only_when_the_last_save_is_old(bench: Bench) -> None:
    midnight = T0 + DAY - 8 * HOUR
    bench.tick(T0)
    bench.trip_soh(midnight - 60)  # 23:59
    bench.policy.take_save_request()
    assert bench.tick(midnight - 30)  # an hourly save, just before midnight
    bench.trip_soh(midnight + 2)  # 00:00:02: a new day asks...
    assert not bench.tick(midnight + 3)  # ...but the last save is half a minute old
    bench.trip_soh(midnight + DAY + 2)  # the next day, after a long gap, it is saved
    assert bench.tick(midnight + DAY + 3)


def test_a_flush_writes_everything_and_restarts_the_schedule(bench: Bench) -> None:
    bench.tick(T0)
    bench.owner.on_ignition(True, T0)
    bench.owner.on_ignition(False, T0 + 60)
    bench.read("soh", 90.0, T0 + 60)
    bench.saves.flush(T0 + 120)
    assert bench.store.get_state("ignition.on") is False
    assert not bench.saves.unsaved_changes()
    assert bench.saves.scheduled_at == T0 + 120
    bench.saves.flush()  # at shutdown: the schedule stays
    assert bench.saves.scheduled_at == T0 + 120


def test_a_rebase_restarts_the_hourly_schedule(bench: Bench) -> None:
    bench.tick(T0)
    bench.saves.rebase(T0 - DAY)
    bench.read("soh", 90.0, T0 - DAY + 10)
    bench.policy.take_save_request()
    assert not bench.tick(T0 - DAY + 20)  # the schedule starts again here, not at T0
    assert bench.tick(T0 - DAY + 20 + HOUR)
