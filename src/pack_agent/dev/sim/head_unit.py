"""The virtual head unit: shows owner notices from the catalogue and answers them.

It reassembles the text lines (outlet, phone, the maker's procedure, the
emergency phone, pack ownership, an early notice's horizon) from ``PA_NoticeText``
pages, resolves
``PA_NoticeId`` through the same catalogue file the agent ships, and answers
each showing after ``delay_s`` of simulated time with the next answer of its
script (``"seen"``, ``"dismissed"``, ``"service_booked"``, or None: no answer).
Each showing is first confirmed as ``displayed``. Every answer echoes the attempt's
challenge with a freshness value, the E2E counter and CRC, and (with ``key``) the MAC.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pack_agent.canbus.dbc import decode_signals
from pack_agent.core.catalogue import (
    DEFAULT_CATALOGUE,
    NoticeText,
    NoticeValues,
    load_catalogue,
)
from pack_agent.core.notices import ACK_RESPONSES
from pack_agent.dev.sim.protect import encode

if TYPE_CHECKING:
    import can
    import cantools.database

DAY = 86400.0
RESPONSE_CODES = {name: code for code, name in ACK_RESPONSES.items()} | {"displayed": 4}


@dataclass
class Shown:
    """A notice as the owner saw it on the head unit."""

    time: float
    seq: int
    notice_id: int
    attempt: int
    text: NoticeText | None
    outlet: str | None = None  # the outlet text received over CAN, None if none arrived


class VirtualHeadUnit:
    """Shows notices and answers each showing after ``delay_s``: ``response`` is one answer
    for every showing, or a script (one entry per showing of the same notice, the last one
    repeating; None = leave that showing unanswered)."""

    def __init__(
        self,
        db: cantools.database.Database,
        response: str | Sequence[str | None] | None = "seen",
        delay_s: float = 2 * DAY,
        outlet: str = "",
        on_show: Callable[[Shown], None] | None = None,
        phone: str = "",
        catalogue: Path = DEFAULT_CATALOGUE,
        key: bytes | None = None,
        display: bool = True,
    ) -> None:
        self._db = db
        self._mac = None
        if key is not None:
            from pack_agent.delivery.secoc import AnswerMac

            self._mac = AnswerMac(key, db.get_message_by_name("HU_NoticeAck").frame_id)
        self._display = display
        self._challenges: dict[tuple[int, int], tuple[int, int]] = {}  # -> (challenge, fresh)
        self._displays: list[tuple[int, int]] = []  # showings to confirm as displayed
        self._notice = db.get_message_by_name("PA_OwnerNotice")
        self._text_msg = db.get_message_by_name("PA_NoticeText")
        script = [response] if response is None or isinstance(response, str) else response
        self._script: list[str | None] = list(script) or [None]
        self._delay = delay_s
        self._catalogue_path = catalogue
        self._own = (outlet, phone)  # used when no outlet text arrives
        self._entries: dict[int, NoticeText] | None = None
        self._on_show = on_show
        self._pages: dict[int, dict[int, bytes]] = {}  # seq -> page -> 5 bytes
        self._page_counts: dict[int, int] = {}
        self._showings: dict[tuple[int, int], int] = {}  # (seq, id) -> times shown
        self._pending: dict[tuple[int, int], tuple[float, str]] = {}  # -> (answer time, answer)
        self.shown: list[Shown] = []
        self.answered: list[tuple[float, int, int, str]] = []  # (time, seq, id, answer)
        self.withdrawn: list[tuple[int, int]] = []

    def _resolve(self, nid: int, values: NoticeValues) -> NoticeText | None:
        if self._entries is None:
            self._entries = load_catalogue(self._catalogue_path)
        entry = self._entries.get(nid)
        return entry.render(values) if entry is not None else None

    def on_frame(self, frame: can.Message, now: float) -> None:
        if frame.arbitration_id == self._text_msg.frame_id:
            v = decode_signals(self._text_msg, bytes(frame.data))
            seq, count = int(v["PA_TextSeq"]), int(v["PA_TextPageCount"])
            if self._page_counts.get(seq) != count:  # a new text for this notice
                self._pages[seq], self._page_counts[seq] = {}, count
            chunk = int(v["PA_TextData"]).to_bytes(5, "little")
            self._pages[seq][int(v["PA_TextPage"])] = chunk
            return
        if frame.arbitration_id != self._notice.frame_id:
            return
        v = decode_signals(self._notice, bytes(frame.data))
        key = seq, nid = int(v["PA_NoticeSeq"]), int(v["PA_NoticeId"])
        if int(v["PA_NoticeAction"]) != 1:
            self._pending.pop(key, None)
            self.withdrawn.append(key)
            return
        received = self._outlet_text(seq, int(v.get("PA_NoticeTextLength", 0)))
        if received:
            values = NoticeValues.from_text(received)
        else:
            values = NoticeValues(outlet=self._own[0], phone=self._own[1])
        text = self._resolve(nid, values)
        self._challenges[key] = (int(v.get("PA_NoticeChallenge", 0)), 0)  # a new attempt
        if self._display:
            self._displays.append(key)
        shown = Shown(now, seq, nid, int(v["PA_NoticeAttempt"]), text, received)
        self.shown.append(shown)
        if self._on_show is not None:
            self._on_show(shown)
        n = self._showings[key] = self._showings.get(key, 0) + 1
        answer = self._script[min(n, len(self._script)) - 1]
        if answer is not None and key not in self._pending:
            self._pending[key] = (now + self._delay, answer)

    def _outlet_text(self, seq: int, length: int) -> str | None:
        """The text sent before this showing; pages are used once."""
        pages = self._pages.pop(seq, {})
        self._page_counts.pop(seq, None)
        need = -(-length // 5)
        if not length or any(i not in pages for i in range(need)):
            return None
        text = b"".join(pages[i] for i in range(need))[:length].decode("utf-8", "replace")
        return text if "\n" in text else None

    def next_answer_at(self) -> float | None:
        """When the next scripted answer is due (simulated time), None if none is pending."""
        return min((at for at, _ in self._pending.values()), default=None)

    def answers_due(self, now: float) -> list[can.Message]:
        out = [self._answer(key, "displayed", now) for key in self._displays]
        self._displays = []
        for key, (at, answer) in list(self._pending.items()):
            if now >= at:
                del self._pending[key]
                seq, nid = key
                self.answered.append((now, seq, nid, answer))
                out.append(self._answer(key, answer, now))
        return out

    def _answer(self, key: tuple[int, int], answer: str, now: float) -> can.Message:
        """The answer frame for the latest showing of notice ``key``."""
        challenge, fresh = self._challenges.get(key, (0, 0))
        fresh = min(fresh + 1, 255)
        self._challenges[key] = (challenge, fresh)
        seq, code = key[0], RESPONSE_CODES[answer]
        values = {
            "HU_AckSeq": seq,
            "HU_AckResponse": code,
            "HU_AckChallenge": challenge,
            "HU_AckFreshness": fresh,
            "HU_AckMac": self._mac.mac(seq, code, challenge, fresh) if self._mac else 0,
        }
        return encode(self._db, "HU_NoticeAck", values, now)
