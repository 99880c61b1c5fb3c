"""Several buses at once: each opened with filters for exactly its mapped ids, frames
tagged with the bus they came from, end to end through the daemon."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import can
import pytest

from agent_thread import RunningDaemon
from pack_agent.canbus.checks import load_and_check
from pack_agent.canbus.source import can_filters
from pack_agent.config import AgentConfig, parse_config, reference_config_path
from pack_agent.config.load import tomllib
from pack_agent.dev.sim.vehicle import code_pages, encode
from pack_agent.runtime.daemon import Daemon

CODE = "0RJPEA00HAU0AAF131001955"


def two_bus_config(tmp_path: Path) -> tuple[AgentConfig, str, str]:
    data = tomllib.loads(reference_config_path().read_text(encoding="utf-8"))
    bms, body = f"bms-{uuid.uuid4().hex[:8]}", f"body-{uuid.uuid4().hex[:8]}"
    data["buses"] = [
        {"name": "bms", "interface": "virtual", "channel": bms},
        {"name": "body", "interface": "virtual", "channel": body},
    ]
    for name in ("odometer", "ignition"):
        data["metrics"][name]["bus"] = "body"
    data["notice"]["bus"] = "body"
    data["mqtt"] = {"port": 1}
    data["store"] = {"path": str(tmp_path / "agent.db")}
    return parse_config(data, reference_config_path().parent, "test"), bms, body


def test_filters_are_exact_per_bus(tmp_path):
    cfg, _, _ = two_bus_config(tmp_path)
    daemon = Daemon(cfg)
    try:
        bms_ids = {f["can_id"] for f in daemon.source.bus("bms").filters}
        body_ids = {f["can_id"] for f in daemon.source.bus("body").filters}
        # code pages, health, status, alarms, lifetime
        assert bms_ids == {0x3A0, 0x3A1, 0x3A2, 0x3A3, 0x3A5}
        assert body_ids == {0x3B0, 0x3C1}  # vehicle, the head unit's answer
        assert all(f["can_mask"] == 0x7FF for f in daemon.source.bus("bms").filters)
    finally:
        daemon.close()


def test_can_filters_keep_extended_and_standard_apart():
    assert can_filters([(0x18FF50E5, True), (0x3A1, False), (0x3A1, False)]) == [
        {"can_id": 0x3A1, "can_mask": 0x7FF, "extended": False},
        {"can_id": 0x18FF50E5, "can_mask": 0x1FFFFFFF, "extended": True},
    ]


def test_two_buses_end_to_end(tmp_path):
    cfg, bms_channel, body_channel = two_bus_config(tmp_path)
    db = load_and_check(cfg)
    bms = can.Bus(interface="virtual", channel=bms_channel)
    body = can.Bus(interface="virtual", channel=body_channel)
    agent = RunningDaemon(cfg, clock=time.time)
    try:
        now = time.time()
        for frame in code_pages(db, CODE, now) + code_pages(db, CODE, now):
            bms.send(frame)
        # a new pack starts with no readings: identify it before the readings arrive (the
        # two buses are read by two threads, so their order across buses is not fixed)
        agent.wait_for(lambda a: "pack.identified" in a.types())
        bms.send(encode(db, "BMS_Health", {"BMS_SOH": 91.5}, now))
        # the vehicle frame on the wrong bus must not count; on its own bus it does
        bms.send(encode(db, "VCU_Vehicle", {"VCU_Odometer": 999.0}, now))
        body.send(encode(db, "VCU_Vehicle", {"VCU_Odometer": 12345.6, "VCU_Ignition": 2}, now))
        # noise on both buses: filtered before the agent sees it
        for bus in (bms, body):
            bus.send(can.Message(arbitration_id=0x123, data=b"\xff" * 8))
        tracker = agent.daemon.agent.tracker
        agent.wait_for(lambda a: {"soh", "odometer"} <= set(tracker.latest))
        assert tracker.latest["soh"].value == pytest.approx(91.5)
        assert tracker.latest["odometer"].value == pytest.approx(12345.6)
        time.sleep(0.2)
        assert tracker.latest["odometer"].value == pytest.approx(12345.6)
        assert agent.daemon.agent.decoder.stats.frames == 10  # 8 pages, health, vehicle
    finally:
        agent.stop()
        bms.shutdown()
        body.shutdown()
