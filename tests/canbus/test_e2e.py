"""Frame integrity: the E2E profiles' CRCs and counters, the frame checks in the decoder."""

from __future__ import annotations

import random
from typing import Any

import can
import cantools
import crccheck.crc
import pytest
from cantools.autosar.end_to_end import compute_profile2_crc, compute_profile5_crc
from cantools.database.can import Message, Signal

from pack_agent.canbus.checks import load_and_check
from pack_agent.canbus.decoder import Decoder
from pack_agent.canbus.e2e import E2EStats, Protection, config_problems, crc
from pack_agent.config import E2ESettings, as_data, load_config, parse_config, reference_config_path
from pack_agent.dev.sim.vehicle import encode

T0 = 1_800_000_000.0


@pytest.fixture(scope="module")
def ref() -> tuple[Any, Any]:
    cfg = load_config(reference_config_path())
    return cfg, load_and_check(cfg)


def message(length: int, crc_bits: int, counter_bits: int = 4, crc_start: int = 0) -> Message:
    """A message with a CRC, a counter and data (no DBC file needed)."""
    counter_start = crc_start + crc_bits if crc_start == 0 else 8
    signals = [
        Signal("Crc", start=crc_start, length=crc_bits),
        Signal("Counter", start=counter_start, length=counter_bits),
        Signal("Data", start=32, length=16),
    ]
    return Message(0x123, "M", length, signals, is_fd=length > 8)


@pytest.mark.parametrize("name", ["Crc8SaeJ1850", "Crc8Autosar", "Crc16CcittFalse", "Crc32Autosar"])
def test_crc_tables_give_the_catalogue_check_values(name: str) -> None:
    """Each CRC on "123456789" is the check value of the CRC catalogue (crccheck's own)."""
    assert crc(name)(b"123456789") == getattr(crccheck.crc, name)._check_result


def test_profile_2_and_5_agree_with_cantools() -> None:
    """cantools implements AUTOSAR profiles 2 and 5 independently: same CRCs."""
    rng = random.Random(7)
    s2 = E2ESettings(
        profile="autosar_p2", crc_signal="Crc", counter_signal="Counter", data_ids=[*range(16)]
    )
    s5 = E2ESettings(
        profile="autosar_p5", crc_signal="Crc", counter_signal="Counter", data_id=0x1234
    )
    p2, p5 = Protection(message(8, 8), s2), Protection(message(8, 16, 8), s5)
    for _ in range(200):
        data = bytes(rng.getrandbits(8) for _ in range(8))
        counter = data[1] & 0xF  # cantools takes profile 2's data id by byte 1's low nibble
        assert p2.compute(data) == compute_profile2_crc(data, counter)
        assert p5.compute(data) == compute_profile5_crc(data, 0x1234)


PROFILES = [
    (E2ESettings(profile="autosar_p1", crc_signal="Crc", counter_signal="Counter", data_id=0x3A3),
     message(8, 8)),
    (E2ESettings(profile="autosar_p2", crc_signal="Crc", counter_signal="Counter",
                 data_ids=[0x10 + i for i in range(16)]), message(8, 8)),
    (E2ESettings(profile="autosar_p4", crc_signal="Crc", data_id=0xDEADBEEF),
     message(16, 32, crc_start=64)),
    (E2ESettings(profile="autosar_p5", crc_signal="Crc", counter_signal="Counter", data_id=0x77),
     message(8, 16, 8)),
    (E2ESettings(profile="crc8_j1850", crc_signal="Crc", counter_signal="Counter"), message(8, 8)),
    (E2ESettings(profile="xor", crc_signal="Crc", counter_signal="Counter"), message(8, 8)),
    (E2ESettings(profile="sum", crc_signal="Crc", counter_signal="Counter"), message(8, 8)),
]  # fmt: skip


@pytest.mark.parametrize(("settings", "msg"), PROFILES, ids=[s.profile for s, _ in PROFILES])
def test_every_profile_takes_its_frames_and_refuses_corruption(settings: Any, msg: Any) -> None:
    assert config_problems("e2e.M", msg, settings) == []
    sender, receiver = Protection(msg, settings), Protection(msg, settings)
    stats = E2EStats()
    rng = random.Random(settings.profile)
    counter = 0
    for _ in range(40):
        data = sender.protect(bytes(rng.getrandbits(8) for _ in range(msg.length)), counter)
        assert receiver.check(data, T0, stats) is None
        bit = rng.randrange(8 * msg.length)
        flipped = (int.from_bytes(data, "little") ^ (1 << bit)).to_bytes(msg.length, "little")
        if settings.profile not in ("xor", "sum"):  # every CRC finds a single flipped bit
            probe = Protection(msg, settings)
            assert probe.check(flipped, T0, stats) in ("crc", "length field", "data id")
        counter = (counter + 1) % (receiver.modulus or 1)
    assert stats.findings == {}


def test_counter_repeated_or_jumped_is_refused_and_a_finding() -> None:
    settings = E2ESettings(profile="autosar_p1", crc_signal="Crc", counter_signal="Counter",
                           data_id=1, max_delta=2, min_ok=2)  # fmt: skip
    msg = message(8, 8)
    tx, rx = Protection(msg, settings), Protection(msg, settings)
    stats = E2EStats()
    frames = {c: tx.protect(bytes(8), c) for c in range(15)}
    assert rx.check(frames[0], T0, stats) is None  # a fresh start is trusted
    assert rx.check(frames[2], T0 + 1, stats) is None  # one lost frame: allowed
    assert rx.check(frames[2], T0 + 2, stats) == "counter repeated"  # stuck or replayed
    assert rx.check(frames[3], T0 + 3, stats) == "resync"  # good, but right after an error
    assert rx.check(frames[4], T0 + 4, stats) is None  # two good in a row: taken again
    assert rx.check(frames[9], T0 + 5, stats) == "counter jumped"
    assert rx.check(frames[10], T0 + 6, stats) == "resync"
    assert rx.check(frames[11], T0 + 7, stats) is None
    assert rx.check(frames[12][:4] + b"\x01" + frames[12][5:], T0 + 8, stats) == "crc"
    assert tx.protect(bytes(8), 15)[0] != 0  # counter 15 is not a profile-1 counter
    assert stats.findings["M"]["repeated"] == 1 and stats.findings["M"]["jumped"] == 1
    assert stats.findings["M"]["last"] == "counter jumped"


def test_configuration_problems_name_the_key() -> None:
    msg = message(8, 8)
    bad = [
        (E2ESettings(profile="autosar_p1", crc_signal="Nope", counter_signal="Counter"),
         "e2e.M.crc_signal: signal 'Nope' is not in 'M'"),
        (E2ESettings(profile="autosar_p5", crc_signal="Crc", counter_signal="Counter"),
         "e2e.M.crc_signal: 'Crc' must be 16 bits starting on a byte (Intel) for autosar_p5"),
        (E2ESettings(profile="autosar_p1", crc_signal="Crc"),
         "e2e.M.counter_signal: required for autosar_p1"),
        (E2ESettings(profile="autosar_p2", crc_signal="Crc", counter_signal="Counter"),
         "e2e.M.data_ids: autosar_p2 needs 16 data ids"),
        (E2ESettings(profile="autosar_p1", crc_signal="Crc", counter_signal="Counter",
                     data_id=0x10000), "e2e.M.data_id: autosar_p1 has a 16-bit data id"),
        (E2ESettings(profile="autosar_p4", crc_signal="Data"),
         "e2e.M.crc_signal: 'Data' must be 32 bits"),
    ]  # fmt: skip
    for settings, expected in bad:
        problems = config_problems("e2e.M", msg, settings)
        assert any(p.startswith(expected) for p in problems), (expected, problems)


def test_an_e2e_section_must_name_a_message_with_fitting_signals(ref) -> None:
    cfg, _ = ref
    data = as_data(cfg)
    data["e2e"]["Nope"] = {"profile": "xor", "crc_signal": "x"}
    data["e2e"]["BMS_Status"] = {"profile": "autosar_p1", "crc_signal": "BMS_SOC"}
    from pack_agent.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        load_and_check(parse_config(data, reference_config_path().parent, "test"))
    assert err.value.problems == [
        "e2e.Nope: message 'Nope' is not in the database(s)",
        "e2e.BMS_Status.crc_signal: 'BMS_SOC' must be 8 bits starting on a byte (Intel) for "
        "autosar_p1; it is 10 bits at bit 0",
        "e2e.BMS_Status.counter_signal: required for autosar_p1",
    ]


# -- the decoder's frame checks ---------------------------------------------------


def _frame(arb: int, data: bytes, **kw: Any) -> can.Message:
    kw.setdefault("is_extended_id", False)
    return can.Message(arbitration_id=arb, data=data, check=False, **kw)


def test_frames_that_are_not_the_database_message_are_dropped_by_reason(ref) -> None:
    """An extended id of the same number, a CAN FD or longer frame, remote and error frames
    never decode as the message; each is counted by reason."""
    cfg, db = ref
    d = Decoder(cfg, db)
    good = bytes(encode(db, "BMS_Status", {"BMS_SOC": 50.0}, 0).data)
    frames = [
        _frame(0x3A2, good, is_extended_id=True),
        _frame(0x3A2, good + bytes(4), is_fd=True),
        _frame(0x3A2, good + b"\x00"),
        _frame(0x3A2, b"", is_remote_frame=True),
        _frame(0, b"", is_error_frame=True),
        _frame(0x3A2, good),
    ]
    out = [d.decode("powertrain", f, 1.0) for f in frames]
    assert [bool(o) for o in out] == [False] * 5 + [True]
    assert dict(d.stats.dropped) == {
        "BMS_Status: extended id": 1,
        "BMS_Status: CAN FD frame": 1,
        "BMS_Status: 9 bytes, expected 8": 1,
        "BMS_Status: remote frame": 1,
        "error frame": 1,
    }


def test_protected_frames_failing_their_check_never_become_readings(ref) -> None:
    cfg, db = ref
    d = Decoder(cfg, db)
    alarm = encode(db, "BMS_Alarms", {"BMS_AlarmThermalEvent": 1}, 0)
    assert [r.metric for r in d.decode("powertrain", alarm, 1.0)][:1]  # genuine: read
    assert d.decode("powertrain", alarm, 1.5) == []  # the same frame again (replayed)
    forged = _frame(0x3A3, bytes(alarm.data)[:3] + b"\x55" + bytes(alarm.data)[4:])
    assert d.decode("powertrain", forged, 2.0) == []
    assert d.stats.dropped["BMS_Alarms: e2e counter repeated"] == 1
    assert d.stats.dropped["BMS_Alarms: e2e crc"] == 1
    assert d.e2e.refused == {"BMS_Alarms: counter repeated": 1, "BMS_Alarms: crc": 1}
    assert d.e2e.findings["BMS_Alarms"]["repeated"] == 1


def test_random_payloads_at_the_alarm_rate_never_become_readings(ref) -> None:
    """The attack from issue 17: random payloads on the alarm id at its own 2 Hz. With
    the CRC, the counter and two good frames in a row needed after any bad one, not one
    of a day's worth (172,800 frames) is read."""
    cfg, db = ref
    d = Decoder(cfg, db)
    rng = random.Random(17)
    read = 0
    for i in range(172_800):
        frame = _frame(0x3A3, rng.randbytes(8))
        read += len(d.decode("powertrain", frame, T0 + 0.5 * i))
    assert read == 0
    crc_refused = d.e2e.refused["BMS_Alarms: crc"]
    assert crc_refused > 170_000  # the CRC stops about 255 in 256
    print("refused:", dict(d.e2e.refused))


def test_status_shows_e2e_findings_and_refusals(ref, tmp_path) -> None:
    from pack_agent.runtime.agent import Agent
    from pack_agent.store.database import Store

    cfg, db = ref
    data = as_data(cfg)
    data["store"]["path"] = str(tmp_path / "a.db")
    cfg = parse_config(data, reference_config_path().parent, "test")
    store = Store(cfg.store_path())
    try:
        agent = Agent(cfg, Decoder(cfg, db), store, None)
        frames = [encode(db, "BMS_Health", {"BMS_SOH": 90.0}, 0) for _ in range(6)]
        for t, i in enumerate([0, 1, 1, 5]):  # a repeat, then a jump of 4
            agent.handle_frame("powertrain", frames[i], T0 + t)
        status = agent.e2e_status()
        assert status["refused"] == {
            "BMS_Health: counter repeated": 1,
            "BMS_Health: counter jumped": 1,
        }
        finding = status["findings"]["BMS_Health"]
        assert finding["repeated"] == 1 and finding["jumped"] == 1
        assert finding["detail"] == "counter 1 -> 5 (max step 2)"
        assert finding["last_at"].startswith("2027-01-15")
    finally:
        store.close()


def test_the_answer_mac_is_aes_cmac() -> None:
    """RFC 4493 example 2 (key 2b7e..., 16-byte message): the first two bytes of the CMAC
    are 07 0a; AnswerMac's input is 03 C1 seq response challenge(2) freshness."""
    from cryptography.hazmat.primitives.ciphers import algorithms
    from cryptography.hazmat.primitives.cmac import CMAC

    from pack_agent.delivery.secoc import AnswerMac

    key = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    c = CMAC(algorithms.AES(key))
    c.update(bytes.fromhex("6bc1bee22e409f96e93d7e117393172a"))
    assert c.finalize().hex() == "070a16b46b4d4144f79bdd9dd04a287c"
    c = CMAC(algorithms.AES(key))
    c.update(bytes.fromhex("03c1 07 03 beef 02"))
    expected = c.finalize()[:2]
    mac = AnswerMac(key, 0x3C1).mac(7, 3, 0xBEEF, 2)
    assert mac.to_bytes(2, "little") == expected
    db = cantools.database.load_file(
        str(reference_config_path().parent / "pack_agent_reference.dbc")
    )
    frame = bytes.fromhex("07 13 EF BE 20 02") + expected
    assert db.decode_message(0x3C1, frame, decode_choices=False)["HU_AckMac"] == mac
