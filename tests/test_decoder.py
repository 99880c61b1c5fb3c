import can
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pack_agent.config import load_config, reference_config_path
from pack_agent.database import load_and_check
from pack_agent.decoder import CodeAssembler, CodePage, Decoder, Reading
from pack_agent.sim.vehicle import code_pages, encode

CODE = "0RJPEA00HAU0AAF131001955"


@pytest.fixture(scope="module")
def ref():
    cfg = load_config(reference_config_path())
    return cfg, load_and_check(cfg)


def decode_all(decoder: Decoder, frames) -> list:
    out = []
    for f in frames:
        out += decoder.decode("powertrain", f, f.timestamp)
    return out


def test_health_frame_decodes_to_mapped_metrics(ref):
    cfg, db = ref
    d = Decoder(cfg, db)
    frame = encode(
        db, "BMS_Health", {"BMS_SOH": 81.3, "BMS_Capacity": 120.5, "BMS_FullCycles": 400}, 10.0
    )
    got = {r.metric: r.value for r in d.decode("powertrain", frame, 10.0)}
    assert got["soh"] == pytest.approx(81.3)
    assert got["capacity"] == pytest.approx(120.5)
    assert got["full_cycles"] == 400


def test_unmapped_ids_wrong_length_and_other_bus_are_ignored(ref):
    cfg, db = ref
    d = Decoder(cfg, db)
    assert d.decode("powertrain", can.Message(arbitration_id=0x123, data=b"\0" * 8), 0) == []
    short = can.Message(arbitration_id=0x3A1, data=b"\1\2")
    assert d.decode("powertrain", short, 0) == []
    assert sum(d.stats.dropped.values()) == 1
    frame = encode(db, "BMS_Health", {"BMS_SOH": 90.0}, 0)
    assert d.decode("body", frame, 0) == []


def test_raw_invalid_soh_is_dropped_not_passed_on(ref):
    cfg, db = ref
    d = Decoder(cfg, db)
    msg = db.get_message_by_name("BMS_Health")
    soh = msg.get_signal_by_name("BMS_SOH")
    data = bytearray(encode(db, "BMS_Health", {"BMS_SOH": 90.0}, 0).data)
    # set every bit of BMS_SOH: the DBC's "invalid" raw value
    raw = int.from_bytes(data, "little") | (((1 << soh.length) - 1) << soh.start)
    frame = can.Message(arbitration_id=0x3A1, data=raw.to_bytes(8, "little"))
    metrics = [r.metric for r in d.decode("powertrain", frame, 0) if isinstance(r, Reading)]
    assert "soh" not in metrics
    assert any("BMS_SOH" in k for k in d.stats.dropped)


def test_frame_ids_are_exactly_the_mapped_ones(ref):
    cfg, db = ref
    ids = {fid for fid, _ in Decoder(cfg, db).frame_ids("powertrain")}
    assert ids == {0x3A0, 0x3A1, 0x3A2, 0x3A3, 0x3B0}


def test_code_pages_assemble_in_any_order_after_confirmation(ref):
    cfg, db = ref
    d = Decoder(cfg, db)
    pages = [p for p in decode_all(d, code_pages(db, CODE, 0.0)) if isinstance(p, CodePage)]
    assert [p.page for p in pages] == [0, 1, 2, 3]
    a = CodeAssembler(4, confirmations=2)
    assert [a.feed(p) for p in reversed(pages)] == [None] * 4
    assert [a.feed(p) for p in pages[2:] + pages[:2]][-1] == CODE


def test_a_changed_page_mid_set_never_yields_a_mixed_code():
    a = CodeAssembler(2, confirmations=1)
    assert a.feed(CodePage(0, "AAAAAA", 0)) is None
    assert a.feed(CodePage(0, "BBBBBB", 0)) is None  # restarts the set
    assert a.feed(CodePage(1, "CCCCCC", 0)) == "BBBBBBCCCCCC"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3), st.sampled_from(["0RJPEA", "00HAU0", "AAF131", "001955", "XXXXXX"])
        ),
        max_size=60,
    )
)
def test_assembler_only_returns_codes_made_of_seen_pages(feed):
    a = CodeAssembler(4, confirmations=2)
    for page, text in feed:
        code = a.feed(CodePage(page, text, 0))
        if code is not None:
            assert len(code) == 24
            assert all(
                code[i * 6 : (i + 1) * 6] in {t for p, t in feed if p == i} for i in range(4)
            )


@settings(max_examples=500, deadline=None)
@given(st.sampled_from([0x3A0, 0x3A1, 0x3A2, 0x3B0]), st.binary(max_size=8))
def test_garbage_on_mapped_ids_never_raises(fid, data):
    cfg = load_config(reference_config_path())
    d = _DECODER.setdefault("d", Decoder(cfg, load_and_check(cfg)))
    for item in d.decode("powertrain", can.Message(arbitration_id=fid, data=data), 1.0):
        if isinstance(item, Reading):
            assert item.value == item.value  # never NaN


_DECODER: dict = {}
