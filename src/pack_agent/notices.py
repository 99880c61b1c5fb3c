"""Owner notices: which notice is open, when it is due again, what the owner answered.

Pure bookkeeping with time passed in; the agent persists ``to_state()`` after
every change so a restart neither re-sends early nor forgets an open notice.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# Notice ids the head unit resolves through the message catalogue.
NOTICE_ID_BY_SEVERITY = {"advisory": 0x0101, "critical": 0x0201}
SEVERITY_CODE = {"info": 0, "advisory": 1, "critical": 2}
ACK_RESPONSES = {1: "seen", 2: "dismissed", 3: "service_booked"}


@dataclass
class Notice:
    notice_id: int
    severity: str
    rule_id: str
    seq: int  # 8-bit rolling number on the bus, echoed by the head unit
    opened_at: float
    attempts: int = 0
    last_attempt: float | None = None
    acknowledged_at: float | None = None
    response: str | None = None

    @property
    def open(self) -> bool:
        return self.acknowledged_at is None


@dataclass(frozen=True)
class NoticeAck:
    seq: int
    notice_id: int
    response: str


class NoticeBook:
    def __init__(
        self, repeat_interval_s: float, max_attempts: int, state: dict[str, Any] | None = None
    ) -> None:
        self._interval = repeat_interval_s
        self._max = max_attempts
        state = state or {}
        self._next_seq: int = state.get("next_seq", 1)
        self.notices: list[Notice] = [Notice(**n) for n in state.get("notices", [])]

    def to_state(self) -> dict[str, Any]:
        return {"next_seq": self._next_seq, "notices": [asdict(n) for n in self.notices]}

    def open_notice(self, rule_id: str, severity: str, now: float) -> Notice:
        notice = Notice(
            notice_id=NOTICE_ID_BY_SEVERITY[severity],
            severity=severity,
            rule_id=rule_id,
            seq=self._next_seq,
            opened_at=now,
        )
        self._next_seq = self._next_seq % 255 + 1  # 1..255; 0 means "none" on the bus
        self.notices.append(notice)
        return notice

    def due(self, now: float) -> list[Notice]:
        """Open notices whose next attempt is due: at once, then every interval, up to the cap."""
        out = []
        for n in self.notices:
            if not n.open or n.attempts >= self._max:
                continue
            if n.last_attempt is None or now - n.last_attempt >= self._interval:
                out.append(n)
            elif now < n.last_attempt:  # the clock went back: wait a full interval from now
                n.last_attempt = now
        return out

    def record_attempt(self, notice: Notice, now: float) -> None:
        notice.attempts += 1
        notice.last_attempt = now

    def on_ack(self, ack: NoticeAck, now: float) -> Notice | None:
        """The open notice this answer belongs to, now acknowledged; None for a stray answer."""
        for n in self.notices:
            if n.open and n.seq == ack.seq and n.notice_id == ack.notice_id:
                n.acknowledged_at = now
                n.response = ack.response
                return n
        return None

    def clear(self) -> None:
        """A new pack: notices about the old one are closed by replacement, not by the owner."""
        self.notices = [n for n in self.notices if not n.open]
