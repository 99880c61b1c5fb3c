"""The deploy ACL (deploy/mosquitto/acl) on a real mosquitto with the deploy PKI
(deploy/make-dev-certs.sh): only the backend sends commands; a vehicle's certificate
reads its own command topic and writes none, its own included."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from pack_agent.dev.broker import LocalBroker

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
VIN = "LSVAX4AB1PN000001"
OTHER = "LSVAX4AB1PN000002"
PREFIX = "pack-agent/v1"

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


class Client:
    """A paho v5 client with a certificate from the deploy PKI; PUBACKs and messages kept."""

    def __init__(self, broker: LocalBroker, certs: Path, name: str) -> None:
        self.acks: dict[int, ReasonCode] = {}
        self.messages: list[mqtt.MQTTMessage] = []
        self.changed = threading.Condition()
        self.c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"acl-{name}",
            protocol=mqtt.MQTTv5,
        )
        self.c.tls_set(
            ca_certs=str(certs / "ca.pem"),
            certfile=str(certs / f"{name}.pem"),
            keyfile=str(certs / f"{name}.key"),
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
        self.c.on_publish = self._on_publish
        self.c.on_message = self._on_message
        self.c.connect("localhost", broker.port)
        self.c.loop_start()

    def _on_publish(self, _c, _u, mid, rc, _p) -> None:  # type: ignore[no-untyped-def]
        with self.changed:
            self.acks[mid] = rc
            self.changed.notify_all()

    def _on_message(self, _c, _u, msg) -> None:  # type: ignore[no-untyped-def]
        with self.changed:
            self.messages.append(msg)
            self.changed.notify_all()

    def publish(self, topic: str) -> ReasonCode:
        """QoS 1; the broker's PUBACK reason code."""
        mid = self.c.publish(topic, b'{"id":"x1"}', qos=1).mid
        with self.changed:
            assert self.changed.wait_for(lambda: mid in self.acks, 5), f"no PUBACK for {topic}"
            return self.acks[mid]

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.c.on_subscribe = lambda *_a: done.set()
        self.c.subscribe(topic, qos=1)
        assert done.wait(5)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    out = tmp_path / "pki"
    subprocess.run(
        [str(DEPLOY / "make-dev-certs.sh"), str(out), VIN, OTHER],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return out


@pytest.fixture
def deploy_broker(mosquitto_binary: str, pki: Path) -> Iterator[LocalBroker]:
    conf = (
        f"cafile {pki}/ca.pem\ncertfile {pki}/broker.pem\nkeyfile {pki}/broker.key\n"
        "require_certificate true\nuse_identity_as_username true\n"
        f"acl_file {DEPLOY / 'mosquitto' / 'acl'}\n"
    )
    with LocalBroker(binary=mosquitto_binary, extra_conf=conf) as broker:
        yield broker


def test_a_vehicle_certificate_may_not_publish_any_command(
    deploy_broker: LocalBroker, pki: Path
) -> None:
    vehicle = Client(deploy_broker, pki, VIN)
    try:
        # what a vehicle writes is allowed: its events, its status, its answers
        assert not vehicle.publish(f"{PREFIX}/{VIN}/events/pack.health").is_failure
        assert not vehicle.publish(f"{PREFIX}/{VIN}/responses/report.now").is_failure
        # a command, to itself or to another vehicle: not authorized
        for topic in (f"{PREFIX}/{VIN}/commands/report.now", f"{PREFIX}/{OTHER}/commands/x"):
            rc = vehicle.publish(topic)
            assert rc.is_failure and rc.value == 0x87, (topic, str(rc))
        # nor an event under another VIN
        assert vehicle.publish(f"{PREFIX}/{OTHER}/events/pack.health").value == 0x87
    finally:
        vehicle.close()


def test_a_vehicle_reads_only_its_own_commands_and_only_the_backend_sends_them(
    deploy_broker: LocalBroker, pki: Path
) -> None:
    vehicle = Client(deploy_broker, pki, VIN)
    backend = Client(deploy_broker, pki, "backend")
    try:
        vehicle.subscribe(f"{PREFIX}/+/commands/#")  # asks for every vehicle's commands
        assert not backend.publish(f"{PREFIX}/{OTHER}/commands/report.now").is_failure
        assert not backend.publish(f"{PREFIX}/{VIN}/commands/report.now").is_failure
        with vehicle.changed:
            assert vehicle.changed.wait_for(lambda: vehicle.messages, 5)
        backend.publish(f"{PREFIX}/{VIN}/events/pack.health")  # a barrier: later than both
        assert [m.topic for m in vehicle.messages] == [f"{PREFIX}/{VIN}/commands/report.now"]
    finally:
        vehicle.close()
        backend.close()
