"""Two real processes, as on a bench: `pack-agent simulate` and `pack-agent run` on one
localbus, the agent's clock taken from the frames, events to a real mosquitto."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from conftest import Subscriber
from pack_agent.config import load_config, reference_config_path
from pack_agent.core.events import parse_time
from pack_agent.dev.sim import SCENARIOS
from pack_agent.dev.sim.rig import rig_config, write_config

SRC = str(Path(__file__).resolve().parents[2] / "src")
SPEED = 100  # simulated days per second, at most: the simulator follows the agent
LEAD_DAYS = 5  # how far the simulator may run ahead of what the agent has read


def agent_config(tmp_path: Path, port: int) -> Path:
    cfg = rig_config(
        load_config(reference_config_path()),
        {"interface": "localbus", "channel": str(tmp_path / "bus")},
        port,
        tmp_path,
        # the fast simulator sends one burst per ignition On and Off, not the 100 ms
        # traffic of a trip: a 10 s BMS timeout would report silence twice a trip
        health={"bms_timeout_s": 86400.0, "publish_interval_s": 86400.0},
        daemon={
            "clock": "frames",
            "status_file": str(tmp_path / "status.json"),
            "status_interval_s": 0.1,  # the simulator follows the frame time written there
        },
    )
    return write_config(cfg, tmp_path / "agent.toml")


def pack_agent(*args: str, **kw: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "pack_agent", *args], env=env, text=True, **kw)  # type: ignore[call-overload]


def test_simulator_and_agent_as_separate_processes(broker, tmp_path):
    config = agent_config(tmp_path, broker.port)
    with Subscriber(broker) as backend:
        # the agent's log to a file: a pipe nobody reads until the end fills up (64 KiB of
        # INFO lines, about 600 events) and blocks the agent
        log = (tmp_path / "agent.log").open("w+", encoding="utf-8")
        agent = pack_agent("run", "--config", str(config), stderr=log)
        try:
            backend.wait_for(lambda s: any(x.get("state") == "online" for x in s.statuses), 15)
            # the decision's notice must reach the head unit, and its answer the agent, in
            # the 26 simulated days before the swap: the simulator stays at most LEAD_DAYS
            # ahead of the agent's frame time (its status file), however slowly a loaded
            # machine lets the agent read (at a fixed 40 or 100 days/s one fell that far
            # behind and the answer came after the swap)
            sim = pack_agent(
                "simulate", "--bus-interface", "localbus", "--channel", str(tmp_path / "bus"),
                "--scenario", "ageing", "--speed", str(SPEED), "--head-unit", "service_booked",
                "--follow", str(tmp_path / "status.json"), "--lead-days", str(LEAD_DAYS),
                "-q", stdout=subprocess.PIPE,
            )  # fmt: skip
            assert sim.wait(300) == 0
            backend.wait_for(lambda s: "pack.replaced" in {e["type"] for e in s.events}, 20)
        finally:
            agent.terminate()
            agent.wait(timeout=20)
            log.seek(0)
            err = log.read()
            log.close()
        assert agent.returncode == 0, err[-2000:]
        backend.wait_for(lambda s: any(x.get("state") == "offline" for x in s.statuses), 10)
    events = sorted({e["event_id"]: e for e in backend.events}.values(), key=lambda e: e["seq"])
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    kinds = Counter(e["type"] for e in events)
    assert kinds["pack.identified"] == 1 and kinds["pack.replaced"] == 1
    assert kinds["scrap.forecast"] == 1 and kinds["scrap.condition_met"] == 1
    acks = [e["data"] for e in events if e["type"] == "owner.acknowledged"]
    assert [(a["notice_id"], a["response"]) for a in acks] == [
        (0x0102, "service_booked"),
        (0x0101, "service_booked"),
    ]
    # the simulator's trips: ignition Off->On brings an unanswered notice back before its
    # daily interval (notice.repeat_on_ignition)
    shown = [e for e in events if e["type"] == "owner.notified" and e["data"]["channel"] == "can"]
    last: dict[int, float] = {}
    early = []
    for e in shown:
        t = parse_time(e["time"]).timestamp()
        seq = e["data"]["seq"]
        if seq in last and t - last[seq] < 86400:
            early.append(e["time"])
        last[seq] = t
    assert early, "no notice repeated at an ignition-on"
    # decided on the simulated calendar, not on the wall clock
    decision = next(e for e in events if e["type"] == "scrap.condition_met")
    scenario = SCENARIOS["ageing"]
    assert decision["data"]["pack_code"] == scenario.code
    assert decision["time"].startswith("2028-")
    assert "Traceback" not in err
