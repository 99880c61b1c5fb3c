"""The owner channel: notices to the head unit and its answers, over CAN.

``OwnerNotifier`` is the extension point (a second channel, e.g. MQTT for the
maker's app, is another implementation); ``CanOwnerNotifier`` speaks the
reference database's ``PA_OwnerNotice`` / ``HU_NoticeAck`` handshake.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from pack_agent.database import complete_values
from pack_agent.errors import BusError
from pack_agent.notices import ACK_RESPONSES, SEVERITY_CODE, Notice, NoticeAck

if TYPE_CHECKING:
    import can
    import cantools.database


class OwnerNotifier(ABC):
    """Shows a notice to the owner and recognises the owner's answer."""

    channel: str

    @abstractmethod
    def send(self, notice: Notice) -> None:
        """Raises ``BusError`` when the notice could not be sent."""

    @abstractmethod
    def parse_ack(self, bus: str, frame: can.Message) -> NoticeAck | None:
        """The answer carried by ``frame``, or None if it is not one."""

    def frame_ids(self, bus: str) -> list[tuple[int, bool]]:
        """Frame ids this notifier must receive on ``bus`` (for the bus filters)."""
        return []


class CanOwnerNotifier(OwnerNotifier):
    channel = "can"

    def __init__(
        self,
        bus_name: str,
        bus: can.BusABC,
        db: cantools.database.Database,
        notice_message: str,
        ack_message: str,
    ) -> None:
        self._bus_name = bus_name
        self._bus = bus
        self._notice = db.get_message_by_name(notice_message)
        self._ack = db.get_message_by_name(ack_message)

    def frame_ids(self, bus: str) -> list[tuple[int, bool]]:
        if bus != self._bus_name:
            return []
        return [(self._ack.frame_id, self._ack.is_extended_frame)]

    def encode(self, notice: Notice) -> bytes:
        values: dict[str, Any] = {
            "PA_NoticeSeq": notice.seq,
            "PA_NoticeId": notice.notice_id,
            "PA_NoticeSeverity": SEVERITY_CODE[notice.severity],
            "PA_NoticeAction": 1,
            "PA_NoticeAttempt": min(notice.attempts + 1, 255),
        }
        return bytes(self._notice.encode(complete_values(self._notice, values)))

    def send(self, notice: Notice) -> None:
        import can

        frame = can.Message(
            arbitration_id=self._notice.frame_id,
            is_extended_id=self._notice.is_extended_frame,
            data=self.encode(notice),
        )
        try:
            self._bus.send(frame, timeout=0.5)
        except can.CanError as exc:
            raise BusError(
                f"owner notice frame 0x{frame.arbitration_id:X} not sent: {exc}"
            ) from exc

    def parse_ack(self, bus: str, frame: can.Message) -> NoticeAck | None:
        if bus != self._bus_name or frame.arbitration_id != self._ack.frame_id:
            return None
        if len(frame.data) < self._ack.length:
            return None
        try:
            v = self._ack.decode(bytes(frame.data), decode_choices=False)
        except Exception:
            return None
        response = ACK_RESPONSES.get(int(v["HU_AckResponse"]))
        if response is None:
            return None
        return NoticeAck(int(v["HU_AckSeq"]), int(v["HU_AckNoticeId"]), response)
