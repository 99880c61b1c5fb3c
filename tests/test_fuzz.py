"""Fuzzing with hypothesis: frames on mapped ids, pack code pages, configuration files.

The agent is driven through ``Agent.handle_frame`` (the daemon's own entry for a
frame) with the reference configuration, a real store and a real CAN owner
channel on a virtual bus. Promises checked:

- no frame raises inside the agent (``frame_errors`` stays 0: the decoder and the
  tracker handle every length, flag and payload themselves, they do not lean on the
  agent's last-resort ``except``);
- garbage never becomes a decision or an owner notice: no ``scrap.*`` or ``owner.*``
  event and no frame on the head unit's bus. Fuzzed frames are spread over time, 50 ms
  apart, so each mapped id gets random payloads at about its own cycle (the alarm frame's
  2 Hz) for hours: the alarm and health frames' CRC and alive counter (``[e2e.*]``, and
  two good frames in a row after a bad one) keep every one of them from a rule, and the
  messages without protection feed no rule;
- every assembled code that is not a valid GB/T 34014 code is reported once as
  ``pack.code_invalid`` with the errors ``check_pack_code`` finds;
- a configuration file of any content loads or fails with ``ConfigError``.

``FUZZ_FRAMES`` (default 100,000) sets how many frames the frame fuzzer sends.
"""

from __future__ import annotations

import json
import os
import random
import re
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import can
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pack_agent.canbus.checks import load_and_check
from pack_agent.canbus.decoder import Decoder
from pack_agent.config import as_data, load_config, parse_config, reference_config_path
from pack_agent.core.codes import check_pack_code
from pack_agent.delivery.owner_channel import owner_notifiers
from pack_agent.dev.sim.vehicle import encode
from pack_agent.errors import ConfigError
from pack_agent.runtime.agent import Agent
from pack_agent.store import Store

T0 = 1_800_000_000.0
FRAMES = int(os.environ.get("FUZZ_FRAMES", "100000"))
BATCH = 500
STEP_S = 0.05
DECISIONS = ("scrap.condition_met", "scrap.forecast")
CODE_CHARS = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ IO\x00-_é"


class Rig:
    """An agent on the reference configuration, recording its events."""

    def __init__(self, tmp: Path) -> None:
        channel = f"fuzz-{uuid.uuid4().hex}"
        data = as_data(load_config(reference_config_path()))
        data["buses"] = [{"name": "powertrain", "interface": "virtual", "channel": channel}]
        data["store"]["path"] = str(tmp / f"{channel}.db")
        data["notice"]["mqtt_copy"] = False
        cfg = parse_config(data, reference_config_path().parent, "test")
        self.cfg = cfg
        self.db = load_and_check(cfg)
        self.bus = can.Bus(interface="virtual", channel=channel)
        self.head_unit = can.Bus(interface="virtual", channel=channel)
        self.store = Store(cfg.store_path())
        notifier, _ = owner_notifiers(cfg, "powertrain", self.bus, self.db)
        self.events: list[Any] = []
        self.agent = Agent(
            cfg, Decoder(cfg, self.db), self.store, notifier, on_event=self.events.append
        )
        self.ids = sorted({m.frame_id for m in self.db.messages})
        self.frames = 0

    def feed(self, frames: list[can.Message], now: float, step: float = 0.0) -> None:
        for i, frame in enumerate(frames):
            self.agent.handle_frame("powertrain", frame, now + i * step)
        self.frames += len(frames)

    def close(self) -> None:
        self.store.close()
        self.bus.shutdown()
        self.head_unit.shutdown()


@pytest.fixture(scope="module")
def code_rig(tmp_path_factory: pytest.TempPathFactory) -> Any:
    r = Rig(tmp_path_factory.mktemp("codes"))
    yield r
    r.close()


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Any:
    r = Rig(tmp_path_factory.mktemp("fuzz"))
    yield r
    r.close()


def frames_strategy(ids: list[int]) -> st.SearchStrategy[list[can.Message]]:
    """A batch: a few frames shaped by hypothesis (mapped ids and others, any length
    0..64, odd flags; shrinkable), then ``BATCH`` frames from a seeded generator that
    hypothesis picks (random lengths, payloads and bit flips on mapped ids: bulk)."""
    frame = st.builds(
        _frame,
        st.one_of(st.sampled_from(ids), st.integers(0, 0x1FFFFFFF)),
        st.one_of(st.binary(max_size=8), st.binary(min_size=9, max_size=64)),
        st.booleans(),
        st.sampled_from(["", "", "", "", "error", "remote"]),
    )
    return st.tuples(st.lists(frame, max_size=12), st.integers(0, 2**32)).map(
        lambda shaped_seed: shaped_seed[0] + _bulk(ids, shaped_seed[1])
    )


def _bulk(ids: list[int], seed: int) -> list[can.Message]:
    rng = random.Random(seed)
    out = []
    for _ in range(BATCH):
        arb = rng.choice(ids) if rng.random() < 0.9 else rng.getrandbits(11)
        length = rng.choice((8, 8, 8, 8, rng.randint(0, 64)))
        data = bytes(rng.getrandbits(8) for _ in range(length))
        out.append(_frame(arb, data, arb > 0x7FF, ""))
    return out


def _frame(arb: int, data: bytes, extended: bool, odd: str) -> can.Message:
    return can.Message(
        arbitration_id=arb if extended or arb <= 0x7FF else arb & 0x7FF,
        is_extended_id=extended and arb > 0x7FF,
        data=b"" if odd == "remote" else data,
        is_fd=len(data) > 8,
        is_error_frame=odd == "error",
        is_remote_frame=odd == "remote",
        check=False,
    )


def test_fuzzed_frames_never_raise_decide_or_notify(rig: Rig) -> None:
    examples = max(1, FRAMES // BATCH)  # each batch also has up to 12 shaped frames
    n = [0]

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(frames_strategy(rig.ids))
    def run(frames: list[can.Message]) -> None:
        start = T0 + n[0] * (BATCH + 12) * STEP_S
        n[0] += 1
        rig.feed(frames, start, STEP_S)  # one frame every 50 ms: hours of garbage

    run()
    types = {e.type for e in rig.events}
    stats = rig.agent.decoder.stats
    print(f"fuzzed frames: {rig.frames} ({stats.frames} on mapped ids), readings {stats.readings}")
    by_reason: Counter[str] = Counter()
    for reason, count in stats.dropped.items():  # "X.Y: 3028.5 outside DBC range" -> one line
        by_reason[re.sub(r": -?[0-9.e+]+ outside", ": (value) outside", reason)] += count
    print("refused by reason:", json.dumps(dict(by_reason.most_common()), indent=1))
    print("answers refused:", dict(rig.agent.notice_status()["answers_refused"]))
    alarms = [r for r in rig.agent.tracker.latest if r in ("thermal_event", "insulation_alarm")]
    assert not alarms, "a random alarm frame was read"
    assert rig.frames >= FRAMES
    assert rig.agent.frame_errors == 0
    assert not types & {*DECISIONS, "owner.notified", "owner.notice", "owner.acknowledged"}
    assert rig.head_unit.recv(0) is None, "a notice frame reached the head unit's bus"
    invalid = [e for e in rig.events if e.type == "pack.code_invalid"]
    for e in invalid:
        assert e.data["errors"] == check_pack_code(e.data["raw"]).errors


# the code-page and configuration-file fuzzers: fixed examples (CI reruns see the same)
FILES_AND_CODES = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@FILES_AND_CODES
@given(text=st.text(alphabet=CODE_CHARS, min_size=0, max_size=24))
def test_every_assembled_code_is_judged_and_every_invalid_one_reported(
    code_rig: Rig, text: str
) -> None:
    """Code pages carrying any text: a valid code identifies the pack, every invalid
    one is reported with its errors (once per change), and neither decides nor notifies."""
    rig = code_rig
    raw = text.encode("utf-8")[:24]
    before = len(rig.events)
    pages = [
        encode(
            rig.db,
            "BMS_PackCode",
            {
                "PackCode_Page": page,
                "PackCode_PackIndex": 0,
                f"PackCode_Text{page}": int.from_bytes(raw[page * 6 : page * 6 + 6], "little"),
            },
            T0 + t + page * 0.01,
        )
        for t in (0.0, 1.0)  # two identical complete sets: the code is confirmed
        for page in range(4)
    ]
    now = T0 + len(rig.events) * 10.0
    rig.feed(pages, now)
    new = rig.events[before:]
    assert rig.agent.frame_errors == 0
    assert not {e.type for e in new} & {*DECISIONS, "owner.notified"}
    for e in new:
        if e.type == "pack.code_invalid":
            report = check_pack_code(e.data["raw"])  # a module or cell code is not the pack's
            assert not report.valid and e.data["errors"] == report.errors
    reported = [e.data["raw"] for e in new if e.type == "pack.code_invalid"]
    judged = raw.decode("ascii", errors="strict" if raw.isascii() else "replace").rstrip("\x00 ")
    if raw.isascii() and check_pack_code(judged).valid:
        assert rig.agent.tracker.code == judged and not reported
    elif LAST_INVALID and LAST_INVALID[-1] == judged and raw.isascii():
        assert not reported  # the same invalid code again: reported once, not per frame
    else:
        assert len(reported) == 1, (raw, new)
        LAST_INVALID.append(judged if raw.isascii() else reported[0])
    if raw.isascii() and not check_pack_code(judged).valid:
        LAST_INVALID.append(judged)


LAST_INVALID: list[str] = []


@pytest.fixture(scope="module")
def cfg_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("configs")


@FILES_AND_CODES
@given(
    text=st.one_of(
        st.text(max_size=400),
        st.lists(
            st.tuples(
                st.sampled_from(
                    ["vin", "databases", "[mqtt]", "[store]", "port", "max_events", "[[rules]]"]
                ),
                st.one_of(
                    st.integers(), st.text(max_size=20), st.floats(allow_nan=True), st.booleans()
                ),
            ),
            max_size=8,
        ).map(lambda kv: "\n".join(f"{k} = {v!r}" if "[" not in k else k for k, v in kv)),
    )
)
def test_any_configuration_file_loads_or_fails_with_a_config_error(
    cfg_dir: Path, text: str
) -> None:
    path = cfg_dir / "fuzz.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_config(path)
    except ConfigError as exc:
        assert str(path) in str(exc) or "fuzz.toml" in str(exc), str(exc)


# -- log files: every format, any bytes ---------------------------------------------

LOG_SEEDS: dict[str, bytes] = {
    "gvret": b"Time Stamp,ID,Extended,Bus,LEN,D1,D2,D3,D4,D5,D6,D7,D8\n"
    b"1000,000003A1,false,0,8,10,C3,24,B9,83,65,50,F4\n",
    "asc": b"date Mon Dec 7 01:00:00.000 am 2026\nbase hex  timestamps absolute\n"
    b"   0.000000 1  3A1             Rx   d 8 10 C3 24 B9 83 65 50 F4\n",
    "candump": b"(1800000000.000000) can0 3A1#10C324B9836550F4\n",
    "trc": b";$FILEVERSION=1.1\n;$STARTTIME=45000.0\n"
    b"     1)         0.0  Rx         03A1  8  10 C3 24 B9 83 65 50 F4\n",
    "csv": b"timestamp,arbitration_id,extended,remote,error,dlc,data\n"
    b"1800000000.0,0x3A1,0,0,0,8,EMMkuYNlUPQ=\n",
}
SUFFIX = {"gvret": ".csv", "asc": ".asc", "candump": ".log", "trc": ".trc", "csv": ".csv"}


def _blf_seed(tmp: Path) -> bytes:
    path = tmp / "seed.blf"
    writer = can.BLFWriter(str(path))
    for i in range(50):
        writer.on_message_received(
            can.Message(arbitration_id=0x3A1, is_extended_id=False, data=bytes(8), timestamp=i)
        )
    writer.stop()
    return path.read_bytes()


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@FILES_AND_CODES
@given(
    fmt=st.sampled_from([*SUFFIX, "blf"]),
    cut=st.floats(0.0, 1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), max_size=6),
    tail=st.binary(max_size=40),
)
def test_any_log_file_reads_or_fails_with_a_log_error_naming_the_place(
    log_dir: Path, fmt: str, cut: float, flips: list[tuple[float, int]], tail: bytes
) -> None:
    """A valid log of each format, cut short, with bytes changed and garbage appended:
    the reader yields frames or raises ``LogError`` naming the file (and, past the
    header, the line or frame); never another exception, never a NaN time stamp."""
    from pack_agent.canbus.logs import LogError, read_log

    seed = _blf_seed(log_dir) if fmt == "blf" else LOG_SEEDS[fmt]
    data = bytearray(seed[: max(1, int(len(seed) * cut))] if cut < 1.0 else seed)
    for where, value in flips:
        data[min(int(where * len(data)), len(data) - 1)] = value
    data += tail
    path = log_dir / f"fuzz{SUFFIX.get(fmt, '.blf')}"
    path.write_bytes(bytes(data))
    try:
        for msg in read_log(path, fmt):
            assert msg.timestamp == msg.timestamp and abs(msg.timestamp) != float("inf")
    except LogError as exc:
        assert str(path) in str(exc), str(exc)
