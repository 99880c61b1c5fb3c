"""localbus joins processes: frames cross, filters apply, a dead or stuck node never blocks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import can
import pytest

from pack_agent.dev.localbus import decode_frame, encode_frame


@pytest.fixture
def channel(tmp_path):
    return str(tmp_path / "bus")


def wait_peers(bus: can.BusABC, n: int) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        bus._peers_at = 0.0
        bus._refresh_peers()
        if len(bus._peers) >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"expected {n} peers, saw {bus._peers}")


def test_frame_encoding_round_trip():
    msg = can.Message(
        timestamp=12.5,
        arbitration_id=0x18FF50E5,
        is_extended_id=True,
        is_fd=True,
        bitrate_switch=True,
        data=bytes(range(24)),
    )
    back = decode_frame(encode_frame(msg), "x")
    assert back.equals(msg, timestamp_delta=None, check_channel=False, check_direction=False)
    assert back.timestamp == 12.5


def test_frames_cross_processes_in_order_with_filters(channel):
    rx = can.Bus(
        interface="localbus", channel=channel, can_filters=[{"can_id": 0x3A1, "can_mask": 0x7FF}]
    )
    sender = textwrap.dedent(f"""
        import time, can
        bus = can.Bus(interface="localbus", channel={channel!r}, preserve_timestamps=True)
        time.sleep(0.3)
        for i in range(200):
            bus.send(can.Message(arbitration_id=0x3A1 if i % 2 else 0x100,
                                 data=i.to_bytes(2, "little"), timestamp=1000.0 + i))
        bus.shutdown()
    """)
    proc = subprocess.Popen([sys.executable, "-c", sender])
    got = []
    while (m := rx.recv(2.0)) is not None:
        got.append(m)
    assert proc.wait(30) == 0
    rx.shutdown()
    assert [int.from_bytes(m.data, "little") for m in got] == list(range(1, 200, 2))
    assert [m.timestamp for m in got] == [1000.0 + i for i in range(1, 200, 2)]


def test_a_node_that_died_is_forgotten(channel):
    tx = can.Bus(interface="localbus", channel=channel)
    code = f"import can,os; b=can.Bus(interface='localbus', channel={channel!r}); os._exit(0)"
    subprocess.run([sys.executable, "-c", code], timeout=30, check=True)
    wait_peers(tx, 1)  # its socket file is still there
    tx.send(can.Message(arbitration_id=1))
    assert tx._peers == []
    assert list(os.scandir(channel)) and all(
        e.name.startswith(f"{os.getpid()}-") for e in os.scandir(channel)
    )
    tx.shutdown()


def test_a_stopped_receiver_loses_frames_but_never_blocks_the_sender(channel):
    tx = can.Bus(interface="localbus", channel=channel)
    code = f"import can,time; b=can.Bus(interface='localbus', channel={channel!r}); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        wait_peers(tx, 1)
        os.kill(proc.pid, signal.SIGSTOP)
        start = time.monotonic()
        for _ in range(5000):
            tx.send(can.Message(arbitration_id=2, data=b"\0" * 8))
        assert time.monotonic() - start < 5
        assert tx.dropped > 0
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        tx.shutdown()


def test_a_sender_with_backpressure_waits_for_a_paused_receiver_and_loses_nothing(channel):
    """``backpressure_s`` (what `pack-agent simulate --follow` sets): a receiver stopped for
    a second, longer than the default 250 ms, still gets every frame once it runs again."""
    tx = can.Bus(interface="localbus", channel=channel, backpressure_s=30.0)
    code = textwrap.dedent(f"""
        import can
        b = can.Bus(interface="localbus", channel={channel!r})
        n = 0
        while b.recv(3.0) is not None:
            n += 1
        print(n)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        wait_peers(tx, 1)
        os.kill(proc.pid, signal.SIGSTOP)
        threading.Timer(1.0, os.kill, (proc.pid, signal.SIGCONT)).start()
        for i in range(500):  # far more than the kernel's queue holds
            tx.send(can.Message(arbitration_id=2, data=i.to_bytes(2, "little")))
        assert tx.dropped == 0
        out, _ = proc.communicate(timeout=30)
        assert int(out) == 500
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        tx.shutdown()
