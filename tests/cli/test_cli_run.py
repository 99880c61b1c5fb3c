"""`pack-agent run` as systemd runs it: a real subprocess, a real notify socket, real signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import Subscriber
from daemon_toml import daemon_toml

SRC = Path(__file__).resolve().parents[2] / "src"
PASSWORD = "not-for-the-journal-42"


def write_config(
    path: Path,
    port: int,
    tmp: Path,
    publish_interval: float = 3600,
    keepalive: int = 30,
    clock: str = "system",
) -> None:
    channel = f"test-run-{uuid.uuid5(uuid.NAMESPACE_URL, str(tmp)).hex[:10]}"
    mqtt = {"keepalive_s": keepalive, "username": "vehicle", "password": PASSWORD}
    path.write_text(
        daemon_toml(
            port,
            tmp,
            channel,
            mqtt=mqtt,
            health={"publish_interval_s": publish_interval},
            daemon={"clock": clock},
        )
    )


def start_agent(cfg: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """``pack-agent run`` with this tree's code, its log on a pipe."""
    return subprocess.Popen(
        [sys.executable, "-m", "pack_agent", "run", "--config", str(cfg), *args],
        env={**env, "PYTHONPATH": str(SRC)},
        stderr=subprocess.PIPE,
        text=True,
    )


class Systemd:
    """systemd's end of the notify socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[tuple[float, str]] = []

    def wait(self, line: str, timeout: float = 10.0) -> float:
        """Time (monotonic) of the first datagram containing ``line``."""
        deadline = time.monotonic() + timeout
        while True:
            for t, msg in self.messages:
                if line in msg.split("\n"):
                    return t
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {line!r} within {timeout} s; got {self.messages}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def close(self) -> None:
        self.sock.close()


def status_json(cfg: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "pack_agent", "status", "--config", str(cfg), "--json"],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr + out.stdout
    return json.loads(out.stdout)


def test_ready_watchdog_reload_and_clean_stop(broker, tmp_path):
    cfg = tmp_path / "agent.toml"
    write_config(cfg, broker.port, tmp_path)
    systemd = Systemd(tmp_path / "notify")
    env = {**os.environ, "NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "400000"}
    env.pop("WATCHDOG_PID", None)
    with Subscriber(broker) as backend:
        started = time.monotonic()
        proc = start_agent(cfg, env)
        try:
            ready = systemd.wait("READY=1", 20) - started
            print(f"exec to READY=1: {ready:.3f} s")
            systemd.wait("WATCHDOG=1", 5)
            backend.wait_for(lambda s: any(x.get("state") == "online" for x in s.statuses), 10)

            # status while the daemon runs: store read-only, live file for bus and broker
            deadline = time.monotonic() + 10
            while True:
                report = status_json(cfg)
                live = report["live"]
                if live["daemon"] == "running" and live["broker"].get("connected"):
                    break
                assert time.monotonic() < deadline, report
                time.sleep(0.2)
            assert live["buses"]["powertrain"]["state"] == "up"
            assert live["pid"] == proc.pid
            assert report["queue"]["pending"] == 0

            # SIGHUP: the health interval is applied, the keepalive and the clock need a restart
            write_config(
                cfg, broker.port, tmp_path, publish_interval=60, keepalive=45, clock="frames"
            )
            proc.send_signal(signal.SIGHUP)
            systemd.wait("RELOADING=1", 5)
            assert proc.poll() is None

            proc.send_signal(signal.SIGTERM)
            stop_sent = time.monotonic()
            systemd.wait("STOPPING=1", 5)
            rc = proc.wait(10)
            took = time.monotonic() - stop_sent
        finally:
            if proc.poll() is None:
                proc.kill()
            err = proc.stderr.read() if proc.stderr else ""
            systemd.close()
        assert rc == 0, err
        assert took < 3 + 2.0, f"SIGTERM to exit took {took:.2f} s"
        backend.wait_for(lambda s: s.statuses and s.statuses[-1].get("state") == "offline", 5)
        assert backend.statuses[-1]["reason"] == "stopped"

    assert "changes take effect after a restart: daemon.clock, mqtt.keepalive_s" in err
    assert "health.publish_interval_s" not in err.split("after a restart")[1].splitlines()[0]
    assert PASSWORD not in err
    assert "SIGTERM: stopping" in err
    final = json.loads((tmp_path / "run" / "status.json").read_text())
    assert final["state"] == "stopped"
    assert status_json(cfg)["live"]["daemon"] == "stopped"


def test_a_broken_configuration_on_sighup_keeps_the_running_one(broker, tmp_path):
    cfg = tmp_path / "agent.toml"
    write_config(cfg, broker.port, tmp_path)
    systemd = Systemd(tmp_path / "notify")
    proc = start_agent(cfg, {**os.environ, "NOTIFY_SOCKET": str(systemd.path)})
    try:
        systemd.wait("READY=1", 20)
        cfg.write_text(cfg.read_text().replace("[health]", "[health]\nno_such_key = 1"))
        proc.send_signal(signal.SIGHUP)
        systemd.wait("RELOADING=1", 5)
        time.sleep(0.3)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        err = proc.stderr.read() if proc.stderr else ""
        systemd.close()
    assert "configuration not reloaded" in err and "health.no_such_key: unknown key" in err


@pytest.mark.parametrize("fmt", ["json"])
def test_json_log_lines(broker, tmp_path, fmt):
    cfg = tmp_path / "agent.toml"
    write_config(cfg, broker.port, tmp_path)
    proc = start_agent(cfg, dict(os.environ), "--log-format", fmt)
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "run" / "status.json").exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [json.loads(line) for line in proc.stderr.read().splitlines()]
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    assert any("running for LPACK2026AGENT001" in x["message"] for x in lines)
    assert not any(PASSWORD in json.dumps(x) for x in lines)
