"""Tests for pack_agent.delivery.mqtt against a real mosquitto (see conftest) and a real store.

The main loop is played by ``drive``: it calls ``poll()`` until a condition holds.
Where a broker restart races two clients, the uplink's reconnect delay (1 s) is
kept well above the test subscriber's (0.1 s), so the subscriber is back first.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import ssl
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from itertools import cycle
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

import paho.mqtt.client as mqtt
import pytest

from pack_agent.config import MqttSettings, TlsSettings, as_data
from pack_agent.config.markers import Secret
from pack_agent.core.events import EVENT_TYPES, Event, EventDraft, utc_from_timestamp
from pack_agent.delivery.mqtt import QUEUED_IN_PAHO, MqttUplink, Uplink, check_transport_security
from pack_agent.dev.broker import LocalBroker, free_port
from pack_agent.errors import PackAgentError
from pack_agent.store import Store

if TYPE_CHECKING:
    from conftest import Subscriber

    Subscribe = Callable[..., Subscriber]

VIN = "LSVAX4AB1PN000001"
PREFIX = "pack-agent/v1"


def draft(type_: str = "pack.health", t: float = 0.0) -> EventDraft:
    return EventDraft(
        type=type_, vin=VIN, time=utc_from_timestamp(1_700_000_000 + t), data={"t": t}
    )


def settings_for(broker: LocalBroker, **overrides: Any) -> MqttSettings:
    values: dict[str, Any] = {
        "host": broker.host,
        "port": broker.port,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.5,
        "keepalive_s": 5,
    }
    return MqttSettings(**{**values, **overrides})


def drive(uplink: Uplink, until: Callable[[], bool], timeout: float = 5.0) -> None:
    """Be the main loop: poll until ``until()`` is true."""
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout} s; uplink {uplink.status()}")
        uplink.poll()
        time.sleep(0.005)


def ids(events: list[Event] | list[dict[str, Any]]) -> list[str]:
    return [e["event_id"] if isinstance(e, dict) else e.event_id for e in events]


class CountingClient(mqtt.Client):
    """A real paho client that counts the uplink's own publish() calls per event."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.event_publishes: Counter[str] = Counter()

    def publish(self, topic: str, payload: Any = None, *args: Any, **kwargs: Any) -> Any:
        if "/events/" in topic:
            self.event_publishes[json.loads(payload)["event_id"]] += 1
        return super().publish(topic, payload, *args, **kwargs)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "outbox.db") as s:
        yield s


@pytest.fixture(params=[False, True], ids=["paho-thread", "io-in-poll"])
def make_uplink(
    store: Store, request: pytest.FixtureRequest
) -> Iterator[Callable[..., MqttUplink]]:
    """Build uplinks on the test's store (counting publishes); all stopped afterwards.
    Each test runs with both network designs: paho's thread (the daemon's) and
    ``io_in_poll`` (``poll()`` does the I/O, delivery/mqtt_link.py)."""
    made: list[MqttUplink] = []

    def make(settings: MqttSettings, **kwargs: Any) -> MqttUplink:
        kwargs.setdefault("client_factory", CountingClient)
        kwargs.setdefault("io_in_poll", request.param)
        up = MqttUplink(settings, store, VIN, agent_version="9.9.9", **kwargs)
        made.append(up)
        return up

    yield make
    for up in made:
        up.stop(timeout=0.5)


def drained(store: Store, up: MqttUplink) -> Callable[[], bool]:
    return lambda: store.pending_count() == 0 and up.status()["inflight"] == 0


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_delivers_every_event_once_in_seq_order(
    subscribe: Subscribe,
    broker: LocalBroker,
    store: Store,
    make_uplink: Callable[..., MqttUplink],
    protocol: str,
) -> None:
    types = cycle(EVENT_TYPES)
    events = [store.append(draft(next(types), t=i)) for i in range(100)]
    with subscribe(broker, protocol=protocol) as sub:
        up = make_uplink(settings_for(broker, protocol=protocol))
        up.start()
        drive(up, drained(store, up))
        sub.wait_for(lambda s: len(s.events) >= 100)
        time.sleep(0.05)  # nothing more may come
        received = [m for m in sub.messages if "/events/" in m.topic]
    assert ids([m.payload for m in received]) == ids(events)
    assert [m.payload["seq"] for m in received] == list(range(1, 101))
    for m, e in zip(received, events, strict=True):
        assert m.topic == f"{PREFIX}/{VIN}/events/{e.type}"
        assert m.payload == json.loads(e.to_json())
        if protocol == "5":
            assert m.properties["ContentType"] == "application/json"
            assert [tuple(p) for p in m.properties["UserProperty"]] == [("event_id", e.event_id)]
    assert store.stats()["delivered_total"] == 100
    assert up.status() == {"connected": True, "inflight": 0, "last_error": None, "reconnects": 0}


def test_broker_absent_at_start_then_started(
    subscribe: Subscribe,
    mosquitto_binary: str,
    store: Store,
    make_uplink: Callable[..., MqttUplink],
) -> None:
    with LocalBroker(binary=mosquitto_binary) as broker:  # port chosen, started ...
        broker.stop()  # ... and stopped again: nobody listens
        events = [store.append(draft(t=i)) for i in range(20)]
        # paho waits twice after a failed first attempt: the retry comes 2 x 0.5 s later
        up = make_uplink(settings_for(broker, reconnect_min_s=0.5, reconnect_max_s=0.5))
        up.start()  # not an error
        drive(up, lambda: up.status()["last_error"] is not None, timeout=2)
        assert "cannot reach" in up.status()["last_error"] and not up.connected
        events += [store.append(draft(t=i)) for i in range(20, 30)]  # still recorded offline
        broker.start()
        with subscribe(broker) as sub:  # in place before the uplink's retry
            drive(up, drained(store, up))
            sub.wait_for(lambda s: len(s.events) >= 30)
        up.stop()
        assert sorted(ids(sub.events)) == sorted(ids(events))


def test_broker_killed_mid_stream_loses_and_repeats_nothing(
    subscribe: Subscribe, broker: LocalBroker, store: Store, make_uplink: Callable[..., MqttUplink]
) -> None:
    expected = ids([store.append(draft(t=i)) for i in range(200)])
    up = make_uplink(settings_for(broker, reconnect_min_s=1.0, reconnect_max_s=1.0))
    with subscribe(broker) as sub:
        up.start()
        drive(up, lambda: store.stats()["delivered_total"] >= 60)
        broker.pause()  # publishes from now on stay unacknowledged ...
        end = time.monotonic() + 0.3  # (PUBACKs already on the socket are read first)
        while time.monotonic() < end:
            up.poll(0.01)
        # the first 200 may all be acknowledged by now (a fast machine drains them before
        # the pause): these 20 are recorded while the broker hangs and cannot be
        expected += ids([store.append(draft(t=200 + i)) for i in range(20)])
        up.poll(0.05)
        assert up.status()["inflight"] > 0
        broker.kill()  # ... when the broker dies
        drive(up, lambda: not up.connected, timeout=3)
        sub.wait_for(lambda s: not s.subscribed)
        assert up.status()["inflight"] > 0  # paho keeps them and will send them again
        broker.start()
        sub.wait_subscribed()
        drive(up, drained(store, up))
        sub.wait_for(lambda s: set(expected) <= set(ids(s.events)))
    assert set(ids(sub.events)) == set(expected)
    assert up.status()["reconnects"] == 1
    # paho re-sent what it held; the uplink itself published every event exactly once
    client = up._client
    assert isinstance(client, CountingClient)
    assert set(client.event_publishes.values()) == {1} and len(client.event_publishes) == 220


def test_status_online_then_offline_after_stop(
    subscribe: Subscribe, broker: LocalBroker, store: Store, make_uplink: Callable[..., MqttUplink]
) -> None:
    up = make_uplink(settings_for(broker))
    with subscribe(broker) as sub:
        up.start()
        drive(up, lambda: any(st["state"] == "online" for st in sub.statuses))
    for i in range(300):
        store.append(draft(t=i))
    up.poll()  # 220 handed to paho: 20 (max_inflight) on the wire, 200 queued in paho
    assert up.status()["inflight"] == 20 + QUEUED_IN_PAHO == 220
    up.stop(timeout=3)
    assert store.pending_count() == 80  # stop() waited for and recorded the 220 PUBACKs
    assert not up.connected and up.status()["inflight"] == 0
    with subscribe(broker) as late:  # the retained status, as a backend starting now sees it
        late.wait_for(lambda s: len(s.statuses) == 1)
    status = late.messages[0]
    assert status.topic == f"{PREFIX}/{VIN}/status" and status.retain
    assert status.payload["state"] == "offline" and status.payload["reason"] == "stopped"
    assert status.payload["agent_version"] == "9.9.9" and status.payload["queue_depth"] == 80
    online = next(s for s in sub.statuses if s["state"] == "online")
    assert online["queue_depth"] == 0 and online["time"].endswith("+00:00")


CRASHING_AGENT = textwrap.dedent(
    """
    import sys, time
    from pydantic import TypeAdapter
    from pack_agent.config import MqttSettings
    from pack_agent.store import Store
    from pack_agent.delivery.mqtt import MqttUplink
    settings = TypeAdapter(MqttSettings).validate_json(sys.argv[2])
    up = MqttUplink(settings, Store(sys.argv[1]), sys.argv[3], agent_version="crash")
    up.start()
    while True:
        up.poll()
        if up.connected:
            print("connected", flush=True)
        time.sleep(0.02)
    """
)


def test_last_will_says_offline_when_the_agent_dies(
    subscribe: Subscribe, broker: LocalBroker, tmp_path: Path
) -> None:
    settings = settings_for(broker)
    with subscribe(broker) as sub:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                CRASHING_AGENT,
                str(tmp_path / "s.db"),
                json.dumps(as_data(settings)),
                VIN,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "connected\n"
            sub.wait_for(lambda s: [st["state"] for st in s.statuses] == ["online"])
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        sub.wait_for(lambda s: len(s.statuses) == 2)
    assert sub.statuses[1] == {
        "state": "offline",
        "agent_version": "crash",
        "reason": "connection lost",
    }
    with subscribe(broker) as late:
        late.wait_for(lambda s: len(s.statuses) == 1)
        assert late.statuses[0]["state"] == "offline" and late.messages[0].retain


def test_refused_puback_keeps_the_event_and_backs_off(
    subscribe: Subscribe,
    mosquitto_binary: str,
    store: Store,
    make_uplink: Callable[..., MqttUplink],
    tmp_path: Path,
) -> None:
    acl = tmp_path / "acl"
    acl.write_text(f"topic readwrite #\ntopic deny {PREFIX}/+/events/pack.health\n")
    with LocalBroker(binary=mosquitto_binary, extra_conf=f"acl_file {acl}") as broker:
        h1 = store.append(draft("pack.health"))
        ident = store.append(draft("pack.identified"))
        h2 = store.append(draft("pack.health"))
        up = make_uplink(settings_for(broker, reconnect_min_s=0.2, reconnect_max_s=0.4))
        up.start()
        drive(up, lambda: ids(store.pending(10)) == [h1.event_id, h2.event_id])
        assert "Not authorized" in up.status()["last_error"]
        t_end = time.monotonic() + 1.0
        drive(up, lambda: time.monotonic() > t_end)
        client = up._client
        assert isinstance(client, CountingClient)
        # no spinning: a handful of attempts in about a second, not hundreds
        assert 2 <= client.event_publishes[h1.event_id] <= 8
        assert client.event_publishes[ident.event_id] == 1
        with subscribe(broker) as sub:
            acl.write_text("topic readwrite #\n")
            broker.reload()
            drive(up, drained(store, up))
            sub.wait_for(lambda s: {h1.event_id, h2.event_id} <= set(ids(s.events)))


def test_remote_host_without_tls_is_refused(store: Store) -> None:
    with pytest.raises(PackAgentError, match="allow_insecure") as info:
        MqttUplink(MqttSettings(host="broker.example.com"), store, VIN, agent_version="1")
    assert "mqtt.tls" in str(info.value) and "broker.example.com" in str(info.value)
    for ok in (
        MqttSettings(host="broker.example.com", allow_insecure=True),
        MqttSettings(host="broker.example.com", tls=TlsSettings(ca_file="ca.pem")),
        MqttSettings(host="localhost"),
        MqttSettings(host="127.0.0.2"),
        MqttSettings(host="::1"),
    ):
        check_transport_security(ok)


def test_tls_and_credentials_are_configured_safely(store: Store) -> None:
    fake = mock.MagicMock(spec=mqtt.Client)
    settings = MqttSettings(
        host="broker.example.com",
        protocol="3.1.1",
        username="gw",
        password=Secret("s3cret"),
        tls=TlsSettings(ca_file="/etc/ca.pem", cert_file="/etc/c.pem", key_file="/etc/k.pem"),
    )
    up = MqttUplink(settings, store, VIN, agent_version="1", client_factory=lambda **kw: fake)
    assert up.client_id == f"pack-agent-{VIN}"
    fake.tls_set.assert_called_once_with(
        ca_certs="/etc/ca.pem",
        certfile="/etc/c.pem",
        keyfile="/etc/k.pem",
        cert_reqs=ssl.CERT_REQUIRED,
        tls_version=ssl.PROTOCOL_TLS_CLIENT,
    )
    fake.tls_insecure_set.assert_not_called()
    fake.username_pw_set.assert_called_once_with("gw", "s3cret")
    will = fake.will_set.call_args
    assert will.args[0] == f"{PREFIX}/{VIN}/status" and will.kwargs["retain"] is True
    assert will.kwargs["properties"] is None  # MQTT 3.1.1 has no properties
    fake.connect_async.assert_not_called()  # nothing happens before start()
    with pytest.raises(PackAgentError, match=r"mqtt\.tls"):
        MqttUplink(
            replace(settings, tls=TlsSettings(ca_file="/nonexistent/ca.pem")),
            store,
            VIN,
            agent_version="1",
        )


def test_no_broker_is_quiet_and_stop_is_quick(
    store: Store, make_uplink: Callable[..., MqttUplink], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    settings = MqttSettings(
        port=free_port(),
        username="gw",
        password=Secret("s3cret-pw"),
        reconnect_min_s=0.05,
        reconnect_max_s=0.05,
    )
    store.append(draft())
    up = make_uplink(settings)
    up.start()
    t_end = time.monotonic() + 0.5
    drive(up, lambda: time.monotonic() > t_end)
    assert not up.connected and "cannot reach" in up.status()["last_error"]
    t0 = time.monotonic()
    up.stop(timeout=2)
    assert time.monotonic() - t0 < 1.5
    assert store.pending_count() == 1
    assert "s3cret-pw" not in caplog.text
    # ~10 failed attempts, one warning, and no ERROR noise from paho
    assert [r.levelname for r in caplog.records if r.levelno >= logging.WARNING] == ["WARNING"]


def make_certs(folder: Path) -> Path:
    """A throwaway CA and a server certificate for ``localhost`` only (no IP SAN)."""
    folder.mkdir()

    def ossl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    ossl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=test-ca")
    ossl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (folder / "ext.cnf").write_text(
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "authorityKeyIdentifier=keyid,issuer\nkeyUsage=digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
    )
    ossl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf",
    )  # fmt: skip
    return folder


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_delivers_and_checks_the_host_name(
    mosquitto_binary: str, store: Store, make_uplink: Callable[..., MqttUplink], tmp_path: Path
) -> None:
    certs = make_certs(tmp_path / "certs")
    conf = f"cafile {certs}/ca.pem\ncertfile {certs}/server.pem\nkeyfile {certs}/server.key\n"
    with LocalBroker(binary=mosquitto_binary, extra_conf=conf) as broker:
        tls = TlsSettings(ca_file=str(certs / "ca.pem"))
        store.append(draft())
        wrong = make_uplink(settings_for(broker, host="127.0.0.1", tls=tls))  # not in the cert
        wrong.start()
        drive(wrong, lambda: "certificate" in (wrong.status()["last_error"] or ""), timeout=3)
        assert not wrong.connected
        wrong.stop()
        right = make_uplink(settings_for(broker, host="localhost", tls=tls))
        right.start()
        drive(right, drained(store, right))
        right.stop()


def test_require_subscriber_keeps_an_event_nobody_received(
    subscribe: Subscribe, broker: LocalBroker, store: Store, make_uplink: Callable[..., MqttUplink]
) -> None:
    """MQTT v5 PUBACK 0x10 (no matching subscribers): with mqtt.require_subscriber the
    event stays in the outbox until a backend subscribes; without it, it is gone."""
    lost = store.append(draft("pack.health", 1))
    up = make_uplink(settings_for(broker))
    up.start()
    drive(up, drained(store, up))  # the default: acknowledged, deleted, received by nobody
    up.stop(timeout=0.5)
    kept = store.append(draft("pack.health", 2))
    up = make_uplink(settings_for(broker, require_subscriber=True, reconnect_min_s=0.2,
                                  reconnect_max_s=0.4))  # fmt: skip
    up.start()
    drive(up, lambda: up.status()["last_error"] is not None)
    assert "routed to no subscriber" in up.status()["last_error"]
    assert "No matching subscribers (0x10)" in up.status()["last_error"]
    t_end = time.monotonic() + 0.8
    drive(up, lambda: time.monotonic() > t_end)
    assert ids(store.pending(10)) == [kept.event_id]  # held, not deleted
    with subscribe(broker) as sub:
        drive(up, drained(store, up))
        sub.wait_for(lambda s: kept.event_id in ids(s.events))
        assert lost.event_id not in ids(sub.events)


def test_reconnect_delay_is_jittered_per_vehicle(
    mosquitto_binary: str, store: Store, make_uplink: Callable[..., MqttUplink]
) -> None:
    """A broker restart drops every vehicle at one instant: each one's first retry is
    reconnect_min_s times its own factor in 0.5-1.5, so they do not come back in step."""
    from random import Random

    from pack_agent.delivery.mqtt_connection import jittered

    rng = Random(7)
    draws = [jittered(2.0, rng) for _ in range(2000)]
    assert all(1.0 <= d <= 3.0 for d in draws)
    assert max(draws) - min(draws) > 1.8 and len({round(d, 3) for d in draws}) > 500
    with LocalBroker(binary=mosquitto_binary) as broker:
        ups = [make_uplink(settings_for(broker, reconnect_min_s=1.0, reconnect_max_s=4.0))
               for _ in range(3)]  # fmt: skip
        for up in ups:
            up.start()
        for up in ups:
            drive(up, lambda up=up: up.connected)
        broker.kill()
        for up in ups:
            drive(up, lambda up=up: not up.connected)
        # paho's back-off as each uplink set it when its connection was lost
        delays = [up.client._reconnect_min_delay for up in ups]
        assert all(0.5 <= d <= 1.5 for d in delays) and len(set(delays)) == 3, delays
