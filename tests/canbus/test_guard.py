"""A bus that goes away and comes back: closed, reopened with backoff, state reported."""

from __future__ import annotations

import uuid

import can
import pytest

from pack_agent.canbus.guard import GuardedBus


def channel() -> str:
    return f"test-guard-{uuid.uuid4().hex[:10]}"


def frame(i: int = 0) -> can.Message:
    return can.Message(arbitration_id=0x3A1, is_extended_id=False, data=bytes([i] * 8))


def test_interface_down_then_back():
    ch = channel()
    peer = can.Bus(interface="virtual", channel=ch)
    guard = GuardedBus(
        "powertrain", lambda: can.Bus(interface="virtual", channel=ch), backoff_min_s=0.0
    )
    try:
        peer.send(frame(1))
        assert guard.recv(1.0).data[0] == 1
        guard.inner.shutdown()  # the interface goes away under the agent
        assert guard.recv(0.1) is None  # CanOperationError caught, not raised
        assert guard.state == "down" and guard.failures == 1
        assert "recv" in guard.last_error
        assert guard.recv(0.1) is None  # reopened (virtual comes back at once)
        assert guard.state == "up" and guard.reopens == 1
        peer.send(frame(2))
        assert guard.recv(1.0).data[0] == 2
        assert guard.status()["frames"] == 2
    finally:
        guard.shutdown()
        peer.shutdown()


def test_reopen_backs_off_while_the_device_is_missing():
    ch = channel()
    t = [0.0]
    attempts = []

    def opener() -> can.BusABC:
        attempts.append(t[0])
        if len(attempts) <= 4:  # as socketcan does while can0 does not exist
            raise OSError(19, "No such device")
        return can.Bus(interface="virtual", channel=ch)

    guard = GuardedBus(
        "powertrain",
        lambda: can.Bus(interface="virtual", channel=ch),
        backoff_min_s=1.0,
        backoff_max_s=4.0,
        clock=lambda: t[0],
    )
    guard._opener = opener
    try:
        guard.inner.shutdown()
        guard.recv(0)  # fails, retry at t=1
        for step in range(40):
            t[0] = step * 0.5
            guard.recv(0)
        # first try at 1, then 2 s, 4 s, 4 s (capped) apart
        assert attempts[:5] == [1.0, 3.0, 7.0, 11.0, 15.0]
        assert guard.state == "up" and guard.reopens == 1
        assert "No such device" in guard.last_error
    finally:
        guard.shutdown()


def test_send_while_down_is_a_can_error_not_a_crash():
    ch = channel()
    guard = GuardedBus(
        "powertrain", lambda: can.Bus(interface="virtual", channel=ch), backoff_min_s=60.0
    )
    try:
        guard.inner.shutdown()
        with pytest.raises(can.CanOperationError, match="bus powertrain is down"):
            guard.send(frame())
        assert guard.state == "down"
        with pytest.raises(can.CanOperationError):
            guard.send(frame())  # still inside the backoff: not reopened yet
    finally:
        guard.shutdown()
