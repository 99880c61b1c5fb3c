"""The owner channels: CAN frames and text pages, a bus that fails, the outbox copy."""

from __future__ import annotations

import uuid

import can
import cantools
import pytest
from can.interfaces.virtual import VirtualBus
from hypothesis import given, settings
from hypothesis import strategies as st

from pack_agent.config import DATA_DIR
from pack_agent.core.catalogue import load_catalogue
from pack_agent.core.notices import MAX_TEXT_BYTES, Notice, NoticeAck
from pack_agent.delivery.owner_channel import CanOwnerChannel, OutboxOwnerChannel, text_pages
from pack_agent.dev.sim.head_unit import VirtualHeadUnit
from pack_agent.errors import BusError

DB = cantools.database.load_file(str(DATA_DIR / "pack_agent_reference.dbc"), strict=True)


def notice(seq: int = 7, attempts: int = 1, severity: str = "advisory") -> Notice:
    nid = 0x0101 if severity == "advisory" else 0x0201
    return Notice(nid, severity, "capacity-80", seq, 0.0, attempts=attempts)


class BusOff(VirtualBus):
    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        raise can.CanOperationError("bus-off")


@pytest.fixture
def channel() -> str:
    return f"hmi-{uuid.uuid4().hex[:12]}"


def test_notice_frame_matches_the_documented_example(channel):
    bus = can.Bus(interface="virtual", channel=channel)
    try:
        n = CanOwnerChannel("p", bus, DB, "PA_OwnerNotice", "HU_NoticeAck", text="")
        assert n.encode(notice()).hex(" ") == "07 01 01 05 00 01 00 00"
        assert n.encode(notice(), action=0).hex(" ") == "07 01 01 01 00 01 00 00"
        assert n.encode(notice(), challenge=0xBEEF).hex(" ") == "07 01 01 05 00 01 ef be"
    finally:
        bus.shutdown()


@settings(max_examples=60, deadline=None)
@given(text=st.text(min_size=1, max_size=300).filter(lambda t: "\0" not in t))
def test_text_pages_reassemble_to_the_text(text: str):
    data = text.encode("utf-8")
    if len(data) > MAX_TEXT_BYTES:
        return
    pages = text_pages(text)
    assert len(pages) == -(-len(data) // 5) and all(len(p) == 5 for p in pages)
    assert b"".join(pages)[: len(data)].decode("utf-8") == text


def test_text_too_long_is_refused():
    with pytest.raises(ValueError, match="1276 bytes, at most 1275"):
        text_pages("x" * 1276)


def test_text_pages_then_notice_reach_the_head_unit(channel):
    tx = can.Bus(interface="virtual", channel=channel)
    rx = can.Bus(interface="virtual", channel=channel)
    text = "回收服务网点，示例路88号\n+86 400 000 0000"
    try:
        n = CanOwnerChannel("p", tx, DB, "PA_OwnerNotice", "HU_NoticeAck", "PA_NoticeText", text)
        assert n.send(notice(seq=9, attempts=3), 0.0) == []
        frames = []
        while (f := rx.recv(0.5)) is not None:
            frames.append(f)
    finally:
        tx.shutdown()
        rx.shutdown()
    size = len(text.encode("utf-8"))
    pages = -(-size // 5)
    assert [f.arbitration_id for f in frames] == [0x3C2] * pages + [0x3C0]
    assert all(f.dlc == 8 and not f.is_extended_id for f in frames)
    first = DB.decode_message(0x3C2, frames[0].data, decode_choices=False)
    assert first == {
        "PA_TextSeq": 9,
        "PA_TextPage": 0,
        "PA_TextPageCount": pages,
        "PA_TextData": int.from_bytes(text.encode("utf-8")[:5], "little"),
    }
    last = DB.decode_message(0x3C0, frames[-1].data, decode_choices=False)
    assert last["PA_NoticeTextLength"] == size and last["PA_NoticeAttempt"] == 3
    hu = VirtualHeadUnit(DB, response="seen", delay_s=0)
    for f in reversed(frames[:-1]):  # pages in any order
        hu.on_frame(f, 1.0)
    hu.on_frame(frames[-1], 1.0)
    assert hu.shown[0].outlet == text
    assert "+86 400 000 0000" in hu.shown[0].text.body_en  # type: ignore[union-attr]
    shown, answer = hu.answers_due(1.0)  # on screen, then the owner's answer
    assert n.parse_ack("other-bus", answer) is None
    assert n.parse_ack("p", shown) == NoticeAck(9, 0x0101, "displayed", 3)
    assert n.parse_ack("p", answer) == NoticeAck(9, 0x0101, "seen", 3)
    assert n.parse_ack("p", answer) is None  # the same frame again: its freshness is used
    assert n.refused == {"freshness": 1}


def test_head_unit_without_the_text_uses_its_own_outlet():
    hu = VirtualHeadUnit(DB, response=None, outlet="Own outlet", phone="110")
    data = bytes.fromhex("0701015500010000")
    frame = can.Message(arbitration_id=0x3C0, is_extended_id=False, data=data)
    hu.on_frame(frame, 0.0)  # says 5 bytes of text follow, none came
    assert hu.shown[0].outlet is None
    assert "Own outlet" in hu.shown[0].text.body_en  # type: ignore[union-attr]
    (displayed,) = hu.answers_due(1e9)  # on screen, and no answer from the owner
    assert DB.decode_message(0x3C1, displayed.data)["HU_AckResponse"] == "Displayed"


def test_a_failing_bus_raises_bus_error_naming_the_frame(channel):
    bus = BusOff(channel=channel)
    try:
        n = CanOwnerChannel("powertrain", bus, DB, "PA_OwnerNotice", "HU_NoticeAck", text="")
        with pytest.raises(BusError, match="0x3C0 not sent on bus 'powertrain': bus-off"):
            n.send(notice(), 0.0)
        with pytest.raises(BusError):
            n.withdraw(notice())
    finally:
        bus.shutdown()


@pytest.mark.parametrize(
    ("data", "extended", "reason"),
    [
        (b"", False, "0 bytes, expected 8"),
        (b"\x07\x01", False, "2 bytes, expected 8"),
        (bytes.fromhex("0701000000000000"), True, "extended id"),
        (bytes.fromhex("0700000000000000"), False, "response invalid"),
        (bytes.fromhex("0705000000000000"), False, "response invalid"),
        (bytes.fromhex("0701000000000100"), False, "no open attempt"),
    ],
)
def test_bad_answers_are_not_answers(channel, data, extended, reason):
    bus = can.Bus(interface="virtual", channel=channel)
    try:
        n = CanOwnerChannel("p", bus, DB, "PA_OwnerNotice", "HU_NoticeAck", text="")
        frame = can.Message(arbitration_id=0x3C1, is_extended_id=extended, data=data)
        assert n.is_ack_frame("p", frame)
        alive, ack = n.read_ack("p", frame, 0.0)
        assert ack is None and n.refused == {reason: 1}
        # an empty or wrongly shaped frame at the answer id is no sign of a live head unit
        assert alive == (reason in ("response invalid", "no open attempt"))
    finally:
        bus.shutdown()


def test_outbox_copy_carries_the_catalogue_texts_and_outlet():
    catalogue = load_catalogue(outlet="Outlet A", phone="123")
    n = OutboxOwnerChannel(catalogue, "Outlet A", "123")
    ((kind, data),) = n.send(notice(seq=3, attempts=2, severity="critical"), 0.0)
    assert kind == "owner.notice"
    assert data["notice_id"] == 0x0201 and data["name"] == "SafetyCritical"
    assert data["attempt"] == 2 and data["seq"] == 3 and data["severity"] == "critical"
    assert data["service_outlet"] == {"name": "Outlet A", "phone": "123"}
    assert set(data["texts"]) == {"zh", "en"}
    assert data["texts"]["en"]["now"] and "Outlet A" in data["texts"]["zh"]["action"]
    assert n.parse_ack("p", can.Message(arbitration_id=0x3C1, data=bytes(8))) is None


def test_the_early_notices_horizon_and_the_procedure_travel_to_the_head_unit(channel):
    """Issue 16 item 2: the text lines carry the maker's procedure, the emergency phone,
    the ownership and the notice's own horizon; the head unit fills the texts with them."""
    from dataclasses import replace

    from pack_agent.core.catalogue import NoticeValues

    values = NoticeValues("Outlet A", "123", "https://maker.example/p", "12122", "lease")
    tx = can.Bus(interface="virtual", channel=channel)
    rx = can.Bus(interface="virtual", channel=channel)
    try:
        n = CanOwnerChannel(
            "p", tx, DB, "PA_OwnerNotice", "HU_NoticeAck", "PA_NoticeText", values=values
        )
        early = replace(notice(seq=4), notice_id=0x0102, within_days=45.0)
        n.send(early, 0.0)
        frames = []
        while (f := rx.recv(0.5)) is not None:
            frames.append(f)
    finally:
        tx.shutdown()
        rx.shutdown()
    hu = VirtualHeadUnit(DB, response=None)
    for f in frames:
        hu.on_frame(f, 1.0)
    (shown,) = hu.shown
    assert shown.outlet == "Outlet A\n123\nhttps://maker.example/p\n12122\nlease\n45"
    assert shown.text is not None
    en = shown.text.texts["en"]
    assert "within 45 days" in en.happened
    assert "https://maker.example/p" in en.action and "lessor" in en.action
