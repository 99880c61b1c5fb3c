"""The uplink made with ``io_in_poll`` (delivery/mqtt_link.py): ``poll()`` does paho's
network I/O on the main loop's thread, a helper thread does the connects.

What the main loop relies on, beyond what tests/delivery/test_mqtt.py checks for both
designs: a broker that accepts the TCP connection and then says nothing does not stall
it (CAN frames keep being read, on a real python-can ``virtual`` bus); a main loop held
up for longer than the broker's keepalive allowance does not lose the connection; the
reconnect back-off is paho's (first delay, then doubling up to the maximum); the
backend's commands are received and answered.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import can
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from pack_agent.canbus.source import BusSource
from pack_agent.config import MqttSettings, TlsSettings
from pack_agent.core.events import EventDraft, utc_from_timestamp
from pack_agent.delivery.mqtt import MqttUplink
from pack_agent.dev.broker import LocalBroker, free_port
from pack_agent.runtime.agent import run_loop
from pack_agent.store import Store

if TYPE_CHECKING:
    from conftest import Subscriber

    Subscribe = Callable[..., Subscriber]

VIN = "LSVAX4AB1PN000001"
PREFIX = "pack-agent/v1"


class AttemptClient(mqtt.Client):
    """A real paho client that notes when the uplink asks it to (re)connect, and whether
    such a call is under way."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.attempts: list[float] = []  # monotonic times of reconnect() calls
        self.in_reconnect = False

    def reconnect(self) -> Any:
        self.attempts.append(time.monotonic())
        self.in_reconnect = True
        try:
            return super().reconnect()
        finally:
            self.in_reconnect = False


class NoCommands:
    wants_status = False


class FrameCounter:
    """What ``run_loop`` asks of the agent; it counts the frames it is handed."""

    def __init__(self) -> None:
        self.frames = 0
        self.commands = NoCommands()

    def handle_frame(self, _bus: str, _frame: can.Message, _now: float) -> None:
        self.frames += 1

    def tick(self, _now: float) -> None:
        pass


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "outbox.db") as s:
        yield s


@pytest.fixture
def made() -> Iterator[list[MqttUplink]]:
    """Uplinks a test made: stopped afterwards, whatever happened."""
    ups: list[MqttUplink] = []
    yield ups
    for up in ups:
        up.stop(timeout=0.5)


def uplink(store: Store, settings: MqttSettings, made: list[MqttUplink]) -> MqttUplink:
    up = MqttUplink(
        settings, store, VIN, agent_version="9.9.9", client_factory=AttemptClient, io_in_poll=True
    )
    made.append(up)
    return up


def attempts(up: MqttUplink) -> AttemptClient:
    client = up.client
    assert isinstance(client, AttemptClient)
    return client


def drive(up: MqttUplink, until: Callable[[], bool], timeout: float = 5.0) -> None:
    """Be the main loop: poll until ``until()`` is true."""
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout} s; uplink {up.status()}")
        up.poll(0.005)
        time.sleep(0.005)


@contextmanager
def silent_broker() -> Iterator[int]:
    """A port where TCP connections are accepted (by the kernel, into the listen
    backlog) and nothing is ever said: no TLS handshake, no CONNACK."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    try:
        yield srv.getsockname()[1]
    finally:
        srv.close()


def make_ca(folder: Path) -> Path:
    """A throwaway CA certificate: enough for a TLS client to start a handshake."""
    folder.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=test-ca", "-days", "2"],
        cwd=folder, check=True, capture_output=True,
    )  # fmt: skip
    return folder / "ca.pem"


@contextmanager
def main_loop(up: MqttUplink) -> Iterator[tuple[can.BusABC, FrameCounter]]:
    """The agent's real main loop on its own thread, reading a real virtual CAN bus; yields
    the bus to send frames on and the counter of frames the loop handled."""
    channel = f"extloop-{time.monotonic_ns()}"
    source = BusSource({"vehicle": can.Bus(interface="virtual", channel=channel)})
    sender = can.Bus(interface="virtual", channel=channel)
    agent = FrameCounter()
    stop = threading.Event()
    loop = threading.Thread(target=run_loop, args=(agent, source, up, stop), daemon=True)
    loop.start()
    try:
        yield sender, agent
    finally:
        stop.set()
        loop.join(5)
        source.close()
        sender.shutdown()
    assert not loop.is_alive()


def send_frames(bus: can.BusABC, count: int, every: float) -> None:
    for i in range(count):
        bus.send(can.Message(arbitration_id=0x100, data=bytes([i % 256]), is_extended_id=False))
        time.sleep(every)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.005)


@pytest.mark.subprocess  # openssl
@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_a_tls_handshake_never_answered_does_not_stall_the_main_loop(
    store: Store, made: list[MqttUplink], tmp_path: Path
) -> None:
    """paho's connect (TCP, then a TLS handshake that waits up to its connect timeout,
    5 s) runs on the helper thread: the main loop reads every frame meanwhile."""
    ca = make_ca(tmp_path / "ca")
    with silent_broker() as port:
        settings = MqttSettings(host="localhost", port=port, tls=TlsSettings(ca_file=str(ca)),
                                reconnect_min_s=0.2, reconnect_max_s=0.5)  # fmt: skip
        up = uplink(store, settings, made)
        client = attempts(up)
        up.start()
        wait_until(lambda: client.in_reconnect, 2, "the first attempt")
        with main_loop(up) as (bus, agent):
            send_frames(bus, 40, 0.01)
            wait_until(lambda: agent.frames == 40, 3, f"40 frames read (read {agent.frames})")
            # every frame was handled while the one attempt still hung in its handshake
            assert client.in_reconnect and len(client.attempts) == 1
            assert not up.connected
        t0 = time.monotonic()
        up.stop(timeout=1.0)  # does not wait for the hanging attempt past its timeout
        assert time.monotonic() - t0 < 2.5
    assert store.pending_count() == 0 and not up.connected


@pytest.mark.broker  # the silent one: a listening socket, no process
def test_a_connect_never_acknowledged_is_given_up_after_the_keepalive_and_retried(
    store: Store, made: list[MqttUplink]
) -> None:
    """CONNECT sent, no CONNACK ever: paho gives up after the keepalive (checked in
    ``poll()``), the back-off starts, a new attempt follows; frames are read throughout."""
    with silent_broker() as port:
        # keepalive 2 s (a configuration says 5 at least) keeps the test short
        settings = MqttSettings(port=port, keepalive_s=2, reconnect_min_s=0.2,
                                reconnect_max_s=0.2)  # fmt: skip
        up = uplink(store, settings, made)
        client = attempts(up)
        up.start()
        with main_loop(up) as (bus, agent):
            sending = threading.Thread(target=send_frames, args=(bus, 300, 0.01))
            sending.start()  # 3 s of frames, 100/s
            wait_until(lambda: len(client.attempts) >= 2, 8, "a second attempt")
            sending.join()
            wait_until(lambda: agent.frames == 300, 3, f"300 frames read (read {agent.frames})")
            assert not up.connected
    assert "sent no CONNACK within mqtt.keepalive_s (2 s)" in (up.status()["last_error"] or "")


def test_the_link_stays_up_while_the_main_loop_is_held_up(
    subscribe: Subscribe, broker: LocalBroker, store: Store, made: list[MqttUplink]
) -> None:
    """The main loop does not poll for 4 x the keepalive (mosquitto drops a client after
    1.5 x without a packet; 2.0 checks every few seconds, so 2 s went up to 5 s here):
    the helper pings for it, so no last will is sent, no reconnect happens, and the link
    carries events at once when the loop is back."""
    settings = MqttSettings(host=broker.host, port=broker.port, keepalive_s=2,
                            reconnect_min_s=0.2, reconnect_max_s=0.5)  # fmt: skip
    up = uplink(store, settings, made)
    with subscribe(broker) as sub:
        up.start()
        drive(up, lambda: up.connected)
        sub.wait_for(lambda s: [st["state"] for st in s.statuses] == ["online"])
        time.sleep(8.0)  # the main loop busy elsewhere: no poll()
        event = store.append(
            EventDraft(type="pack.health", vin=VIN, time=utc_from_timestamp(1.7e9), data={})
        )
        drive(up, lambda: store.pending_count() == 0 and up.status()["inflight"] == 0)
        sub.wait_for(lambda s: event.event_id in [e["event_id"] for e in s.events])
        assert [st["state"] for st in sub.statuses] == ["online"]  # no "offline" will
    assert up.connected and up.status()["reconnects"] == 0
    assert len(attempts(up).attempts) == 1


def test_reconnect_back_off_doubles_from_the_first_delay_to_the_maximum(
    store: Store, made: list[MqttUplink]
) -> None:
    """No broker: attempts at once, then after 0.1, 0.2, 0.4, 0.4... s (paho's schedule,
    kept by the helper), never faster."""
    settings = MqttSettings(port=free_port(), reconnect_min_s=0.1, reconnect_max_s=0.4)
    up = uplink(store, settings, made)
    up.start()
    client = attempts(up)
    drive(up, lambda: len(client.attempts) >= 6, timeout=5)
    gaps = [b - a for a, b in pairwise(client.attempts)][:5]
    floors = [0.1, 0.2, 0.4, 0.4, 0.4]
    assert all(g >= f * 0.99 for g, f in zip(gaps, floors, strict=True)), gaps
    assert "cannot reach" in (up.status()["last_error"] or "")


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_command_is_received_and_answered(
    broker: LocalBroker, store: Store, made: list[MqttUplink], protocol: str
) -> None:
    """The backend's command reaches ``take_commands`` (subscribed again on every
    connect) and the answer goes out from ``respond``, with the v5 correlation data."""
    settings = MqttSettings(host=broker.host, port=broker.port, protocol=protocol)  # type: ignore[arg-type]
    up = uplink(store, settings, made)
    up.start()
    drive(up, lambda: up.connected)
    v5 = protocol == "5"
    backend = mqtt.Client(
        CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311
    )
    answers: list[mqtt.MQTTMessage] = []
    subscribed = threading.Event()
    backend.on_message = lambda _c, _u, msg: answers.append(msg)
    backend.on_subscribe = lambda *_: subscribed.set()
    backend.connect(broker.host, broker.port)
    backend.loop_start()
    try:
        backend.subscribe("backend/answers/#" if v5 else f"{PREFIX}/{VIN}/responses/#", qos=1)
        assert subscribed.wait(5)
        props = None
        if v5:
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = "backend/answers/1"
            props.CorrelationData = b"req-1"
        received: list[Any] = []

        def take() -> bool:
            received.extend(up.take_commands())
            return bool(received)

        # the uplink subscribes on connect: a command published before that is not
        # retained, so publish until one arrives
        deadline = time.monotonic() + 5
        while not take():
            assert time.monotonic() < deadline, up.status()
            backend.publish(f"{PREFIX}/{VIN}/commands/status", b'{"id": "c1"}', qos=1,
                            properties=props)  # fmt: skip
            for _ in range(10):
                up.poll(0.01)
                time.sleep(0.01)
        request = received[0]
        assert request.name == "status" and json.loads(request.payload) == {"id": "c1"}
        up.respond(request, {"id": "c1", "ok": True})
        drive(up, lambda: bool(answers))
        answer = answers[0]
        assert json.loads(answer.payload) == {"id": "c1", "ok": True}
        if v5:
            assert answer.topic == "backend/answers/1"
            assert answer.properties.CorrelationData == b"req-1"  # type: ignore[union-attr]
        else:
            assert answer.topic == f"{PREFIX}/{VIN}/responses/status"
    finally:
        backend.disconnect()
        backend.loop_stop()
