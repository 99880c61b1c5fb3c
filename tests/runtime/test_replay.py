"""Replay: the whole pipeline over recorded logs, the log's time as the clock."""

from __future__ import annotations

import json
from pathlib import Path

import can
import pytest

from pack_agent.canbus.checks import load_and_check
from pack_agent.canbus.logs import LogError, detect_format, read_log
from pack_agent.cli import main
from pack_agent.config import load_config, parse_config, reference_config_path
from pack_agent.config.load import tomllib
from pack_agent.dev.sim.scenario import Scenario
from pack_agent.dev.sim.vehicle import day_bursts, day_frames
from pack_agent.runtime.replay import replay

# crosses the 80 % line within days, so the 14-day rule decides about day 20
FAST = Scenario(
    name="fast", description="test", days=40, soh_start=81.5, soh_per_year=20, soh_noise=0.0
)
SWAPPED = Scenario(
    name="swapped",
    description="test",
    days=2,
    soh_start=99,
    soh_noise=0.0,
    code=FAST.new_code,
    start=FAST.start + 30 * 86400,
)
WRITERS = {
    ".asc": can.ASCWriter,
    ".blf": can.BLFWriter,
    ".log": can.CanutilsLogWriter,
    ".trc": can.TRCWriter,
}


@pytest.fixture(scope="module")
def ref():
    cfg = load_config(reference_config_path())
    return cfg, load_and_check(cfg)


def frames_of(db, scenario: Scenario) -> list[can.Message]:
    return [f for s in scenario.states() for f in day_frames(db, s)]


def write_gvret(path: Path, frames: list[can.Message], bus: int = 0) -> Path:
    lines = ["Time Stamp,ID,Extended,Bus,LEN,D1,D2,D3,D4,D5,D6,D7,D8"]
    for f in frames:
        data = ",".join(f"{b:02X}" for b in f.data)
        ext = "true" if f.is_extended_id else "false"
        lines.append(
            f"{round(f.timestamp * 1e6)},{f.arbitration_id:08X},{ext},{bus},{len(f.data)},{data}"
        )
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path


def config_file(tmp_path: Path) -> Path:
    text = reference_config_path().read_text(encoding="utf-8")
    text = text.replace("/var/lib/pack-agent/pack-agent.db", str(tmp_path / "unused.db"))
    p = tmp_path / "agent.toml"
    p.write_text(text, encoding="utf-8")
    return p


def summary(events) -> list[tuple]:
    return [(e.seq, e.type, e.time, json.dumps(e.data, sort_keys=True)) for e in events]


def test_gvret_replay_runs_the_whole_pipeline_on_log_time(ref, tmp_path):
    cfg, db = ref
    log = write_gvret(tmp_path / "fast.csv", frames_of(db, FAST))
    result = replay(cfg, log)
    types = [e.type for e in result.events]
    assert types[0] == "pack.identified"
    assert types.count("scrap.condition_met") == 1
    decision = next(e for e in result.events if e.type == "scrap.condition_met")
    # the window's median below 80 % for 14 days, judged on the log's own days
    assert decision.data["sample_count"] >= 14 and decision.data["persistence_days"] == 14
    assert decision.data["statistic"]["median"] < 80.0
    assert decision.time.year == 2026 and decision.time.month == 5
    assert "owner.notified" in types  # the notice bookkeeping ran (recorded, not sent)
    assert result.frames == len(frames_of(db, FAST))
    assert result.per_bus == {"powertrain": result.frames}


@pytest.mark.parametrize("suffix", sorted(WRITERS))
def test_every_python_can_format_gives_the_same_events(ref, tmp_path, suffix):
    cfg, db = ref
    frames = frames_of(db, FAST)
    writer = WRITERS[suffix](str(tmp_path / f"fast{suffix}"))
    for f in frames:
        writer.on_message_received(f)
    writer.stop()
    gvret = replay(cfg, write_gvret(tmp_path / "fast.csv", frames))
    other = replay(cfg, tmp_path / f"fast{suffix}")
    assert summary(other.events) == summary(gvret.events)


def test_replay_is_deterministic_and_ids_can_be_too(ref, tmp_path):
    cfg, db = ref
    log = write_gvret(tmp_path / "fast.csv", frames_of(db, FAST))
    a, b = replay(cfg, log), replay(cfg, log)
    assert summary(a.events) == summary(b.events)
    assert {e.event_id for e in a.events}.isdisjoint({e.event_id for e in b.events})
    c = replay(cfg, log, deterministic_ids=True)
    d = replay(cfg, log, deterministic_ids=True)
    assert [e.event_id for e in c.events] == [e.event_id for e in d.events]
    assert len({e.event_id for e in c.events}) == len(c.events)


def test_state_file_carries_the_pack_across_replays(ref, tmp_path):
    cfg, db = ref
    state = tmp_path / "state.db"
    first = replay(cfg, write_gvret(tmp_path / "a.csv", frames_of(db, FAST)), state_path=state)
    second = replay(cfg, write_gvret(tmp_path / "b.csv", frames_of(db, SWAPPED)), state_path=state)
    replaced = [e for e in second.events if e.type == "pack.replaced"]
    assert len(replaced) == 1
    assert replaced[0].data["previous_code"] == FAST.code
    assert replaced[0].data["pack_code"] == FAST.new_code
    assert second.events[0].seq == first.events[-1].seq + 1


def test_a_bad_line_names_its_number_after_the_events_before_it(ref, tmp_path, capsys):
    _, db = ref
    log = write_gvret(tmp_path / "bad.csv", frames_of(db, FAST))
    lines = log.read_text().splitlines()
    bad_line = 200
    lines[bad_line - 1] = lines[bad_line - 1][:20]  # truncated in the middle of a record
    log.write_text("\n".join(lines) + "\n")
    code = main(["replay", str(log), "--config", str(config_file(tmp_path)), "--json"])
    out, err = capsys.readouterr()
    assert code == 2
    assert f"bad.csv:{bad_line}: bad GVRET line" in err
    printed = [json.loads(line) for line in out.splitlines()]
    assert printed and printed[0]["type"] == "pack.identified"
    # only what came before the line: 200 lines are about 18 days of 11 frames
    assert all(p["time"] < "2026-04-20" for p in printed)


def test_truncated_candump_log_names_the_line(ref, tmp_path):
    _, db = ref
    path = tmp_path / "fast.log"
    writer = can.CanutilsLogWriter(str(path))
    for f in frames_of(db, FAST)[:30]:
        writer.on_message_received(f)
    writer.stop()
    text = path.read_text()
    path.write_text(text + "(1775100000.000000) vcan0 3A1#0102XZ\n")
    with pytest.raises(LogError, match=r"fast\.log:31: bad candump record"):
        list(read_log(path))


def test_cli_json_lines_are_the_mqtt_payloads(ref, tmp_path, capsys):
    _, db = ref
    log = write_gvret(tmp_path / "fast.csv", frames_of(db, FAST))
    assert main(["replay", str(log), "-c", str(config_file(tmp_path)), "--json"]) == 0
    out, err = capsys.readouterr()
    events = [json.loads(line) for line in out.splitlines()]
    assert {"schema_version", "event_id", "seq", "type", "vin", "time", "data"} <= set(events[0])
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert "replayed" in err and "frames" in err
    assert main(["replay", str(log), "-c", str(config_file(tmp_path))]) == 0
    human = capsys.readouterr().out.splitlines()
    assert len(human) == len(events) and "scrap.condition_met" in "\n".join(human)


def test_format_by_extension_or_flag(tmp_path):
    gv = write_gvret(tmp_path / "x.csv", [])
    assert detect_format(gv) == "gvret"
    (tmp_path / "y.csv").write_text("timestamp,arbitration_id,extended,remote,error,dlc,data\n")
    assert detect_format(tmp_path / "y.csv") == "csv"
    with pytest.raises(LogError, match="give --format"):
        detect_format(tmp_path / "z.bin")


def test_log_channels_map_to_configured_buses(ref, tmp_path):
    _, db = ref
    data = tomllib.loads(reference_config_path().read_text(encoding="utf-8"))
    data["buses"] = [
        {"name": "body", "channel": "can1", "log_channel": 1},
        {"name": "powertrain", "channel": "can0", "log_channel": 0},
    ]
    data["metrics"]["odometer"]["bus"] = "body"
    data["metrics"]["ignition"]["bus"] = "body"
    cfg = parse_config(data, reference_config_path().parent, "test")
    frames = frames_of(db, FAST)[:11]
    log = tmp_path / "two.csv"
    write_gvret(log, frames[:10], bus=0)
    text = log.read_text()
    write_gvret(tmp_path / "b1.csv", frames[10:], bus=1)
    extra = (tmp_path / "b1.csv").read_text().splitlines()[1:]
    write_gvret(tmp_path / "b2.csv", frames[10:], bus=2)
    unknown = (tmp_path / "b2.csv").read_text().splitlines()[1:]
    log.write_text(text + "\n".join(extra + unknown) + "\n")
    result = replay(cfg, log)
    assert result.per_bus == {"powertrain": 10, "body": 1}
    assert result.unmapped_channels == {"2": 1}
    assert result.latest["odometer"] == pytest.approx(FAST.states()[0].odometer_km)


def test_silence_is_seen_while_other_traffic_goes_on_filtered_or_not(ref, tmp_path):
    """BMS frames stop, other frames go on: the log's clock still advances through the
    filter (time markers), so bms.silent comes about bms_timeout_s after the last one."""
    cfg, db = ref
    wake, _, wake_again, _ = (b.frames for b in day_bursts(db, FAST.states()[0]))
    day = wake + wake_again  # two ignition-ons' BMS frames (no ignition Off between)
    last_bms = day[10].timestamp
    noise = [
        can.Message(arbitration_id=0x123, data=b"\0" * 8, timestamp=last_bms + 0.1 * i)
        for i in range(1, 300)
    ]
    frames = sorted(day + noise, key=lambda m: m.timestamp)
    log = write_gvret(tmp_path / "quiet.csv", frames)
    filtered_run = replay(cfg, log)
    unfiltered_run = replay(cfg, log, filter_ids=False)
    for run in (filtered_run, unfiltered_run):
        silent = [e for e in run.events if e.type == "bms.silent"]
        assert len(silent) == 1
        gap = silent[0].time.timestamp() - last_bms
        # noticed within the 0.2 s tick cadence of replay (+1 ms: microsecond time stamps)
        assert cfg.health.bms_timeout_s < gap <= cfg.health.bms_timeout_s + 0.2 + 1e-3
        assert [e.type for e in run.events].count("bms.recovered") == 1
    assert summary(filtered_run.events) == summary(unfiltered_run.events)


def _blf(path: Path, frames: list[can.Message]) -> Path:
    writer = can.BLFWriter(str(path))
    for f in frames:
        writer.on_message_received(f)
    writer.stop()
    return path


def test_truncated_or_garbage_blf_logs_fail_with_the_position(ref, tmp_path, capsys):
    """python-can reads a cut BLF up to the cut and stops without a word; the replay
    refuses it (exit 2) before any frame, naming the byte where the file ends."""
    _, db = ref
    whole = _blf(tmp_path / "whole.blf", frames_of(db, FAST)[:3000])
    assert main(["replay", str(whole), "-c", str(config_file(tmp_path)), "--json"]) == 0
    capsys.readouterr()
    raw = whole.read_bytes()
    cut = tmp_path / "cut.blf"
    cut.write_bytes(raw[: len(raw) // 2])
    assert main(["replay", str(cut), "-c", str(config_file(tmp_path)), "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and f"cut.blf: truncated at byte {len(raw) // 2}" in err
    garbage = tmp_path / "garbage.blf"
    garbage.write_bytes(b"not a blf file at all" * 20)
    assert main(["replay", str(garbage), "-c", str(config_file(tmp_path))]) == 2
    assert "garbage.blf: cannot read as blf: Unexpected file format" in capsys.readouterr().err
    garbage.write_bytes(raw[:144] + bytes(range(256)) * 40)  # a BLF header, then garbage
    assert main(["replay", str(garbage), "-c", str(config_file(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert "garbage.blf" in err and ("BLFParseError" in err or "truncated at byte" in err), err


def test_a_time_stamp_that_is_not_a_number_stops_the_replay_at_its_frame(ref, tmp_path, capsys):
    """A NaN (or infinite) stamp must not reach the time rules (python-can's candump and
    CSV readers hand it over as it is)."""
    _, db = ref
    path = tmp_path / "nan.log"
    writer = can.CanutilsLogWriter(str(path))
    for f in frames_of(db, FAST)[:20]:
        writer.on_message_received(f)
    writer.stop()
    lines = path.read_text().splitlines()
    lines[5] = "(nan)" + lines[5].split(")", 1)[1]
    path.write_text("\n".join(lines) + "\n")
    assert main(["replay", str(path), "-c", str(config_file(tmp_path))]) == 2
    assert "nan.log: frame 6: time stamp nan is not a time" in capsys.readouterr().err
