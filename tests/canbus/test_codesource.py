"""Pack codes in the layouts real BMSs use: frame-index pages and J1939 BAM, end to end.

The J1939 reassembler is checked against the transport protocol's sequence rules
(SAE J1939-21): a transfer is kept only when announced, complete, in order and on time.
Each layout is then replayed end to end on a log of our own: the reference vehicle's
days, with its pack code sent in the layout under test instead of its own pages.
"""

from __future__ import annotations

import math
from pathlib import Path

import can
import pytest
from test_replay import FAST, frames_of, write_gvret

from pack_agent.canbus.checks import load_and_check
from pack_agent.canbus.codesource import (
    BAM,
    GLOBAL,
    TP_CM_PF,
    TP_DT_PF,
    J1939Transport,
    j1939_id,
)
from pack_agent.config import as_data, load_config, parse_config, reference_config_path
from pack_agent.config.load import dump_toml
from pack_agent.errors import ConfigError
from pack_agent.runtime.replay import replay

SA = 0xF3
PGN = 0xFEEB  # component identification
CM = j1939_id(7, TP_CM_PF, GLOBAL, SA)
DT = j1939_id(7, TP_DT_PF, GLOBAL, SA)
CODE = FAST.code

ID_DBC = """VERSION ""

NS_ :

BS_:

BU_: BMS TBOX

BO_ 1776 BMS_IdFrame: 8 BMS
 SG_ FrameIndex : 0|8@1+ (1,0) [0|255] "" TBOX
 SG_ IdByte1 : 8|8@1+ (1,0) [0|255] "" TBOX
 SG_ IdByte2 : 16|8@1+ (1,0) [0|255] "" TBOX
 SG_ IdByte3 : 24|8@1+ (1,0) [0|255] "" TBOX
 SG_ IdByte4 : 32|8@1+ (1,0) [0|255] "" TBOX
 SG_ IdByte5 : 40|8@1+ (1,0) [0|255] "" TBOX
 SG_ IdByte6 : 48|8@1+ (1,0) [0|255] "" TBOX
 SG_ Reserved : 56|8@1+ (1,0) [0|255] "" TBOX
"""


def bam(payload: bytes, pgn: int = PGN) -> list[tuple[int, bytes]]:
    """One BAM transfer as (id, data) frames, padded with 0xFF as J1939-21 says."""
    packets = math.ceil(len(payload) / 7)
    cm = bytes([BAM, *len(payload).to_bytes(2, "little"), packets, 0xFF]) + pgn.to_bytes(
        3, "little"
    )
    frames = [(CM, cm)]
    for i in range(packets):
        chunk = payload[i * 7 : i * 7 + 7].ljust(7, b"\xff")
        frames.append((DT, bytes([i + 1]) + chunk))
    return frames


def feed(t: J1939Transport, frames: list[tuple[int, bytes]], start: float = 0.0, step=0.05):
    out = []
    for i, (cid, data) in enumerate(frames):
        got = t.feed(cid, data, start + i * step)
        if got is not None:
            out.append(got)
    return out


IDENT = f"PACKCO*BP-77*{CODE}*".encode("ascii")


def test_a_bam_transfer_is_reassembled_to_its_announced_size() -> None:
    t = J1939Transport(SA, PGN)
    assert feed(t, bam(IDENT)) == [(PGN, IDENT)]
    assert not t.drops


@pytest.mark.parametrize(
    ("spoil", "why"),
    [
        (lambda f: [f[0], f[1], f[3], f[2], *f[4:]], "packet 3 where 2 was due"),
        (lambda f: [*f[:3], f[0], *f[3:]], "a new BAM before the last packet"),
        (lambda f: [f[0], *f[2:]], "packet 2 where 1 was due"),
    ],
)
def test_out_of_order_or_restarted_transfers_are_abandoned(spoil, why) -> None:
    t = J1939Transport(SA, PGN)
    assert feed(t, spoil(bam(IDENT))) == []
    assert any(why in reason for reason in t.drops)


def test_a_pause_longer_than_t1_abandons_the_transfer() -> None:
    t = J1939Transport(SA, PGN)
    frames = bam(IDENT)
    assert feed(t, frames[:3]) == []
    assert t.feed(frames[3][0], frames[3][1], 0.10 + 0.76) is None  # 760 ms after packet 2
    assert any("750 ms" in r for r in t.drops)
    assert feed(t, frames, start=5.0) == [(PGN, IDENT)]  # the next transfer is whole


def test_other_sources_pgns_and_bad_announcements_are_ignored() -> None:
    t = J1939Transport(SA, PGN)
    other = [(cid & ~0xFF | 0x17, d) for cid, d in bam(IDENT)]
    assert feed(t, other) == []  # another source address
    assert feed(t, bam(IDENT, pgn=0xFECA)) == []  # another PGN (DM1)
    bad = bam(IDENT)
    cm = bytearray(bad[0][1])
    cm[3] = 2  # announces 2 packets for 37 bytes
    assert feed(t, [(CM, bytes(cm)), *bad[1:]]) == []
    assert any("packets" in r for r in t.drops)


def _config(tmp_path: Path, pack_code: dict, with_dbc: bool = False):
    data = as_data(load_config(reference_config_path()), reveal_secrets=True)
    data["store"]["path"] = str(tmp_path / "unused.db")
    if with_dbc:
        (tmp_path / "tbox.dbc").write_text(ID_DBC, encoding="utf-8")
        data["databases"] = ["tbox.dbc", *data["databases"]]
    data["pack_code"] = {**pack_code, "confirmations": 2}
    path = tmp_path / "agent.toml"
    path.write_text(dump_toml(data), encoding="utf-8")
    cfg = load_config(path)
    return cfg, load_and_check(cfg)


def _vehicle_frames_without_code_pages(db) -> list[can.Message]:
    pages = db.get_message_by_name("BMS_PackCode").frame_id
    return [f for f in frames_of(db, FAST) if f.arbitration_id != pages]


def _every(frames: list[can.Message], period_s: float) -> list[float]:
    """Send times: the first frame, then every ``period_s`` of the log's time."""
    times, last = [], -math.inf
    for f in frames:
        if f.timestamp - last >= period_s:
            times.append(f.timestamp)
            last = f.timestamp
    return times


def _replay(cfg, frames: list[can.Message], tmp_path: Path):
    frames.sort(key=lambda f: f.timestamp)
    return replay(cfg, write_gvret(tmp_path / "log.csv", frames))


def test_frame_index_pages_identify_the_pack_end_to_end(tmp_path: Path) -> None:
    cfg, db = _config(
        tmp_path,
        {
            "source": "pages",
            "message": "BMS_IdFrame",
            "mux_signal": "FrameIndex",
            "page_signals": [f"IdByte{i}" for i in range(1, 7)],
            "page_count": 4,
            "first_page": 1,
        },
        with_dbc=True,
    )
    frames = _vehicle_frames_without_code_pages(db)
    msg = db.get_message_by_name("BMS_IdFrame")
    for i, t in enumerate(_every(frames, 600.0)):
        page = i % 4
        chars = CODE[page * 6 : page * 6 + 6].encode("ascii")
        values = {f"IdByte{k + 1}": chars[k] for k in range(6)}
        data = msg.encode({"FrameIndex": page + 1, "Reserved": 0, **values})
        frames.append(
            can.Message(
                timestamp=t + 0.001, arbitration_id=msg.frame_id, is_extended_id=False, data=data
            )
        )
    result = _replay(cfg, frames, tmp_path)
    identified = [e for e in result.events if e.type == "pack.identified"]
    assert [e.data["pack_code"] for e in identified] == [CODE]
    decided = [e for e in result.events if e.type == "scrap.condition_met"]
    assert decided and all(e.data["pack_code"] == CODE for e in decided)


def test_a_j1939_identification_broadcast_identifies_the_pack_end_to_end(tmp_path: Path) -> None:
    cfg, db = _config(
        tmp_path,
        {"source": "j1939", "j1939_pgn": PGN, "j1939_source_address": SA, "j1939_field": 2},
    )
    frames = _vehicle_frames_without_code_pages(db)
    for n, t in enumerate(_every(frames, 3600.0)):
        transfer = bam(IDENT)
        if n == 0:  # the first transfer loses a packet: never half a code
            del transfer[3]
        for i, (cid, data) in enumerate(transfer):
            frames.append(
                can.Message(
                    timestamp=t + 0.05 * (i + 1), arbitration_id=cid, is_extended_id=True, data=data
                )
            )
    result = _replay(cfg, frames, tmp_path)
    identified = [e for e in result.events if e.type == "pack.identified"]
    assert [e.data["pack_code"] for e in identified] == [CODE]
    assert not [e for e in result.events if e.type == "pack.code_invalid"]
    assert any(e.type == "scrap.condition_met" for e in result.events)


@pytest.mark.parametrize(
    ("pack_code", "key"),
    [
        ({"source": "j1939", "j1939_pgn": PGN}, "pack_code.j1939_source_address"),
        ({"source": "pages", "page_signals": ["IdByte1"]}, "pack_code.page_count"),
        (
            {
                "source": "uds",
                "page_signals": ["IdByte1"],
                "page_count": 4,
                "uds": {"request_id": 0x7E4, "response_id": 0x7EC, "did": 0xF18C},
            },
            "pack_code.page_signals",
        ),
    ],
)
def test_incomplete_layouts_name_the_missing_key(tmp_path: Path, pack_code: dict, key: str):
    data = as_data(load_config(reference_config_path()), reveal_secrets=True)
    data["pack_code"] = pack_code
    with pytest.raises(ConfigError) as info:
        parse_config(data, tmp_path)
    assert any(p.startswith(key) for p in info.value.problems)


def test_a_page_signal_wider_than_a_byte_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"pack_code.page_signals\[0\]: signal 'BMS_SOH'"):
        _config(
            tmp_path,
            {
                "source": "pages",
                "message": "BMS_Health",
                "mux_signal": "BMS_SOH",
                "page_signals": ["BMS_SOH"],
                "page_count": 4,
            },
        )


SERIAL = "SN-2026-000042-BMS-PK-07"  # a maker's serial: 24 characters, not GB/T 34014


def test_a_serial_format_identifies_and_swaps_without_gbt_validation(tmp_path: Path) -> None:
    from dataclasses import replace

    from pack_agent.core.codes import check_serial

    assert check_serial(SERIAL).valid and check_serial(SERIAL).fields is None
    assert not check_serial("").valid and not check_serial("A\x00B").valid
    assert "at most 64" in check_serial("X" * 65).errors[0]
    serial_run = replace(FAST, code=SERIAL, days=3)
    cfg, db = _config(tmp_path, {"source": "pages", "format": "serial"})
    result = _replay(cfg, frames_of(db, serial_run), tmp_path)
    identified = [e for e in result.events if e.type == "pack.identified"]
    assert [(e.data["pack_code"], e.data["valid"], e.data["fields"]) for e in identified] == [
        (SERIAL, True, None)
    ]
    assert not [e for e in result.events if e.type == "pack.code_invalid"]
    # the same frames with the default format: not a GB/T 34014 code, reported as such
    (tmp_path / "gbt").mkdir()
    cfg, db = _config(tmp_path / "gbt", {"source": "pages"})
    result = _replay(cfg, frames_of(db, serial_run), tmp_path / "gbt")
    assert [e.data["raw"] for e in result.events if e.type == "pack.code_invalid"] == [SERIAL]
    identified = [e.data for e in result.events if e.type == "pack.identified"]
    assert [(d["valid"], bool(d["errors"])) for d in identified] == [(False, True)]
