"""Bus faults through the daemon: garbage and wrong-length frames on mapped ids, a BMS
that falls silent and comes back. The daemon keeps running, says so in its status
file and in events, and decides correctly afterwards.

(The bus going away and coming back: test_daemon_lifecycle.py; the notice frame
failing to send: test_daemon.py::test_a_failing_bus_is_reported_retried_and_the_notice_delivered.)
"""

from __future__ import annotations

import random
import time

import can
from test_daemon import DAY, FAST, AgentThread, make_config, run_vehicle
from test_daemon_lifecycle import quick_status

from conftest import Subscriber
from pack_agent.canbus.checks import load_and_check
from pack_agent.dev.sim.vehicle import code_pages, encode
from pack_agent.runtime.status import read_status


def wait_status(path, predicate, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            status = read_status(path)
            if predicate(status):
                return status
        except (OSError, ValueError, KeyError):
            status = None
        assert time.monotonic() < deadline, status
        time.sleep(0.05)


def test_garbage_and_a_silent_bms_are_reported_and_survived(broker, tmp_path):
    cfg, channel = make_config(tmp_path, broker.port)
    quick_status(cfg, tmp_path)
    db = load_and_check(cfg)
    health = db.get_message_by_name("BMS_Health")
    ack = db.get_message_by_name("HU_NoticeAck")
    rng = random.Random(3)
    t0 = FAST.start - 10 * DAY
    with Subscriber(broker) as backend:
        agent = AgentThread(cfg)
        bus = can.Bus(interface="virtual", channel=channel, preserve_timestamps=True)
        try:
            for frame in code_pages(db, FAST.code, t0) + code_pages(db, FAST.code, t0 + 1):
                bus.send(frame)
            bus.send(encode(db, "BMS_Health", {"BMS_SOH": 90.0}, t0 + 2))
            for i in range(2000):  # wrong lengths and noise on the mapped ids
                msg = rng.choice([health, db.get_message_by_name("BMS_PackCode")])
                data = bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 1, 3, 7])))
                bus.send(
                    can.Message(
                        arbitration_id=msg.frame_id,
                        is_extended_id=msg.is_extended_frame,
                        data=data,
                        timestamp=t0 + 3 + i * 1e-3,
                    )
                )
            bus.send(
                can.Message(
                    arbitration_id=health.frame_id,
                    is_extended_id=health.is_extended_frame,
                    is_remote_frame=True,
                    timestamp=t0 + 6,
                )
            )
            for hour in range(1, 5 * 24):  # only the head unit speaks: the BMS is silent
                bus.send(
                    can.Message(
                        arbitration_id=ack.frame_id,
                        is_extended_id=ack.is_extended_frame,
                        data=bytes(8),
                        timestamp=t0 + 6 + hour * 3600,
                    )
                )
                time.sleep(0.001)
            backend.wait_for(lambda s: "bms.silent" in {e["type"] for e in s.events}, 10)
            live = wait_status(agent.daemon.status_file, lambda s: s["agent"]["bms_silent"] is True)
            assert live["state"] == "running" and live["agent"]["frame_errors"] == 0
            dropped = live["agent"]["frames_dropped"]
            assert any("BMS_Health: 3 bytes, expected 8" in k for k in dropped), dropped
            run_vehicle(
                cfg, channel, FAST, response="seen", agent=agent
            )  # the BMS is back, and ages
            backend.wait_for(lambda s: "owner.acknowledged" in {e["type"] for e in s.events}, 15)
            live = wait_status(
                agent.daemon.status_file, lambda s: s["agent"]["bms_silent"] is False
            )
            assert live["agent"]["frame_errors"] == 0
        finally:
            bus.shutdown()
            agent.stop()
    events = {e["event_id"]: e for e in backend.events}.values()
    types = [e["type"] for e in sorted(events, key=lambda e: e["seq"])]
    assert (
        types.index("bms.silent")
        < types.index("bms.recovered")
        < types.index("scrap.condition_met")
    )
    assert types.count("scrap.condition_met") == 1 and types.count("pack.identified") == 1
    assert "pack.code_invalid" not in types[: types.index("bms.silent")]  # short pages: no code
