"""deploy/: the mosquitto configuration (mutual TLS, per-vehicle ACL) and the
development PKI script, tried for real: certificates made by the script into
tmp_path, the shipped configuration and ACL loaded into a private mosquitto on a
free loopback port (only the listener line and file locations are changed), the
agent's uplink on one side and the reference backend listener on the other."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pack_agent.backend import Listener, ListenerSettings, SqliteSink
from pack_agent.config import MqttSettings, TlsSettings
from pack_agent.devbroker import LocalBroker
from pack_agent.events import EventDraft, utc_from_timestamp
from pack_agent.store import Store
from pack_agent.uplink import MqttUplink

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
VIN_A, VIN_B = "LPACK2026AGENT001", "LPACK2026AGENT002"


def make_pki(folder: Path, *vins: str, **env: str) -> Path:
    subprocess.run(
        [str(DEPLOY / "make-dev-certs.sh"), str(folder), *vins],
        check=True,
        capture_output=True,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", **env},
    )
    return folder


def sign_with_dates(pki: Path, name: str, cn: str, san: str, start: str, end: str) -> Path:
    """A certificate from the PKI's CA with chosen validity dates (``openssl ca``,
    as ``openssl x509`` cannot date a certificate in the past)."""
    work = pki / f"ca-{name}"
    work.mkdir()
    (work / "index.txt").write_text("")
    (work / "serial").write_text("1000\n")
    (work / "ca.cnf").write_text(
        "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\n"
        "serial = serial\ndefault_md = sha256\npolicy = p\n[p]\ncommonName = supplied\n"
    )
    (work / "ext.cnf").write_text(
        f"subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n"
    )

    def ossl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=work, check=True, capture_output=True)

    ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "k.pem")
    ossl("req", "-new", "-key", "k.pem", "-subj", f"/CN={cn}", "-out", "r.csr")
    ossl(
        "ca", "-batch", "-config", "ca.cnf", "-cert", str(pki / "ca.pem"),
        "-keyfile", str(pki / "ca.key"), "-in", "r.csr", "-out", f"{pki / name}.pem",
        "-startdate", start, "-enddate", end, "-extfile", "ext.cnf", "-notext",
    )  # fmt: skip
    shutil.copy(work / "k.pem", pki / f"{name}.key")
    return pki / f"{name}.pem"


def deploy_conf(pki: Path, broker_cert: str = "broker") -> str:
    """The shipped configuration, for this test's broker: its own listener line
    (LocalBroker's, 127.0.0.1 only) instead of ``listener 8883``, no persistence,
    and the files where this test made them."""
    lines = []
    for line in (DEPLOY / "mosquitto" / "pack-agent.conf").read_text().splitlines():
        if line.startswith(("listener ", "persistence")):
            continue
        line = line.replace("/etc/mosquitto/pack-agent/acl", str(DEPLOY / "mosquitto" / "acl"))
        line = line.replace("/etc/mosquitto/pack-agent/broker.", f"{pki}/{broker_cert}.")
        lines.append(line.replace("/etc/mosquitto/pack-agent/", f"{pki}/"))
    conf = "\n".join(lines)
    assert "require_certificate true" in conf and "use_identity_as_username true" in conf
    return conf


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki") / "certs", VIN_A, VIN_B)


@pytest.fixture
def tls_broker(mosquitto_binary: str, pki: Path) -> Iterator[LocalBroker]:
    with LocalBroker(binary=mosquitto_binary, extra_conf=deploy_conf(pki)) as b:
        yield b


def tls_for(pki: Path, client: str, ca: Path | None = None) -> TlsSettings:
    return TlsSettings(
        ca_file=str(ca or pki / "ca.pem"),
        cert_file=str(pki / f"{client}.pem"),
        key_file=str(pki / f"{client}.key"),
    )


@pytest.fixture
def uplinks(tmp_path: Path) -> Iterator[Callable[..., tuple[MqttUplink, Store]]]:
    made: list[tuple[MqttUplink, Store]] = []

    def make(broker: LocalBroker, vin: str, tls: TlsSettings, host: str = "localhost"):
        store = Store(tmp_path / f"{vin}-{len(made)}.db")
        settings = MqttSettings(
            host=host, port=broker.port, tls=tls, reconnect_min_s=0.1, reconnect_max_s=0.3
        )
        up = MqttUplink(settings, store, vin, agent_version="test")
        made.append((up, store))
        return up, store

    yield make
    for up, store in made:
        up.stop(timeout=0.5)
        store.close()


def append(store: Store, vin: str, n: int) -> list[str]:
    return [
        store.append(
            EventDraft(type="pack.health", vin=vin, time=utc_from_timestamp(1e9 + i), data={})
        ).event_id
        for i in range(n)
    ]


def drive(up: MqttUplink, until: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, f"not reached in {timeout} s: {up.status()}"
        up.poll(0.01)
        time.sleep(0.002)


@pytest.fixture
def backend(
    tls_broker: LocalBroker, pki: Path, tmp_path: Path
) -> Iterator[tuple[Listener, list[str]]]:
    reports: list[str] = []
    settings = ListenerSettings(
        host="localhost",
        port=tls_broker.port,
        ca_file=str(pki / "ca.pem"),
        cert_file=str(pki / "backend.pem"),
        key_file=str(pki / "backend.key"),
        share_group="backends",
    )
    listener = Listener(settings, SqliteSink(tmp_path / "backend.sqlite"), reports.append)
    listener.start()
    assert listener.wait_subscribed(5), reports
    yield listener, reports
    listener.stop()


def test_mutual_tls_delivers_to_a_backend_reading_a_shared_subscription(
    tls_broker: LocalBroker, pki: Path, uplinks: Any, backend: tuple[Listener, list[str]]
) -> None:
    listener, reports = backend
    up, store = uplinks(tls_broker, VIN_A, tls_for(pki, VIN_A))
    expected = append(store, VIN_A, 50)
    up.start()
    drive(up, lambda: store.pending_count() == 0 and up.status()["inflight"] == 0)
    assert listener.run(count=50, timeout=5), reports
    assert listener.dedup._seen == set(expected)
    assert listener.seqs.contiguous() == {VIN_A: 50} and listener.seqs.open_gaps() == []
    assert up.status()["last_error"] is None


def test_the_acl_stops_a_vehicle_publishing_under_another_vin(
    tls_broker: LocalBroker, pki: Path, uplinks: Any, backend: tuple[Listener, list[str]]
) -> None:
    listener, _ = backend
    # VIN_A's certificate, events recorded for VIN_B: the broker refuses them (v5 PUBACK
    # 0x87) and they stay in the outbox; the vehicle's own events still go through
    up, store = uplinks(tls_broker, VIN_B, tls_for(pki, VIN_A))
    foreign = append(store, VIN_B, 3)
    up.start()
    drive(up, lambda: "Not authorized" in (up.status()["last_error"] or ""))
    assert up.connected
    assert [e.event_id for e in store.pending(10)] == foreign
    listener.run(timeout=0.5)
    assert listener.summary.received == 0


def test_a_wrong_ca_is_refused_with_a_clear_error(
    tls_broker: LocalBroker, pki: Path, tmp_path: Path, uplinks: Any
) -> None:
    other = make_pki(tmp_path / "other", VIN_A)
    up, store = uplinks(tls_broker, VIN_A, tls_for(pki, VIN_A, ca=other / "ca.pem"))
    append(store, VIN_A, 1)
    up.start()
    drive(up, lambda: up.status()["last_error"] is not None)
    error = up.status()["last_error"]
    assert "TLS: the broker's certificate was refused" in error
    assert "certificate" in error.split("refused:")[1] and "mqtt.tls.ca_file" in error
    assert not up.connected and store.pending_count() == 1


def test_a_certificate_for_another_host_is_refused(
    mosquitto_binary: str, pki: Path, uplinks: Any
) -> None:
    sign_with_dates(
        pki, "elsewhere", "broker.example.com", "DNS:broker.example.com",
        "20240101000000Z", "20991231000000Z",
    )  # fmt: skip
    conf = deploy_conf(pki, broker_cert="elsewhere")
    with LocalBroker(binary=mosquitto_binary, extra_conf=conf) as broker:
        up, store = uplinks(broker, VIN_A, tls_for(pki, VIN_A))
        append(store, VIN_A, 1)
        up.start()
        drive(up, lambda: up.status()["last_error"] is not None)
        error = up.status()["last_error"]
        assert "Hostname mismatch" in error and "'localhost'" in error
        assert not up.connected and store.pending_count() == 1


def test_an_expired_broker_certificate_is_refused(
    mosquitto_binary: str, pki: Path, uplinks: Any
) -> None:
    sign_with_dates(
        pki, "expired", "localhost", "DNS:localhost,IP:127.0.0.1",
        "20200101000000Z", "20200201000000Z",
    )  # fmt: skip
    with LocalBroker(binary=mosquitto_binary, extra_conf=deploy_conf(pki, "expired")) as broker:
        up, store = uplinks(broker, VIN_A, tls_for(pki, VIN_A))
        append(store, VIN_A, 1)
        up.start()
        drive(up, lambda: up.status()["last_error"] is not None)
        assert "certificate has expired" in up.status()["last_error"]
        assert not up.connected and store.pending_count() == 1


def test_an_expired_vehicle_certificate_is_refused_by_the_broker(
    tls_broker: LocalBroker, pki: Path, uplinks: Any
) -> None:
    cert = sign_with_dates(
        pki, "old-vehicle", VIN_A, f"DNS:{VIN_A}", "20200101000000Z", "20200201000000Z"
    )
    tls = TlsSettings(
        ca_file=str(pki / "ca.pem"), cert_file=str(cert), key_file=str(pki / "old-vehicle.key")
    )
    up, store = uplinks(tls_broker, VIN_A, tls)
    append(store, VIN_A, 1)
    up.start()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        up.poll(0.01)
        assert not up.connected
    error = up.status()["last_error"] or ""
    assert "certificate expired" in error and "mqtt.tls.cert_file" in error
    assert store.pending_count() == 1
