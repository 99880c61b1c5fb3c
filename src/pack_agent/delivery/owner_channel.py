"""The owner channels: notices to the head unit over CAN (and its answers), and a copy
for the maker's app through the outbox.

``OwnerChannel`` is the extension point. ``CanOwnerChannel`` speaks the
reference database's ``PA_NoticeText`` / ``PA_OwnerNotice`` / ``HU_NoticeAck``
handshake; ``OutboxOwnerChannel`` is the second channel: its "send" is an
``owner.notice`` event that the agent appends to the outbox in the same
transaction as the attempt, so the uplink publishes it like every event.
"""

from __future__ import annotations

import math
import secrets
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from pack_agent.canbus.dbc import complete_values, decode_signals
from pack_agent.canbus.decoder import frame_problem
from pack_agent.canbus.e2e import E2EStats, Protection
from pack_agent.core.catalogue import NoticeValues
from pack_agent.core.notices import (
    ACK_RESPONSES,
    MAX_TEXT_BYTES,
    SEVERITY_CODE,
    TEXT_BYTES_PER_PAGE,
    Notice,
    NoticeAck,
)
from pack_agent.errors import BusError

if TYPE_CHECKING:
    import can
    import cantools.database

    from pack_agent.config import AgentConfig, E2ESettings
    from pack_agent.core.catalogue import NoticeText

Extra = tuple[str, dict[str, Any]]  # (event type, data) to append with the attempt

DISPLAYED = "displayed"  # HU_AckResponse 4: on screen, not an answer by the owner
RESPONSES = {**ACK_RESPONSES, 4: DISPLAYED}
# attempts of one notice whose answers are still taken: a head unit answers the showing on
# its screen, which newer attempts (it slept through, or has not read yet) may have followed.
# 64 covers every attempt of a notice under the default max_attempts (60); the freshness
# value per challenge still refuses an answer taken once, replayed
RECENT_CHALLENGES = 64


@dataclass
class _Attempt:
    """One open notice (by sequence number) as the answers see it: its recent challenges
    and their freshness are in the notice (persisted with it); guessing counts here."""

    notice: Notice
    bad_macs: int = 0
    voided: bool = False  # too many bad MACs: only the next attempt can be answered
    displayed: set[int] = field(default_factory=set)  # challenges reported on screen


class OwnerChannel(ABC):
    """Shows a notice to the owner and recognises the owner's answer."""

    channel: str

    @abstractmethod
    def send(self, notice: Notice, now: float) -> list[Extra]:
        """Shows ``notice`` (its attempt number is ``notice.attempts``). Returns events to
        record with the attempt. Raises ``BusError`` when the notice could not be sent."""

    def withdraw(self, notice: Notice) -> None:  # noqa: B027 - optional
        """Removes a notice that is showing (its pack was replaced); best effort."""

    def parse_ack(self, bus: str, frame: can.Message) -> NoticeAck | None:
        """The answer carried by ``frame``; None if it is not one (or it is refused)."""
        return self.read_ack(bus, frame, frame.timestamp)[1]

    def read_ack(self, bus: str, frame: can.Message, now: float) -> tuple[bool, NoticeAck | None]:
        """(the frame proves the head unit alive, the answer it carries or None)."""
        return False, None

    def is_ack_frame(self, bus: str, frame: can.Message) -> bool:
        """``frame`` is an answer frame of this channel, valid or not (the head unit is alive)."""
        return False

    def frame_ids(self, bus: str) -> list[tuple[int, bool]]:
        """Frame ids this notifier must receive on ``bus`` (for the bus filters)."""
        return []

    def restore(self, notices: list[Notice]) -> None:  # noqa: B027 - optional
        """The open notices after a restart: their latest attempts can still be answered."""


def text_pages(text: str) -> list[bytes]:
    """``text`` as UTF-8 in pages of ``TEXT_BYTES_PER_PAGE`` bytes, the last NUL-padded."""
    data = text.encode("utf-8")
    if len(data) > MAX_TEXT_BYTES:
        raise ValueError(f"notice text is {len(data)} bytes, at most {MAX_TEXT_BYTES} fit")
    n = math.ceil(len(data) / TEXT_BYTES_PER_PAGE)
    return [
        data[i * TEXT_BYTES_PER_PAGE : (i + 1) * TEXT_BYTES_PER_PAGE].ljust(
            TEXT_BYTES_PER_PAGE, b"\0"
        )
        for i in range(n)
    ]


class CanOwnerChannel(OwnerChannel):
    """One attempt = the text pages (``PA_NoticeText``: the lines of ``NoticeValues``, with
    the notice's own horizon), then ``PA_OwnerNotice``. ``text`` (the first format: outlet
    LF phone) is used as is when no ``values`` are given."""

    channel = "can"
    verify_attempt = True  # the challenge and freshness must match the latest attempt

    def __init__(
        self,
        bus_name: str,
        bus: can.BusABC,
        db: cantools.database.Database,
        notice_message: str,
        ack_message: str,
        text_message: str | None = "PA_NoticeText",
        text: str = "",
        values: NoticeValues | None = None,
        e2e: E2ESettings | None = None,
        key: bytes | None = None,
        max_bad_macs: int = 8,
    ) -> None:
        self._bus_name = bus_name
        self._bus = bus
        self._notice = db.get_message_by_name(notice_message)
        self._ack = db.get_message_by_name(ack_message)
        self._values = values
        self._fixed = text if values is None else None
        self._text = db.get_message_by_name(text_message) if text_message else None
        self._texts: dict[float | None, bytes] = {}

        self._e2e = Protection(self._ack, e2e) if e2e is not None else None
        self.e2e = E2EStats()
        self._mac = None
        if key is not None:
            from pack_agent.delivery.secoc import AnswerMac

            self._mac = AnswerMac(key, self._ack.frame_id)
        self._max_bad_macs = max_bad_macs
        self._attempts: dict[int, _Attempt] = {}  # seq -> the latest attempt's challenge
        self.refused: Counter[str] = Counter()  # answer frames refused, by reason

    @property
    def base_text(self) -> str:
        """The text lines sent with a notice that has no horizon of its own."""
        if self._fixed is not None:
            return self._fixed
        return self._values.to_text() if self._values is not None else ""

    def text_for(self, notice: Notice) -> bytes:
        """The UTF-8 text sent with ``notice`` (b'' = none)."""
        if self._text is None:
            return b""
        if self._fixed is not None:
            return self._fixed.encode("utf-8")
        days = notice.within_days
        if days not in self._texts:
            assert self._values is not None
            self._texts[days] = replace(self._values, within_days=days).to_text().encode()
        return self._texts[days]

    def frame_ids(self, bus: str) -> list[tuple[int, bool]]:
        if bus != self._bus_name:
            return []
        return [(self._ack.frame_id, self._ack.is_extended_frame)]

    def encode(self, notice: Notice, action: int = 1, challenge: int = 0) -> bytes:
        values: dict[str, Any] = {
            "PA_NoticeChallenge": challenge,
            "PA_NoticeSeq": notice.seq,
            "PA_NoticeId": notice.notice_id,
            "PA_NoticeSeverity": SEVERITY_CODE[notice.severity],
            "PA_NoticeAction": action,
            "PA_NoticeAttempt": min(max(notice.attempts, 1), 255),
            "PA_NoticeTextLength": len(self.text_for(notice)) if action == 1 else 0,
        }
        return bytes(self._notice.encode(complete_values(self._notice, values)))

    def encode_text(self, notice: Notice) -> list[bytes]:
        text = self.text_for(notice)
        if self._text is None or not text:
            return []
        pages = text_pages(text.decode("utf-8"))
        out = []
        for i, chunk in enumerate(pages):
            values = {
                "PA_TextSeq": notice.seq,
                "PA_TextPage": i,
                "PA_TextPageCount": len(pages),
                "PA_TextData": int.from_bytes(chunk, "little"),
            }
            out.append(bytes(self._text.encode(complete_values(self._text, values))))
        return out

    def _frame(self, message: Any, data: bytes) -> can.Message:
        import can

        return can.Message(
            arbitration_id=message.frame_id, is_extended_id=message.is_extended_frame, data=data
        )

    def send(self, notice: Notice, now: float) -> list[Extra]:
        """Each attempt draws a new challenge: only an answer echoing it is taken."""
        challenge = secrets.randbits(16) or 1
        recent = [c for c in notice.challenges if c[2] != notice.attempts]  # a retry: again
        notice.challenges = [*recent, [challenge, 0, notice.attempts]][-RECENT_CHALLENGES:]
        frames = [self._frame(self._text, d) for d in self.encode_text(notice)]
        frames.append(self._frame(self._notice, self.encode(notice, challenge=challenge)))
        self._attempts[notice.seq] = _Attempt(notice)
        self._send_all(frames)
        return []

    def restore(self, notices: list[Notice]) -> None:
        for notice in notices:
            if notice.challenges or not self.verify_attempt:
                self._attempts[notice.seq] = _Attempt(notice)

    def withdraw(self, notice: Notice) -> None:
        """``PA_NoticeAction`` = Withdraw: remove a notice that is showing (pack replaced)."""
        self._attempts.pop(notice.seq, None)
        self._send_all([self._frame(self._notice, self.encode(notice, action=0))])

    def _send_all(self, frames: list[can.Message]) -> None:
        import can

        for frame in frames:
            try:
                self._bus.send(frame, timeout=0.5)
            except (can.CanError, OSError) as exc:
                raise BusError(
                    f"owner notice frame 0x{frame.arbitration_id:X} not sent on bus "
                    f"{self._bus_name!r}: {exc}"
                ) from exc

    def is_ack_frame(self, bus: str, frame: can.Message) -> bool:
        return bus == self._bus_name and frame.arbitration_id == self._ack.frame_id

    def _refuse(self, reason: str, alive: bool = False) -> tuple[bool, None]:
        self.refused[reason] += 1
        return alive, None

    def read_ack(self, bus: str, frame: can.Message, now: float) -> tuple[bool, NoticeAck | None]:
        """Checks in order: the frame's shape, its E2E checksum and counter, its MAC (with
        a key), then the notice's sequence number, the attempt's challenge and the
        freshness value. Only a frame that passes the first three proves the head unit
        alive; only one that passes all is an answer."""
        if not self.is_ack_frame(bus, frame):
            return False, None
        ack = self._ack
        problem = frame_problem(frame, ack.is_extended_frame, bool(ack.is_fd), ack.length)
        if problem is not None:
            return self._refuse(problem)
        data = bytes(frame.data)
        if self._e2e is not None:
            reason = self._e2e.check(data, now, self.e2e)
            if reason is not None:
                self.e2e.refused[f"{ack.name}: {reason}"] += 1
                return self._refuse(f"e2e {reason}")
        try:
            v = decode_signals(ack, data)
        except Exception:  # cantools: a value outside what the signal can take
            return self._refuse("undecodable")
        seq, code = int(v["HU_AckSeq"]), int(v["HU_AckResponse"])
        challenge, fresh = int(v["HU_AckChallenge"]), int(v["HU_AckFreshness"])
        attempt = self._attempts.get(seq)
        if self._mac is not None and self._mac.mac(seq, code, challenge, fresh) != int(
            v["HU_AckMac"]
        ):
            if attempt is not None:
                attempt.bad_macs += 1
                attempt.voided |= attempt.bad_macs >= self._max_bad_macs
            return self._refuse("mac")
        response = RESPONSES.get(code)
        if response is None:
            return self._refuse("response invalid", alive=True)
        if attempt is None:
            return self._refuse("no open attempt", alive=True)
        if attempt.voided:
            return self._refuse("challenge voided", alive=True)
        notice = attempt.notice
        answered = notice.attempts
        if self.verify_attempt:
            known = [c for c in notice.challenges if c[0] == challenge]
            if not known:  # another notice's, or one from long ago
                return self._refuse("challenge", alive=True)
            if fresh <= known[-1][1]:  # this answer, or an older one, again
                return self._refuse("freshness", alive=True)
            known[-1][1], answered = fresh, known[-1][2]
        if response == DISPLAYED:
            if challenge in attempt.displayed:
                return True, None  # shown again on the screen: reported once per attempt
            attempt.displayed.add(challenge)
        return True, NoticeAck(seq, notice.notice_id, response, answered)


class OutboxOwnerChannel(OwnerChannel):
    """The second channel (``[notice] mqtt_copy``): the notice with its catalogue texts and the
    service outlet as an ``owner.notice`` event, published on
    ``<prefix>/<vin>/events/owner.notice`` for the maker's app or after-sales system.
    Durable like every event; it never fails once the attempt is stored."""

    channel = "mqtt"

    def __init__(
        self,
        catalogue: dict[int, NoticeText],
        outlet: str,
        phone: str,
        values: NoticeValues | None = None,
    ) -> None:
        self._catalogue = catalogue
        self._outlet = outlet
        self._phone = phone
        self._values = values or NoticeValues(outlet=outlet, phone=phone)

    def send(self, notice: Notice, now: float) -> list[Extra]:
        entry = self._catalogue.get(notice.notice_id)
        if entry is not None:
            entry = entry.render(replace(self._values, within_days=notice.within_days))
        data: dict[str, Any] = {
            "notice_id": notice.notice_id,
            "name": entry.name if entry else None,
            "seq": notice.seq,
            "severity": notice.severity,
            "rule_id": notice.rule_id,
            "attempt": notice.attempts,
            "service_outlet": {"name": self._outlet, "phone": self._phone},
            "procedure_url": self._values.procedure,
            "emergency_phone": self._values.emergency_phone,
            "pack_ownership": self._values.ownership,
            "within_days": notice.within_days,
            "texts": entry.as_dict() if entry else {},
        }
        return [("owner.notice", data)]


def owner_notifiers(
    config: AgentConfig, bus_name: str, bus: can.BusABC, db: cantools.database.Database | None
) -> tuple[CanOwnerChannel | None, list[OwnerChannel]]:
    """The owner channels a configuration asks for: the head unit on ``bus`` (messages from
    ``db``, the agent's own namespace), and the copy for the maker's app where
    ``[notice] mqtt_copy`` is on. With ``[notice] channel = "none"`` there is no CAN
    channel and the copy is the notice (always on)."""
    from pack_agent.config import resolve_path
    from pack_agent.core.catalogue import load_catalogue
    from pack_agent.core.notices import notice_values

    n = config.notice
    key = None
    if n.key_file is not None:
        from pack_agent.config.load import read_key

        key = read_key(resolve_path(n.key_file, config.base_dir))
    values = notice_values(n)
    can_notifier = None
    if n.channel == "can":
        if db is None:
            raise ValueError("the CAN owner channel needs the notice database")
        can_notifier = CanOwnerChannel(
            bus_name,
            bus,
            db,
            n.message,
            n.ack_message,
            n.text_message,
            values=values,
            e2e=config.e2e.get(n.ack_message),
            key=key,
            max_bad_macs=n.max_bad_macs,
        )
    extra: list[OwnerChannel] = []
    if n.mqtt_copy or can_notifier is None:
        catalogue = load_catalogue(resolve_path(n.catalogue, config.base_dir), values=values)
        extra.append(OutboxOwnerChannel(catalogue, n.service_outlet, n.service_phone, values))
    return can_notifier, extra
