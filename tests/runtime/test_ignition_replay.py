"""The ignition and sleep done right, end to end: synthetic databases and logs of our
own, replayed through the whole pipeline (decoder, tracker, policy, notices, store).

The patterns: a 0/1 ignition with value-table labels ("KeyOn"), sent only every 30 s
(``GenMsgCycleTime`` 30000); capacity signals whose DBC range is ``[0|0]`` and whose
raw 0x7FF means "not available"; a car that parks and wakes every day; a BMS that
stops while the ignition is on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import can
import cantools
import pytest

from pack_agent.canbus.checks import load_and_check
from pack_agent.config import parse_config
from pack_agent.config.load import read_toml
from pack_agent.errors import ConfigError
from pack_agent.runtime.replay import replay

DAY = 86400.0
T0 = 1_800_000_000.0  # 2027-01-15, a plausible clock
VIN = "LSVAU2180N2183294"
NA = 0x7FF  # an 11-bit capacity's "not available"

DBC = """VERSION ""

NS_ :

BS_:

BU_: BMS VCU GW

BO_ 256 BMS_Pack: 8 BMS
 SG_ Pack_CapNow : 0|11@1+ (0.1,0) [0|0] "Ah" GW
 SG_ Pack_CapRated : 16|11@1+ (0.1,0) [0|0] "Ah" GW
 SG_ Pack_Soc : 32|8@1+ (0.5,0) [0|100] "%" GW

BO_ 512 VCU_Key: 8 VCU
 SG_ Key_State : 0|1@1+ (1,0) [0|1] "" GW
 SG_ Key_Odometer : 8|24@1+ (1,0) [0|16777215] "km" GW

BA_DEF_ BO_  "GenMsgCycleTime" INT 0 65535;
BA_DEF_DEF_  "GenMsgCycleTime" 0;
BA_ "GenMsgCycleTime" BO_ 256 1000;
BA_ "GenMsgCycleTime" BO_ 512 {cycle_ms};

VAL_ 512 Key_State 0 "KeyOff" 1 "KeyOn" ;
"""

CONFIG = """
vin = "{vin}"
databases = ["synthetic.dbc", "builtin:pack_agent_reference.dbc"]

[[buses]]
name = "powertrain"
interface = "virtual"
channel = "ignition-replay"

[metrics]
soh = {{ expression = "100 * Pack_CapNow / Pack_CapRated"{guard} }}
soc = {{ message = "BMS_Pack", signal = "Pack_Soc" }}
ignition = {{ message = "VCU_Key", signal = "Key_State" }}

[pack_code]
source = "none"

[ignition]
metric = "ignition"
{on}

[[rules]]
id = "capacity-80"
kind = "capacity"
metric = "soh"
threshold = 80.0
window_days = 7
min_readings = 1500
min_span_days = 2
severity = "advisory"
description_en = "SOH below 80 %"
description_zh = "健康状态低于80%"

[notice]
text_message = ""

[store]
path = "{store}"

[health]
bms_timeout_s = 10
"""

GUARDED = ", invalid_raw = { Pack_CapNow = 0x7FF, Pack_CapRated = 0x7FF }"


def setup(
    tmp_path: Path,
    cycle_ms: int = 30000,
    on: str = 'on_values = ["KeyOn"]',
    guard: str = GUARDED,
) -> tuple[Any, Any]:
    (tmp_path / "synthetic.dbc").write_text(DBC.replace("{cycle_ms}", str(cycle_ms)))
    text = CONFIG.format(vin=VIN, guard=guard, on=on, store=tmp_path / "agent.db")
    (tmp_path / "agent.toml").write_text(text, encoding="utf-8")
    data = read_toml(tmp_path / "agent.toml")
    cfg = parse_config(data, tmp_path, str(tmp_path / "agent.toml"))
    return cfg, cantools.database.load_file(str(tmp_path / "synthetic.dbc"))


def frame(db: Any, name: str, values: dict[str, Any], t: float) -> can.Message:
    msg = db.get_message_by_name(name)
    return can.Message(
        arbitration_id=msg.frame_id,
        is_extended_id=False,
        data=msg.encode(values, scaling=False),
        timestamp=t,
    )


def bms(db: Any, t: float, cap_raw: int, rated_raw: int = 1000) -> can.Message:
    return frame(db, "BMS_Pack", {"Pack_CapNow": cap_raw, "Pack_CapRated": rated_raw,
                                  "Pack_Soc": 140}, t)  # fmt: skip


def key(db: Any, on: bool, t: float) -> can.Message:
    return frame(db, "VCU_Key", {"Key_State": int(on), "Key_Odometer": 1000}, t)


def trips(
    db: Any,
    days: int,
    cap_raw: int = 750,
    key_every_s: float = 30.0,
    trip_s: float = 1200.0,
    na_every: int = 0,
    bms_dies_on_day: int | None = None,
) -> list[can.Message]:
    """One trip a day: the BMS wakes (1 frame/s), the ignition frame every ``key_every_s``
    (KeyOn), KeyOff at the end, then everything stops (the car parks). ``na_every``: every
    n-th BMS frame carries 0x7FF (not available) in the present capacity.
    ``bms_dies_on_day``: that day the BMS stops halfway while the ignition stays on."""
    out: list[can.Message] = []
    for d in range(days):
        wake = T0 + d * DAY + 8 * 3600.0
        end = wake + trip_s
        dies = wake + trip_s / 2 if d == bms_dies_on_day else None
        t, n = wake, 0
        while t < end:
            if dies is None or t < dies:
                raw = NA if na_every and n % na_every == na_every - 1 else cap_raw
                out.append(bms(db, t, raw))
            n += 1
            t += 1.0
        k = wake + 2.0
        while k < end:
            out.append(key(db, True, k))
            k += key_every_s
        out.append(key(db, False, end))
        out.append(bms(db, end + 0.5, cap_raw))  # the BMS's last frame after key-off
    return sorted(out, key=lambda m: m.timestamp)


def write_log(path: Path, frames: list[can.Message]) -> Path:
    lines = ["Time Stamp,ID,Extended,Bus,LEN,D1,D2,D3,D4,D5,D6,D7,D8"]
    for f in frames:
        data = ",".join(f"{b:02X}" for b in f.data)
        lines.append(f"{round(f.timestamp * 1e6)},{f.arbitration_id:08X},false,0,8,{data}")
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path


def types(result: Any) -> list[str]:
    return [e.type for e in result.events]


def decisions(result: Any) -> list[tuple[str, int]]:
    """(rule, day index) of every scrap decision."""
    return [
        (e.data["rule_id"], int((e.time.timestamp() - T0) // DAY))
        for e in result.events
        if e.type == "scrap.condition_met"
    ]


def test_a_slow_01_ignition_with_labels_decides_on_time(tmp_path: Path) -> None:
    """A 0/1 ignition ("KeyOn") every 30 s: the state holds between frames, so every
    reading of a trip is judged and the decision comes on the same day as with an
    ignition sent every second; no bms.silent/bms.recovered at any key-off."""
    cfg, db = setup(tmp_path)
    load_and_check(cfg)  # labels resolve, [0|0] is guarded: no problem
    assert not any("range" in w for w in cfg.warnings)
    slow = replay(cfg, write_log(tmp_path / "slow.csv", trips(db, 4)))
    fast_dir = tmp_path / "fast"
    fast_dir.mkdir()
    fast_cfg, fast_db = setup(fast_dir, cycle_ms=1000)
    fast = replay(fast_cfg, write_log(fast_dir / "fast.csv", trips(fast_db, 4, key_every_s=1.0)))
    assert decisions(slow) == decisions(fast) == [("capacity-80", 1)]
    evidence = next(e.data for e in slow.events if e.type == "scrap.condition_met")
    assert evidence["rule_id"] == "capacity-80"
    for run in (slow, fast):  # four trips, four parkings: the BMS was never silent
        assert "bms.silent" not in types(run) and "bms.recovered" not in types(run)


def test_the_old_window_decided_days_late_on_a_slow_ignition(tmp_path: Path) -> None:
    """The same slow log with the state held no longer than 5 s after each frame (the old
    ``ignition_window_s`` gate: stale_cycles 1, cycle_s 1) judges about a sixth of the
    readings, so the 1500 readings the rule needs take days more; the held state decides
    on the second day."""
    held_cfg, db = setup(tmp_path)
    frames = trips(db, 8)
    held = replay(held_cfg, write_log(tmp_path / "a.csv", frames))
    short_dir = tmp_path / "short"
    short_dir.mkdir()
    short_cfg, _ = setup(short_dir, on='on_values = ["KeyOn"]\nstale_cycles = 1\ncycle_s = 1')
    short = replay(short_cfg, write_log(short_dir / "b.csv", frames))
    assert decisions(held) == [("capacity-80", 1)]
    [(rule, day)] = decisions(short)
    assert rule == "capacity-80" and day >= 5


def test_not_available_capacity_never_becomes_a_soh(tmp_path: Path) -> None:
    """Capacity signals with a ``[0|0]`` range and a raw 0x7FF "not available" every
    tenth frame: guarded by ``invalid_raw`` on the expression's operands, or by the
    metric's ``maximum``, no SOH of 204.7 % reaches the rules or pack.health; unguarded,
    check-config says the range cannot drop it."""
    for name, guard in (("raw", GUARDED), ("max", ", maximum = 100")):
        d = tmp_path / name
        d.mkdir()
        cfg, db = setup(d, guard=guard)
        load_and_check(cfg)
        assert not any("[0|0]" in w for w in cfg.warnings), cfg.warnings
        run = replay(cfg, write_log(d / "na.csv", trips(db, 2, cap_raw=900, na_every=10)))
        dropped = run.decoder["dropped"]
        assert sum(dropped.values()) >= 2 * 120, dropped  # 1200 frames a trip, 1 in 10
        sohs = [e.data["metrics"]["soh"] for e in run.events if e.type == "pack.health"]
        assert sohs and all(s == pytest.approx(90.0) for s in sohs)
        assert run.latest["soh"] == pytest.approx(90.0)
        assert decisions(run) == []  # 90 %: nothing to decide (204.7 % would not, either)
    d = tmp_path / "none"
    d.mkdir()
    cfg, _ = setup(d, guard="")
    load_and_check(cfg)
    found = [w for w in cfg.warnings if "[0|0]" in w]
    assert len(found) == 2 and all(w.startswith("metrics.soh: signal BMS_Pack.") for w in found)
    assert "raw 0x7FF would read as 204.7" in found[0]


def test_the_default_on_values_on_a_01_signal_does_not_pass(tmp_path: Path) -> None:
    """``[2]`` (the default) on a 0/1 signal would never be On: check-config says so and
    names the values the signal takes; an unknown label is named too."""
    cfg, _ = setup(tmp_path, on="")
    with pytest.raises(ConfigError) as info:
        load_and_check(cfg)
    (problem,) = info.value.problems
    assert problem.startswith("ignition.on_values[0]: 2 (the default) is not a value of ")
    assert 'VCU_Key.Key_State (0..1; values 0 "KeyOff", 1 "KeyOn")' in problem
    cfg, _ = setup(tmp_path, on='on_values = ["On"]')
    with pytest.raises(ConfigError) as info:
        load_and_check(cfg)
    assert info.value.problems == [
        "ignition.on_values[0]: 'On' is not a label of the ignition signal ('KeyOff', 'KeyOn')"
    ]


def test_a_bms_that_stops_with_the_ignition_on_is_silent_once(tmp_path: Path) -> None:
    """Three days of trips; on the second the BMS stops halfway while the ignition
    frames go on: one bms.silent that day (about bms_timeout_s after its last frame), one
    bms.recovered the next morning, and no pair at any key-off."""
    cfg, db = setup(tmp_path)
    run = replay(cfg, write_log(tmp_path / "dies.csv", trips(db, 3, bms_dies_on_day=1)))
    silent = [e for e in run.events if e.type == "bms.silent"]
    recovered = [e for e in run.events if e.type == "bms.recovered"]
    assert len(silent) == 1 and len(recovered) == 1
    died = T0 + DAY + 8 * 3600.0 + 600.0
    # a log's clock is its frames: seen at the first ignition frame after the timeout
    assert 10.0 < silent[0].time.timestamp() - died <= 10.0 + 30.0
    assert silent[0].data["silent_for_s"] > 10.0
    # recovered by the BMS's frame after key-off the same day
    assert recovered[0].time.timestamp() == pytest.approx(T0 + DAY + 8 * 3600 + 1200.5)
