"""The mapping assistant (`pack-agent map`): proposals from a database, checked against a log.

A synthetic BMS database of our own has the right signals beside decoys (an SOH-named
signal that moves like a state of charge, a 12 V battery's SOH, a limit that looks like a
voltage); the real databases beside the project (skipped when absent) are read as an
integrator would. What must hold: the starter configuration passes `check-config`, and no
proposed signal is one that the log contradicts.
"""

from __future__ import annotations

from pathlib import Path

import cantools
import pytest

from pack_agent.canbus import mapping
from pack_agent.canbus.checks import load_and_check
from pack_agent.canbus.dbc import load_file
from pack_agent.canbus.logs import read_log
from pack_agent.cli import main
from pack_agent.config import load_config

REAL = Path(__file__).resolve().parents[3] / "shared" / "real-world"
KONA_LOG = REAL / "kona-ev" / "230112-7-2019-pcan-ccan-power-off-on-ready-off.csv"
CODE = "0RJPEA00HAU0AAF131001955"

DBC = """VERSION ""

NS_ :

BS_:

BU_: BMS VCU

BO_ 1040 BMS_StateOfHealth: 8 BMS
 SG_ BMS_SOH_Estimate : 0|8@1+ (1,0) [0|100] "%" VCU
 SG_ Pack_SOH : 8|10@1+ (0.1,0) [0|102.3] "%" VCU
 SG_ SOH_Limit_Request : 18|8@1+ (1,0) [0|100] "%" VCU
 SG_ Aux12V_SOH : 26|8@1+ (1,0) [0|100] "%" VCU
 SG_ Pack_Capacity : 34|12@1+ (0.1,0) [0|409.5] "Ah" VCU

BO_ 1041 BMS_Values: 8 BMS
 SG_ Pack_SOC : 0|8@1+ (0.5,0) [0|100] "%" VCU
 SG_ PackVoltage : 8|16@1+ (0.1,0) [0|1000] "V" VCU
 SG_ PackCurrent : 24|16@1- (0.1,0) [-1000|1000] "A" VCU
 SG_ Max_Charge_Voltage_Limit : 40|16@1+ (0.1,0) [0|1000] "V" VCU

BO_ 1042 VCU_State: 8 VCU
 SG_ Ignition_State : 0|3@1+ (1,0) [0|7] "" BMS
 SG_ Odometer : 8|24@1+ (1,0) [0|1000000] "km" BMS

BO_ 1043 BMS_Serial: 8 BMS
 SG_ Serial_Page M : 0|8@1+ (1,0) [0|3] "" VCU
 SG_ Serial_Text0 m0 : 8|48@1+ (1,0) [0|0] "" VCU
 SG_ Serial_Text1 m1 : 8|48@1+ (1,0) [0|0] "" VCU
 SG_ Serial_Text2 m2 : 8|48@1+ (1,0) [0|0] "" VCU
 SG_ Serial_Text3 m3 : 8|48@1+ (1,0) [0|0] "" VCU

BA_DEF_ BO_ "GenMsgCycleTime" INT 0 65535;
BA_ "GenMsgCycleTime" BO_ 1040 1000;
BA_ "GenMsgCycleTime" BO_ 1042 100;

VAL_ 1042 Ignition_State 0 "Off" 1 "Acc" 2 "On" 3 "Start" ;
"""


@pytest.fixture
def dbc(tmp_path: Path) -> Path:
    path = tmp_path / "bms.dbc"
    path.write_text(DBC, encoding="utf-8")
    return path


def _log(path: Path, dbc_path: Path, soh_estimate_moves: bool) -> Path:
    """A GVRET CSV of 10 minutes at 1 Hz: SOH 91.5 % steady; BMS_SOH_Estimate moves like a
    state of charge when asked; the ignition goes Off, On, Start, On; the code pages."""
    db = cantools.database.load_file(str(dbc_path))
    rows = ["Time Stamp,ID,Extended,Bus,LEN,D1,D2,D3,D4,D5,D6,D7,D8"]

    def add(t: float, name: str, **values: float) -> None:
        msg = db.get_message_by_name(name)
        data = msg.encode(values, strict=False)
        rows.append(
            f"{int(t * 1e6)},{msg.frame_id:08X},false,0,{len(data)},"
            + ",".join(f"{b:02X}" for b in data)
        )

    for s in range(600):
        t = 1_000.0 + s
        estimate = (40 + s % 50) if soh_estimate_moves else 92
        add(
            t,
            "BMS_StateOfHealth",
            BMS_SOH_Estimate=estimate,
            Pack_SOH=91.5,
            SOH_Limit_Request=80,
            Aux12V_SOH=70,
            Pack_Capacity=180.0,
        )
        add(
            t,
            "BMS_Values",
            Pack_SOC=80 - s / 60,
            PackVoltage=355.0 + s % 3,
            PackCurrent=-12.5 + s % 7,
            Max_Charge_Voltage_Limit=403.2,
        )
        ignition = 0 if s < 60 else 3 if s < 62 else 2
        add(t, "VCU_State", Ignition_State=ignition, Odometer=26_716 + s // 120)
        page = s % 4
        text = CODE[page * 6 : page * 6 + 6].encode("ascii")
        add(
            t,
            "BMS_Serial",
            Serial_Page=page,
            **{f"Serial_Text{page}": int.from_bytes(text, "little")},
        )
    path = dbc_path.parent / "drive.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_the_database_alone_names_the_right_signals(dbc: Path) -> None:
    db = mapping.load([dbc])
    proposal = mapping.propose(db)
    best = {
        m: proposal.best(m)
        for m in ("soc", "pack_voltage", "pack_current", "ignition", "odometer", "capacity")
    }
    assert {m: (c.message, c.signal) for m, c in best.items() if c} == {
        "soc": ("BMS_Values", "Pack_SOC"),
        "pack_voltage": ("BMS_Values", "PackVoltage"),
        "pack_current": ("BMS_Values", "PackCurrent"),
        "ignition": ("VCU_State", "Ignition_State"),
        "odometer": ("VCU_State", "Odometer"),
        "capacity": ("BMS_StateOfHealth", "Pack_Capacity"),
    }
    soh = [c.signal for c in proposal.candidates["soh"] if c.proposed]
    assert "SOH_Limit_Request" not in soh and "Aux12V_SOH" not in soh  # a limit, a 12 V battery
    assert soh[:2] == ["BMS_SOH_Estimate", "Pack_SOH"] or soh[:2] == [
        "Pack_SOH",
        "BMS_SOH_Estimate",
    ]
    code = proposal.best_code()
    assert code is not None and code.message == "BMS_Serial"
    assert code.pages == [f"Serial_Text{i}" for i in range(4)]
    assert any("24-character" in r for r in code.reasons)


def test_a_signal_the_log_contradicts_is_never_proposed(dbc: Path) -> None:
    db = mapping.load([dbc])
    proposal = mapping.check_against_log(
        mapping.propose(db), db, read_log(_log(dbc, dbc, soh_estimate_moves=True))
    )
    estimate = next(c for c in proposal.candidates["soh"] if c.signal == "BMS_SOH_Estimate")
    assert estimate.contradiction is not None and "40..89" in estimate.contradiction
    assert not estimate.proposed
    best = proposal.best("soh")
    assert best is not None and best.signal == "Pack_SOH"
    assert any("91.5..91.5" in r for r in best.reasons)
    code = proposal.best_code()
    assert code is not None and code.text == CODE
    for found in proposal.candidates.values():  # the invariant, for every metric
        assert all(c.contradiction is None for c in found if c.proposed)


def test_a_steady_soh_named_signal_is_kept_when_the_log_agrees(dbc: Path) -> None:
    db = mapping.load([dbc])
    proposal = mapping.check_against_log(
        mapping.propose(db), db, read_log(_log(dbc, dbc, soh_estimate_moves=False))
    )
    estimate = next(c for c in proposal.candidates["soh"] if c.signal == "BMS_SOH_Estimate")
    assert estimate.contradiction is None and estimate.proposed


@pytest.mark.parametrize(
    ("metric", "values", "why"),
    [
        ("soh", [95.0, 60.0], "moves by at most"),
        ("soh", [120.0, 120.0], "within 40-105"),
        ("odometer", [1000.0, 1001.0, 999.0], "never goes back"),
        ("ignition", [float(v) for v in range(20)], "not a state or flag"),
        ("pack_voltage", [12.1, 12.4], "50-1500 V"),
        ("soc", [50.0, 130.0], "0-100"),
    ],
)
def test_contradictions_name_what_the_values_did(
    metric: str, values: list[float], why: str
) -> None:
    seen = mapping.Seen()
    for i, v in enumerate(values):
        seen.add(v, 100.0 + i)
    found = mapping.contradiction(metric, seen)
    assert found is not None and why in found


def test_the_starter_passes_check_config_and_gates_by_the_value_table(dbc: Path, capsys) -> None:
    out = dbc.parent / "starter.toml"
    log = _log(dbc, dbc, soh_estimate_moves=True)
    assert main(["map", str(dbc), "--log", str(log), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "x BMS_SOH_Estimate" not in printed or "moves by at most" in printed
    assert "accepts it" in printed
    config = load_config(out)
    load_and_check(config)
    assert config.metrics["soh"].signal == "Pack_SOH"  # not the contradicted estimate
    assert config.ignition.on_values == [2.0, 3.0]  # On and Start, from the table
    assert config.warnings == []  # no renamed key
    assert config.pack_code.source == "pages" and config.pack_code.message == "BMS_Serial"
    assert [r.id for r in config.rules] == ["capacity-80"]
    assert main(["check-config", str(out)]) == 0


def test_a_database_that_cannot_be_read_is_a_clear_error(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.dbc"
    bad.write_text('VERSION ""\n\nBU_: A\n\nBO_ twelve X: 8 A\n', encoding="utf-8")
    assert main(["map", str(bad)]) == 2
    assert "cannot read the databases" in capsys.readouterr().err
    empty = tmp_path / "empty.dbc"
    empty.write_text('VERSION ""\n\nBU_: A\n', encoding="utf-8")
    assert main(["map", str(empty)]) == 2
    assert "no CAN message" in capsys.readouterr().err
    assert main(["map", str(tmp_path / "missing.dbc")]) == 2


def test_a_29_bit_id_written_without_the_extended_flag_loads_as_extended(tmp_path: Path) -> None:
    path = tmp_path / "ext.dbc"
    path.write_text(
        'VERSION ""\n\nNS_ :\n\nBS_:\n\nBU_: A\n\n'
        'BO_ 316495015 VZE_04: 8 A\n SG_ Speed : 0|8@1+ (1,0) [0|255] "km/h" A\n\n'
        'CM_ BO_ 316495015 "a 29-bit id without bit 31";\n',
        encoding="utf-8",
    )
    msg = load_file(path, strict=True).get_message_by_name("VZE_04")
    assert msg.is_extended_frame and msg.frame_id == 316495015


REAL_DBCS = [
    "foxbms-2/foxbms.dbc",
    "nissan-leaf/EV-can_ZE1.dbc",
    "model3dbc/Model3CAN.dbc",
    "kona-ev/pcan.dbc",
]


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/real-world is not beside the project")
@pytest.mark.parametrize("rel", REAL_DBCS)
def test_real_databases_give_a_starter_that_check_config_accepts(rel: str, tmp_path: Path) -> None:
    out = tmp_path / "starter.toml"
    assert main(["map", str(REAL / rel), "--out", str(out)]) == 0
    load_and_check(load_config(out))


@pytest.mark.skipif(not KONA_LOG.is_file(), reason="../shared/real-world is not beside the project")
def test_a_real_capture_contradicts_nothing_that_is_proposed() -> None:
    db = mapping.load([REAL / "kona-ev" / "pcan.dbc"])
    proposal = mapping.check_against_log(mapping.propose(db), db, read_log(KONA_LOG))
    assert proposal.log_frames == 39_546
    for found in proposal.candidates.values():
        assert all(c.contradiction is None for c in found if c.proposed)
    assert proposal.best("soh") is None  # this car broadcasts no SOH
