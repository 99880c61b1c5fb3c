"""NoticeDispatcher on its own: a real Store in tmp_path, the real CAN owner channel on a
python-can virtual bus, a virtual head unit answering on it, simulated time. The events
it hands off go through ``emit`` into a list, the way the agent stamps and stores them."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import can
import pytest
from test_agent_notices import CODE, DAY, T0, FailingBus, make_config

from pack_agent.canbus.checks import load_and_check
from pack_agent.core.policy import ScrapDecision
from pack_agent.delivery.owner_channel import owner_notifiers
from pack_agent.dev.sim.head_unit import VirtualHeadUnit
from pack_agent.runtime.notice_dispatch import NoticeDispatcher
from pack_agent.store.database import Store


def decision(rule_id: str = "capacity-80", severity: str = "advisory") -> ScrapDecision:
    return ScrapDecision(rule_id, "capacity", severity, T0, CODE, "test", "测试", {"value": 75.0})


class Desk:
    """The dispatcher, its channel and a head unit that answers after ``delay_s``."""

    def __init__(
        self, tmp_path: Path, failing: bool = False, response: str | None = "seen", **notice: Any
    ) -> None:
        self.channel = f"dispatch-{uuid.uuid4().hex[:12]}"
        self.cfg = make_config(tmp_path, self.channel, **notice)
        self.db = load_and_check(self.cfg)
        self.hu = VirtualHeadUnit(self.db, response=response, delay_s=60.0)
        self.hu_bus = can.Bus(interface="virtual", channel=self.channel)
        self.failing = failing
        self.warnings: list[tuple[str, str]] = []
        self._open()

    def _open(self) -> None:
        self.bus: can.BusABC = (
            FailingBus(channel=self.channel)
            if self.failing
            else can.Bus(interface="virtual", channel=self.channel)
        )
        self.store = Store(self.cfg.store_path())
        self.events: list[tuple[str, dict[str, Any], float]] = []
        notifier, extra = owner_notifiers(self.cfg, "powertrain", self.bus, self.db)
        self.d = NoticeDispatcher(
            self.cfg,
            self.store,
            [notifier, *extra],
            lambda t, data, now: self.events.append((t, data, now)),
            lambda key, msg: self.warnings.append((key, msg)),
            lambda: CODE,
        )

    def restart(self) -> None:
        self.store.close()
        self.bus.shutdown()
        self._open()

    def close(self) -> None:
        self.store.close()
        self.bus.shutdown()
        self.hu_bus.shutdown()

    def of(self, event_type: str) -> list[dict[str, Any]]:
        return [data for t, data, _ in self.events if t == event_type]

    def exchange(self, t: float) -> None:
        """Frames to the head unit, its due answers back into the dispatcher."""
        while (frame := self.hu_bus.recv(0)) is not None:
            self.hu.on_frame(frame, t)
        for answer in self.hu.answers_due(t):
            self.hu_bus.send(answer)
        while (frame := self.bus.recv(0)) is not None:
            assert self.d.take_frame("powertrain", frame, t)


@pytest.fixture
def desk(tmp_path: Path):  # type: ignore[no-untyped-def]
    d = Desk(tmp_path)
    yield d
    d.close()


def test_a_decision_is_shown_answered_and_both_are_events(desk: Desk) -> None:
    with desk.store.transaction():
        desk.d.open(decision(), T0)
    desk.d.send_due(T0)
    [notified] = desk.of("owner.notified")
    assert notified["rule_id"] == "capacity-80" and notified["pack_code"] == CODE
    assert notified["retries"] == 0 and notified["attempt"] == 1
    desk.exchange(T0)  # the head unit shows it, and says so
    assert desk.hu.shown and desk.of("owner.acknowledged") == []
    [displayed] = desk.of("owner.notice_displayed")
    assert displayed["attempt"] == 1 and displayed["seq"] == notified["seq"]
    desk.exchange(T0 + 60)  # and answers a minute later
    [ack] = desk.of("owner.acknowledged")
    assert ack["response"] == "seen" and ack["seq"] == notified["seq"]
    status = desk.d.notice_status()
    assert status["counters"] == {"answer.seen": 1, "displayed": 1, "notified.can": 1}
    assert status["head_unit_last_heard"] is not None and status["answers_refused"] == {}
    # the notice and the first frame ever heard from the head unit (its Displayed) survive
    # a restart
    desk.restart()
    assert [n.response for n in desk.d.book.notices] == ["seen"]
    assert desk.d.head_unit_heard_at == T0


def test_a_frame_that_is_not_an_answer_is_left_to_the_decoder(desk: Desk) -> None:
    frame = can.Message(arbitration_id=0x123, data=bytes(8), is_extended_id=False)
    assert desk.d.take_frame("powertrain", frame, T0) is False
    assert desk.d.head_unit_heard_at is None


def test_a_failing_channel_is_retried_on_its_interval_and_reported_once(tmp_path: Path) -> None:
    desk = Desk(tmp_path, failing=True, retry_interval_s=30.0)
    try:
        with desk.store.transaction():
            desk.d.open(decision(), T0)
        for k in range(10):  # ten ticks 5 s apart: a send every 30 s, not every tick
            desk.d.send_due(T0 + 5 * k)
        assert desk.d.notice_failures == 2  # at T0 and T0 + 30
        [failed] = desk.of("owner.notice_failed")
        assert failed["reason"] == "bus_error" and "bus-off" in failed["error"]
        assert desk.d.notice_status()["failing"] == [f"{failed['seq']}/can"]
        assert [k for k, _ in desk.warnings] == ["notice", "notice"]
        FailingBus.failing = False
        try:
            desk.d.send_due(T0 + 60)
        finally:
            FailingBus.failing = True
        [notified] = desk.of("owner.notified")
        assert notified["retries"] == 2
        assert desk.d.notice_status()["failing"] == []
    finally:
        desk.close()


def test_an_unanswered_notice_fails_once_per_reason(tmp_path: Path) -> None:
    desk = Desk(tmp_path, response=None, head_unit_silent_s=DAY)
    try:
        with desk.store.transaction():
            desk.d.open(decision(), T0)
        desk.d.send_due(T0)
        desk.d.check_failures(T0 + DAY - 1)
        assert desk.of("owner.notice_failed") == []
        desk.d.check_failures(T0 + DAY)
        desk.d.check_failures(T0 + 2 * DAY)
        [failed] = desk.of("owner.notice_failed")
        assert failed["reason"] == "head_unit_silent"
        assert "head_unit_last_heard" not in failed  # it was never heard
    finally:
        desk.close()


def test_advisory_waits_for_the_ignition_and_the_ignition_is_saved_lazily(desk: Desk) -> None:
    desk.d.on_ignition(False, T0)  # the first change is saved at once
    assert desk.store.get_state("ignition.on") is False
    with desk.store.transaction():
        desk.d.open(decision(), T0)
    desk.d.send_due(T0)
    assert desk.of("owner.notified") == []  # the head unit is asleep
    desk.d.on_ignition(True, T0 + 60)  # sends at once; a minute after the last save: not saved
    assert len(desk.of("owner.notified")) == 1
    assert desk.store.get_state("ignition.on") is False
    assert desk.d.unsaved()
    with desk.store.transaction():
        desk.d.save()
    assert desk.store.get_state("ignition.on") is True and not desk.d.unsaved()


def test_a_new_pack_clears_the_notices_and_withdraws_them(desk: Desk) -> None:
    with desk.store.transaction():
        desk.d.open(decision(), T0)
    desk.d.send_due(T0)
    desk.exchange(T0)
    with desk.store.transaction():
        gone = desk.d.clear()
    desk.d.withdraw(gone)
    assert [n.rule_id for n in gone] == ["capacity-80"]
    assert desk.d.notice_status()["open"] == []
    assert desk.store.get_state("notices")["notices"] == []
    sent = []
    while (frame := desk.hu_bus.recv(0)) is not None:
        sent.append(frame)
    assert sent, "the withdraw went out on the bus"


def test_a_critical_notice_goes_out_with_the_ignition_off(desk: Desk) -> None:
    desk.d.on_ignition(False, T0)
    with desk.store.transaction():
        desk.d.open(decision("soh-critical", "critical"), T0)
    desk.d.send_due(T0)
    [notified] = desk.of("owner.notified")
    assert notified["severity"] == "critical" and notified["notice_id"] == 0x0201
    interval = desk.d.book.cadence.interval(desk.d.book.active()[0])
    desk.d.send_due(T0 + interval - 1)  # not again before its interval
    assert len(desk.of("owner.notified")) == 1
    desk.d.send_due(T0 + interval)
    assert [n["attempt"] for n in desk.of("owner.notified")] == [1, 2]
