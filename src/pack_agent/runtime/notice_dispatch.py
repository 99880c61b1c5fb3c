"""Owner notices on their way to the head unit: sending, retrying, answers, failures.

``NoticeDispatcher`` owns the ``NoticeBook`` (which notices are open and due, from
``pack_agent.core.notices``) and everything the agent does with it over the owner
channels: starting the attempts that are due, delivering each attempt on every
channel, retrying a channel that failed every ``notice.retry_interval_s``, taking
the head unit's answers, reporting notices that went unanswered, and the
``notice_status`` the status command shows. It also keeps what it needs to decide
that: whether the ignition is on and when the head unit was last heard (both saved
lazily: it is one of the ``SaveSchedule``'s owners).

It talks to the rest of the agent through narrow hand-offs only: the store, the
channels, an ``emit(type, data, now)`` callable for events, a ``warn(key, message)``
callable for rate-limited warnings and a ``pack_code()`` callable for the events'
pack code. Time is always an argument.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pack_agent.config import AgentConfig
from pack_agent.core.events import utc_from_timestamp
from pack_agent.core.notices import Cadence, Notice, NoticeAck, NoticeBook
from pack_agent.core.policy import IGNITION_OFF_SAVE_GAP_S, ScrapDecision
from pack_agent.errors import BusError
from pack_agent.store.state import (
    HEAD_UNIT_HEARD_AT,
    IGNITION_ON,
    NOTICES,
)

if TYPE_CHECKING:
    import can

    from pack_agent.delivery.owner_channel import OwnerChannel
    from pack_agent.store.database import Store

log = logging.getLogger(__name__)

Emit = Callable[[str, dict[str, Any], float], None]
Warn = Callable[[str, str], None]


class NoticeDispatcher:
    def __init__(
        self,
        config: AgentConfig,
        store: Store,
        notifiers: Sequence[OwnerChannel],
        emit: Emit,
        warn: Warn,
        pack_code: Callable[[], str | None],
    ) -> None:
        self.config = config
        self.store = store
        self.notifiers = list(notifiers)
        self._emit = emit
        self._warn = warn
        self._pack_code = pack_code
        self.book = NoticeBook(Cadence.from_settings(config.notice), store.get_state(NOTICES))
        for channel in self.notifiers:  # answers to attempts made before a restart
            channel.restore(self.book.active())
        # the notice of each rule's cause (resolved by the configuration check; again for a
        # configuration whose rules changed after it, as tests and the demo do)
        if any(r.id not in config.notice_ids for r in config.rules):
            from pack_agent.config.load import resolve_notices

            resolve_notices(config)
        self._rule_notice = {r.id: config.notice_ids.get(r.id, r.notice_id) for r in config.rules}
        self._rule_horizon = {r.id: getattr(r, "within_days", None) for r in config.rules}
        self.ignition_on: bool | None = store.get_state(IGNITION_ON)
        self._ignition_saved = self.ignition_on
        self._ignition_saved_at = -math.inf
        self.head_unit_heard_at: float | None = store.get_state(HEAD_UNIT_HEARD_AT)
        self._head_unit_saved = self.head_unit_heard_at
        self._retry_at: dict[tuple[int, str], float] = {}
        self._failing: dict[tuple[int, str], int] = {}  # failed sends of the current attempt
        self.notice_failures = 0
        self._counts: dict[str, int] = {}
        self._last_notice_error: str | None = None

    # -- what comes in ----------------------------------------------------------

    def take_frame(self, bus: str, frame: can.Message, now: float) -> bool:
        """True when ``frame`` is a head unit's answer frame (then it is handled here)."""
        for notifier in self.notifiers:
            if notifier.is_ack_frame(bus, frame):
                # only a frame that passes the answer's frame checks proves the head unit
                # alive (an empty or forged frame at its id does not)
                alive, ack = notifier.read_ack(bus, frame, now)
                if alive:
                    self._heard_head_unit(now)
                if ack is not None:
                    self._on_ack(ack, notifier.channel, now)
                return True
        return False

    def open(self, decision: ScrapDecision, now: float) -> None:
        """A decision that notifies the owner opens its notice (in the caller's commit)."""
        self.book.open_notice(
            decision.rule_id,
            decision.severity,
            now,
            self._rule_notice.get(decision.rule_id),
            self._rule_horizon.get(decision.rule_id),
        )
        self.store.put_state(NOTICES, self.book.to_state())

    def clear(self) -> list[Notice]:
        """A new pack: the old pack's notices are dropped (in the caller's commit)."""
        withdrawn = self.book.clear()
        self.store.put_state(NOTICES, self.book.to_state())
        return withdrawn

    def park(self) -> tuple[list[Notice], list[dict[str, Any]]]:
        """Another pack: the old pack's open notices leave the book, to be saved with that
        pack (in the caller's commit). Returns them (to withdraw) and their saved form."""
        withdrawn, saved = self.book.park()
        self.store.put_state(NOTICES, self.book.to_state())
        return withdrawn, saved

    def restore(self, saved: list[dict[str, Any]]) -> None:
        """A pack that comes back: its open notices return (in the caller's commit)."""
        self.book.restore(saved)
        self.store.put_state(NOTICES, self.book.to_state())

    def withdraw(self, notices: Sequence[Notice]) -> None:
        """Best effort: the old pack's notices leave the screen."""
        for notice in notices:
            for notifier in self.notifiers:
                try:
                    notifier.withdraw(notice)
                except BusError as exc:
                    self._warn("withdraw", f"notice withdraw not sent: {exc}")

    def on_ignition(self, on: bool, now: float) -> None:
        """Saved so that a reboot mid-trip is not an Off->On: at once when it changes the
        notices or the last such save is ``IGNITION_OFF_SAVE_GAP_S`` old, else with the
        next state save (``SaveSchedule``), so a flapping signal cannot wear the flash."""
        if on == self.ignition_on:
            return
        was, self.ignition_on = self.ignition_on, on
        reopened = on and not was and self.book.on_ignition_on()
        if reopened or now - self._ignition_saved_at >= IGNITION_OFF_SAVE_GAP_S:
            with self.store.transaction():
                self.store.put_state(IGNITION_ON, on)
                if reopened:
                    self.store.put_state(NOTICES, self.book.to_state())
            self._ignition_saved, self._ignition_saved_at = on, now
        if on:
            self.send_due(now)

    def _heard_head_unit(self, now: float) -> None:
        """Kept in memory and saved with the policy state (hourly, at shutdown); only the
        first answer ever is written at once. A head unit that sends its answer frame
        cyclically must not cost a flash write a minute."""
        first = self.head_unit_heard_at is None
        self.head_unit_heard_at = now
        if first:
            self.store.put_state(HEAD_UNIT_HEARD_AT, now)
            self._head_unit_saved = now

    def _on_ack(self, ack: NoticeAck, channel: str, now: float) -> None:
        if ack.response == "displayed":  # the head unit shows it: not an owner's answer
            key = (ack.seq, ack.notice_id)
            shown = [n for n in self.book.active() if (n.seq, n.notice_id) == key]
            if shown:
                self._count("displayed")
                data = self._notice_data(shown[0], channel)
                data["attempt"] = ack.attempt or shown[0].attempts
                data["displayed_at"] = utc_from_timestamp(now).isoformat()
                self._emit("owner.notice_displayed", data, now)
            return
        self.answer(ack, channel, now)

    def answer(self, ack: NoticeAck, channel: str, now: float) -> Notice | None:
        """The owner's answer, from the head unit (``can``) or the maker's app (``app``, a
        backend command): the same effect either way. Returns the notice answered; None
        for an answer to nothing open (a repeat, or a stray frame): nothing changes."""
        notice = self.book.on_ack(ack, now)
        if notice is None:
            return None
        self._count(f"answer.{ack.response}")
        with self.store.transaction():
            self.store.put_state(NOTICES, self.book.to_state())
            data = self._notice_data(notice, channel)
            data["response"] = notice.response
            data["acknowledged_at"] = utc_from_timestamp(now).isoformat()
            data["follow_up"] = notice.follow_up
            self._emit("owner.acknowledged", data, now)
        return notice

    # -- sending ----------------------------------------------------------------

    def send_due(self, now: float) -> None:
        """Starts the attempts that are due, then delivers every attempt still owed on a
        channel; a failed channel is retried every ``retry_interval_s`` and reported."""
        if not self.notifiers:
            return
        channels = [n.channel for n in self.notifiers]
        for notice in self.book.due(now, self.ignition_on):
            self.book.start_attempt(notice, now, channels)
            self.store.put_state(NOTICES, self.book.to_state())
        by_channel = {n.channel: n for n in self.notifiers}
        for notice in self.book.active():
            for channel in list(notice.undelivered):
                key = (notice.seq, channel)
                if now < self._retry_at.get(key, float("-inf")):
                    continue
                notifier = by_channel.get(channel)
                if notifier is None:  # the channel left the configuration
                    self.book.delivered(notice, channel)
                    self.store.put_state(NOTICES, self.book.to_state())
                    continue
                try:
                    extras = notifier.send(notice, now)
                except BusError as exc:
                    self._send_failed(notice, channel, exc, now)
                    continue
                self._retry_at.pop(key, None)
                retries = self._failing.pop(key, 0)
                self.book.delivered(notice, channel)
                self._count(f"notified.{channel}")
                with self.store.transaction():
                    self.store.put_state(NOTICES, self.book.to_state())
                    data = self._notice_data(notice, channel)
                    data["retries"] = retries
                    self._emit("owner.notified", data, now)
                    for event_type, extra in extras:
                        self._emit(event_type, extra, now)

    def _send_failed(self, notice: Notice, channel: str, exc: BusError, now: float) -> None:
        key = (notice.seq, channel)
        self.notice_failures += 1
        self._count(f"failed.{channel}")
        self._last_notice_error = str(exc)
        self._retry_at[key] = now + self.config.notice.retry_interval_s
        self._failing[key] = self._failing.get(key, 0) + 1
        self._warn("notice", f"owner notice not sent, retrying: {exc}")
        if self._failing[key] == 1:  # once per run of failures: visible, not a flood
            data = self._notice_data(notice, channel)
            data.update(reason="bus_error", error=str(exc))
            self._emit("owner.notice_failed", data, now)

    def check_failures(self, now: float) -> None:
        """Notices the head unit left unanswered (or never showed) become
        ``owner.notice_failed``, each reason once."""
        if not self.notifiers:
            return
        found = self.book.failures(now, self.head_unit_heard_at)
        if not found:
            return
        with self.store.transaction():
            self.store.put_state(NOTICES, self.book.to_state())
            for notice, reason in found:
                self._count(f"failed.{reason}")
                data = self._notice_data(notice, self.notifiers[0].channel)
                data["reason"] = reason
                if self.head_unit_heard_at is not None:
                    data["head_unit_last_heard"] = utc_from_timestamp(
                        self.head_unit_heard_at
                    ).isoformat()
                self._emit("owner.notice_failed", data, now)
                log.warning("owner notice %d not answered: %s", notice.seq, reason)

    def _notice_data(self, notice: Notice, channel: str | None) -> dict[str, Any]:
        return {
            "notice_id": notice.notice_id,
            "seq": notice.seq,
            "severity": notice.severity,
            "rule_id": notice.rule_id,
            "attempt": notice.attempts,
            "channel": channel,
            "opened_at": utc_from_timestamp(notice.opened_at).isoformat(),
            "pack_code": self._pack_code(),
        }

    def _count(self, key: str) -> None:
        self._counts[key] = self._counts.get(key, 0) + 1

    # -- saving and time --------------------------------------------------------

    def unsaved(self) -> bool:
        """Whether the ignition or the head unit's last answer changed since saved."""
        return (
            self.head_unit_heard_at != self._head_unit_saved
            or self.ignition_on != self._ignition_saved
        )

    def save(self) -> None:
        """Writes what changed (called inside the ``SaveSchedule``'s commit)."""
        if self.head_unit_heard_at != self._head_unit_saved:
            self.store.put_state(HEAD_UNIT_HEARD_AT, self.head_unit_heard_at)
            self._head_unit_saved = self.head_unit_heard_at
        if self.ignition_on != self._ignition_saved:
            self.store.put_state(IGNITION_ON, self.ignition_on)
            self._ignition_saved = self.ignition_on

    def rebase(self, now: float) -> None:
        """The clock stepped back: the ignition's save gap starts again on the new time."""
        self._ignition_saved_at = -math.inf

    # -- status -----------------------------------------------------------------

    def notice_status(self) -> dict[str, Any]:
        """Owner-notice counters and open notices, for the status command (counters since
        start; the notices themselves are the persisted record)."""

        def when(t: float | None) -> str | None:
            return None if t is None else utc_from_timestamp(t).isoformat()

        return {
            "channels": [n.channel for n in self.notifiers],
            "counters": dict(sorted(self._counts.items())),
            "send_failures": self.notice_failures,
            "failing": sorted(f"{seq}/{ch}" for seq, ch in self._failing),
            "last_error": self._last_notice_error,
            "ignition_on": self.ignition_on,
            "head_unit_last_heard": when(self.head_unit_heard_at),
            "answers_refused": {
                reason: n
                for notifier in self.notifiers
                for reason, n in sorted(getattr(notifier, "refused", {}).items())
            },
            "open": [
                {
                    "seq": n.seq,
                    "notice_id": n.notice_id,
                    "severity": n.severity,
                    "rule_id": n.rule_id,
                    "attempts": n.attempts,
                    "last_attempt": when(n.last_attempt),
                    "response": n.response,
                    "follow_up": n.follow_up,
                    "undelivered": list(n.undelivered),
                    "reported": list(n.reported),
                }
                for n in self.book.active()
            ],
        }
