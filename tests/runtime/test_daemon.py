"""End to end: virtual vehicle on a python-can virtual bus -> the real daemon -> real mosquitto."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import can
import pytest
from can.interfaces.virtual import VirtualBus

from conftest import Subscriber
from pack_agent.canbus.checks import load_and_check
from pack_agent.config import AgentConfig, load_config, reference_config_path
from pack_agent.dev.demo import demo_config
from pack_agent.dev.sim import Scenario, VirtualHeadUnit, VirtualVehicle
from pack_agent.runtime.daemon import Daemon
from pack_agent.store import Store

DAY = 86400.0
# crosses the 80 % line about day 10; the 28-day median is below it about day 21 and
# has stayed there 14 days about day 35
FAST = Scenario(
    name="fast", description="test", days=60, soh_start=81.5, soh_per_year=20, soh_noise=0.0
)


class AgentThread:
    """The daemon in its own thread, built there (the store belongs to its thread)."""

    def __init__(self, cfg: AgentConfig, buses: dict[str, can.BusABC] | None = None) -> None:
        self.cfg = cfg
        self.buses = buses
        self.emitted: list = []
        self.daemon: Daemon | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()
        assert self._ready.wait(20), "daemon did not start"
        assert self.daemon is not None

    def _main(self) -> None:
        try:
            self.daemon = Daemon(
                self.cfg, clock=None, on_event=self.emitted.append, buses=self.buses
            )
        finally:
            self._ready.set()
        self.daemon.run()

    def read_until(self, t: float, timeout: float = 2.0) -> None:
        """Until the agent has read the frames up to ``t`` (its time line reached it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            daemon = self.daemon
            if daemon is not None and daemon.agent.latest_time >= t:
                return
            time.sleep(0.002)

    def stop(self) -> None:
        assert self.daemon is not None
        self.daemon.stop_event.set()
        self._thread.join(15)
        assert not self._thread.is_alive()


def notified_on(events: list[dict[str, Any]], channel: str) -> list[dict[str, Any]]:
    """The data of the owner.notified events (as the backend got them) on one channel."""
    return [
        e["data"]
        for e in events
        if e["type"] == "owner.notified" and e["data"]["channel"] == channel
    ]


def make_config(tmp_path: Path, port: int) -> tuple[AgentConfig, str]:
    channel = f"test-{uuid.uuid4().hex[:10]}"
    return demo_config(load_config(reference_config_path()), channel, port, tmp_path), channel


def run_vehicle(
    cfg: AgentConfig,
    channel: str,
    scenario: Scenario,
    response: Any,
    agent: AgentThread | None = None,
    display: bool = True,
):
    """The simulated vehicle at a day every 4 ms; with ``agent``, each trip waits (up to
    2 s) until the agent has read it, so a loaded machine slows the test down instead of
    leaving the agent's notices to a head unit that has stopped listening."""
    db = load_and_check(cfg)
    watcher = can.Bus(interface="virtual", channel=channel)  # what a CAN logger would see
    bus = can.Bus(interface="virtual", channel=channel, preserve_timestamps=True)
    hu = VirtualHeadUnit(db, response=response, delay_s=1.5 * DAY, display=display)
    try:
        vehicle = VirtualVehicle(
            bus, db, scenario, hu, pace_s=0.004, sync=None if agent is None else agent.read_until
        )
        vehicle.run()
        end = scenario.start + scenario.days * DAY
        for _ in range(40):  # let late notices reach the head unit and its answer go back
            vehicle.serve_head_unit(end + 2 * DAY)
            time.sleep(0.05)
        notices = []
        notice_msg = db.get_message_by_name("PA_OwnerNotice")
        while (frame := watcher.recv(0)) is not None:
            if frame.arbitration_id == notice_msg.frame_id:
                notices.append(notice_msg.decode(frame.data, decode_choices=False))
        return hu, notices
    finally:
        bus.shutdown()
        watcher.shutdown()


def test_code_decision_notice_ack_reach_the_backend(broker, tmp_path):
    cfg, channel = make_config(tmp_path, broker.port)
    # The simulated vehicle runs a day every few ms: on a loaded machine the agent can
    # lag it by more than a week of simulated time, which reads as a silent head unit
    # (seen once). This test is about delivery; the silence has tests of its own.
    cfg.notice.head_unit_silent_s = 1000 * 86400.0
    with Subscriber(broker) as backend:
        agent = AgentThread(cfg)
        try:
            hu, notices = run_vehicle(
                cfg, channel, FAST, response=["seen", "service_booked"], agent=agent
            )
            backend.wait_for(
                lambda s: (
                    len({e["event_id"] for e in s.events}) >= len(agent.emitted)
                    and "owner.acknowledged" in {e["type"] for e in s.events}
                ),
                15,
            )
        finally:
            agent.stop()
        events = list({e["event_id"]: e for e in backend.events}.values())
        topics = {m.topic for m in backend.messages}

    events.sort(key=lambda e: e["seq"])
    assert [e["seq"] for e in events] == list(range(1, len(agent.emitted) + 1))
    assert {e["event_id"] for e in events} == {e.event_id for e in agent.emitted}
    kinds = Counter(e["type"] for e in events)
    assert kinds["pack.identified"] == 1
    assert kinds["scrap.condition_met"] == 1
    assert kinds["owner.acknowledged"] == 2  # seen, then service booked at the reminder
    assert kinds["owner.notified"] >= 2
    assert set(kinds) <= {
        "pack.identified",
        "pack.health",
        "scrap.condition_met",
        "owner.notified",
        "owner.notice_displayed",
        "owner.acknowledged",
        "owner.notice",
    }
    order = [e["type"] for e in events if e["type"] != "pack.health"]
    assert order[:3] == ["pack.identified", "scrap.condition_met", "owner.notified"]
    assert order[-1] == "owner.acknowledged"
    can_notified = notified_on(events, "can")
    mqtt_notified = notified_on(events, "mqtt")
    # the second channel: one owner.notice per attempt, on its own topic
    assert [n["attempt"] for n in mqtt_notified] == [n["attempt"] for n in can_notified]
    copies = [e["data"] for e in events if e["type"] == "owner.notice"]
    assert [c["attempt"] for c in copies] == [n["attempt"] for n in can_notified]
    assert copies[0]["service_outlet"]["phone"] == cfg.notice.service_phone
    assert copies[0]["texts"]["zh"]["title"] == "动力电池已达到推荐报废条件（容量）"
    assert copies[0]["procedure_url"] == cfg.notice.procedure_url  # Art. 15(3), to the app
    assert cfg.notice.procedure_url in copies[0]["texts"]["en"]["action"]
    assert f"pack-agent/v1/{cfg.vin}/events/owner.notice" in topics

    identified = next(e for e in events if e["type"] == "pack.identified")
    assert identified["vin"] == cfg.vin
    assert identified["data"]["pack_code"] == FAST.code
    assert identified["data"]["fields"]["production_date"] == "2026-03-02"

    decision = next(e for e in events if e["type"] == "scrap.condition_met")["data"]
    assert decision["rule_id"] == "capacity-80" and decision["sample_count"] >= 14
    assert decision["statistic"]["median"] < 80.0 and decision["persistence_days"] == 14
    assert sum(s["value"] < 80.0 for s in decision["samples"]) > len(decision["samples"]) / 2
    assert decision["pack_code"] == FAST.code

    acks = [e["data"] for e in events if e["type"] == "owner.acknowledged"]
    assert [(a["response"], a["follow_up"]) for a in acks] == [
        ("seen", "slow"),
        ("service_booked", "stop"),
    ]
    ack = acks[0]
    assert ack["notice_id"] == 0x0101 and ack["channel"] == "can"
    # a week after "seen", one reminder; the answer to it ends the notice
    assert acks[1]["attempt"] == can_notified[-1]["attempt"]

    # the notice frames on the bus: one per owner.notified event, same sequence number
    assert len(notices) == len(can_notified)
    assert {(n["PA_NoticeSeq"], n["PA_NoticeId"], n["PA_NoticeSeverity"]) for n in notices} == {
        (ack["seq"], 0x0101, 1)
    }
    assert [n["PA_NoticeAttempt"] for n in notices] == list(range(1, len(notices) + 1))
    assert hu.shown and hu.shown[0].text is not None
    n = cfg.notice  # the text lines: outlet, phone, procedure, emergency phone
    lines = (n.service_outlet, n.service_phone, n.procedure_url, n.emergency_phone)
    assert hu.shown[0].outlet == "\n".join(lines)

    # every event was acknowledged by the broker: the outbox is empty
    store = Store(cfg.store_path())
    try:
        assert store.pending_count() == 0
    finally:
        store.close()


def test_no_answer_means_notices_repeat_daily_and_are_kept(broker, tmp_path):
    cfg, channel = make_config(tmp_path, broker.port)
    with Subscriber(broker) as backend:
        agent = AgentThread(cfg)
        try:
            # a head unit that sends nothing at all, not even that it shows the notice
            _, notices = run_vehicle(cfg, channel, FAST, response=None, agent=agent, display=False)
            backend.wait_for(
                lambda s: len({e["event_id"] for e in s.events}) >= len(agent.emitted), 15
            )
        finally:
            agent.stop()
    events = list({e["event_id"]: e for e in backend.events}.values())
    kinds = Counter(e["type"] for e in events)
    assert kinds["owner.acknowledged"] == 0
    # decided about day 35 of 60, one notice a simulated day until the end
    on_can = notified_on(events, "can")
    assert 15 <= len(on_can) == len(notices)
    # a week without a single answer frame: the failure is an event, once
    (failed,) = [e["data"] for e in events if e["type"] == "owner.notice_failed"]
    assert failed["reason"] == "head_unit_silent" and failed["seq"] == notices[0]["PA_NoticeSeq"]


def test_restart_neither_forgets_nor_repeats_the_decision(broker, tmp_path):
    cfg, channel = make_config(tmp_path, broker.port)
    with Subscriber(broker) as backend:
        first = AgentThread(cfg)
        run_vehicle(cfg, channel, FAST, response="service_booked", agent=first)
        backend.wait_for(lambda s: "owner.acknowledged" in {e["type"] for e in s.events}, 15)
        first.stop()
        second = AgentThread(cfg)  # same store
        try:
            run_vehicle(cfg, channel, FAST, response="service_booked", agent=second)
            time.sleep(0.5)
        finally:
            second.stop()
        backend.wait_for(
            lambda s: (
                len({e["event_id"] for e in s.events}) >= len(first.emitted) + len(second.emitted)
            ),
            15,
        )
    assert [e.type for e in second.emitted if e.type != "pack.health"] == []
    assert [e.seq for e in second.emitted] == list(
        range(len(first.emitted) + 1, len(first.emitted) + len(second.emitted) + 1)
    )


def test_broker_absent_at_start_keeps_events_until_it_comes(tmp_path):
    from pack_agent.dev.broker import LocalBroker, free_port

    port = free_port()
    cfg, channel = make_config(tmp_path, port)
    agent = AgentThread(cfg)
    try:
        run_vehicle(cfg, channel, FAST, response="seen", agent=agent)
        assert len(agent.emitted) >= 5
        with LocalBroker(port=port) as broker, Subscriber(broker) as backend:
            backend.wait_for(
                lambda s: len({e["event_id"] for e in s.events}) >= len(agent.emitted), 20
            )
            assert {e["event_id"] for e in backend.events} == {e.event_id for e in agent.emitted}
    finally:
        agent.stop()


def test_bad_bus_interface_is_one_clear_error(tmp_path):
    from pack_agent.errors import BusError

    cfg, _ = make_config(tmp_path, 1883)
    cfg.buses[0].interface = "no-such-interface"
    with pytest.raises(BusError, match="bus 'powertrain' \\(no-such-interface:"):
        Daemon(cfg)


class FailingBus(VirtualBus):
    """The agent's side of the bus: receives, but its sends fail while ``failing`` is set
    (a physical bus-off cannot run here)."""

    failing = True

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        if self.failing:
            raise can.CanOperationError("Transmit buffer full (bus-off)")
        super().send(msg, timeout)


def test_a_failing_bus_is_reported_retried_and_the_notice_delivered(broker, tmp_path):
    cfg, channel = make_config(tmp_path, broker.port)
    assert cfg.notice.mqtt_copy  # the reference configuration sends the app copy
    agent_bus = FailingBus(channel=channel, preserve_timestamps=True)
    db = load_and_check(cfg)
    with Subscriber(broker) as backend:
        agent = AgentThread(cfg, buses={"powertrain": agent_bus})
        bus = can.Bus(interface="virtual", channel=channel, preserve_timestamps=True)
        hu = VirtualHeadUnit(db, response="service_booked", delay_s=0.5 * DAY)

        def heal(state: Any) -> None:
            if state.day == 45:  # the bus comes back ten days after the decision (day 35)
                time.sleep(0.3)
                agent_bus.failing = False

        try:
            # paced by the agent (as run_vehicle does): each synced commit costs an fdatasync,
            # and a loaded machine must slow the vehicle down, not outrun the head unit
            VirtualVehicle(
                bus, db, FAST, hu, pace_s=0.004, on_day=heal, sync=agent.read_until
            ).run()
            backend.wait_for(
                lambda s: (
                    "owner.acknowledged" in {e["type"] for e in s.events}
                    and len({e["event_id"] for e in s.events}) >= len(agent.emitted)
                ),
                15,
            )
        finally:
            bus.shutdown()
            agent.stop()
    events = sorted({e["event_id"]: e for e in backend.events}.values(), key=lambda e: e["seq"])
    notice_events = [
        (e["type"], e["data"].get("channel")) for e in events if e["type"].startswith("owner.")
    ]
    # the head unit's failure is visible, once; the app copy goes out at once; later delivered
    assert notice_events[:3] == [
        ("owner.notice_failed", "can"),
        ("owner.notified", "mqtt"),
        ("owner.notice", None),
    ]
    failures = [e["data"] for e in events if e["type"] == "owner.notice_failed"]
    assert failures[0]["reason"] == "bus_error" and "bus-off" in failures[0]["error"]
    # a week with nothing from the head unit is reported too, once
    assert [f["reason"] for f in failures] == ["bus_error", "head_unit_silent"]
    on_can = notified_on(events, "can")
    on_mqtt = notified_on(events, "mqtt")
    # retried daily meanwhile; the app copy kept the daily cadence, the head unit got the latest
    assert on_can[0]["retries"] >= 5 and on_can[0]["attempt"] >= 5
    assert [n["attempt"] for n in on_mqtt[: on_can[0]["attempt"]]] == list(
        range(1, on_can[0]["attempt"] + 1)
    )
    assert hu.shown[0].attempt == on_can[0]["attempt"]
    assert notice_events[-1] == ("owner.acknowledged", "can")
    assert agent.daemon is not None
    status = agent.daemon.agent.notice_status()
    assert status["send_failures"] == on_can[0]["retries"] and status["failing"] == []


def test_the_clock_comes_from_the_configuration(tmp_path):
    cfg, _ = make_config(tmp_path, 1883)
    daemon = Daemon(cfg)
    try:
        assert daemon.clock is time.time  # a vehicle runs on the wall clock
    finally:
        daemon.close()
    cfg.daemon.clock = "frames"
    daemon = Daemon(cfg)
    try:
        assert daemon.clock is None  # a bench or simulator: the frames' own time
    finally:
        daemon.close()
