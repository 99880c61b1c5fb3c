"""The shipped example mappings against the real CAN databases and the real Kona EV capture.

Skipped when ../shared/real-world (beside the clone) is absent: a user's checkout does
not have it, and the project never copies those files.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import can
import pytest

from agent_thread import RunningDaemon
from pack_agent.canbus.checks import load_and_check
from pack_agent.canbus.dbc import complete_values
from pack_agent.config import AgentConfig, parse_config
from pack_agent.config.load import tomllib
from pack_agent.runtime.replay import replay

REAL = Path(__file__).resolve().parents[3] / "shared" / "real-world"
EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"
KONA_LOG = REAL / "kona-ev" / "230112-7-2019-pcan-ccan-power-off-on-ready-off.csv"
OWN_COPIES = {
    "foxbms.dbc": REAL / "foxbms-2" / "foxbms.dbc",
    "EV-can_ZE1.dbc": REAL / "nissan-leaf" / "EV-can_ZE1.dbc",
    "Model3CAN.dbc": REAL / "model3dbc" / "Model3CAN.dbc",
    "pcan.dbc": REAL / "kona-ev" / "pcan.dbc",
}

pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason="../shared/real-world is absent")


def example(name: str, tmp_path: Path, virtual: bool = True, **changes: Any) -> AgentConfig:
    """An example file as a user would use it: ``databases`` pointed at their own copy."""
    path = EXAMPLES / name
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    data["databases"] = [str(OWN_COPIES.get(d, d)) for d in data["databases"]]
    if virtual:
        for bus in data["buses"]:
            bus.update(interface="virtual", channel=f"ex-{uuid.uuid4().hex[:10]}")
    data["store"] = {"path": str(tmp_path / "agent.db")}
    data["mqtt"] = {"port": 1}
    for key, value in changes.items():
        data[key] = value
    return parse_config(data, path.parent, str(path))


def frame(db: Any, name: str, values: dict[str, Any]) -> can.Message:
    msg = db.get_message_by_name(name)
    return can.Message(
        arbitration_id=msg.frame_id,
        is_extended_id=msg.is_extended_frame,
        data=msg.encode(complete_values(msg, values), strict=False),
    )


def soh_over_virtual_bus(cfg: AgentConfig, frames: list[can.Message]) -> tuple[float, Any]:
    peer = can.Bus(interface="virtual", channel=cfg.buses[0].channel)
    agent = RunningDaemon(cfg, clock=time.time)
    try:
        for f in frames:
            peer.send(f)
        tracker = agent.daemon.agent.tracker
        agent.wait_for(lambda a: "soh" in tracker.latest)
        return tracker.latest["soh"].value, agent
    finally:
        agent.stop()
        peer.shutdown()


def test_foxbms_soh_big_endian(tmp_path):
    cfg = example("foxbms-2.toml", tmp_path)
    db = load_and_check(cfg)
    f = frame(db, "f_PackStateEstimation", {"Soh": 87.5, "MinimumSoc": 55.2, "Energy": 42.0})
    soh, _ = soh_over_virtual_bus(cfg, [f])
    assert soh == pytest.approx(87.5)


def test_nissan_leaf_soh(tmp_path):
    cfg = example("nissan-leaf-ze1.toml", tmp_path)
    db = load_and_check(cfg)
    bad = frame(db, "x5BC", {"LB_Capacity_Deterioration_Rate": 127, "Mux_5BC": 8})
    good = frame(db, "x5BC", {"LB_Capacity_Deterioration_Rate": 85, "Mux_5BC": 8})
    soh, agent = soh_over_virtual_bus(cfg, [bad, good])
    assert soh == pytest.approx(85)
    assert agent.daemon.agent.decoder.stats.dropped_by_metric["soh"] == 1  # raw 127: invalid


def test_tesla_model3_soh_derived_from_two_messages(tmp_path):
    cfg = example("tesla-model3.toml", tmp_path)
    db = load_and_check(cfg)
    frames = [
        frame(db, "ID352BMS_energyStatus", {"BMS_nominalFullPackEnergy": 68.4}),
        frame(db, "ID292BMS_SOC", {"BattBeginningOfLifeEnergy292": 76.0, "SOCUI292": 60.0}),
    ]
    soh, _ = soh_over_virtual_bus(cfg, frames)
    assert soh == pytest.approx(90.0)


def test_tesla_multiplexed_vin_pages_through_the_code_path(tmp_path):
    """The Model 3's VIN (mux405 16/17/18, 7 ASCII bytes each) read as a multiplexed
    identity string: assembled in any order, then judged: a VIN is no GB/T 34014 code."""
    vin = "5YJ3E1EA0JF000001"
    cfg = example(
        "tesla-model3.toml",
        tmp_path,
        pack_code={
            "source": "pages",
            "message": "ID405VIN",
            "mux_signal": "mux405",
            "pages": ["VINA405", "VINB405", "VINC405"],
            "confirmations": 1,
        },
    )
    db = load_and_check(cfg)
    chunks = [vin[i : i + 7].encode().ljust(7, b"\0") for i in (0, 7, 14)]
    names = ["VINA405", "VINB405", "VINC405"]
    frames = [
        frame(db, "ID405VIN", {"mux405": 16 + i, names[i]: int.from_bytes(chunks[i], "little")})
        for i in (2, 0, 1)
    ]
    peer = can.Bus(interface="virtual", channel=cfg.buses[0].channel)
    agent = RunningDaemon(cfg, clock=time.time)
    try:
        for f in frames:
            peer.send(f)
        agent.wait_for(lambda a: "pack.code_invalid" in a.types())
        invalid = next(e for e in agent.events if e.type == "pack.code_invalid")
        assert invalid.data["raw"] == vin
        assert invalid.data["errors"]
    finally:
        agent.stop()
        peer.shutdown()


@pytest.mark.skipif(not KONA_LOG.is_file(), reason="no Kona capture")
def test_kona_capture_decodes_soc_voltage_current_and_no_soh(tmp_path):
    cfg = example(
        "hyundai-kona-ev.toml",
        tmp_path,
        virtual=False,
        health={"publish_interval_s": 1.0, "bms_timeout_s": 5.0},
    )
    result = replay(cfg, KONA_LOG)
    assert result.frames == 39_546
    assert result.per_bus == {"pcan": 24_263, "ccan": 15_283}
    assert set(result.latest) == {"soc", "pack_voltage", "pack_current"}
    health = [e for e in result.events if e.type == "pack.health"]
    assert len(health) >= 5  # one a second of log time while the BMS talks
    for e in health:
        m = e.data["metrics"]
        assert "soh" not in m
        assert 0 <= m["soc"] <= 100
        assert 250 <= m["pack_voltage"] <= 420  # a 64 kWh Kona pack: about 356 V nominal
        assert -1000 <= m["pack_current"] <= 1000
    assert {e.type for e in result.events} <= {"pack.health", "bms.silent", "bms.recovered"}
    assert result.decoder["dropped"] == {}
    # without the reader's filter every frame reaches the agent: the same events; timer
    # instants (pack.health) follow the 50 ms tick grid, whose phase depends on which
    # frames arrive, and the health timer counts from the instant it fired
    # (the filter lets a frame through every 10 ms of log time)
    unfiltered = replay(cfg, KONA_LOG, filter_ids=False)
    assert [e.type for e in unfiltered.events] == [e.type for e in result.events]
    for a, b in zip(unfiltered.events, result.events, strict=True):
        assert abs((a.time - b.time).total_seconds()) <= 0.5
