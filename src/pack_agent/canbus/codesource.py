"""Pack-code layouts that are not DBC multiplexing: frame-index pages and J1939 transport.

BMSs broadcast their identity in several layouts, and the layout is configuration
(``[pack_code]``), never code:

- ``source = "pages"`` with ``page_signals``: a plain page-number signal (not a DBC
  multiplexer) and several one-byte signals per page, as many T-Box firmwares
  rebuild the code: page *n* has index value ``first_page + n``; its characters are
  the listed signals' bytes in the order listed; pages join in index order.
- ``source = "j1939"``: SAE J1939-21 transport protocol broadcast (TP.CM BAM announcing
  the PGN, then TP.DT packets) from one source address, as commercial-vehicle BMSs send
  identification; the reassembled text (or one ``*``-separated field of it) is the code.

Both hand the agent ``CodePage``s, like the DBC-multiplexed pages in ``decoder``: the
``CodeAssembler`` then asks for the same complete code ``confirmations`` times. A
reader never raises on a bad frame: it drops it and says why in ``drops``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pack_agent.core.readings import CodePage

if TYPE_CHECKING:
    import can
    import cantools.database

    from pack_agent.config.settings import PackCodeSource

# SAE J1939-21 transport protocol
TP_CM_PF = 0xEC  # connection management (PGN 60416)
TP_DT_PF = 0xEB  # data transfer (PGN 60160)
BAM = 0x20  # broadcast announce message control byte
ABORT = 0xFF
GLOBAL = 0xFF  # destination address of a broadcast
T1_S = 0.75  # J1939-21: a receiver gives up 750 ms after the last packet
MAX_BAM_BYTES = 1785  # 255 packets of 7 bytes
_PADDING = "\x00\xff *"


def j1939_id(priority: int, pf: int, ps: int, sa: int) -> int:
    """The 29-bit identifier of a J1939 frame (data page 0)."""
    return (priority & 0x7) << 26 | pf << 16 | ps << 8 | sa


class IndexedPages:
    """Frame-index pages: a plain index signal and one-byte character signals."""

    def __init__(
        self,
        message: Any,
        index_signal: str,
        page_signals: list[str],
        page_count: int,
        first_page: int,
    ) -> None:
        self.message = message
        self._index = index_signal
        self._chars = page_signals
        self._first = first_page
        self._count = page_count
        self.drops: Counter[str] = Counter()

    def frame_ids(self) -> list[tuple[int, bool]]:
        return [(self.message.frame_id, bool(self.message.is_extended_frame))]

    def feed(self, frame: can.Message, now: float) -> list[CodePage]:
        data = bytes(frame.data)
        if len(data) < self.message.length:
            self.drops[
                f"{self.message.name}: {len(data)} bytes, expected {self.message.length}"
            ] += 1
            return []
        try:
            values = self.message.decode(
                data[: self.message.length], decode_choices=False, scaling=False
            )
        except Exception:
            self.drops[f"{self.message.name}: undecodable"] += 1
            return []
        page = int(values[self._index]) - self._first
        if not 0 <= page < self._count:
            self.drops[f"{self.message.name}: page index {page + self._first} out of range"] += 1
            return []
        raw = bytes(int(values[s]) & 0xFF for s in self._chars)
        return [CodePage(page, raw.decode("latin-1").rstrip(_PADDING), now)]


@dataclass
class _Transfer:
    pgn: int
    size: int
    packets: int
    started: float
    last: float
    data: bytearray = field(default_factory=bytearray)
    next_seq: int = 1


class J1939Transport:
    """SAE J1939-21 BAM reassembly from one source address, pure: frames and times in,
    complete (pgn, payload) out.

    The rules it keeps (J1939-21, 5.10.3): a BAM announces size (9-1785 bytes),
    packet count (ceil(size / 7)) and PGN; packets carry sequence numbers 1..n in
    order; a new BAM from the same source abandons the transfer in progress; a
    packet out of sequence, or more than T1 (750 ms) after the previous one,
    abandons it too; bytes past the announced size are padding.
    """

    def __init__(self, source_address: int, pgn: int | None = None) -> None:
        self.source_address = source_address
        self.pgn = pgn  # only this PGN's transfers are kept (None: every PGN)
        self._transfer: _Transfer | None = None
        self.drops: Counter[str] = Counter()

    def feed(self, can_id: int, data: bytes, now: float) -> tuple[int, bytes] | None:
        pf, ps, sa = (can_id >> 16) & 0xFF, (can_id >> 8) & 0xFF, can_id & 0xFF
        if sa != self.source_address or ps != GLOBAL:
            return None
        if pf == TP_CM_PF:
            self._connection(data, now)  # announces a transfer: no code yet
            return None
        if pf == TP_DT_PF:
            return self._packet(data, now)
        return None

    def _connection(self, data: bytes, now: float) -> None:
        if len(data) < 8:
            self.drops["TP.CM shorter than 8 bytes"] += 1
            return None
        control = data[0]
        if control == ABORT:
            self._abandon("TP.CM abort")
            return None
        if control != BAM:
            return None  # RTS/CTS are for a destination, not a broadcast
        size = int.from_bytes(data[1:3], "little")
        packets = data[3]
        pgn = int.from_bytes(data[5:8], "little")
        if self.pgn is not None and pgn != self.pgn:
            return None
        if not 9 <= size <= MAX_BAM_BYTES or packets != -(-size // 7):
            self.drops[f"TP.CM BAM: size {size} with {packets} packets"] += 1
            self._transfer = None
            return None
        if self._transfer is not None:
            self._abandon("a new BAM before the last packet")
        self._transfer = _Transfer(pgn, size, packets, now, now)
        return None

    def _packet(self, data: bytes, now: float) -> tuple[int, bytes] | None:
        t = self._transfer
        if t is None:
            return None  # a packet of a transfer we did not see begin (or another PGN's)
        if len(data) < 8:
            self._abandon("TP.DT shorter than 8 bytes")
            return None
        if now - t.last > T1_S:
            self._abandon("more than 750 ms between packets")
            return None
        if data[0] != t.next_seq:
            self._abandon(f"packet {data[0]} where {t.next_seq} was due")
            return None
        t.data += data[1:8]
        t.next_seq += 1
        t.last = now
        if t.next_seq <= t.packets:
            return None
        self._transfer = None
        return t.pgn, bytes(t.data[: t.size])

    def _abandon(self, why: str) -> None:
        if self._transfer is not None:
            self.drops[f"J1939 transfer abandoned: {why}"] += 1
        self._transfer = None


class J1939Code:
    """The pack code as a J1939 BAM payload (or one ``*``-separated field of it)."""

    def __init__(self, pgn: int, source_address: int, field_index: int | None) -> None:
        self.transport = J1939Transport(source_address, pgn)
        self._field = field_index

    @property
    def drops(self) -> Counter[str]:
        return self.transport.drops

    def frame_ids(self) -> list[tuple[int, bool]]:
        sa = self.transport.source_address
        return sorted(
            (j1939_id(p, pf, GLOBAL, sa), True) for p in range(8) for pf in (TP_CM_PF, TP_DT_PF)
        )

    def feed(self, frame: can.Message, now: float) -> list[CodePage]:
        if not frame.is_extended_id:
            return []
        done = self.transport.feed(frame.arbitration_id, bytes(frame.data), now)
        if done is None:
            return []
        text = done[1].decode("latin-1")
        if self._field is not None:
            fields = text.split("*")
            if self._field >= len(fields):
                self.drops[f"J1939 PGN {done[0]}: no field {self._field}"] += 1
                return []
            text = fields[self._field]
        return [CodePage(0, text.strip(_PADDING), now)]


CodeReader = IndexedPages | J1939Code


def code_reader(pc: PackCodeSource, db: cantools.database.Database) -> CodeReader | None:
    """The reader for the configured layout; None for DBC-multiplexed pages (the decoder's
    own), UDS and none."""
    if pc.source == "j1939" and pc.j1939_pgn is not None and pc.j1939_source_address is not None:
        return J1939Code(pc.j1939_pgn, pc.j1939_source_address, pc.j1939_field)
    if pc.source == "pages" and pc.page_signals:
        msg = db.get_message_by_name(pc.message)
        return IndexedPages(msg, pc.mux_signal, pc.page_signals, page_total(pc), pc.first_page)
    return None


def page_total(pc: PackCodeSource) -> int:
    """How many pages make one code: the assembler's ``pages``."""
    if pc.source == "j1939":
        return 1
    if pc.source == "pages":
        return pc.page_count if pc.page_signals and pc.page_count else len(pc.pages)
    return 1
