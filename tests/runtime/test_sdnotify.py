"""sd_notify over a real Unix datagram socket, as systemd's end of it."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

from pack_agent.runtime.sdnotify import SystemdNotifier


def recv_all(sock: socket.socket) -> list[str]:
    out = []
    sock.settimeout(0.2)
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except TimeoutError:
            return out


@pytest.fixture
def systemd_socket(tmp_path):
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    yield path, sock
    sock.close()


def test_ready_status_stopping_reach_the_socket(systemd_socket):
    path, sock = systemd_socket
    n = SystemdNotifier(address=path, watchdog_usec="")
    assert n.enabled
    assert n.ready("running: bus up")
    assert n.status("3 queued")
    assert n.stopping("flushing")
    assert recv_all(sock) == [
        "READY=1\nSTATUS=running: bus up",
        "STATUS=3 queued",
        "STOPPING=1\nSTATUS=flushing",
    ]
    n.close()


def test_abstract_namespace_socket():
    name = f"pack-agent-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        n = SystemdNotifier(address="@" + name, watchdog_usec="")
        assert n.ready()
        assert recv_all(sock) == ["READY=1"]
    finally:
        sock.close()


def test_watchdog_at_half_the_interval(systemd_socket):
    path, sock = systemd_socket
    n = SystemdNotifier(address=path, watchdog_usec="2000000")  # WatchdogSec=2
    assert n.watchdog_interval_s == 1.0
    assert n.watchdog(now=100.0)
    assert not n.watchdog(now=100.5)  # too early
    assert n.watchdog(now=101.0)
    assert recv_all(sock) == ["WATCHDOG=1", "WATCHDOG=1"]


def test_watchdog_for_another_pid_is_ignored(systemd_socket, monkeypatch):
    path, _ = systemd_socket
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert SystemdNotifier(address=path, watchdog_usec="2000000").watchdog_interval_s is None


def test_without_systemd_nothing_happens(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    n = SystemdNotifier()
    assert not n.enabled
    assert not n.ready() and not n.watchdog()


def test_a_vanished_socket_is_not_fatal(tmp_path):
    n = SystemdNotifier(address=str(tmp_path / "gone"), watchdog_usec="")
    assert n.ready() is False
