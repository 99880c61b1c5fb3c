"""End-to-end protection of received frames: a checksum and an alive counter per message.

Configured per message (``[e2e.<message>]``, docs/configuration.md): which profile,
which DBC signals carry the CRC and the counter, the data id. A frame that fails is
dropped before any signal is read and counted by reason; a counter that repeats or
jumps is a finding (``E2EStats``) shown in the status. The profiles, in the manner of
AUTOSAR E2E (the CRC polynomials are AUTOSAR's; vendor stacks differ in details such
as where the data id goes, so check against one real frame):

- ``autosar_p1``: CRC-8 SAE J1850 over the data id (low byte, high byte), then every
  payload byte except the CRC byte; 4-bit counter 0..14 (15 is invalid).
- ``autosar_p2``: CRC-8H2F over every payload byte except the CRC byte, then
  ``data_ids[counter]``; 4-bit counter 0..15.
- ``autosar_p4``: the 12-byte header Length(2) Counter(2) DataID(4) CRC(4), big-endian,
  ending with the CRC signal; CRC-32P4 over every byte except the CRC (CAN FD frames).
- ``autosar_p5``: CRC-16 CCITT-FALSE over every payload byte except the 2 CRC bytes,
  then the data id (low, high); 8-bit counter.
- ``crc8_j1850``: CRC-8 SAE J1850 over the payload bytes except the CRC byte (and the
  data id bytes, low first, when one is configured).
- ``xor`` / ``sum``: XOR, or the 8-bit sum, of every payload byte except the checksum.

The CRC tables come from ``crccheck`` (a dependency of cantools), imported only when a
message is protected.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pack_agent.config.settings import E2ESettings

PROFILES = ("autosar_p1", "autosar_p2", "autosar_p4", "autosar_p5", "crc8_j1850", "xor", "sum")
CRC_BITS = {"autosar_p1": 8, "autosar_p2": 8, "autosar_p4": 32, "autosar_p5": 16,
            "crc8_j1850": 8, "xor": 8, "sum": 8}  # fmt: skip
COUNTER_BITS = {"autosar_p1": 4, "autosar_p2": 4, "autosar_p5": 8}  # fixed by the profile
P4_HEADER = 12

# drop reasons (also the keys of E2EStats.refused)
CRC = "crc"
COUNTER_REPEATED = "counter repeated"
COUNTER_JUMPED = "counter jumped"
COUNTER_INVALID = "counter invalid"
RESYNC = "resync"  # a good frame after an error, before ``min_ok`` good ones in a row
DATA_ID = "data id"
LENGTH = "length field"


def _table(name: str) -> list[int]:
    """A byte-wise lookup table from ``crccheck``'s parameters (its own ``calc`` walks
    bits in Python: too slow for every protected frame)."""
    import crccheck.crc as c

    cls = getattr(c, name)
    width, poly = cls._width, cls._poly
    top, mask = 1 << (width - 1), (1 << width) - 1
    out = []
    for byte in range(256):
        reg = byte << (width - 8)
        for _ in range(8):
            reg = ((reg << 1) ^ poly) & mask if reg & top else (reg << 1) & mask
        out.append(reg)
    return out


class Crc:
    """A non-reflected CRC (every AUTOSAR E2E CRC except P4's is one), table-driven."""

    def __init__(self, name: str) -> None:
        import crccheck.crc as c

        cls = getattr(c, name)
        self.width: int = cls._width
        self.init: int = cls._initvalue
        self.xorout: int = cls._xor_output
        self.reflected: bool = bool(cls._reflect_input)
        self._table = _table(name) if not self.reflected else []
        self._cls = cls

    def __call__(self, data: bytes) -> int:
        if self.reflected:
            return int(self._cls.calc(data))
        width, table, mask = self.width, self._table, (1 << self.width) - 1
        reg = self.init
        shift = width - 8
        for b in data:
            reg = ((reg << 8) & mask) ^ table[((reg >> shift) ^ b) & 0xFF]
        return reg ^ self.xorout


_CRCS: dict[str, Crc] = {}


def crc(name: str) -> Crc:
    if name not in _CRCS:
        _CRCS[name] = Crc(name)
    return _CRCS[name]


@dataclass
class E2EStats:
    """What the checks refused, per message and reason, and the last counter finding."""

    refused: Counter[str] = field(default_factory=Counter)  # "Message: reason" -> count
    findings: dict[str, dict[str, Any]] = field(default_factory=dict)  # message -> finding

    def finding(self, message: str, reason: str, now: float, detail: str) -> None:
        f = self.findings.setdefault(message, {"repeated": 0, "jumped": 0})
        f["repeated" if reason == COUNTER_REPEATED else "jumped"] += 1
        f["last"], f["last_at"], f["detail"] = reason, now, detail


class Protection:
    """The check for one message: ``check(data, now)`` returns None when the frame may be
    decoded, else the drop reason. Keeps the last good counter (per message and bus)."""

    def __init__(self, message: Any, settings: E2ESettings) -> None:
        self.name = message.name
        self.profile = settings.profile
        self.data_id = settings.data_id
        self.data_ids = list(settings.data_ids)
        self.max_delta = settings.max_delta
        self.min_ok = settings.min_ok
        self.good_run = settings.min_ok  # good frames in a row (a fresh start is trusted)
        self.length = message.length
        sig = message.get_signal_by_name(settings.crc_signal)
        self.crc_at = sig.start // 8  # byte-aligned (checked with the configuration)
        self.crc_bytes = sig.length // 8
        self.counter: tuple[int, int] | None = None  # (shift, mask), little-endian
        if settings.counter_signal:
            c = message.get_signal_by_name(settings.counter_signal)
            self.counter = (c.start, (1 << c.length) - 1)
        self.modulus = {"autosar_p1": 15}.get(self.profile, 0)
        if self.profile == "autosar_p4":
            self.modulus = 1 << 16
        elif self.counter is not None and not self.modulus:
            self.modulus = self.counter[1] + 1
        self.last: int | None = None
        self._crc = self._algorithm()

    def _algorithm(self) -> Callable[[bytes, int], int]:
        p, did = self.profile, self.data_id
        if p == "autosar_p1":
            f = crc("Crc8SaeJ1850")
            head = bytes((did & 0xFF, (did >> 8) & 0xFF))
            return lambda rest, _c: f(head + rest)
        if p == "autosar_p2":
            f2, ids = crc("Crc8Autosar"), self.data_ids
            return lambda rest, c: f2(rest + bytes((ids[c & 0xF] & 0xFF,)))
        if p == "autosar_p4":
            return lambda rest, _c: crc("Crc32Autosar")(rest)
        if p == "autosar_p5":
            f5 = crc("Crc16CcittFalse")
            tail = bytes((did & 0xFF, (did >> 8) & 0xFF))
            return lambda rest, _c: f5(rest + tail)
        if p == "crc8_j1850":
            fj = crc("Crc8SaeJ1850")
            head = bytes((did & 0xFF, (did >> 8) & 0xFF)) if did else b""
            return lambda rest, _c: fj(head + rest)
        if p == "xor":

            def xor(rest: bytes, _c: int) -> int:
                out = 0
                for b in rest:
                    out ^= b
                return out

            return xor
        return lambda rest, _c: sum(rest) & 0xFF

    def _read_crc(self, data: bytes) -> int:
        raw = data[self.crc_at : self.crc_at + self.crc_bytes]
        return int.from_bytes(raw, "big" if self.profile == "autosar_p4" else "little")

    def compute(self, data: bytes) -> int:
        """The CRC a frame with these bytes must carry (the CRC field is skipped)."""
        rest = data[: self.crc_at] + data[self.crc_at + self.crc_bytes :]
        return self._crc(rest, self.read_counter(data) or 0)

    def read_counter(self, data: bytes) -> int | None:
        if self.profile == "autosar_p4":
            at = self.crc_at - 6
            return int.from_bytes(data[at : at + 2], "big") if at >= 0 else None
        if self.counter is None:
            return None
        shift, mask = self.counter
        return (int.from_bytes(data, "little") >> shift) & mask

    def protect(self, data: bytes, counter: int) -> bytes:
        """``data`` with ``counter`` and its CRC written in (senders: the simulator)."""
        out = bytearray(data)
        if self.profile == "autosar_p4":
            at = self.crc_at - 8
            out[at : at + 2] = len(out).to_bytes(2, "big")
            out[at + 2 : at + 4] = (counter & 0xFFFF).to_bytes(2, "big")
            out[at + 4 : at + 8] = (self.data_id & 0xFFFFFFFF).to_bytes(4, "big")
        elif self.counter is not None:
            shift, mask = self.counter
            word = int.from_bytes(out, "little") & ~(mask << shift)
            out = bytearray((word | ((counter & mask) << shift)).to_bytes(len(out), "little"))
        value = self.compute(bytes(out))
        crc = (
            value.to_bytes(self.crc_bytes, "big")
            if self.profile == "autosar_p4"
            else value.to_bytes(self.crc_bytes, "little")
        )
        out[self.crc_at : self.crc_at + self.crc_bytes] = crc
        return bytes(out)

    def check(self, data: bytes, now: float, stats: E2EStats) -> str | None:
        """None (decode the frame) or why not. After any refused frame, ``min_ok`` good
        frames in a row (CRC right, counter one step or a few on) are needed before one
        is taken again, as AUTOSAR's E2E state machine does: random frames, which pass
        a CRC-8 one time in 256, then never reach a rule."""
        reason = self._check(data, now, stats)
        if reason is not None:
            self.good_run = 0
            return reason
        self.good_run += 1
        return None if self.good_run >= self.min_ok else RESYNC

    def _check(self, data: bytes, now: float, stats: E2EStats) -> str | None:
        if self._read_crc(data) != self.compute(data):
            return CRC
        if self.profile == "autosar_p4":
            at = self.crc_at - 8
            if int.from_bytes(data[at : at + 2], "big") != len(data):
                return LENGTH
            if int.from_bytes(data[at + 4 : at + 8], "big") != self.data_id & 0xFFFFFFFF:
                return DATA_ID
        counter = self.read_counter(data)
        if counter is None:
            return None
        if counter >= self.modulus:
            return COUNTER_INVALID
        last, self.last = self.last, counter
        if last is None:
            return None
        delta = (counter - last) % self.modulus
        if delta == 0:
            stats.finding(self.name, COUNTER_REPEATED, now, f"counter stayed at {counter}")
            return COUNTER_REPEATED
        if delta > self.max_delta:
            detail = f"counter {last} -> {counter} (max step {self.max_delta})"
            stats.finding(self.name, COUNTER_JUMPED, now, detail)
            return COUNTER_JUMPED  # refused; the frames that follow it in sequence count
        return None


def config_problems(key: str, message: Any, s: E2ESettings) -> list[str]:
    """What a ``[e2e.<message>]`` section gets wrong against the DBC message."""
    problems: list[str] = []
    names = {sig.name: sig for sig in message.signals}
    crc_sig = names.get(s.crc_signal)
    if crc_sig is None:
        problems.append(f"{key}.crc_signal: signal {s.crc_signal!r} is not in {message.name!r}")
    else:
        want = CRC_BITS[s.profile]
        if crc_sig.length != want or crc_sig.start % 8 or crc_sig.byte_order != "little_endian":
            problems.append(
                f"{key}.crc_signal: {s.crc_signal!r} must be {want} bits starting on a byte "
                f"(Intel) for {s.profile}; it is {crc_sig.length} bits at bit {crc_sig.start}"
            )
        elif s.profile == "autosar_p4" and crc_sig.start // 8 < 8:
            problems.append(f"{key}.crc_signal: autosar_p4 needs the 8 header bytes before the CRC")
    if s.counter_signal:
        c = names.get(s.counter_signal)
        if c is None:
            problems.append(
                f"{key}.counter_signal: signal {s.counter_signal!r} is not in {message.name!r}"
            )
        elif c.byte_order != "little_endian":
            problems.append(f"{key}.counter_signal: {s.counter_signal!r} must be Intel")
        elif s.profile in COUNTER_BITS and c.length != COUNTER_BITS[s.profile]:
            problems.append(
                f"{key}.counter_signal: {s.profile} has a {COUNTER_BITS[s.profile]}-bit "
                f"counter; {s.counter_signal!r} is {c.length} bits"
            )
    elif s.profile in COUNTER_BITS:
        problems.append(f"{key}.counter_signal: required for {s.profile}")
    if s.profile == "autosar_p2" and len(s.data_ids) != 16:
        problems.append(f"{key}.data_ids: autosar_p2 needs 16 data ids (one per counter value)")
    if s.profile in ("autosar_p1", "autosar_p5") and s.data_id > 0xFFFF:
        problems.append(f"{key}.data_id: {s.profile} has a 16-bit data id")
    if s.profile == "autosar_p4" and message.length < P4_HEADER:
        problems.append(f"{key}.profile: autosar_p4 needs frames of at least 12 bytes (CAN FD)")
    return problems
