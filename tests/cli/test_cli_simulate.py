"""`pack-agent simulate`: the virtual vehicle alone on a bus, as candump would see it."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter

import can
import pytest

from pack_agent.canbus.checks import load_and_check
from pack_agent.cli import main
from pack_agent.config import load_config, reference_config_path
from pack_agent.core.codes import check_code
from pack_agent.dev.sim import SCENARIOS
from pack_agent.dev.sim.scenario import FORGED_CODE


@pytest.fixture(scope="module")
def db():
    return load_and_check(load_config(reference_config_path()))


def capture(argv: list[str]) -> tuple[int, list[can.Message]]:
    """Run `pack-agent simulate` on a fresh virtual channel; return its exit code and frames."""
    channel = f"test-sim-{uuid.uuid4().hex[:10]}"
    sniffer = can.Bus(interface="virtual", channel=channel)  # candump's view
    frames: list[can.Message] = []
    done = threading.Event()

    def sniff() -> None:
        while not done.is_set():
            msg = sniffer.recv(0.05)
            if msg is not None:
                frames.append(msg)

    t = threading.Thread(target=sniff)
    t.start()
    try:
        rc = main(["simulate", "--bus-interface", "virtual", "--channel", channel, "-q", *argv])
    finally:
        done.set()
        t.join()
        while (msg := sniffer.recv(0)) is not None:
            frames.append(msg)
        sniffer.shutdown()
    return rc, frames


def decoded(db, frames: list[can.Message], name: str) -> list[dict]:
    msg = db.get_message_by_name(name)
    return [
        msg.decode(f.data, decode_choices=False) for f in frames if f.arbitration_id == msg.frame_id
    ]


def codes(db, frames) -> list[str]:
    pages = decoded(db, frames, "BMS_PackCode")
    out, current = [], {}
    for p in pages:
        n = int(p["PackCode_Page"])
        current[n] = int(p[f"PackCode_Text{n}"]).to_bytes(6, "little").rstrip(b"\0").decode()
        if n == 3 and len(current) == 4:
            out.append("".join(current[i] for i in range(4)))
    return out


def test_every_scenario_is_listed(capsys):
    assert main(["simulate", "--list-scenarios"]) == 0
    listed = capsys.readouterr().out
    for name in (
        "healthy",
        "ageing",
        "safety-fault",
        "insulation-fault",
        "pack-swap",
        "forged-code",
    ):
        assert name in SCENARIOS and name in listed


def test_healthy_alarms_are_all_zero(db):
    rc, frames = capture(["--scenario", "healthy", "--days", "20", "--speed", "2000"])
    assert rc == 0
    alarms = decoded(db, frames, "BMS_Alarms")
    assert len(alarms) == 20 * 2 * 2  # two trips a day: at ignition On and at Off
    e2e = {"BMS_AlarmCounter", "BMS_AlarmCrc"}  # the frame's own counter and CRC
    flags = [k for k in alarms[0] if k.startswith("BMS_Alarm") and k not in e2e]
    assert all(a[k] == 0 for a in alarms for k in [*flags, "BMS_MaxAlarmLevel"])
    counters = [a["BMS_AlarmCounter"] for a in alarms]
    assert counters[:16] == [*range(15), 0]  # one step per frame, 14 then 0
    assert set(codes(db, frames)) == {SCENARIOS["healthy"].code}


def test_every_day_has_two_trips_ignition_on_then_off(db):
    """VCU_Ignition as the reference DBC defines it (0 Off, 2 On): two Off->On->Off cycles a
    day, so the agent sees real ignition-ons (notice repeats, the capacity rules' gate)."""
    _, frames = capture(["--scenario", "healthy", "--days", "3", "--speed", "2000"])
    ignition = [int(v["VCU_Ignition"]) for v in decoded(db, frames, "VCU_Vehicle")]
    assert ignition == [2, 0, 2, 0] * 3
    odometer = [v["VCU_Odometer"] for v in decoded(db, frames, "VCU_Vehicle")]
    assert odometer == sorted(odometer) and odometer[-1] > odometer[0]


@pytest.mark.parametrize(
    ("scenario", "flag", "level"),
    [
        ("safety-fault", "BMS_AlarmThermalEvent", 4),
        ("insulation-fault", "BMS_AlarmInsulation", 3),
    ],
)
def test_sudden_safety_fault(db, scenario, flag, level):
    rc, frames = capture(["--scenario", scenario, "--speed", "5000"])
    assert rc == 0
    flags = [a[flag] for a in decoded(db, frames, "BMS_Alarms")]
    # one stray frame (a single reading) among clean ones, days before the fault
    stray = flags.index(1)
    assert flags[stray + 1] == 0
    # the fault: from its first frame to the end, at 500 ms for 40 s, then once a minute
    fault = flags.index(1, stray + 1)
    assert set(flags[:stray]) == {0} and set(flags[stray + 1 : fault]) == {0}
    assert set(flags[fault:]) == {1} and len(flags) - fault > 81
    assert decoded(db, frames, "BMS_Alarms")[-1]["BMS_MaxAlarmLevel"] == level
    # the driver stops (Acc) and the car stands with the alarm on, then ignition Off
    ignition = [int(v["VCU_Ignition"]) for v in decoded(db, frames, "VCU_Vehicle")]
    assert ignition[-3:] == [1, 1, 0]


def test_pack_swap_and_forged_code(db):
    _, frames = capture(["--scenario", "pack-swap", "--speed", "5000"])
    sc = SCENARIOS["pack-swap"]
    assert list(dict.fromkeys(codes(db, frames))) == [sc.code, sc.new_code]
    _, frames = capture(["--scenario", "forged-code", "--speed", "5000"])
    seen = list(dict.fromkeys(codes(db, frames)))
    assert seen == [SCENARIOS["forged-code"].code, FORGED_CODE]
    assert not check_code(FORGED_CODE).valid


def test_realtime_sends_at_the_dbc_cycle_times(db):
    rc, frames = capture(
        ["--scenario", "healthy", "--realtime", "--day-seconds", "1.0", "--days", "1"]
    )
    assert rc == 0
    counts = Counter(f.arbitration_id for f in frames)
    by_name = {m.name: counts[m.frame_id] for m in db.messages}
    # one second: 100 ms messages about 10 times, 500 ms twice, 1000 ms once
    assert 7 <= by_name["BMS_Status"] <= 11
    assert 7 <= by_name["VCU_Vehicle"] <= 11
    assert 2 <= by_name["BMS_Alarms"] <= 3
    assert 1 <= by_name["BMS_Health"] <= 2
    assert by_name["PA_OwnerNotice"] == 0
    span = frames[-1].timestamp - frames[0].timestamp
    assert 0.7 < span < 1.5  # wall-clock stamps, not simulated days


def test_unknown_scenario_is_one_clear_error(capsys):
    assert (
        main(["simulate", "--bus-interface", "virtual", "--channel", "x", "--scenario", "nope"])
        == 2
    )
    assert "unknown scenario 'nope'" in capsys.readouterr().err


def test_follow_stays_within_the_lead_of_the_agents_frame_time(tmp_path):
    """--follow: a stand-in agent reads the frames and writes its frame time to a status
    file, slowly; the simulator never gets more than --lead-days (and the day it is in)
    ahead of what that file says, and still plays every day."""
    status = tmp_path / "status.json"
    channel = f"test-sim-{uuid.uuid4().hex[:10]}"
    agent_bus = can.Bus(interface="virtual", channel=channel)
    done = threading.Event()
    ahead: list[float] = []  # each frame's time minus the frame time written when it came
    stamps: list[float] = []

    def agent() -> None:
        written = 0.0
        while not done.is_set():
            msg = agent_bus.recv(0.01)
            if msg is None:
                continue
            ahead.append(msg.timestamp - written if written else 0.0)
            stamps.append(msg.timestamp)
            time.sleep(0.002)  # slower than --speed 1000: the simulator has to wait
            written = msg.timestamp
            tmp = status.with_suffix(".tmp")
            tmp.write_text(json.dumps({"agent": {"frame_time": written}}))
            tmp.replace(status)

    t = threading.Thread(target=agent)
    t.start()
    try:
        rc = main([
            "simulate", "--bus-interface", "virtual", "--channel", channel, "-q",
            "--scenario", "healthy", "--days", "12", "--speed", "1000", "--head-unit", "none",
            "--follow", str(status), "--lead-days", "2",
        ])  # fmt: skip
    finally:
        done.set()
        t.join()
        while (msg := agent_bus.recv(0)) is not None:
            stamps.append(msg.timestamp)
        agent_bus.shutdown()
    assert rc == 0
    assert max(stamps) - min(stamps) > 11 * 86400  # every day played
    assert max(ahead) <= 3 * 86400, max(ahead) / 86400  # the lead and one day's frames


def test_follow_fails_naming_the_file_when_the_agent_never_reads(tmp_path, monkeypatch, capsys):
    from pack_agent.cli import simulate

    monkeypatch.setattr(simulate, "FOLLOW_STALL_S", 0.3)
    missing = tmp_path / "no-agent" / "status.json"
    channel = f"test-sim-{uuid.uuid4().hex[:10]}"
    rc = main([
        "simulate", "--bus-interface", "virtual", "--channel", channel,
        "-q", "--days", "3", "--follow", str(missing),
    ])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert f"--follow {missing}: the agent's frame time has not moved for 0.3 s" in err
