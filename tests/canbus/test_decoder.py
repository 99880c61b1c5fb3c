from pathlib import Path

import can
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pack_agent.canbus.checks import load_and_check
from pack_agent.canbus.decoder import CodeAssembler, Decoder
from pack_agent.config import as_data, load_config, parse_config, reference_config_path
from pack_agent.core.readings import CodePage, Reading
from pack_agent.dev.sim.protect import seal
from pack_agent.dev.sim.vehicle import code_pages, encode

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
    other = can.Message(arbitration_id=0x123, is_extended_id=False, data=b"\0" * 8)
    assert d.decode("powertrain", other, 0) == []
    short = can.Message(arbitration_id=0x3A1, is_extended_id=False, data=b"\1\2")
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
    data = seal(db, "BMS_Health", raw.to_bytes(8, "little"))  # a BMS that sends it
    frame = can.Message(arbitration_id=0x3A1, is_extended_id=False, data=data)
    metrics = [r.metric for r in d.decode("powertrain", frame, 0) if isinstance(r, Reading)]
    assert "soh" not in metrics
    assert any("BMS_SOH" in k for k in d.stats.dropped)


def test_frame_ids_are_exactly_the_mapped_ones(ref):
    cfg, db = ref
    ids = {fid for fid, _ in Decoder(cfg, db).frame_ids("powertrain")}
    assert ids == {0x3A0, 0x3A1, 0x3A2, 0x3A3, 0x3A5, 0x3B0}


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
    if "d" not in _DECODER:
        cfg = load_config(reference_config_path())
        _DECODER["d"] = Decoder(cfg, load_and_check(cfg))
    d = _DECODER["d"]
    frame = can.Message(arbitration_id=fid, is_extended_id=False, data=data)
    for item in d.decode("powertrain", frame, 1.0):
        if isinstance(item, Reading):
            assert item.value == item.value  # never NaN


_DECODER: dict = {}


# -- precompiled signal readers, derived metrics, invalid raw values ---------------

REAL = Path(__file__).resolve().parents[3] / "shared" / "real-world"
REAL_DBS = [
    "foxbms-2/foxbms.dbc",
    "nissan-leaf/EV-can_ZE1.dbc",
    "model3dbc/Model3CAN.dbc",
    "kona-ev/pcan.dbc",
]


def _reference_db():
    from pack_agent.canbus.dbc import load_file
    from pack_agent.config import DATA_DIR

    return load_file(DATA_DIR / "pack_agent_reference.dbc", True)


def _databases():
    from pack_agent.canbus.dbc import load_file

    yield "reference", _reference_db()
    for rel in REAL_DBS:
        if (REAL / rel).is_file():
            yield rel, load_file(REAL / rel, False)


def _frames(msg, rng):
    """Eight random frames, then, for a multiplexed message, two frames per multiplexer
    value encoded with random raw values (most random frames carry an undefined one)."""
    for _ in range(8):
        yield bytes(rng.getrandbits(8) for _ in range(msg.length))
    muxes = {i for s in msg.signals for i in (s.multiplexer_ids or ())}
    mux = next((s for s in msg.signals if s.is_multiplexer), None)
    for value in sorted(muxes) if mux is not None else ():
        for _ in range(2):
            raw = {mux.name: value}
            for s in msg.signals:
                if s is mux or (s.multiplexer_ids and value not in s.multiplexer_ids):
                    continue
                v = rng.getrandbits(s.length)
                raw[s.name] = v - (1 << s.length) if s.is_signed and v >> (s.length - 1) else v
            try:
                yield msg.encode(raw, scaling=False, strict=False)
            except Exception:
                continue  # nested multiplexers in a community file: random frames cover them


def test_field_readers_agree_with_cantools_on_every_signal():
    import random

    from pack_agent.canbus.decoder import FieldReader

    rng = random.Random(3)
    checked: dict[str, set[tuple[str, str]]] = {}
    for name, db in _databases():
        seen = checked.setdefault(name, set())
        for msg in db.messages:
            readers = []
            for s in msg.signals:
                try:
                    readers.append((s, FieldReader.compile(msg, s)))
                except ValueError:
                    continue  # a broken multiplexer reference in a community file
            for data in _frames(msg, rng):
                try:
                    expected = msg.decode(data, decode_choices=False)
                except Exception:
                    continue  # an undefined mux value: cantools refuses the frame
                little, big = int.from_bytes(data, "little"), int.from_bytes(data, "big")
                for sig, r in readers:
                    if sig.name not in expected:
                        assert not r.present(little, big), (msg.name, sig.name)
                        continue
                    assert r.present(little, big)
                    got = r.value(r.raw(little, big))
                    assert got == pytest.approx(float(expected[sig.name]), abs=1e-6), (
                        msg.name,
                        sig.name,
                    )
                    seen.add((msg.name, sig.name))
    # every signal of the reference database, and nine in ten of each real one (a community
    # file has signals whose readers do not compile, or frames cantools refuses), compared
    reference = {(m.name, s.name) for m in _reference_db().messages for s in m.signals}
    assert checked["reference"] == reference
    for name, db in _databases():
        signals = {(m.name, s.name) for m in db.messages for s in m.signals}
        assert len(checked[name]) >= 0.9 * len(signals), (name, len(checked[name]), len(signals))


def _cfg_with(ref_cfg, **metrics):
    data = as_data(ref_cfg)
    data["metrics"] = metrics
    data["rules"] = []
    data["mqtt"]["password"] = None
    return parse_config(data, ref_cfg.base_dir, "test")


def test_derived_metric_needs_every_operand_fresh(ref):
    cfg, db = ref
    cfg = _cfg_with(cfg, fade={"expression": "100 * BMS_Capacity / BMS_Status.BMS_PackVoltage"})
    d = Decoder(cfg, db)
    assert {fid for fid, _ in d.frame_ids("powertrain")} == {0x3A1, 0x3A2, 0x3A0}

    def health():  # a new frame each time: BMS_Health carries an alive counter
        return encode(db, "BMS_Health", {"BMS_Capacity": 120.0}, 0)

    status = encode(db, "BMS_Status", {"BMS_PackVoltage": 400.0}, 0)
    assert d.decode("powertrain", health(), 100.0) == []  # the other operand is unknown
    [r] = d.decode("powertrain", status, 101.0)
    assert (r.metric, r.value, r.time) == ("fade", pytest.approx(30.0), 101.0)
    # the capacity is now 20 s old (timeout 10 s): no value from a stale operand
    assert d.decode("powertrain", status, 121.0) == []
    [r] = d.decode("powertrain", health(), 122.0)
    assert r.value == pytest.approx(30.0)


def test_division_by_zero_in_a_derived_metric_is_dropped_and_counted(ref):
    cfg, db = ref
    cfg = _cfg_with(cfg, x={"expression": "BMS_Capacity / BMS_PackVoltage"})
    d = Decoder(cfg, db)
    d.decode("powertrain", encode(db, "BMS_Health", {"BMS_Capacity": 120.0}, 0), 1.0)
    assert d.decode("powertrain", encode(db, "BMS_Status", {"BMS_PackVoltage": 0.0}, 0), 1.0) == []
    assert d.stats.dropped_by_metric["x"] == 1


def test_configured_invalid_raw_values_are_dropped_and_counted(ref):
    cfg, db = ref
    cfg = _cfg_with(
        cfg, soc={"message": "BMS_Status", "signal": "BMS_SOC", "invalid_raw": [0, 200]}
    )
    d = Decoder(cfg, db)
    sig = db.get_message_by_name("BMS_Status").get_signal_by_name("BMS_SOC")
    for soc, kept in ((50.0, True), (0.0, False), (sig.raw_to_scaled(200), False)):
        out = d.decode("powertrain", encode(db, "BMS_Status", {"BMS_SOC": soc}, 0), 0)
        assert bool(out) is kept, soc
    assert d.stats.dropped_by_metric["soc"] == 2
    assert d.stats.dropped_total == 2
    assert any("invalid_raw" in k for k in d.stats.dropped)


@pytest.mark.skipif(not (REAL / "foxbms-2/foxbms.dbc").is_file(), reason="no real-world data")
def test_a_metric_from_a_multiplexed_signal_only_on_its_page():
    from pack_agent.config import DATA_DIR

    data = {
        "vin": "LPACK2026AGENT001",
        "databases": [str(REAL / "foxbms-2/foxbms.dbc")],
        "metrics": {"soh": {"message": "f_StringStateEstimation", "signal": "Soh"}},
        "pack_code": {"source": "none"},
        "notice": {"text_message_id": 0x3C3},  # foxBMS uses 0x3C2
    }
    cfg = parse_config(data, DATA_DIR, "test")
    db = load_and_check(cfg)
    msg = db.get_message_by_name("f_StringStateEstimation")
    d = Decoder(cfg, db)
    frame0 = can.Message(
        arbitration_id=msg.frame_id,
        is_extended_id=False,
        data=msg.encode(
            {
                "f_StringStateEstimation_Mux": 0,
                "MinimumSoc": 10,
                "MaximumSoc": 20,
                "MinimumSoe": 10,
                "MaximumSoe": 20,
                "Soh": 87.4,
                "Energy": 100,
            }
        ),
    )
    [r] = d.decode("powertrain", frame0, 0)
    assert r.value == pytest.approx(87.4)
    other = bytearray(frame0.data)
    other[0] = (other[0] & 0x0F) | 0x10  # mux 1: another string, no Soh of string 0 here
    frame1 = can.Message(arbitration_id=msg.frame_id, is_extended_id=False, data=other)
    assert d.decode("powertrain", frame1, 0) == []


def test_decimal_scales_come_out_without_binary_noise(ref):
    cfg, db = ref
    d = Decoder(cfg, db)
    frame = encode(db, "BMS_Status", {"BMS_PackVoltage": 354.9, "BMS_SOC": 36.5}, 0)
    got = {r.metric: r.value for r in d.decode("powertrain", frame, 0)}
    assert repr(got["pack_voltage"]) == "354.9"
    expected = db.get_message_by_name("BMS_Status").decode(bytes(frame.data))
    assert got["pack_voltage"] == pytest.approx(expected["BMS_PackVoltage"], abs=1e-9)
