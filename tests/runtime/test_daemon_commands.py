"""End to end: the backend's commands over a real mosquitto to the real daemon (MQTT v5
request/response, and the 3.1.1 fallback), applied once, refusals changing nothing."""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import replace
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from test_agent_notices import make_config

from agent_thread import RunningDaemon
from pack_agent.config import AgentConfig
from pack_agent.core.notices import Cadence, NoticeBook
from pack_agent.runtime.commands import OVERRIDES_KEY
from pack_agent.runtime.status import read_status
from pack_agent.store.database import Store

PREFIX = "pack-agent/v1"


class Backend:
    """The backend's side: sends commands, collects responses and retained statuses."""

    def __init__(self, port: int, vin: str, protocol: int = mqtt.MQTTv5) -> None:
        self.vin = vin
        self.v5 = protocol == mqtt.MQTTv5
        self.received: list[mqtt.MQTTMessage] = []
        self.cond = threading.Condition()
        self.c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"backend-{uuid.uuid4().hex[:8]}",
            protocol=protocol,
        )
        self.c.on_message = self._on_message
        subscribed = threading.Event()
        self.c.on_subscribe = lambda *_a: subscribed.set()
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.c.subscribe([(f"{PREFIX}/{vin}/responses/#", 1), (f"{PREFIX}/{vin}/status", 1)])
        assert subscribed.wait(5)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.received.append(msg)
            self.cond.notify_all()

    def send(
        self, name: str, body: dict[str, Any] | bytes, correlation: bytes | None = None
    ) -> None:
        props = None
        if self.v5:
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = f"{PREFIX}/{self.vin}/responses/backend-1"
            if correlation is not None:
                props.CorrelationData = correlation
        payload = body if isinstance(body, bytes) else json.dumps(body)
        self.c.publish(f"{PREFIX}/{self.vin}/commands/{name}", payload, qos=1, properties=props)

    def response(self, pred: Any, timeout: float = 8.0) -> tuple[mqtt.MQTTMessage, dict[str, Any]]:
        def found() -> tuple[mqtt.MQTTMessage, dict[str, Any]] | None:
            for m in self.received:
                if "/responses/" in m.topic and pred(json.loads(m.payload)):
                    return m, json.loads(m.payload)
            return None

        with self.cond:
            assert self.cond.wait_for(lambda: found() is not None, timeout), [
                (m.topic, m.payload) for m in self.received
            ]
            result = found()
            assert result is not None
            return result

    def statuses(self) -> list[dict[str, Any]]:
        with self.cond:
            return [json.loads(m.payload) for m in self.received if m.topic.endswith("/status")]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def daemon_config(tmp_path: Any, port: int, protocol: str = "5") -> AgentConfig:
    cfg = make_config(tmp_path, f"cmd-{uuid.uuid4().hex[:10]}")
    cfg.mqtt = replace(
        cfg.mqtt, host="127.0.0.1", port=port, protocol=protocol, reconnect_min_s=0.1,
        reconnect_max_s=0.5,
    )  # fmt: skip
    cfg.daemon = replace(cfg.daemon, status_file=str(tmp_path / "status.json"))
    return cfg


def test_commands_over_mqtt_v5_answered_on_the_response_topic(broker, tmp_path):
    cfg = daemon_config(tmp_path, broker.port)
    agent = RunningDaemon(cfg, clock=time.time)
    backend = Backend(broker.port, cfg.vin)
    try:
        assert agent.daemon is not None
        agent.wait_for(lambda a: a.daemon.uplink.connected)
        with backend.cond:
            assert backend.cond.wait_for(lambda: backend.statuses(), 5)
        time.sleep(0.3)  # the agent's SUBSCRIBE follows its CONNECT; let it land
        backend.send(
            "notice.contact", {"id": "c-1", "fields": {"service_phone": "+86 21 5555"}}, b"k1"
        )
        msg, answer = backend.response(lambda b: b["id"] == "c-1")
        assert msg.topic == f"{PREFIX}/{cfg.vin}/responses/backend-1"
        assert msg.properties.CorrelationData == b"k1"
        assert answer["status"] == "applied"
        # the retained status reports the override, and so does the status file
        with backend.cond:
            assert backend.cond.wait_for(
                lambda: any(s.get("notice_overrides") for s in backend.statuses()), 5
            )
        assert backend.statuses()[-1]["notice_overrides"] == {"service_phone": "+86 21 5555"}
        # the owner channel the next notice goes out on carries the new phone
        assert agent.daemon.agent.dispatch.notifiers[0] is agent.daemon.notifier
        assert "+86 21 5555" in agent.daemon.notifier.base_text

        backend.send("notice.contact", {"id": "c-1", "fields": {"service_phone": "+1"}}, b"k2")
        msg, again = backend.response(lambda b: b["id"] == "c-1" and b.get("repeated"))
        assert msg.properties.CorrelationData == b"k2"
        assert {k: v for k, v in again.items() if k != "repeated"} == answer

        for i, (name, body) in enumerate(
            [
                ("reboot", {"id": "r-1"}),
                ("notice.contact", {"id": "r-2", "fields": {"colour": "red"}}),
                ("notice.contact", {"id": "r-3", "fields": {"service_phone": "+86" + "1" * 30}}),
                ("owner.answer", {"id": "r-4", "seq": 7, "notice_id": 257, "response": "seen"}),
            ]
        ):
            backend.send(name, body, f"r{i}".encode())
            msg, refused = backend.response(lambda b, cid=body["id"]: b["id"] == cid)
            assert refused["status"] == "refused" and refused["reason"], refused
            assert msg.properties.CorrelationData == f"r{i}".encode()

        backend.send("report.now", {"id": "n-1"})
        _, now = backend.response(lambda b: b["id"] == "n-1")
        assert now["status"] == "applied" and now["result"]["status"] is True
        agent.wait_for(lambda a: a.types().count("command.applied") == 2)
        assert agent.types().count("command.refused") == 4
        assert cfg.notice.service_phone == "+86 21 5555"
    finally:
        backend.close()
        agent.stop()
    # what the store kept, and the status file the daemon wrote as it stopped
    with Store(cfg.store_path()) as store:
        assert store.get_state(OVERRIDES_KEY) == {"service_phone": "+86 21 5555"}
    status = read_status(tmp_path / "status.json")
    assert status is not None
    assert status["agent"]["commands"] == {
        "applied": 2, "refused": 4, "repeated": 1,
        "notice_overrides": {"service_phone": "+86 21 5555"},
    }  # fmt: skip


@pytest.mark.parametrize("protocol", ["3.1.1"])
def test_mqtt_3_1_1_fallback_answers_on_the_vehicles_responses_topic(broker, tmp_path, protocol):
    cfg = daemon_config(tmp_path, broker.port, protocol=protocol)
    agent = RunningDaemon(cfg, clock=time.time)
    backend = Backend(broker.port, cfg.vin, protocol=mqtt.MQTTv311)
    try:
        agent.wait_for(lambda a: a.daemon.uplink.connected)
        time.sleep(0.3)
        backend.send("report.now", {"id": "n-311"})
        msg, answer = backend.response(lambda b: b["id"] == "n-311")
        assert msg.topic == f"{PREFIX}/{cfg.vin}/responses/report.now"
        assert answer["status"] == "applied" and answer["command"] == "report.now"
    finally:
        backend.close()
        agent.stop()


def test_the_app_answer_over_mqtt_stops_the_notice_repeating(broker, tmp_path):
    """A notice open and repeating every second on the virtual CAN bus (no head unit
    answers); the backend's owner.answer stops it, as the head unit's answer would."""
    cfg = daemon_config(tmp_path, broker.port)
    cfg.notice = replace(cfg.notice, repeat_interval_s=0.5, max_per_period=1000)
    book = NoticeBook(Cadence.from_settings(cfg.notice))
    notice = book.open_notice("capacity-80", "advisory", time.time())
    with Store(cfg.store_path()) as store:
        store.put_state("notices", book.to_state())
    agent = RunningDaemon(cfg, clock=time.time)
    backend = Backend(broker.port, cfg.vin)

    def shown(a: RunningDaemon) -> int:
        return sum(1 for e in a.events if e.type == "owner.notified")

    try:
        agent.wait_for(lambda a: a.daemon.uplink.connected and shown(a) >= 2)
        time.sleep(0.3)
        backend.send(
            "owner.answer",
            {"id": "a-1", "seq": notice.seq, "notice_id": notice.notice_id,
             "response": "service_booked"},
            b"a1",
        )  # fmt: skip
        msg, answer = backend.response(lambda b: b["id"] == "a-1")
        assert msg.properties.CorrelationData == b"a1"
        assert answer["status"] == "applied" and answer["result"]["follow_up"] == "stop"
        agent.wait_for(lambda a: "owner.acknowledged" in a.types())
        after = shown(agent)
        time.sleep(2.0)  # four repeat intervals
        assert shown(agent) == after  # no attempt after the answer
        (ack,) = [e.data for e in agent.events if e.type == "owner.acknowledged"]
        assert ack["channel"] == "app" and ack["response"] == "service_booked"
    finally:
        backend.close()
        agent.stop()
