"""The agent's owner notices, driven synchronously with frames: a real Store in tmp_path, real
python-can virtual buses between the agent and the virtual head unit, simulated time."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import can
import pytest
from can.interfaces.virtual import VirtualBus

from pack_agent.canbus.checks import load_and_check
from pack_agent.canbus.decoder import Decoder
from pack_agent.config import AgentConfig, as_data, load_config, parse_config, reference_config_path
from pack_agent.delivery.owner_channel import RECENT_CHALLENGES, owner_notifiers
from pack_agent.dev.sim.head_unit import VirtualHeadUnit
from pack_agent.dev.sim.vehicle import code_pages, encode
from pack_agent.runtime.agent import Agent
from pack_agent.store import Store

DAY = 86400.0
HOUR = 3600.0
T0 = 1_800_000_000.0
CODE = "0RJPEA00HAU0AAF131001955"
NEW_CODE = "0RJPEA00HAU0AAJ8L0004242"
OUTLET = "回收服务网点，上海市示例路88号 / Recycling outlet, 88 Example Road"
PHONE = "+86 400 000 0000"
PROCEDURE = "https://maker.example/battery-recycling"
EMERGENCY = "+86 400 111 2222"


class FailingBus(VirtualBus):
    """A virtual bus whose send fails like a bus-off controller while ``failing`` is set."""

    failing = True

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        if self.failing:
            raise can.CanOperationError("Transmit buffer full (bus-off)")
        super().send(msg, timeout)


def make_config(
    tmp_path: Path, channel: str, pack_code: dict[str, Any] | None = None, **notice: Any
) -> AgentConfig:
    data = as_data(load_config(reference_config_path()))
    data["ignition"].update(notice.pop("ignition", {}))
    data["buses"] = [{"name": "powertrain", "interface": "virtual", "channel": channel}]
    data["store"]["path"] = str(tmp_path / "agent.db")
    data["health"] = {"publish_interval_s": 1000 * DAY, "bms_timeout_s": 1000 * DAY}
    # two quick rules: these tests are about the notices, not the policy
    data["rules"] = [
        {
            "id": "capacity-80",
            "metric": "soh",
            "below": 80.0,
            "consecutive": 2,
            "description_en": "test",
            "description_zh": "测试",
        },
        {
            "id": "soh-critical",
            "kind": "safety",
            "metric": "soh",
            "comparison": "below",
            "threshold": 40.0,
            "confirm_readings": 2,
            "confirm_s": 0,
            "severity": "critical",
            "notice_id": 0x0201,  # SafetyCritical: a safety rule (0x0202 is for thermal events)
            "description_en": "test",
            "description_zh": "测试",
        },
    ]
    data["notice"].update(
        service_outlet=OUTLET,
        service_phone=PHONE,
        procedure_url=PROCEDURE,
        emergency_phone=EMERGENCY,
        mqtt_copy=False,
        head_unit_silent_s=1000 * DAY,
    )
    data["notice"].update(notice)
    data["pack_code"].update(pack_code or {})
    return parse_config(data, reference_config_path().parent, "test")


class Rig:
    """The agent and a virtual head unit on one virtual CAN channel, in simulated time."""

    def __init__(
        self,
        tmp_path: Path,
        response: str | Sequence[str | None] | None = "seen",
        delay_s: float = HOUR,
        failing: bool = False,
        display: bool = True,
        hu_key: bytes | None = None,
        pack_code: dict[str, Any] | None = None,
        **notice: Any,
    ) -> None:
        self.channel = f"notice-{uuid.uuid4().hex[:12]}"
        self.cfg = make_config(tmp_path, self.channel, pack_code, **notice)
        self.db = load_and_check(self.cfg)
        self.events: list[Any] = []
        self.hu = VirtualHeadUnit(
            self.db, response=response, delay_s=delay_s, display=display, key=hu_key
        )
        self.hu_bus = can.Bus(interface="virtual", channel=self.channel)
        self.failing = failing
        self._start()

    def _start(self) -> None:
        self.bus: can.BusABC = (
            FailingBus(channel=self.channel)
            if self.failing
            else can.Bus(interface="virtual", channel=self.channel)
        )
        self.store = Store(self.cfg.store_path())
        notifier, extra = owner_notifiers(self.cfg, "powertrain", self.bus, self.db)
        self.agent = Agent(
            self.cfg,
            Decoder(self.cfg, self.db),
            self.store,
            notifier,
            on_event=self.events.append,
            extra_notifiers=extra,
        )

    def restart(self) -> None:
        self.store.close()
        self.bus.shutdown()
        self._start()

    def close(self) -> None:
        self.store.close()
        self.bus.shutdown()
        self.hu_bus.shutdown()

    # -- the vehicle ------------------------------------------------------------

    def feed(self, frames: list[can.Message], t: float) -> None:
        for frame in frames:
            self.agent.handle_frame("powertrain", frame, t)

    def identify(self, t: float, code: str = CODE) -> None:
        self.feed(code_pages(self.db, code, t) + code_pages(self.db, code, t + 1), t + 1)

    def soh(self, value: float, t: float) -> None:
        health = {
            "BMS_SOH": value,
            "BMS_Capacity": 100.0,
            "BMS_InternalResistance": 70.0,
            "BMS_FullCycles": 500,
            "BMS_EndOfLife": 0,
        }
        self.feed([encode(self.db, "BMS_Health", health, t)], t)

    def ignition(self, on: bool, t: float) -> None:
        values = {"VCU_Odometer": 12345.0, "VCU_Ignition": 2 if on else 0}
        self.feed([encode(self.db, "VCU_Vehicle", values, t)], t)
        self.pump(t)

    def decide(self, t: float, soh: float = 75.0) -> None:
        self.identify(t)
        self.soh(soh, t + 10)
        self.soh(soh, t + 20)
        self.pump(t + 20)

    def pump(self, t: float) -> None:
        """Frames to the head unit, its answers back to the agent, the agent's timers."""
        for _ in range(2):
            while (frame := self.hu_bus.recv(0)) is not None:
                self.hu.on_frame(frame, t)
            for answer in self.hu.answers_due(t):
                self.hu_bus.send(answer)
            while (frame := self.bus.recv(0)) is not None:
                self.agent.handle_frame("powertrain", frame, t)
            self.agent.tick(t)

    def run(self, start: float, end: float, step: float = HOUR) -> None:
        t = start
        while t <= end:
            self.pump(t)
            t += step

    def drive_days(self, start: float, days: int, trips: int = 1) -> None:
        """``trips`` ignition cycles a day from 08:00, an hour apart, for ``days`` days."""
        for d in range(days):
            for k in range(trips):
                t = start + d * DAY + 8 * HOUR + k * HOUR
                self.ignition(True, t)
                self.run(t, t + 30 * 60, 10 * 60)
                self.ignition(False, t + 40 * 60)

    # -- what happened ----------------------------------------------------------

    def of(self, kind: str, channel: str | None = None) -> list[dict[str, Any]]:
        return [
            e.data
            for e in self.events
            if e.type == kind and (channel is None or e.data.get("channel") == channel)
        ]


@pytest.fixture
def rig_factory(tmp_path):
    made: list[Rig] = []

    def make(**kw: Any) -> Rig:
        made.append(Rig(tmp_path / f"r{len(made)}", **kw))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_decision_shows_the_notice_with_the_outlet_sent_over_can(rig_factory):
    r = rig_factory(response=None)
    r.decide(T0)
    (notified,) = r.of("owner.notified")
    assert notified["attempt"] == 1 and notified["channel"] == "can"
    assert notified["notice_id"] == 0x0101 and notified["severity"] == "advisory"
    assert notified["rule_id"] == "capacity-80" and notified["pack_code"] == CODE
    assert notified["seq"] == 1 and notified["retries"] == 0
    (shown,) = r.hu.shown
    assert (shown.seq, shown.notice_id, shown.attempt) == (1, 0x0101, 1)
    assert shown.outlet == f"{OUTLET}\n{PHONE}\n{PROCEDURE}\n{EMERGENCY}"
    assert shown.text is not None and OUTLET in shown.text.body_zh and PHONE in shown.text.body_en
    types = [e.type for e in r.events]
    assert types.index("scrap.condition_met") < types.index("owner.notified")


def test_no_answer_repeats_daily_and_at_ignition_capped_per_day(rig_factory):
    r = rig_factory(response=None, max_per_period=3)
    r.ignition(True, T0)
    r.decide(T0 + 60)
    r.ignition(False, T0 + HOUR)
    r.drive_days(T0 + DAY, days=3, trips=5)
    attempts = [n["attempt"] for n in r.of("owner.notified")]
    assert attempts == list(range(1, len(attempts) + 1))
    times = [e.time.timestamp() for e in r.events if e.type == "owner.notified"]
    for t in times:  # never more than 3 in any 24 hours
        assert sum(1 for u in times if t <= u < t + DAY) <= 3
    # every day of driving showed it again (the first trips of each day)
    days = {int((t - T0) // DAY) for t in times}
    assert days == {0, 1, 2, 3}
    assert len(times) >= 7
    assert len(r.hu.shown) == len(times)


def test_ignition_on_line_is_configurable(rig_factory):
    """``[ignition] on_values`` is the notices' On too, here by the value table's labels."""
    r = rig_factory(response=None, ignition={"on_values": ["Acc", "On", "Start"]})
    r.ignition(False, T0)
    r.decide(T0 + 60)
    acc = {"VCU_Odometer": 12345.0, "VCU_Ignition": 1}  # Acc counts as on here
    r.feed([encode(r.db, "VCU_Vehicle", acc, T0 + HOUR)], T0 + HOUR)
    r.pump(T0 + HOUR)
    assert [n["attempt"] for n in r.of("owner.notified")] == [1]
    assert r.agent.notice_status()["ignition_on"] is True


def test_ignition_off_holds_the_notice_until_ignition_on(rig_factory):
    r = rig_factory(response=None)
    r.ignition(False, T0)
    r.decide(T0 + 60)  # decided while charging with the ignition off
    r.run(T0 + 60, T0 + 2 * DAY)
    assert r.of("owner.notified") == [] and r.hu.shown == []
    assert r.agent.notice_status()["open"][0]["attempts"] == 0
    r.ignition(True, T0 + 2 * DAY + 60)
    assert [n["attempt"] for n in r.of("owner.notified")] == [1]


def test_a_critical_notice_goes_out_with_the_ignition_off(rig_factory):
    r = rig_factory(response=None, mqtt_copy=True)
    r.ignition(False, T0)
    r.decide(T0 + 60, soh=30.0)  # both rules met while parked
    sent = {(n["notice_id"], n["channel"]) for n in r.of("owner.notified")}
    assert sent == {(0x0201, "can"), (0x0201, "mqtt")}
    r.ignition(True, T0 + HOUR)
    sent = [(n["notice_id"], n["attempt"]) for n in r.of("owner.notified", "can")]
    assert sent == [(0x0201, 1), (0x0101, 1), (0x0201, 2)]


def test_seen_then_slow_reminders_then_service_booked_stops(rig_factory):
    r = rig_factory(response=["seen", "service_booked"], slow_repeat_interval_s=7 * DAY)
    r.decide(T0)
    r.run(T0, T0 + 2 * HOUR, 10 * 60)
    (ack,) = r.of("owner.acknowledged")
    assert ack["response"] == "seen" and ack["follow_up"] == "slow" and ack["attempt"] == 1
    assert ack["acknowledged_at"].startswith("2027-01-15")
    # ignition cycles during the week do not bring it back
    r.drive_days(T0 + DAY, days=5, trips=2)
    assert len(r.of("owner.notified")) == 1
    r.run(T0 + 6 * DAY, T0 + 9 * DAY)
    assert len(r.of("owner.notified")) == 1  # due after a week, but the ignition is off
    r.ignition(True, T0 + 9 * DAY)
    r.run(T0 + 9 * DAY, T0 + 9 * DAY + 2 * HOUR, 10 * 60)
    acks = r.of("owner.acknowledged")
    assert [n["attempt"] for n in r.of("owner.notified")] == [1, 2]
    assert [a["response"] for a in acks] == ["seen", "service_booked"]
    assert acks[1]["follow_up"] == "stop"
    r.ignition(False, T0 + 9 * DAY + 3 * HOUR)
    r.drive_days(T0 + 10 * DAY, days=3, trips=2)
    r.run(T0 + 13 * DAY, T0 + 60 * DAY, 6 * HOUR)
    assert len(r.of("owner.notified")) == 2
    assert r.agent.notice_status()["open"] == []


def test_dismissed_comes_back_at_the_next_ignition_on(rig_factory):
    r = rig_factory(response="dismissed", delay_s=5 * 60)
    r.ignition(True, T0)
    r.decide(T0 + 60)
    r.run(T0 + 60, T0 + 30 * 60, 5 * 60)
    assert [a["response"] for a in r.of("owner.acknowledged")] == ["dismissed"]
    assert r.of("owner.acknowledged")[0]["follow_up"] == "repeat"
    r.ignition(False, T0 + HOUR)
    r.run(T0 + HOUR, T0 + 2 * HOUR, 10 * 60)
    assert len(r.of("owner.notified")) == 1
    r.ignition(True, T0 + 3 * HOUR)  # the next trip, the same day
    assert [n["attempt"] for n in r.of("owner.notified")] == [1, 2]


def test_service_booked_at_once_stops_everything(rig_factory):
    r = rig_factory(response="service_booked")
    r.decide(T0)
    r.run(T0, T0 + 2 * HOUR, 10 * 60)
    r.drive_days(T0 + DAY, days=3, trips=3)
    r.run(T0 + 4 * DAY, T0 + 100 * DAY, DAY)
    assert len(r.of("owner.notified")) == 1
    (ack,) = r.of("owner.acknowledged")
    assert ack["response"] == "service_booked" and ack["follow_up"] == "stop"
    assert r.of("owner.notice_failed") == []


def test_restart_between_notice_and_answer(rig_factory):
    r = rig_factory(response="seen", delay_s=6 * HOUR)
    r.decide(T0)
    assert len(r.of("owner.notified")) == 1
    r.restart()  # the head unit answers while the agent is restarting
    r.run(T0 + HOUR, T0 + 12 * HOUR)
    assert len(r.of("owner.notified")) == 1  # not re-sent early after the restart
    (ack,) = r.of("owner.acknowledged")
    assert ack["response"] == "seen" and ack["seq"] == 1 and ack["attempt"] == 1
    r.restart()
    r.run(T0 + 12 * HOUR, T0 + 6 * DAY)
    assert len(r.of("owner.notified")) == 1  # the slow cadence survived the restart
    r.run(T0 + 6 * DAY, T0 + 8 * DAY)
    assert [n["attempt"] for n in r.of("owner.notified")] == [1, 2]
    seqs = [e.seq for e in r.events]
    assert seqs == list(range(1, len(seqs) + 1))


def test_restart_without_answer_keeps_the_daily_cadence(rig_factory):
    r = rig_factory(response=None)
    r.decide(T0)
    r.restart()
    r.run(T0 + 60, T0 + DAY - 60)
    assert len(r.of("owner.notified")) == 1
    r.restart()
    r.run(T0 + DAY, T0 + DAY + 60, 30)
    assert [n["attempt"] for n in r.of("owner.notified")] == [1, 2]


def test_restart_with_the_ignition_on_is_not_an_ignition_cycle(rig_factory):
    r = rig_factory(response=None)
    r.ignition(True, T0)
    r.decide(T0 + 60)
    r.restart()
    r.ignition(True, T0 + HOUR)  # still on: the gateway rebooted mid-trip
    assert len(r.of("owner.notified")) == 1
    r.ignition(False, T0 + 2 * HOUR)
    r.restart()
    r.ignition(True, T0 + 3 * HOUR)  # a real Off->On across a restart
    assert [n["attempt"] for n in r.of("owner.notified")] == [1, 2]


def test_failing_bus_is_retried_reported_once_and_delivered_later(rig_factory):
    r = rig_factory(response=None, failing=True, retry_interval_s=5.0)
    r.decide(T0)
    r.run(T0 + 20, T0 + 120, 1)
    assert r.of("owner.notified") == []
    (failed,) = r.of("owner.notice_failed")
    assert failed["reason"] == "bus_error" and failed["channel"] == "can"
    assert failed["attempt"] == 1 and failed["seq"] == 1 and "0x3C2" in failed["error"]
    status = r.agent.notice_status()
    tries = status["send_failures"]
    assert 19 <= tries <= 22  # every 5 s for 100 s, not every tick
    assert status["failing"] == ["1/can"] and "bus-off" in status["last_error"]
    assert status["open"][0]["undelivered"] == ["can"]
    r.bus.failing = False  # type: ignore[attr-defined]
    r.pump(T0 + 130)
    (notified,) = r.of("owner.notified")
    assert notified["attempt"] == 1 and notified["retries"] == tries
    assert r.hu.shown and r.hu.shown[0].attempt == 1
    assert r.agent.notice_status()["failing"] == []
    assert r.agent.notice_status()["counters"]["notified.can"] == 1


def test_failing_bus_survives_a_restart_and_is_not_lost(rig_factory):
    r = rig_factory(response=None, failing=True)
    r.decide(T0)
    r.restart()  # still failing after the restart
    r.pump(T0 + 60)
    assert r.of("owner.notified") == []
    assert len(r.of("owner.notice_failed")) == 2  # once per agent run
    r.bus.failing = False  # type: ignore[attr-defined]
    r.pump(T0 + 120)
    assert [n["attempt"] for n in r.of("owner.notified")] == [1]


def test_silent_head_unit_and_exhausted_attempts_are_events(rig_factory):
    # a head unit that says nothing at all: not even that a notice is on its screen
    r = rig_factory(response=None, display=False, head_unit_silent_s=2 * DAY, max_attempts=4)
    r.decide(T0)
    r.run(T0, T0 + 6 * DAY, 6 * HOUR)
    reasons = [f["reason"] for f in r.of("owner.notice_failed")]
    assert reasons == ["head_unit_silent", "attempts_exhausted"]
    assert len(r.of("owner.notified")) == 4
    assert r.agent.notice_status()["open"][0]["reported"] == reasons


def test_mqtt_copy_goes_out_with_every_attempt_even_when_can_fails(rig_factory):
    r = rig_factory(response=None, failing=True, mqtt_copy=True)
    r.decide(T0)
    assert [n["channel"] for n in r.of("owner.notified")] == ["mqtt"]
    (copy,) = r.of("owner.notice")
    assert copy["notice_id"] == 0x0101 and copy["name"] == "CapacityEndOfLifeAdvisory"
    assert copy["attempt"] == 1 and copy["severity"] == "advisory"
    assert copy["service_outlet"] == {"name": OUTLET, "phone": PHONE}
    assert PHONE in copy["texts"]["zh"]["action"] and copy["texts"]["en"]["title"]
    r.run(T0 + 30, T0 + 2 * DAY + 60)  # two days of a dead bus: the app copy keeps the cadence
    assert [(n["attempt"], n["channel"]) for n in r.of("owner.notified")] == [
        (1, "mqtt"),
        (2, "mqtt"),
        (3, "mqtt"),
    ]
    assert len(r.of("owner.notice_failed")) == 1  # reported once, not per retry or attempt
    r.bus.failing = False  # type: ignore[attr-defined]
    r.pump(T0 + 2 * DAY + 120)
    (on_can,) = r.of("owner.notified", "can")
    assert on_can["attempt"] == 3
    assert on_can["retries"] == r.agent.notice_status()["send_failures"] >= 48  # hourly pumps
    assert len(r.of("owner.notice")) == 3 and r.hu.shown[0].attempt == 3


def test_critical_notice_uses_its_id_and_repeats_hourly(rig_factory):
    r = rig_factory(response="seen", delay_s=10 * 60, critical_repeat_interval_s=HOUR)
    r.decide(T0, soh=30.0)  # both rules: advisory and critical
    ids = sorted({n["notice_id"] for n in r.of("owner.notified")})
    assert ids == [0x0101, 0x0201]
    r.run(T0 + 60, T0 + 3 * HOUR + 120, 10 * 60)
    critical = [n for n in r.of("owner.notified") if n["notice_id"] == 0x0201]
    advisory = [n for n in r.of("owner.notified") if n["notice_id"] == 0x0101]
    assert len(critical) >= 3 and len(advisory) == 1  # seen: critical goes on, advisory slows
    shown = [s for s in r.hu.shown if s.notice_id == 0x0201]
    assert shown[0].text is not None and shown[0].text.severity == "critical"
    assert "119" in shown[0].text.body_zh


def test_pack_replacement_withdraws_the_open_notice(rig_factory):
    r = rig_factory(response=None, pack_code={"replaced_after_trips": 1})
    r.decide(T0)
    r.identify(T0 + DAY / 2, NEW_CODE)
    r.pump(T0 + DAY / 2)
    assert r.hu.withdrawn == [(1, 0x0101)]
    r.run(T0 + DAY, T0 + 3 * DAY)
    assert len(r.of("owner.notified")) == 1
    assert r.agent.notice_status()["open"] == []


def test_only_well_formed_answer_frames_prove_the_head_unit_alive(rig_factory):
    """An empty, short, extended or corrupted frame at the answer id is refused and says
    nothing about the head unit; a well-formed answer to no open attempt proves it alive
    (and answers nothing)."""
    r = rig_factory(response=None, display=False)
    r.decide(T0)
    ack = r.db.get_message_by_name("HU_NoticeAck")
    bad = [
        can.Message(arbitration_id=ack.frame_id, is_extended_id=False, data=b""),
        can.Message(arbitration_id=ack.frame_id, is_extended_id=False, data=b"\x01\x01"),
        can.Message(arbitration_id=ack.frame_id, is_extended_id=True, data=bytes(8)),
        can.Message(arbitration_id=ack.frame_id, is_extended_id=False, data=bytes(8)),  # CRC
    ]
    for frame in bad:
        r.agent.handle_frame("powertrain", frame, T0 + 100)
    status = r.agent.notice_status()
    assert status["head_unit_last_heard"] is None
    assert status["answers_refused"] == {
        "0 bytes, expected 8": 1,
        "2 bytes, expected 8": 1,
        "extended id": 1,
        "e2e crc": 1,
    }
    stray = answer_frame(r.db, seq=9, code=1, challenge=1, fresh=1, counter=0)
    r.agent.handle_frame("powertrain", stray, T0 + 101)
    assert r.agent.notice_status()["head_unit_last_heard"] is not None
    assert r.of("owner.acknowledged") == [] and r.agent.frame_errors == 0


def answer_frame(
    db: Any,
    seq: int,
    code: int,
    challenge: int,
    fresh: int,
    counter: int,
    key: bytes | None = None,
    mac: int | None = None,
) -> can.Message:
    """An HU_NoticeAck as anyone on the bus can build it: the CRC is public, the MAC
    needs the key (``mac`` forces a value: a guess)."""
    from pack_agent.canbus.e2e import Protection
    from pack_agent.delivery.secoc import AnswerMac
    from pack_agent.dev.sim.protect import reference_e2e

    msg = db.get_message_by_name("HU_NoticeAck")
    if mac is None:
        mac = AnswerMac(key, msg.frame_id).mac(seq, code, challenge, fresh) if key else 0
    values = {
        "HU_AckSeq": seq,
        "HU_AckResponse": code,
        "HU_AckCounter": 0,
        "HU_AckChallenge": challenge,
        "HU_AckCrc": 0,
        "HU_AckFreshness": fresh,
        "HU_AckMac": mac,
    }
    data = Protection(msg, reference_e2e()["HU_NoticeAck"]).protect(msg.encode(values), counter)
    return can.Message(arbitration_id=msg.frame_id, is_extended_id=False, data=data)


def test_displayed_is_reported_once_per_attempt_before_the_answer(rig_factory):
    r = rig_factory(response="dismissed", delay_s=2 * HOUR)
    r.decide(T0)
    r.run(T0 + HOUR, T0 + 3 * HOUR)
    (shown,) = r.of("owner.notice_displayed")
    (notified,) = r.of("owner.notified")
    assert shown["attempt"] == notified["attempt"] == 1 and shown["channel"] == "can"
    assert shown["displayed_at"] < r.of("owner.acknowledged")[0]["acknowledged_at"]
    r.drive_days(T0 + DAY, 1)  # dismissed: shown again at the next ignition-on
    assert [d["attempt"] for d in r.of("owner.notice_displayed")] == [1, 2]
    assert r.agent.notice_status()["counters"]["displayed"] == 2


KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f")


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "head-unit.key"
    path.write_text(KEY.hex() + "\n", encoding="ascii")
    return path


def _open_critical(r: Any) -> Any:
    r.decide(T0, soh=35.0)  # both rules: an advisory (seq 1) and a critical notice (seq 2)
    (critical,) = [n for n in r.agent.notices.active() if n.severity == "critical"]
    return critical


def latest(notice: Any) -> int:
    """The challenge of the notice's latest attempt (sniffed from its notice frame)."""
    return notice.challenges[-1][0]


def test_forged_answers_are_refused_counted_and_the_notice_keeps_repeating(rig_factory, key_file):
    """With a shared key: a replayed answer, an answer to an attempt long gone, an answer
    moved to another notice, guessed MACs are refused and counted; nothing is answered,
    and the critical notice goes on repeating."""
    r = rig_factory(
        response=None,
        display=False,
        key_file=str(key_file),
        max_bad_macs=4,
        critical_max_per_period=24,  # every two hours, for days
        max_attempts=100,
    )
    critical = _open_critical(r)
    seq, first = critical.seq, latest(critical)
    # the genuine head unit reports attempt 1 on its screen (it has the key): taken
    genuine = answer_frame(r.db, seq, 4, first, 1, 0, key=KEY)
    r.agent.handle_frame("powertrain", genuine, T0 + 30)
    assert [d["attempt"] for d in r.of("owner.notice_displayed")] == [1]
    # the same frame again: the E2E counter repeats; re-sealed with the next counter: the
    # freshness value is not above the last one taken for that challenge
    r.agent.handle_frame("powertrain", genuine, T0 + 31)
    again = answer_frame(r.db, seq, 4, first, 1, 1, key=KEY)
    r.agent.handle_frame("powertrain", again, T0 + 32)
    now = T0
    while first in [c[0] for c in critical.challenges]:  # attempts, two hours apart, until
        now += 2 * HOUR  # attempt 1 has left the window of recent ones
        r.run(now, now)
    assert critical.attempts == RECENT_CHALLENGES + 1
    # a genuine answer to attempt 1, never delivered then (its MAC is right): too old now
    old = answer_frame(r.db, seq, 3, first, 2, 2, key=KEY)
    r.agent.handle_frame("powertrain", old, now + 1)
    # the advisory notice's answer (MAC and all) with the critical notice's sequence number
    from pack_agent.delivery.secoc import AnswerMac

    advisory = next(n for n in r.agent.notices.active() if n.severity == "advisory")
    advisory_mac = AnswerMac(KEY, 0x3C1).mac(advisory.seq, 3, latest(advisory), 1)
    moved = answer_frame(r.db, seq, 3, latest(advisory), 1, 3, mac=advisory_mac)
    r.agent.handle_frame("powertrain", moved, now + 2)
    # blind guesses with the right challenge (it is on the bus): the attempt is voided
    for i in range(4):
        guess = answer_frame(r.db, seq, 3, latest(critical), 1, 4 + i, mac=0x1234 + i)
        r.agent.handle_frame("powertrain", guess, now + 3 + i)
    late = answer_frame(r.db, seq, 3, latest(critical), 1, 8, key=KEY)
    r.agent.handle_frame("powertrain", late, now + 10)
    refused = r.agent.notice_status()["answers_refused"]
    assert refused == {
        "e2e counter repeated": 1,
        "freshness": 1,
        "challenge": 1,
        "mac": 5,
        "challenge voided": 1,
    }
    assert r.of("owner.acknowledged") == [] and r.agent.frame_errors == 0
    r.run(now + 2 * HOUR, now + 2 * HOUR)
    assert critical.attempts == RECENT_CHALLENGES + 2  # still repeating
    assert critical.follow_up == "repeat"
    taken = answer_frame(r.db, seq, 3, latest(critical), 1, 9, key=KEY)
    r.agent.handle_frame("powertrain", taken, now + 2 * HOUR + 5)
    (ack,) = r.of("owner.acknowledged")
    assert ack["seq"] == seq and ack["response"] == "service_booked"
    assert ack["attempt"] == RECENT_CHALLENGES + 2


def test_without_a_key_the_challenge_and_freshness_still_stop_replays(rig_factory):
    r = rig_factory(response=None, display=False)
    critical = _open_critical(r)
    seq, first = critical.seq, latest(critical)
    shown = answer_frame(r.db, seq, 4, first, 1, 0)
    r.agent.handle_frame("powertrain", shown, T0 + 30)
    r.run(T0 + 2 * HOUR, T0 + 2 * HOUR)  # attempt 2
    replay = answer_frame(r.db, seq, 4, first, 1, 1)  # the answer taken, re-sealed
    r.agent.handle_frame("powertrain", replay, T0 + 2 * HOUR + 1)
    advisory = next(n for n in r.agent.notices.active() if n.severity == "advisory")
    moved = answer_frame(r.db, seq, 3, latest(advisory), 1, 2)  # another notice's answer
    r.agent.handle_frame("powertrain", moved, T0 + 2 * HOUR + 2)
    assert r.agent.notice_status()["answers_refused"] == {"freshness": 1, "challenge": 1}
    assert r.of("owner.acknowledged") == []
    # the owner answers the first showing after the second went out: still their answer
    late = answer_frame(r.db, seq, 3, first, 2, 3)
    r.agent.handle_frame("powertrain", late, T0 + 2 * HOUR + 3)
    (ack,) = r.of("owner.acknowledged")
    assert ack["seq"] == seq and ack["response"] == "service_booked"


def test_the_simulated_head_unit_with_the_key_is_answered_end_to_end(rig_factory, key_file):
    r = rig_factory(response="service_booked", delay_s=HOUR, key_file=str(key_file), hu_key=KEY)
    r.decide(T0)
    r.run(T0 + HOUR, T0 + 2 * HOUR)
    assert len(r.of("owner.notice_displayed")) == 1
    (ack,) = r.of("owner.acknowledged")
    assert ack["response"] == "service_booked"
    assert r.agent.notice_status()["answers_refused"] == {}


def test_a_head_unit_with_the_wrong_key_is_never_answered(rig_factory, key_file):
    r = rig_factory(
        response="service_booked", delay_s=HOUR, key_file=str(key_file), hu_key=b"k" * 16
    )
    r.decide(T0)
    r.run(T0 + HOUR, T0 + 2 * HOUR)
    assert r.of("owner.acknowledged") == [] and r.of("owner.notice_displayed") == []
    assert r.agent.notice_status()["answers_refused"]["mac"] >= 2


def test_readings_under_another_code_never_decide_for_the_known_pack(rig_factory):
    """Issue 16 item 3: a different code (here one trip of it) withholds the readings;
    the known code back, its readings count again."""
    r = rig_factory(response=None)
    r.identify(T0)
    r.identify(T0 + 100, NEW_CODE)  # one trip: not yet a replacement
    r.soh(75.0, T0 + 110)
    r.soh(75.0, T0 + 120)
    r.pump(T0 + 120)
    assert r.of("scrap.condition_met") == [] and r.of("owner.notified") == []
    per_frame = sum(1 for m in r.cfg.metrics.values() if m.message == "BMS_Health")
    assert r.of("pack.replaced") == [] and r.agent.unattributed_readings == 2 * per_frame
    r.identify(T0 + 200, CODE)
    r.soh(75.0, T0 + 210)
    r.soh(75.0, T0 + 220)
    r.pump(T0 + 220)
    (met,) = r.of("scrap.condition_met")
    assert met["pack_code"] == CODE


def test_a_pack_that_comes_back_gets_its_rules_and_notices_back(rig_factory):
    r = rig_factory(response=None, pack_code={"replaced_after_trips": 1})
    r.decide(T0)  # CODE: capacity-80 met, notice seq 1 shown
    r.identify(T0 + DAY / 2, NEW_CODE)
    r.pump(T0 + DAY / 2)
    assert r.hu.withdrawn == [(1, 0x0101)]
    assert r.agent.notice_status()["open"] == [] and r.agent.policy.latched_rules == set()
    r.identify(T0 + DAY, CODE)  # the swap undone
    (back,) = r.agent.notice_status()["open"]
    assert back["seq"] == 1 and back["attempts"] == 1
    assert r.agent.policy.latched_rules == {"capacity-80"}
    r.run(T0 + 2 * DAY, T0 + 2 * DAY + HOUR)
    attempts = [(n["seq"], n["attempt"], n["pack_code"]) for n in r.of("owner.notified")]
    assert attempts == [(1, 1, CODE), (1, 2, CODE)]  # its own notice, due again
    assert len(r.of("scrap.condition_met")) == 1  # its latch came back: not decided again
    replaced = [(e["previous_code"], e["pack_code"]) for e in r.of("pack.replaced")]
    assert replaced == [(CODE, NEW_CODE), (NEW_CODE, CODE)]


def test_each_rule_shows_the_notice_of_its_cause_with_the_procedure(rig_factory):
    """Issue 16 items 1 and 2 end to end: the reference rules' notices, the early notice
    with its horizon, the procedure and the e-bike ban in the app copy."""
    r = rig_factory(response=None, mqtt_copy=True, pack_ownership="swap_operator")
    ids = r.cfg.notice_ids
    assert ids["capacity-80"] == 0x0101 and ids["soh-critical"] == 0x0201
    ref = load_config(reference_config_path()).notice_ids
    assert ref == {
        "capacity-80": 0x0101,
        "capacity-80-forecast": 0x0102,
        "resistance-growth-60": 0x0104,
        "cycles-3000": 0x0106,
        "age-15": 0x0105,
        "thermal-event": 0x0202,
        "insulation-fault": 0x0203,
        "cell-imbalance": 0x0201,
        "bms-end-of-life": 0x0107,
    }
    r.decide(T0)
    (copy,) = r.of("owner.notice")
    assert copy["procedure_url"] == PROCEDURE and copy["pack_ownership"] == "swap_operator"
    action = copy["texts"]["en"]["action"]
    assert PROCEDURE in action and "electric bicycle" in action
    assert "battery-swap operator" in action
    (shown,) = r.hu.shown
    assert shown.text is not None and shown.text.texts["en"].action == action
