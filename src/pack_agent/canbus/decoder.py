"""Frames to readings: only mapped frame ids are decoded, everything else costs one dict miss.

The decoder knows cantools and the metric mapping; it knows nothing of rules,
events or MQTT. Values outside the signal's DBC range are dropped and counted,
never passed on: a BMS sending 0x3FF for "SOH unknown" must not look like 102.3 %.
The seam, at ~470 lines: ``FieldReader`` (signals compiled to shifts and masks) and
``CodeAssembler`` could each stand in a module of their own.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pack_agent.canbus.codesource import CodeReader, code_reader
from pack_agent.canbus.dbc import resolve_operand
from pack_agent.canbus.e2e import E2EStats, Protection
from pack_agent.canbus.expression import Expression, parse_expression
from pack_agent.config import AgentConfig
from pack_agent.core.readings import CodePage, Reading

if TYPE_CHECKING:
    import can
    import cantools.database


@dataclass(slots=True)
class FieldReader:
    """One signal compiled to shifts and a mask: ``int.from_bytes`` once per frame, then
    a shift per signal, instead of cantools decoding every signal of the message.

    ``tests/canbus/test_decoder.py`` checks it against cantools for every signal of every
    message of the reference and the real databases.
    """

    name: str
    big_endian: bool
    shift: int
    mask: int
    sign_bit: int  # 0 for unsigned
    scale: float
    divisor: float  # 1/scale when that is a whole number (0.1 -> 10): raw / 10 is exact
    offset: float
    minimum: float | None
    maximum: float | None
    is_float: bool
    mux: FieldReader | None = None  # the multiplexer, when this signal is multiplexed
    mux_ids: frozenset[int] = frozenset()

    @classmethod
    def compile(cls, message: Any, sig: Any) -> FieldReader:
        length_bits = message.length * 8
        if sig.byte_order == "little_endian":
            shift, big = sig.start, False
        else:
            msb = 8 * (sig.start // 8) + 7 - sig.start % 8  # bit 0 = MSB of byte 0
            shift, big = length_bits - (msb + sig.length), True
        mux = None
        if sig.multiplexer_ids and sig.multiplexer_signal:
            try:
                mux_signal = message.get_signal_by_name(sig.multiplexer_signal)
            except KeyError:
                raise ValueError(
                    f"{message.name}.{sig.name}: multiplexer {sig.multiplexer_signal!r} "
                    "is not in the message"
                ) from None
            mux = cls.compile(message, mux_signal)
        return cls(
            name=sig.name,
            big_endian=big,
            shift=shift,
            mask=(1 << sig.length) - 1,
            sign_bit=(1 << (sig.length - 1)) if sig.is_signed else 0,
            scale=float(sig.scale),
            divisor=_divisor(float(sig.scale)),
            offset=float(sig.offset),
            minimum=sig.minimum,
            maximum=sig.maximum,
            is_float=bool(sig.is_float),
            mux=mux,
            mux_ids=frozenset(sig.multiplexer_ids or ()),
        )

    def value(self, raw: int) -> float:
        """Scaled like cantools, without its binary noise: 3549 * 0.1 is 354.9, not
        354.90000000000003."""
        if self.divisor:
            return raw / self.divisor + self.offset
        return raw * self.scale + self.offset

    def raw(self, little: int, big: int) -> int:
        raw = ((big if self.big_endian else little) >> self.shift) & self.mask
        if self.sign_bit and raw & self.sign_bit:
            raw -= self.mask + 1
        return raw

    def present(self, little: int, big: int) -> bool:
        """False when the frame carries another page of a multiplexed message."""
        return self.mux is None or self.mux.raw(little, big) in self.mux_ids


@dataclass(slots=True)
class _Target:
    """Where a decoded signal goes: a metric, or an operand of derived metrics."""

    field: FieldReader
    metric: str | None  # a mapped metric, or None for an expression operand
    operand: str | None  # "Message.Signal" when an expression uses it
    invalid_raw: frozenset[int]


@dataclass(slots=True)
class _Route:
    message: Any  # cantools Message
    targets: list[_Target]
    length: int = 0
    needs_big: bool = False
    needs_little: bool = False
    cantools: bool = False  # float signals: decoded by cantools
    plan: list[tuple[Any, ...]] = field(default_factory=list)  # the targets, flat, for speed
    code_pages: dict[int, int] | None = None  # mux value -> page index
    code_signals: dict[int, Any] | None = None  # mux value -> cantools Signal
    extended: bool = False  # the frame's id must carry the same extended flag
    fd: bool = False
    e2e: Protection | None = None  # checksum and alive counter, when configured


@dataclass(slots=True)
class _Derived:
    metric: str
    expression: Expression
    keys: dict[str, str]  # operand as written -> "Message.Signal" (+ its invalid_raw)
    lo: float = -math.inf  # the metric's own minimum/maximum
    hi: float = math.inf


@dataclass
class DecoderStats:
    """What the decoder saw: mapped frames, readings out, and every drop with its reason."""

    frames: int = 0
    readings: int = 0
    dropped: Counter[str] = field(default_factory=Counter)  # reason -> count
    dropped_by_metric: Counter[str] = field(default_factory=Counter)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


class Decoder:
    """Decodes the frames the mapping uses; keyed by (bus name, frame id).

    Signal metrics are read with precompiled shifts; derived metrics (``expression``)
    are evaluated when one of their operands arrives and every operand is no older
    than ``health.bms_timeout_s``; the pack code pages go through cantools.
    """

    def __init__(self, config: AgentConfig, db: cantools.database.Database) -> None:
        self.stats = DecoderStats()
        self.database = db  # the ignition's value table and cycle (dbc.resolve_ignition)
        self._routes: dict[tuple[str, int], _Route] = {}
        self._max_age = config.health.bms_timeout_s
        self._operands: dict[str, tuple[float, float]] = {}  # key -> (value, time)
        self._derived_by_operand: dict[str, list[_Derived]] = {}
        default_bus = config.buses[0].name
        for metric, ref in config.metrics.items():
            bus = ref.bus or default_bus
            limits = (ref.minimum, ref.maximum)
            if ref.message is not None and ref.signal is not None:
                msg = db.get_message_by_name(ref.message)
                sig = msg.get_signal_by_name(ref.signal)
                invalid = frozenset(ref.invalid_raw if isinstance(ref.invalid_raw, list) else [])
                self._add(bus, msg, sig, metric, None, invalid, limits)
            elif ref.expression is not None:
                expr = parse_expression(ref.expression)
                keys = {}
                for operand in expr.operands:
                    msg, sig = resolve_operand(db, operand)
                    raw = ref.invalid_raw
                    invalid = frozenset(raw.get(operand, ()) if isinstance(raw, dict) else raw)
                    key = f"{msg.name}.{sig.name}"
                    if invalid:  # its own guard: not shared with an unguarded use
                        key += "#" + ",".join(str(v) for v in sorted(invalid))
                    keys[operand] = key
                    if key not in self._derived_by_operand:
                        self._add(bus, msg, sig, None, key, invalid)
                    self._derived_by_operand.setdefault(key, [])
                lo = -math.inf if ref.minimum is None else ref.minimum - 1e-9
                hi = math.inf if ref.maximum is None else ref.maximum + 1e-9
                derived = _Derived(metric, expr, keys, lo, hi)
                for key in set(keys.values()):
                    self._derived_by_operand.setdefault(key, []).append(derived)
        pc = config.pack_code
        self._mux_signal = pc.mux_signal
        # layouts other than DBC multiplexing (frame-index pages, J1939): their own reader
        self._code_readers: dict[tuple[str, int], CodeReader] = {}
        reader = code_reader(pc, db)
        if reader is not None:
            for fid, _extended in reader.frame_ids():
                self._code_readers[(pc.bus or default_bus, fid)] = reader
        elif pc.source == "pages":
            msg = db.get_message_by_name(pc.message)
            route = self._route(pc.bus or default_bus, msg)
            route.code_pages, route.code_signals = {}, {}
            for index, name in enumerate(pc.pages):
                sig = msg.get_signal_by_name(name)
                for mux_value in sig.multiplexer_ids or ():
                    route.code_pages[mux_value] = index
                    route.code_signals[mux_value] = sig
        self.e2e = E2EStats()
        known = {m.name for m in db.messages}
        for name, e2e in config.e2e.items():
            if name not in known:  # the agent's answer frame: in its own namespace
                continue
            route_key = (e2e.bus or default_bus, db.get_message_by_name(name).frame_id)
            if route_key in self._routes:  # the answer frame is checked by the owner channel
                self._routes[route_key].e2e = Protection(self._routes[route_key].message, e2e)

    def _route(self, bus: str, message: Any) -> _Route:
        key = (bus, message.frame_id)
        if key not in self._routes:
            self._routes[key] = _Route(
                message=message,
                targets=[],
                length=message.length,
                extended=bool(message.is_extended_frame),
                fd=bool(getattr(message, "is_fd", False)),
            )
        return self._routes[key]

    def _add(
        self,
        bus: str,
        message: Any,
        sig: Any,
        metric: str | None,
        operand: str | None,
        invalid_raw: frozenset[int],
        limits: tuple[float | None, float | None] = (None, None),
    ) -> None:
        """``limits``: the metric's own minimum and maximum, on top of the DBC range."""
        route = self._route(bus, message)
        reader = FieldReader.compile(message, sig)
        for r in (reader, reader.mux):
            if r is not None:
                route.needs_big |= r.big_endian
                route.needs_little |= not r.big_endian
        route.cantools |= reader.is_float
        target = _Target(reader, metric, operand, invalid_raw)
        route.targets.append(target)
        r = reader
        mux = None if r.mux is None else (r.mux.big_endian, r.mux.shift, r.mux.mask, r.mux_ids)
        lo = -math.inf if r.minimum is None else r.minimum - 1e-9
        hi = math.inf if r.maximum is None else r.maximum + 1e-9
        if limits[0] is not None:
            lo = max(lo, limits[0] - 1e-9)
        if limits[1] is not None:
            hi = min(hi, limits[1] + 1e-9)
        route.plan.append(
            (metric, operand, invalid_raw or None, r.big_endian, r.shift, r.mask, r.sign_bit,
             r.divisor, r.scale, r.offset, lo, hi, mux, r.is_float, target)
        )  # fmt: skip

    def frame_ids(self, bus: str) -> list[tuple[int, bool]]:
        """(frame id, extended) for every frame this decoder wants from ``bus``: the filters."""
        wanted = {
            (fid, bool(r.message.is_extended_frame))
            for (b, fid), r in self._routes.items()
            if b == bus
        }
        for (b, _fid), reader in self._code_readers.items():
            if b == bus:
                wanted.update(reader.frame_ids())
        return sorted(wanted)

    def decode(self, bus: str, frame: can.Message, now: float) -> list[Reading | CodePage]:
        route = self._routes.get((bus, frame.arbitration_id))
        if route is None:
            if frame.is_error_frame:
                self._drop("error frame")
            elif self._code_readers and (bus, frame.arbitration_id) in self._code_readers:
                if frame.is_remote_frame:
                    self._drop(f"0x{frame.arbitration_id:X}: remote frame")
                    return []
                return self._code_pages(bus, frame, now)
            return []
        self.stats.frames += 1
        message = route.message
        if (
            frame.is_extended_id is not route.extended
            or frame.is_fd is not route.fd
            or frame.is_remote_frame
            or frame.is_error_frame
            or len(frame.data) != route.length
        ):  # inline: the one check every mapped frame pays; the reason only when it fails
            self._drop(
                f"{message.name}: {frame_problem(frame, route.extended, route.fd, route.length)}"
            )
            return []
        data = bytes(frame.data)
        if route.e2e is not None:
            reason = route.e2e.check(data, now, self.e2e)
            if reason is not None:
                self.e2e.refused[f"{message.name}: {reason}"] += 1
                self._drop(f"{message.name}: e2e {reason}")
                return []
        little = int.from_bytes(data, "little") if route.needs_little else 0
        big = int.from_bytes(data, "big") if route.needs_big else 0
        values: dict[str, Any] | None = None
        if route.cantools or route.code_pages is not None:
            try:
                values = message.decode(data, decode_choices=False)
            except Exception:  # cantools: DecodeError, KeyError for unknown mux values, ...
                self._drop(f"{message.name}: undecodable")
                return []
        out: list[Reading | CodePage] = []
        touched: list[str] | None = None
        for (metric, operand, invalid, big_endian, shift, mask, sign_bit, divisor, scale,
             offset, lo, hi, mux, is_float, t) in route.plan:  # fmt: skip
            if mux is not None:
                m_big, m_shift, m_mask, m_ids = mux
                if ((big if m_big else little) >> m_shift) & m_mask not in m_ids:
                    continue  # another page of a multiplexed message
            if is_float:
                if values is None or t.field.name not in values:
                    continue
                value = float(values[t.field.name])
            else:
                raw = ((big if big_endian else little) >> shift) & mask
                if sign_bit and raw & sign_bit:
                    raw -= mask + 1
                if invalid and raw in invalid:
                    self._drop(f"{message.name}.{t.field.name}: raw {raw} is invalid_raw", metric)
                    if operand is not None:  # "not available": no stale value stands in
                        self._operands.pop(operand, None)
                    continue
                value = raw / divisor + offset if divisor else raw * scale + offset
            if value < lo or value > hi:
                self._drop(f"{message.name}.{t.field.name}: {value:g} outside its range", metric)
                if operand is not None:
                    self._operands.pop(operand, None)
                continue
            if metric is not None:
                out.append(Reading(metric, value, now))
            if operand is not None:
                self._operands[operand] = (value, now)
                if touched is None:
                    touched = []
                touched.append(operand)
        if touched:
            out += self._derive(touched, now)
        if values is not None and route.code_pages is not None and route.code_signals is not None:
            mux = values.get(self._mux_signal)
            if mux in route.code_pages:
                sig = route.code_signals[mux]
                out.append(CodePage(route.code_pages[mux], _text(values[sig.name], sig), now))
        self.stats.readings += len(out)
        return out

    def _code_pages(self, bus: str, frame: can.Message, now: float) -> list[Reading | CodePage]:
        reader = self._code_readers.get((bus, frame.arbitration_id))
        if reader is None:
            return []
        self.stats.frames += 1
        pages: list[Reading | CodePage] = list(reader.feed(frame, now))
        if reader.drops:
            self.stats.dropped.update(reader.drops)
            reader.drops.clear()
        self.stats.readings += len(pages)
        return pages

    def _derive(self, touched: list[str], now: float) -> list[Reading]:
        """Derived metrics whose operand just arrived, when every operand is fresh."""
        out: list[Reading] = []
        done: set[str] = set()
        for key in touched:
            for d in self._derived_by_operand.get(key, ()):
                if d.metric in done:
                    continue
                done.add(d.metric)
                operands: dict[str, float] = {}
                for name, k in d.keys.items():
                    got = self._operands.get(k)
                    if got is None or now - got[1] > self._max_age:
                        break
                    operands[name] = got[0]
                else:
                    try:
                        value = d.expression.evaluate(operands)
                    except (ArithmeticError, ValueError):
                        value = math.nan
                    if not math.isfinite(value):
                        self._drop(f"{d.metric}: {d.expression.text} not computable", d.metric)
                    elif value < d.lo or value > d.hi:
                        self._drop(f"{d.metric}: {value:g} outside its range", d.metric)
                    else:
                        out.append(Reading(d.metric, value, now))
        return out

    def _drop(self, reason: str, metric: str | None = None) -> None:
        self.stats.dropped[reason] += 1
        if metric is not None:
            self.stats.dropped_by_metric[metric] += 1


def frame_problem(frame: can.Message, extended: bool, fd: bool, length: int) -> str | None:
    """Why a frame on a mapped id is not the database's message, or None: an error or
    remote frame, the other id format (an extended 0x3A3 is not the standard 0x3A3),
    CAN FD where the message is classic (or the reverse), another length."""
    if frame.is_error_frame:
        return "error frame"
    if frame.is_remote_frame:
        return "remote frame"
    if frame.is_extended_id != extended:
        return "extended id" if frame.is_extended_id else "standard id"
    if frame.is_fd != fd:
        return "CAN FD frame" if frame.is_fd else "classic frame"
    if len(frame.data) != length:
        return f"{len(frame.data)} bytes, expected {length}"
    return None


def _divisor(scale: float) -> float:
    if 0 < abs(scale) < 1:
        inverse = 1 / scale
        if abs(inverse - round(inverse)) < 1e-9:
            return float(round(inverse))
    return 0.0


def _text(raw: Any, sig: Any) -> str:
    """A whole-byte integer signal holding ASCII, first character in the lowest byte."""
    data = int(raw).to_bytes(
        sig.length // 8, "little" if sig.byte_order == "little_endian" else "big"
    )
    return data.decode("latin-1").rstrip("\x00 ")


class CodeAssembler:
    """Rebuilds a multi-page code; accepts it only after ``confirmations`` complete, equal sets.

    Pages may arrive in any order, interleaved, some lost; a page that changes
    mid-set starts a new set, so a mixed old/new code is never accepted.
    """

    def __init__(self, pages: int, confirmations: int) -> None:
        self._n = pages
        self._need = confirmations
        self._current: dict[int, str] = {}
        self._candidate: str | None = None
        self._seen = 0

    def feed(self, page: CodePage) -> str | None:
        """Returns the code each time it is (re)confirmed, else None."""
        old = self._current.get(page.page)
        if old is not None and old != page.text:
            self._current = {}
            self._candidate, self._seen = None, 0
        self._current[page.page] = page.text
        if len(self._current) < self._n:
            return None
        code = "".join(self._current[i] for i in range(self._n))
        self._current = {}
        if code != self._candidate:
            self._candidate, self._seen = code, 0
        self._seen += 1
        return code if self._seen >= self._need else None
