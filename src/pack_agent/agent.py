"""The agent: wires source, decoder, tracker, policy, notices, store and uplink together.

It owns no outside thing itself. Every event is appended to the store in the
same transaction as the state change that caused it, so a crash between the
two cannot happen: after a restart the agent neither forgets a decision nor
takes it again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pack_agent.config import AgentConfig
from pack_agent.decoder import CodeAssembler, CodePage, Decoder, Reading
from pack_agent.errors import BusError
from pack_agent.events import EventDraft, utc_from_timestamp
from pack_agent.notices import Notice, NoticeAck, NoticeBook
from pack_agent.policy import ScrapDecision, ScrapPolicy
from pack_agent.tracker import Happening, PackTracker

if TYPE_CHECKING:
    import can

    from pack_agent.hmi import OwnerNotifier
    from pack_agent.source import Source
    from pack_agent.store import Store
    from pack_agent.uplink import Uplink

log = logging.getLogger(__name__)

NOTICE_RETRY_S = 5.0
TICK_S = 0.05


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        decoder: Decoder,
        store: Store,
        notifier: OwnerNotifier | None = None,
        on_event: Callable[[Any], None] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.notifier = notifier
        self.decoder = decoder
        self.assembler = CodeAssembler(len(config.pack_code.pages), config.pack_code.confirmations)
        self.tracker = PackTracker(store.get_state("pack.code"), config.health.bms_timeout_s)
        self.policy = ScrapPolicy(config.rules, store.get_state("policy.latched", []))
        self.notices = NoticeBook(
            config.notice.repeat_interval_s,
            config.notice.max_attempts,
            store.get_state("notices"),
        )
        self._on_event = on_event
        self._next_health: float | None = None
        self._notice_retry_at = 0.0
        self.frame_errors = 0
        self.notice_failures = 0
        self._warned: dict[str, float] = {}

    # -- frames ---------------------------------------------------------------

    def handle_frame(self, bus: str, frame: can.Message, now: float) -> None:
        """One frame in; never raises for a bad frame (it is counted and logged, rate-limited)."""
        try:
            if self.notifier is not None:
                ack = self.notifier.parse_ack(bus, frame)
                if ack is not None:
                    self._on_ack(ack, now)
                    return
            for item in self.decoder.decode(bus, frame, now):
                if isinstance(item, CodePage):
                    code = self.assembler.feed(item)
                    self._apply(self.tracker.on_frame(now), now)
                    if code is not None:
                        self._on_code(code, now)
                else:
                    self._on_reading(item, now)
        except Exception:
            self.frame_errors += 1
            self._warn("frame", f"frame 0x{frame.arbitration_id:X} on {bus} not handled", exc=True)

    def _on_code(self, code: str, now: float) -> None:
        before = self.tracker.code
        happenings = self.tracker.on_code(code)
        if not happenings:
            return
        with self.store.transaction():
            if self.tracker.code != before:
                self.policy.reset()
                self.notices.clear()
                self.store.put_state("pack.code", self.tracker.code)
                self.store.put_state("policy.latched", [])
                self.store.put_state("notices", self.notices.to_state())
            self._apply(happenings, now)

    def _on_reading(self, reading: Reading, now: float) -> None:
        self._apply(self.tracker.on_reading(reading), now)
        for decision in self.policy.observe(reading, self.tracker.code):
            self._decide(decision, now)

    def _decide(self, decision: ScrapDecision, now: float) -> None:
        with self.store.transaction():
            self.store.put_state("policy.latched", sorted(self.policy.latched_rules))
            self._emit("scrap.condition_met", decision.evidence(), now)
            self.notices.open_notice(decision.rule_id, decision.severity, now)
            self.store.put_state("notices", self.notices.to_state())
        log.warning(
            "scrapping condition met: rule %s (%s), pack %s",
            decision.rule_id,
            decision.severity,
            decision.pack_code,
        )
        self._send_due_notices(now)

    # -- the owner ------------------------------------------------------------

    def _send_due_notices(self, now: float) -> None:
        if self.notifier is None or now < self._notice_retry_at:
            return
        for notice in self.notices.due(now):
            try:
                self.notifier.send(notice)
            except BusError as exc:
                self.notice_failures += 1
                self._notice_retry_at = now + NOTICE_RETRY_S
                self._warn("notice", f"owner notice not sent, retrying: {exc}")
                return
            self.notices.record_attempt(notice, now)
            with self.store.transaction():
                self.store.put_state("notices", self.notices.to_state())
                self._emit("owner.notified", self._notice_data(notice), now)

    def _on_ack(self, ack: NoticeAck, now: float) -> None:
        notice = self.notices.on_ack(ack, now)
        if notice is None:
            return  # an answer to nothing open: a repeat, or a stray frame
        with self.store.transaction():
            self.store.put_state("notices", self.notices.to_state())
            data = self._notice_data(notice)
            data["response"] = notice.response
            data["acknowledged_at"] = utc_from_timestamp(now).isoformat()
            self._emit("owner.acknowledged", data, now)

    def _notice_data(self, notice: Notice) -> dict[str, Any]:
        return {
            "notice_id": notice.notice_id,
            "seq": notice.seq,
            "severity": notice.severity,
            "rule_id": notice.rule_id,
            "attempt": notice.attempts,
            "channel": self.notifier.channel if self.notifier else None,
            "pack_code": self.tracker.code,
        }

    # -- time -----------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Timers: BMS silence, health samples, notices due again."""
        self._apply(self.tracker.check_silence(now), now)
        if self._next_health is None:
            self._next_health = now + self.config.health.publish_interval_s
        elif now >= self._next_health:
            self._next_health = now + self.config.health.publish_interval_s
            snapshot = self.tracker.health_snapshot(now)
            if snapshot["metrics"]:
                self._emit("pack.health", snapshot, now)
        self._send_due_notices(now)

    # -- events ---------------------------------------------------------------

    def _apply(self, happenings: list[Happening], now: float) -> None:
        for event_type, data in happenings:
            self._emit(event_type, data, now)

    def _emit(self, event_type: str, data: dict[str, Any], now: float) -> None:
        draft = EventDraft(
            type=event_type,  # type: ignore[arg-type]
            vin=self.config.vin,
            time=utc_from_timestamp(now),
            data=data,
        )
        event = self.store.append(draft)
        log.info("event %s seq=%d %s", event.type, event.seq, event.event_id)
        if self._on_event is not None:
            self._on_event(event)

    def _warn(self, key: str, message: str, exc: bool = False, every_s: float = 60.0) -> None:
        """At most one warning per ``key`` a minute: a broken frame at 100 Hz must not fill
        the journal."""
        t = time.monotonic()
        if t - self._warned.get(key, -every_s) >= every_s:
            self._warned[key] = t
            log.warning(message, exc_info=exc)


def run_loop(
    agent: Agent,
    source: Source,
    uplink: Uplink | None,
    stop: threading.Event,
    clock: Callable[[], float] | None = time.time,
    housekeeping: Callable[[], None] | None = None,
) -> None:
    """The main loop. ``clock=None`` takes time from the frames (replay, simulated time).
    ``housekeeping`` runs every tick on this thread (watchdog, reload, status file)."""
    last_tick = 0.0  # monotonic
    frame_time = last_frame_tick = 0.0  # frame time, when the frames are the clock
    while not stop.is_set():
        item = source.recv(TICK_S)
        if item is not None:
            bus, frame = item
            frame_time = max(frame_time, frame.timestamp)
            agent.handle_frame(bus, frame, frame.timestamp if clock is None else clock())
            if clock is None and frame_time - last_frame_tick >= TICK_S:
                last_frame_tick = frame_time
                agent.tick(frame_time)
        mono = time.monotonic()
        if mono - last_tick >= TICK_S:
            last_tick = mono
            if clock is not None:
                agent.tick(clock())
            if uplink is not None:
                uplink.poll()
            if housekeeping is not None:
                housekeeping()
