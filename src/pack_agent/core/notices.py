"""Owner notices: which notice is open, when it is due again, what the owner answered.

Pure bookkeeping with time passed in; the agent persists ``to_state()`` after
every change, so a restart neither re-sends early nor forgets an open notice.
The cadence (docs/owner-notices.md): the first attempt when the decision is
taken, then again at each ignition-on and every interval (a critical notice
sooner) until the owner answers, at most ``max_per_period`` attempts per
sliding period and ``max_attempts`` in all. Each answer sets a follow-up:
``repeat`` (as if unanswered), ``slow`` (a reminder every slow interval) or
``stop``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from pack_agent.core.catalogue import NoticeValues

if TYPE_CHECKING:
    from pack_agent.config import NoticeSettings

# The last resort when no notice was resolved for a rule (a configuration built without
# the check); the check (config.load) gives every rule the catalogue entry of its cause.
NOTICE_ID_BY_SEVERITY = {"advisory": 0x0101, "critical": 0x0201}
SEVERITY_CODE = {"info": 0, "advisory": 1, "critical": 2}
ACK_RESPONSES = {1: "seen", 2: "dismissed", 3: "service_booked"}
FOLLOW_UPS = ("repeat", "slow", "stop")

# Long content (the service outlet) on CAN: PA_NoticeText pages of 5 UTF-8 bytes, at most 255.
TEXT_BYTES_PER_PAGE = 5
MAX_TEXT_PAGES = 255
MAX_TEXT_BYTES = TEXT_BYTES_PER_PAGE * MAX_TEXT_PAGES

# Failure reasons (owner.notice_failed); bus errors are reported by the agent.
HEAD_UNIT_SILENT = "head_unit_silent"
ATTEMPTS_EXHAUSTED = "attempts_exhausted"


def default_notice_id(severity: str) -> int:
    return NOTICE_ID_BY_SEVERITY[severity]


def outlet_text(outlet: str, phone: str) -> str:
    """The long content of the first format: outlet name/address, LF, phone; '' when unset."""
    return NoticeValues(outlet=outlet, phone=phone).to_text()


def notice_values(settings: NoticeSettings, within_days: float | None = None) -> NoticeValues:
    """What fills a notice's texts, from ``[notice]`` and (an early notice) its horizon."""
    return NoticeValues(
        outlet=settings.service_outlet,
        phone=settings.service_phone,
        procedure=settings.procedure_url,
        emergency_phone=settings.emergency_phone,
        ownership=settings.pack_ownership,
        within_days=within_days,
    )


def text_bytes(settings: NoticeSettings, horizons: Iterable[float | None] = ()) -> int:
    """UTF-8 bytes of the lines the head unit's text pages carry for these settings, with
    the longest early-notice horizon among ``horizons``: at most ``MAX_TEXT_BYTES`` fit."""
    longest = max((h for h in horizons if h is not None), key=lambda h: len(str(h)), default=None)
    return len(notice_values(settings, longest).to_text().encode("utf-8"))


@dataclass(frozen=True)
class Cadence:
    """When notices repeat and what each answer means; from ``[notice]``."""

    repeat_interval_s: float = 86400.0
    critical_repeat_interval_s: float = 3600.0
    slow_repeat_interval_s: float = 7 * 86400.0
    repeat_on_ignition: bool = True
    max_attempts: int = 60
    max_per_period: int = 3
    critical_max_per_period: int = 12
    period_s: float = 86400.0
    after_seen: str = "slow"
    after_dismissed: str = "repeat"
    after_service_booked: str = "stop"
    critical_after_seen: str = "repeat"
    head_unit_silent_s: float = 7 * 86400.0

    @classmethod
    def from_settings(cls, s: NoticeSettings) -> Cadence:
        values = {f: getattr(s, f) for f in cls.__dataclass_fields__}  # same names
        if s.channel == "none":  # no head unit on CAN: its silence means nothing
            values["head_unit_silent_s"] = float("inf")
        return cls(**values)

    def follow_up(self, severity: str, response: str) -> str:
        if severity == "critical" and response == "seen":
            return self.critical_after_seen
        return {
            "seen": self.after_seen,
            "dismissed": self.after_dismissed,
            "service_booked": self.after_service_booked,
        }[response]

    def interval(self, notice: Notice) -> float:
        if notice.follow_up == "slow":
            return self.slow_repeat_interval_s
        if notice.severity == "critical":
            return self.critical_repeat_interval_s
        return self.repeat_interval_s

    def per_period(self, severity: str) -> int:
        return self.critical_max_per_period if severity == "critical" else self.max_per_period


@dataclass
class Notice:
    notice_id: int
    severity: str
    rule_id: str
    seq: int  # 8-bit rolling number on the bus, echoed by the head unit
    opened_at: float
    attempts: int = 0
    last_attempt: float | None = None
    first_attempt: float | None = None
    recent: list[float] = field(default_factory=list)  # attempt times in the current period
    ignition_pending: bool = False  # an ignition-on asked for a showing
    undelivered: list[str] = field(default_factory=list)  # channels still owing this attempt
    acknowledged_at: float | None = None  # the first answer
    response: str | None = None  # the latest answer
    answered_at: float | None = None
    answered_attempt: int = 0
    follow_up: str = "repeat"
    closed_at: float | None = None
    closed_reason: str | None = None
    reported: list[str] = field(default_factory=list)  # failure reasons already reported
    within_days: float | None = None  # an early notice's horizon (its forecast rule's)
    # the recent attempts' challenges on the CAN handshake, newest last, each as
    # [challenge, freshness of the last answer taken for it, attempt number]: an answer
    # to a showing that a newer attempt followed is still the owner's answer, and they
    # are kept (with the notice) so an answer across a restart is recognised
    challenges: list[list[int]] = field(default_factory=list)

    @property
    def open(self) -> bool:
        return self.closed_at is None


@dataclass(frozen=True)
class NoticeAck:
    seq: int
    notice_id: int
    response: str
    attempt: int | None = None  # the attempt answered, when the answer says (its challenge)


class NoticeBook:
    def __init__(self, cadence: Cadence, state: dict[str, Any] | None = None) -> None:
        self.cadence = cadence
        state = state or {}
        self._next_seq: int = state.get("next_seq", 1)
        self.notices: list[Notice] = [_load(n) for n in state.get("notices", [])]

    def to_state(self) -> dict[str, Any]:
        return {"next_seq": self._next_seq, "notices": [asdict(n) for n in self.notices]}

    def open_notice(
        self,
        rule_id: str,
        severity: str,
        now: float,
        notice_id: int | None = None,
        within_days: float | None = None,
    ) -> Notice:
        notice = Notice(
            notice_id=notice_id or default_notice_id(severity),
            severity=severity,
            rule_id=rule_id,
            seq=self._next_seq,
            opened_at=now,
            within_days=within_days,
        )
        self._next_seq = self._next_seq % 255 + 1  # 1..255; 0 means "none" on the bus
        self.notices.append(notice)
        return notice

    def active(self) -> list[Notice]:
        return [n for n in self.notices if n.open]

    # -- cadence --------------------------------------------------------------

    def due(self, now: float, vehicle_on: bool | None = None) -> list[Notice]:
        """Open notices whose next attempt starts now. ``vehicle_on`` False (ignition known
        off: the head unit is asleep) holds advisory attempts until the ignition is on; a
        critical notice goes out at once (the app copy reaches an owner who is not in the car)."""
        out = []
        c = self.cadence
        for n in self.active():
            if n.follow_up == "stop" or n.attempts >= c.max_attempts:
                continue
            if n.last_attempt is not None and now < n.last_attempt:
                # the clock went back: wait a full interval from now, forget future attempts
                n.last_attempt = now
                n.recent = [t for t in n.recent if t <= now]
            n.recent = [t for t in n.recent if now - t < c.period_s]
            held = vehicle_on is False and n.severity != "critical"
            if held or len(n.recent) >= c.per_period(n.severity):
                continue
            if n.last_attempt is None or (n.ignition_pending and n.follow_up == "repeat"):
                out.append(n)
                continue
            since = max(n.last_attempt, n.answered_at or n.last_attempt)
            if now - since >= c.interval(n):
                out.append(n)
        return out

    def on_ignition_on(self) -> list[Notice]:
        """An Off->On ignition: every notice still waiting for an answer is shown again
        (within the per-period cap). Returns the notices that changed."""
        if not self.cadence.repeat_on_ignition:
            return []
        changed = []
        for n in self.active():
            if n.follow_up == "repeat" and n.attempts > 0 and not n.ignition_pending:
                n.ignition_pending = True
                changed.append(n)
        return changed

    def start_attempt(self, notice: Notice, now: float, channels: list[str]) -> None:
        """A new attempt on every channel; a channel still owing the previous attempt (its
        sends fail) now owes this one, so the other channels keep the cadence meanwhile."""
        notice.attempts += 1
        notice.last_attempt = now
        if notice.first_attempt is None:
            notice.first_attempt = now
        notice.recent.append(now)
        notice.ignition_pending = False
        notice.undelivered = list(channels)

    def delivered(self, notice: Notice, channel: str) -> None:
        if channel in notice.undelivered:
            notice.undelivered.remove(channel)

    # -- answers --------------------------------------------------------------

    def on_ack(self, ack: NoticeAck, now: float) -> Notice | None:
        """The open notice this answer belongs to, with the answer's follow-up applied;
        None for a stray answer or a repeat of the answer already recorded."""
        for n in self.active():
            if n.seq != ack.seq or n.notice_id != ack.notice_id or n.attempts == 0:
                continue
            if n.response == ack.response and n.answered_attempt == n.attempts:
                return None  # the same answer to the same showing, sent again
            n.response = ack.response
            n.answered_at = now
            n.answered_attempt = n.attempts
            if n.acknowledged_at is None:
                n.acknowledged_at = now
            n.follow_up = self.cadence.follow_up(n.severity, ack.response)
            n.ignition_pending = False
            if n.follow_up == "stop":
                n.closed_at, n.closed_reason = now, ack.response
            return n
        return None

    # -- failures -------------------------------------------------------------

    def failures(self, now: float, head_unit_heard_at: float | None) -> list[tuple[Notice, str]]:
        """Notices that fail to reach the owner, each reason reported once per notice:
        no answer frame at all from the head unit for ``head_unit_silent_s`` since the first
        attempt, or every attempt spent without an answer."""
        out = []
        c = self.cadence
        for n in self.active():
            if n.first_attempt is None or n.response is not None:
                continue
            since = max(n.first_attempt, head_unit_heard_at or n.first_attempt)
            if HEAD_UNIT_SILENT not in n.reported and now - since >= c.head_unit_silent_s:
                n.reported.append(HEAD_UNIT_SILENT)
                out.append((n, HEAD_UNIT_SILENT))
            if (
                ATTEMPTS_EXHAUSTED not in n.reported
                and n.attempts >= c.max_attempts
                and not n.undelivered
                and n.last_attempt is not None
                and now - n.last_attempt >= c.interval(n)
            ):
                n.reported.append(ATTEMPTS_EXHAUSTED)
                out.append((n, ATTEMPTS_EXHAUSTED))
        return out

    def clear(self) -> list[Notice]:
        """A new pack: notices about the old one are closed by replacement, not by the owner.
        Returns the notices that were open (to withdraw them from the head unit)."""
        gone = self.active()
        self.notices = [n for n in self.notices if not n.open]
        return gone

    def park(self) -> tuple[list[Notice], list[dict[str, Any]]]:
        """Another pack is in the vehicle: its open notices leave the book, to be kept with
        the pack's saved state (``restore`` when the pack comes back). Returns the notices
        (to withdraw from the head unit) and their saved form."""
        gone = self.clear()
        return gone, [asdict(n) for n in gone]

    def restore(self, saved: list[dict[str, Any]]) -> list[Notice]:
        """A pack came back: its open notices return, due again as they were."""
        back = [_load(raw) for raw in saved]
        self.notices.extend(back)
        return back


def _load(raw: dict[str, Any]) -> Notice:
    """A stored notice; one stored before answers had follow-ups was closed by any answer."""
    notice = Notice(**raw)
    if "follow_up" not in raw and notice.response is not None:
        notice.follow_up, notice.closed_reason = "stop", notice.response
        notice.closed_at = notice.acknowledged_at
    return notice
