"""The reference CAN database is a contract: names, ids, layout, value tables, round trips."""

from __future__ import annotations

import functools
import logging
import math
import re
import uuid
import warnings
from pathlib import Path
from typing import Any

import can
import cantools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pack_agent.config import DATA_DIR

DBC_PATH = DATA_DIR / "pack_agent_reference.dbc"
DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "can-database.md"

CODE = "0RJPEA00HAU0AAF131001955"  # GB/T 34014 pack code seen in public test data

# name -> (frame id, sender, receivers, cycle time in ms or None for event-driven)
MESSAGES: dict[str, tuple[int, str, set[str], int | None]] = {
    "BMS_PackCode": (0x3A0, "BMS", {"PACK_AGENT"}, 1000),
    "BMS_Health": (0x3A1, "BMS", {"PACK_AGENT"}, 1000),
    "BMS_Status": (0x3A2, "BMS", {"PACK_AGENT"}, 100),
    "BMS_Alarms": (0x3A3, "BMS", {"PACK_AGENT"}, 500),
    "BMS_CellVoltage": (0x3A4, "BMS", {"PACK_AGENT"}, 100),
    "BMS_Lifetime": (0x3A5, "BMS", {"PACK_AGENT"}, 1000),
    "VCU_Vehicle": (0x3B0, "VCU", {"PACK_AGENT"}, 100),
    "PA_OwnerNotice": (0x3C0, "PACK_AGENT", {"HEAD_UNIT"}, None),
    "HU_NoticeAck": (0x3C1, "HEAD_UNIT", {"PACK_AGENT"}, None),
    "PA_NoticeText": (0x3C2, "PACK_AGENT", {"HEAD_UNIT"}, None),
}

SIGNALS: dict[str, set[str]] = {
    "BMS_PackCode": {
        "PackCode_Page",
        "PackCode_PackIndex",
        "PackCode_Text0",
        "PackCode_Text1",
        "PackCode_Text2",
        "PackCode_Text3",
    },
    "BMS_Health": {
        "BMS_SOH",
        "BMS_Capacity",
        "BMS_InternalResistance",
        "BMS_FullCycles",
        "BMS_EndOfLife",
        "BMS_HealthCounter",
        "BMS_HealthCrc",
    },
    "BMS_Lifetime": {"BMS_EnergyThroughput"},
    "BMS_Status": {
        "BMS_SOC",
        "BMS_PackVoltage",
        "BMS_PackCurrent",
        "BMS_TempMax",
        "BMS_TempMin",
    },
    "BMS_CellVoltage": {
        "BMS_CellVoltMax",
        "BMS_CellVoltMin",
        "BMS_CellVoltMaxNo",
        "BMS_CellVoltMinNo",
    },
    "BMS_Alarms": {
        "BMS_AlarmTempDiff",
        "BMS_AlarmOverTemp",
        "BMS_AlarmPackOverVolt",
        "BMS_AlarmPackUnderVolt",
        "BMS_AlarmSocLow",
        "BMS_AlarmCellOverVolt",
        "BMS_AlarmCellUnderVolt",
        "BMS_AlarmSocHigh",
        "BMS_AlarmSocJump",
        "BMS_AlarmPackMismatch",
        "BMS_AlarmCellConsistency",
        "BMS_AlarmInsulation",
        "BMS_AlarmHvil",
        "BMS_AlarmOvercharge",
        "BMS_AlarmThermalEvent",
        "BMS_MaxAlarmLevel",
        "BMS_InsulationResistance",
        "BMS_CellVoltDelta",
        "BMS_AlarmCounter",
        "BMS_AlarmCrc",
    },
    "VCU_Vehicle": {"VCU_Odometer", "VCU_Ignition"},
    "PA_OwnerNotice": {
        "PA_NoticeSeq",
        "PA_NoticeId",
        "PA_NoticeSeverity",
        "PA_NoticeAction",
        "PA_NoticeAttempt",
        "PA_NoticeTextLength",
        "PA_NoticeChallenge",
    },
    "HU_NoticeAck": {
        "HU_AckSeq",
        "HU_AckResponse",
        "HU_AckCounter",
        "HU_AckChallenge",
        "HU_AckCrc",
        "HU_AckFreshness",
        "HU_AckMac",
    },
    "PA_NoticeText": {"PA_TextSeq", "PA_TextPage", "PA_TextPageCount", "PA_TextData"},
}

# GB/T 32960.3 general alarm flag word: bit n of bytes 0-3 (little-endian) is GB/T bit n.
GBT_ALARM_BITS = {
    "BMS_AlarmTempDiff": 0,
    "BMS_AlarmOverTemp": 1,
    "BMS_AlarmPackOverVolt": 2,
    "BMS_AlarmPackUnderVolt": 3,
    "BMS_AlarmSocLow": 4,
    "BMS_AlarmCellOverVolt": 5,
    "BMS_AlarmCellUnderVolt": 6,
    "BMS_AlarmSocHigh": 7,
    "BMS_AlarmSocJump": 8,
    "BMS_AlarmPackMismatch": 9,
    "BMS_AlarmCellConsistency": 10,
    "BMS_AlarmInsulation": 11,
    "BMS_AlarmHvil": 16,
    "BMS_AlarmOvercharge": 18,
    "BMS_AlarmThermalEvent": 23,
}

UNITS = {
    "BMS_SOH": "%",
    "BMS_Capacity": "Ah",
    "BMS_InternalResistance": "mOhm",
    "BMS_EnergyThroughput": "MWh",
    "BMS_SOC": "%",
    "BMS_PackVoltage": "V",
    "BMS_PackCurrent": "A",
    "BMS_TempMax": "degC",
    "BMS_TempMin": "degC",
    "BMS_CellVoltMax": "mV",
    "BMS_CellVoltMin": "mV",
    "BMS_CellVoltDelta": "mV",
    "BMS_InsulationResistance": "kOhm",
    "VCU_Odometer": "km",
}


@functools.cache
def _db() -> Any:
    return cantools.database.load_file(str(DBC_PATH), strict=True)


@pytest.fixture(scope="module")
def db() -> Any:
    return _db()


# --------------------------------------------------------------------------- loading


def test_loads_strict_without_warnings(caplog: pytest.LogCaptureFixture) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with caplog.at_level(logging.DEBUG, logger="cantools"):
            db = cantools.database.load_file(str(DBC_PATH), strict=True)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert db.version == "2.0.0"
    assert {n.name for n in db.nodes} == {"BMS", "VCU", "PACK_AGENT", "HEAD_UNIT"}
    assert all(n.comment for n in db.nodes)


def test_plain_ascii() -> None:
    DBC_PATH.read_bytes().decode("ascii")  # no code page surprises in other tools


# --------------------------------------------------------------------------- contract


def test_messages_ids_senders_receivers(db: Any) -> None:
    assert {m.name for m in db.messages} == set(MESSAGES)
    for name, (frame_id, sender, receivers, _cycle) in MESSAGES.items():
        msg = db.get_message_by_name(name)
        assert msg.frame_id == frame_id, name
        assert not msg.is_extended_frame, name
        assert not msg.is_fd, name
        assert msg.length == 8, name
        assert msg.senders == [sender], name
        assert {s.name for s in msg.signals} == SIGNALS[name]
        for sig in msg.signals:
            assert set(sig.receivers) == receivers, sig.name
            assert sig.byte_order == "little_endian", sig.name


def test_cycle_time_or_event(db: Any) -> None:
    for name, (*_, cycle) in MESSAGES.items():
        msg = db.get_message_by_name(name)
        assert msg.cycle_time is not None or msg.send_type == "Event", name
        if cycle is None:
            assert msg.send_type == "Event" and msg.cycle_time is None, name
        else:
            assert msg.send_type == "Cyclic" and msg.cycle_time == cycle, name


def test_every_message_and_signal_commented(db: Any) -> None:
    for msg in db.messages:
        assert msg.comment, msg.name
        for sig in msg.signals:
            assert sig.comment, f"{msg.name}.{sig.name}"
            assert sig.minimum is not None and sig.maximum is not None, sig.name


def test_units(db: Any) -> None:
    for msg in db.messages:
        for sig in msg.signals:
            if sig.name in UNITS:
                assert sig.unit == UNITS[sig.name], sig.name


def test_pack_code_layout(db: Any) -> None:
    msg = db.get_message_by_name("BMS_PackCode")
    page = msg.get_signal_by_name("PackCode_Page")
    assert page.is_multiplexer and page.start == 0 and page.length == 8
    index = msg.get_signal_by_name("PackCode_PackIndex")
    assert not index.multiplexer_ids and index.start == 8 and index.length == 8
    for i in range(4):
        text = msg.get_signal_by_name(f"PackCode_Text{i}")
        assert text.multiplexer_ids == [i]
        assert (text.start, text.length, text.is_signed) == (16, 48, False)
        assert (text.scale, text.offset) == (1, 0)


def test_value_tables(db: Any) -> None:
    def choices(message: str, signal: str) -> dict[int, str]:
        sig = db.get_message_by_name(message).get_signal_by_name(signal)
        return {int(k): str(v) for k, v in (sig.choices or {}).items()}

    assert choices("VCU_Vehicle", "VCU_Ignition") == {0: "Off", 1: "Acc", 2: "On", 3: "Start"}
    assert choices("HU_NoticeAck", "HU_AckResponse") == {
        0: "Invalid",
        1: "Seen",
        2: "Dismissed",
        3: "ServiceBooked",
        4: "Displayed",
    }
    assert choices("PA_OwnerNotice", "PA_NoticeSeverity") == {
        0: "Info",
        1: "Advisory",
        2: "Critical",
    }
    assert choices("PA_OwnerNotice", "PA_NoticeAction") == {0: "Withdraw", 1: "Show"}
    assert choices("BMS_Health", "BMS_EndOfLife") == {0: "Normal", 1: "EndOfLife"}
    level = choices("BMS_Alarms", "BMS_MaxAlarmLevel")
    assert [level[i] for i in range(4)] == ["NoFault", "Level1", "Level2", "Level3"]
    assert choices("BMS_Health", "BMS_SOH")[1023] == "Invalid"


def test_invalid_raw_values_fall_outside_the_range(db: Any) -> None:
    """A range check (as the agent's decoder does) must reject Error and Invalid raws."""
    checked = 0
    for msg in db.messages:
        for sig in msg.signals:
            for raw, label in (sig.choices or {}).items():
                if str(label) not in ("Error", "Invalid"):
                    continue
                lo_raw = -(1 << (sig.length - 1)) if sig.is_signed else 0
                hi_raw = (1 << (sig.length - 1)) - 1 if sig.is_signed else (1 << sig.length) - 1
                assert lo_raw <= int(raw) <= hi_raw, f"{sig.name} {raw} does not fit"
                scaled = int(raw) * sig.scale + sig.offset
                assert not sig.minimum <= scaled <= sig.maximum, f"{sig.name} raw {raw}"
                checked += 1
    assert checked >= 20


def test_soh_invalid_is_all_ones(db: Any) -> None:
    msg = db.get_message_by_name("BMS_Health")
    sig = msg.get_signal_by_name("BMS_SOH")
    assert sig.choices[(1 << sig.length) - 1] == "Invalid"
    decoded = msg.decode(bytes([0xFF, 0x03, 0, 0, 0, 0, 0, 0]))
    assert decoded["BMS_SOH"] == "Invalid"


def test_alarm_bits_follow_gbt32960_word(db: Any) -> None:
    msg = db.get_message_by_name("BMS_Alarms")
    zero = {s.name: 0 for s in msg.signals}
    assert msg.encode(zero) == bytes(8)
    for name, bit in GBT_ALARM_BITS.items():
        sig = msg.get_signal_by_name(name)
        assert (sig.start, sig.length) == (bit, 1), name
        data = msg.encode({**zero, name: 1})
        assert int.from_bytes(data[0:4], "little") == 1 << bit, name
        assert data[4:] == bytes(4), name


def test_notice_ack_handshake_echo(db: Any) -> None:
    notice = db.get_message_by_name("PA_OwnerNotice")
    ack = db.get_message_by_name("HU_NoticeAck")
    sent = notice.decode(
        notice.encode(
            {
                "PA_NoticeSeq": 42,
                "PA_NoticeId": 0x0101,
                "PA_NoticeSeverity": 1,
                "PA_NoticeAction": 1,
                "PA_NoticeAttempt": 3,
                "PA_NoticeTextLength": 0,
                "PA_NoticeChallenge": 0xBEEF,
            }
        ),
        decode_choices=False,
    )
    answer = ack.decode(
        ack.encode(
            {
                "HU_AckSeq": sent["PA_NoticeSeq"],
                "HU_AckResponse": "ServiceBooked",
                "HU_AckCounter": 0,
                "HU_AckChallenge": sent["PA_NoticeChallenge"],
                "HU_AckCrc": 0,
                "HU_AckFreshness": 1,
                "HU_AckMac": 0,
            }
        )
    )
    assert answer["HU_AckSeq"] == 42
    assert answer["HU_AckChallenge"] == 0xBEEF
    assert answer["HU_AckResponse"] == "ServiceBooked"


# --------------------------------------------------------------------------- pack code


def _page_frames(db: Any, code: str, pack_index: int = 0) -> list[bytes]:
    msg = db.get_message_by_name("BMS_PackCode")
    frames = []
    for page in range(4):
        text = code[6 * page : 6 * page + 6].encode("ascii").ljust(6, b"\x00")
        frames.append(
            msg.encode(
                {
                    "PackCode_Page": page,
                    "PackCode_PackIndex": pack_index,
                    f"PackCode_Text{page}": int.from_bytes(text, "little"),
                }
            )
        )
    return frames


def _assemble(db: Any, frames: list[bytes]) -> str:
    msg = db.get_message_by_name("BMS_PackCode")
    pages: dict[int, str] = {}
    for data in frames:
        values = msg.decode(data, decode_choices=False)
        page = int(values["PackCode_Page"])
        raw = int(values[f"PackCode_Text{page}"])
        pages[page] = raw.to_bytes(6, "little").decode("ascii").rstrip("\x00")
    return "".join(pages[i] for i in range(4))


def test_pack_code_pages_reassemble(db: Any) -> None:
    frames = _page_frames(db, CODE, pack_index=1)
    for page, data in enumerate(frames):
        assert data[0] == page
        assert data[1] == 1
        assert data[2:8] == CODE[6 * page : 6 * page + 6].encode("ascii")  # first char in byte 2
    assert _assemble(db, frames) == CODE
    assert _assemble(db, list(reversed(frames))) == CODE  # page order does not matter


def test_pack_code_nul_padding(db: Any) -> None:
    short = CODE[:21]
    frames = _page_frames(db, short)
    assert frames[3][2:8] == b"001\x00\x00\x00"
    assert _assemble(db, frames) == short


DOC_EXAMPLES: dict[str, tuple[dict[str, Any], str]] = {
    "BMS_Health": (
        {
            "BMS_SOH": 78.4,
            "BMS_EndOfLife": 0,
            "BMS_Capacity": 117.6,
            "BMS_InternalResistance": 95.3,
            "BMS_FullCycles": 812,
            "BMS_HealthCounter": 5,
            "BMS_HealthCrc": 0xF4,
        },
        "10 C3 24 B9 83 65 50 F4",
    ),
    "BMS_Lifetime": ({"BMS_EnergyThroughput": 61}, "3D 00 00 00 00 00 00 00"),
    "BMS_Status": (
        {
            "BMS_SOC": 55.5,
            "BMS_PackVoltage": 388.2,
            "BMS_PackCurrent": -120.5,
            "BMS_TempMax": 31,
            "BMS_TempMin": 27,
        },
        "2B 02 2A 0F 4B FB 47 43",
    ),
    "BMS_CellVoltage": (
        {
            "BMS_CellVoltMax": 4105,
            "BMS_CellVoltMin": 4071,
            "BMS_CellVoltMaxNo": 17,
            "BMS_CellVoltMinNo": 83,
        },
        "09 10 E7 0F 11 00 53 00",
    ),
    "VCU_Vehicle": ({"VCU_Odometer": 48213.7, "VCU_Ignition": "On"}, "59 5B 07 02 00 00 00 00"),
    "PA_OwnerNotice": (
        {
            "PA_NoticeSeq": 7,
            "PA_NoticeId": 0x0101,
            "PA_NoticeSeverity": "Advisory",
            "PA_NoticeAction": "Show",
            "PA_NoticeAttempt": 1,
            "PA_NoticeTextLength": 16,
            "PA_NoticeChallenge": 0xBEEF,
        },
        "07 01 01 05 01 01 EF BE",
    ),
    "PA_NoticeText": (
        {
            "PA_TextSeq": 7,
            "PA_TextPage": 0,
            "PA_TextPageCount": 4,
            "PA_TextData": int.from_bytes(b"Outle", "little"),
        },
        "07 00 04 4F 75 74 6C 65",
    ),
    "HU_NoticeAck": (
        {
            "HU_AckSeq": 7,
            "HU_AckResponse": "ServiceBooked",
            "HU_AckCounter": 1,
            "HU_AckChallenge": 0xBEEF,
            "HU_AckCrc": 0x8D,
            "HU_AckFreshness": 2,
            "HU_AckMac": 0,
        },
        "07 13 EF BE 8D 02 00 00",
    ),
}


def _doc() -> str:
    if not DOC_PATH.is_file():
        pytest.skip("docs/can-database.md not present")
    return DOC_PATH.read_text(encoding="utf-8")


def test_doc_pack_code_example_frames(db: Any) -> None:
    doc = _doc()
    for data in _page_frames(db, CODE):
        hex_bytes = " ".join(f"{b:02X}" for b in data)
        assert hex_bytes in doc, f"worked example frame {hex_bytes} missing from the docs"


@pytest.mark.parametrize("name", sorted(DOC_EXAMPLES))
def test_doc_examples(db: Any, name: str) -> None:
    values, expected = DOC_EXAMPLES[name]
    assert db.get_message_by_name(name).encode(values).hex(" ").upper() == expected
    assert expected in _doc()


def test_doc_alarm_example(db: Any) -> None:
    msg = db.get_message_by_name("BMS_Alarms")
    values = {s.name: 0 for s in msg.signals}
    values.update(
        BMS_AlarmCellConsistency=1,
        BMS_AlarmThermalEvent=1,
        BMS_MaxAlarmLevel="Level4ThermalEvent",
        BMS_CellVoltDelta=312,
        BMS_InsulationResistance=2500,
        BMS_AlarmCounter=3,
        BMS_AlarmCrc=0xF0,
    )
    data = msg.encode(values)
    assert data.hex(" ").upper() == "00 34 80 F0 84 13 C4 09"
    # the GB/T word once the counter (bits 12-15) and the CRC (bits 24-31) are masked
    assert int.from_bytes(data[0:4], "little") & 0x00FF0FFF == 0x00800400
    assert "00 34 80 F0 84 13 C4 09" in _doc()


@pytest.mark.parametrize("name", ["BMS_Health", "BMS_Alarms", "HU_NoticeAck"])
def test_documented_crcs_are_what_the_e2e_check_computes(db: Any, name: str) -> None:
    """The reference configuration's [e2e] sections accept the documented frames, and
    refuse them with any single bit flipped (CRC-8 finds every 1-bit error)."""
    from pack_agent.canbus.e2e import E2EStats, Protection
    from pack_agent.dev.sim.protect import reference_e2e

    msg = db.get_message_by_name(name)
    alarm = "00 34 80 F0 84 13 C4 09"  # test_doc_alarm_example
    data = bytes.fromhex(alarm if name == "BMS_Alarms" else DOC_EXAMPLES[name][1])
    assert Protection(msg, reference_e2e()[name]).check(data, 0.0, E2EStats()) is None
    for bit in range(64):
        flipped = (int.from_bytes(data, "little") ^ (1 << bit)).to_bytes(8, "little")
        assert Protection(msg, reference_e2e()[name]).check(flipped, 0.0, E2EStats()) == "crc"


def test_doc_names_every_signal(db: Any) -> None:
    doc = _doc()
    for msg in db.messages:
        assert f"`{msg.name}`" in doc, msg.name
        for sig in msg.signals:
            assert f"`{sig.name}`" in doc, sig.name


@settings(max_examples=60, deadline=None)
@given(code=st.text(alphabet="ABCDEFGHJKLMNPRSTUVWXYZ0123456789", min_size=24, max_size=24))
def test_any_code_round_trips(code: str) -> None:
    db = _db()
    assert _assemble(db, _page_frames(db, code)) == code


# --------------------------------------------------------------------------- round trips


def _is_integer_signal(sig: Any) -> bool:
    return float(sig.scale).is_integer() and float(sig.offset).is_integer()


def _value_strategy(sig: Any) -> st.SearchStrategy[Any]:
    if _is_integer_signal(sig):
        return st.integers(math.ceil(sig.minimum), math.floor(sig.maximum))
    return st.floats(sig.minimum, sig.maximum, allow_nan=False, allow_infinity=False)


def _values_strategy(msg: Any) -> st.SearchStrategy[dict[str, Any]]:
    plain = {s.name: _value_strategy(s) for s in msg.signals if not s.multiplexer_ids}
    mux = [s for s in msg.signals if s.is_multiplexer]
    if not mux:
        return st.fixed_dictionaries(plain)
    mux_sig = mux[0]

    def with_page(page: int) -> st.SearchStrategy[dict[str, Any]]:
        sel = {s.name: _value_strategy(s) for s in msg.signals if page in (s.multiplexer_ids or [])}
        return st.fixed_dictionaries({**plain, **sel, mux_sig.name: st.just(page)})

    pages = sorted({i for s in msg.signals for i in (s.multiplexer_ids or [])})
    return st.sampled_from(pages).flatmap(with_page)


def _assert_round_trip(msg: Any, values: dict[str, Any], data: bytes) -> None:
    decoded = msg.decode(data, decode_choices=False)
    assert set(decoded) == set(values)
    for name, value in values.items():
        sig = msg.get_signal_by_name(name)
        assert decoded[name] == pytest.approx(value, abs=sig.scale), name


@pytest.mark.parametrize("name", sorted(MESSAGES))
@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_encode_decode_round_trip(name: str, data: st.DataObject) -> None:
    msg = _db().get_message_by_name(name)
    values = data.draw(_values_strategy(msg))
    frame = msg.encode(values, strict=True)
    assert len(frame) == 8
    _assert_round_trip(msg, values, frame)


def test_range_limits_round_trip(db: Any) -> None:
    for msg in db.messages:
        if msg.is_multiplexed():
            continue
        for pick in (lambda s: s.minimum, lambda s: s.maximum):
            values = {s.name: pick(s) for s in msg.signals}
            _assert_round_trip(msg, values, msg.encode(values, strict=True))


def test_out_of_range_is_refused_on_encode(db: Any) -> None:
    msg = db.get_message_by_name("BMS_Health")
    values = {s.name: s.minimum for s in msg.signals}
    with pytest.raises(cantools.database.EncodeError):
        msg.encode({**values, "BMS_SOH": 100.1}, strict=True)


# --------------------------------------------------------------------------- python-can


def test_virtual_bus_round_trip(db: Any) -> None:
    channel = f"pack-agent-dbc-{uuid.uuid4().hex}"
    tx = can.Bus(interface="virtual", channel=channel)
    rx = can.Bus(interface="virtual", channel=channel)
    try:
        sent = []
        for data in _page_frames(db, CODE):
            msg = db.get_message_by_name("BMS_PackCode")
            tx.send(can.Message(arbitration_id=msg.frame_id, is_extended_id=False, data=data))
            sent.append(data)
        health = db.get_message_by_name("BMS_Health")
        values = {
            "BMS_SOH": 78.4,
            "BMS_EndOfLife": 0,
            "BMS_Capacity": 117.6,
            "BMS_InternalResistance": 95.3,
            "BMS_FullCycles": 812,
            "BMS_HealthCounter": 0,
            "BMS_HealthCrc": 0,
        }
        tx.send(
            can.Message(
                arbitration_id=health.frame_id, is_extended_id=False, data=health.encode(values)
            )
        )
        received = []
        for _ in range(5):
            frame = rx.recv(timeout=2.0)
            assert frame is not None, "frame lost on the virtual bus"
            received.append(frame)
    finally:
        tx.shutdown()
        rx.shutdown()
    code_frames = [bytes(f.data) for f in received if f.arbitration_id == 0x3A0]
    assert code_frames == sent
    assert _assemble(db, code_frames) == CODE
    (health_frame,) = [f for f in received if f.arbitration_id == 0x3A1]
    assert not health_frame.is_extended_id and health_frame.dlc == 8
    decoded = db.decode_message(health_frame.arbitration_id, bytes(health_frame.data))
    assert decoded["BMS_EndOfLife"] == "Normal"
    assert decoded["BMS_SOH"] == pytest.approx(78.4, abs=0.1)
    assert decoded["BMS_Capacity"] == pytest.approx(117.6, abs=0.1)


def test_message_names_are_dbc_identifiers(db: Any) -> None:
    ident = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,31}$")
    for msg in db.messages:
        assert ident.match(msg.name), msg.name
        for sig in msg.signals:
            assert ident.match(sig.name), sig.name
