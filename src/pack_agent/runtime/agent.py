"""The agent: wires source, decoder, tracker, policy, notices, store and uplink together.

It owns no outside thing itself. Every event is appended to the store in the
same transaction as the state change that caused it, so a crash between the
two cannot happen: after a restart the agent neither forgets a decision nor
takes it again.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pack_agent.canbus.codesource import page_total
from pack_agent.canbus.decoder import CodeAssembler, Decoder
from pack_agent.config import AgentConfig
from pack_agent.core.events import PLAUSIBLE_SINCE, EventDraft, utc_from_timestamp
from pack_agent.core.notices import Cadence, Notice, NoticeAck, NoticeBook
from pack_agent.core.policy import IGNITION_OFF_SAVE_GAP_S, ScrapDecision, ScrapPolicy
from pack_agent.core.readings import CodePage, Reading
from pack_agent.core.timeline import TimeLine, Verdict
from pack_agent.core.tracker import Happening, PackTracker
from pack_agent.errors import BusError

if TYPE_CHECKING:
    import can

    from pack_agent.canbus.source import Source
    from pack_agent.canbus.uds import UdsPoller, UdsResult
    from pack_agent.delivery.mqtt import Uplink
    from pack_agent.delivery.owner_channel import OwnerChannel
    from pack_agent.store.database import Store

log = logging.getLogger(__name__)

TICK_S = 0.05
PUMP_WAIT_S = 0.005  # longest wait for a PUBACK before the bus is looked at again
HEALTH_SAMPLED_KEY = "health.sampled_at"  # the last pack.health's time, with the sample
SAMPLE_WAIT_S = 60.0  # after a wake-up, the longest a sample waits for the SOH or the code


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        decoder: Decoder,
        store: Store,
        notifier: OwnerChannel | None = None,
        on_event: Callable[[Any], None] | None = None,
        extra_notifiers: Sequence[OwnerChannel] = (),
        uds: UdsPoller | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.notifier = notifier
        self.decoder = decoder
        self.assembler = CodeAssembler(page_total(config.pack_code), config.pack_code.confirmations)
        self.uds = uds
        self.uds_counts: Counter[str] = Counter()  # "uds:soh negative" -> n
        self.stale_readings = 0
        self.tracker = PackTracker(
            store.get_state("pack.code"), config.health.bms_timeout_s, _uds_max_age(config)
        )
        self.policy = ScrapPolicy.from_config(
            config,
            store.get_state("policy.state"),
            store.get_state("policy.latched", []),
            self.tracker.code,
        )
        self._policy_saved_at: float | None = None  # windows and history: on a schedule
        self._saved_at: float | None = None  # the last save of any kind in this life
        self.notices = NoticeBook(Cadence.from_settings(config.notice), store.get_state("notices"))
        self.notifiers: list[OwnerChannel] = ([notifier] if notifier else []) + list(
            extra_notifiers
        )
        for channel in self.notifiers:  # answers to attempts made before a restart
            channel.restore(self.notices.active())
        self._rule_notice = {r.id: r.notice_id for r in config.rules}
        self._ignition_on: bool | None = store.get_state("ignition.on")
        self._ignition_saved = self._ignition_on
        self._ignition_saved_at = -math.inf
        self._head_unit_heard_at: float | None = store.get_state("notices.head_unit_heard_at")
        self._head_unit_saved = self._head_unit_heard_at
        self._on_event = on_event
        # the last pack.health sample (stored with it when the clock was plausible): the
        # next one is an interval later, across restarts and reloads of the interval
        self._sampled_at: float | None = store.get_state(HEALTH_SAMPLED_KEY)
        self._sampled_at_checked = False  # against this life's first plausible time
        self._saved_frame_at: float | None = None  # the newest frame at the last save
        self._retry_at: dict[tuple[int, str], float] = {}
        self._failing: dict[tuple[int, str], int] = {}  # failed sends of the current attempt
        self.frame_errors = 0
        self.notice_failures = 0
        self._counts: dict[str, int] = {}
        self._last_notice_error: str | None = None
        self._warned: dict[str, float] = {}
        # the agent's time line (frames, ticks, events; this life only): a step back that
        # persists is adopted (pack_agent.core.timeline), a lone wild stamp never is
        self.clock = TimeLine(trusted_from=PLAUSIBLE_SINCE)
        self.clock_rebased: dict[str, Any] | None = None  # the last adopted step back
        self._rebase_unreported = False  # goes into the next pack.health

    # -- frames ---------------------------------------------------------------

    def handle_frame(self, bus: str, frame: can.Message, now: float) -> None:
        """One frame in; never raises for a bad frame (it is counted and logged, rate-limited)."""
        if not math.isfinite(now):  # a NaN or infinite stamp must not reach a time rule
            self.decoder.stats.dropped["time stamp not finite"] += 1
            return
        try:
            self._judge_time(now)
            # a stamp the line holds ahead (a stray 2035 frame) must not prove the BMS
            # alive, or make its readings look fresh, until the line takes it
            held = self.clock.newest is not None and now > self.clock.newest
            for notifier in self.notifiers:
                if notifier.is_ack_frame(bus, frame):
                    # only a frame that passes the answer's frame checks proves the head
                    # unit alive (an empty or forged frame at its id does not)
                    alive, ack = notifier.read_ack(bus, frame, now)
                    if alive:
                        self._heard_head_unit(now)
                    if ack is not None:
                        self._on_ack(ack, notifier.channel, now)
                    return
            for item in self.decoder.decode(bus, frame, now):
                if isinstance(item, CodePage):
                    code = self.assembler.feed(item)
                    if not held:
                        self._apply(self.tracker.on_frame(now), now)
                    if code is not None:
                        self._on_code(code, now)
                else:
                    self._on_reading(item, now, held)
        except Exception:
            self.frame_errors += 1
            self._warn("frame", f"frame 0x{frame.arbitration_id:X} on {bus} not handled", exc=True)

    def _on_code(self, code: str, now: float) -> None:
        before = self.tracker.code
        happenings = self.tracker.on_code(code, now)
        if not happenings:
            return
        with self.store.transaction():
            withdrawn: list[Notice] = []
            if self.tracker.code != before:
                self.policy.reset(self.tracker.code)
                withdrawn = self.notices.clear()
                self.store.put_state("pack.code", self.tracker.code)
                self.store.put_state("policy.latched", [])
                self.store.put_state("policy.state", self.policy.to_state())
                self.store.put_state("notices", self.notices.to_state())
            self._apply(happenings, now)
        for notice in withdrawn:  # best effort: the old pack's notice leaves the screen
            for notifier in self.notifiers:
                try:
                    notifier.withdraw(notice)
                except BusError as exc:
                    self._warn("withdraw", f"notice withdraw not sent: {exc}")

    def _on_reading(self, reading: Reading, now: float, held: bool = False) -> None:
        """``held``: stamped ahead of the time line (the tracker does not take it)."""
        if self.tracker.is_stale(reading, now):
            self.stale_readings += 1  # judged by its own time: never feeds a rule
            return
        if not held:
            self._apply(self.tracker.on_reading(reading), now)
        if reading.metric == "ignition":
            self._on_ignition(reading.value >= self.config.notice.ignition_on_min, now)
        for decision in self.policy.observe(reading, self.tracker.code):
            self._decide(decision, now)
        rebased = self.policy.take_rebase()
        if rebased is not None:
            self._rebased("rules", *rebased, now)

    def _decide(self, decision: ScrapDecision, now: float) -> None:
        with self.store.transaction():
            self.store.put_state("policy.latched", sorted(self.policy.latched_rules))
            self.store.put_state("policy.state", self.policy.to_state())
            if decision.publish:
                self._emit(decision.event_type, decision.evidence(), now)
            if decision.notify:
                self.notices.open_notice(
                    decision.rule_id,
                    decision.severity,
                    now,
                    self._rule_notice.get(decision.rule_id),
                )
                self.store.put_state("notices", self.notices.to_state())
        log.warning(
            "scrapping condition met: rule %s (%s), pack %s",
            decision.rule_id,
            decision.severity,
            decision.pack_code,
        )
        self._send_due_notices(now)

    # -- the owner ------------------------------------------------------------

    def _on_ignition(self, on: bool, now: float) -> None:
        """Saved so that a reboot mid-trip is not an Off->On: at once when it changes the
        notices or the last such save is ``IGNITION_OFF_SAVE_GAP_S`` old, else with the
        next state save (``flush``), so a flapping signal cannot wear the flash."""
        if on == self._ignition_on:
            return
        was, self._ignition_on = self._ignition_on, on
        reopened = on and not was and self.notices.on_ignition_on()
        if reopened or now - self._ignition_saved_at >= IGNITION_OFF_SAVE_GAP_S:
            with self.store.transaction():
                self.store.put_state("ignition.on", on)
                if reopened:
                    self.store.put_state("notices", self.notices.to_state())
            self._ignition_saved, self._ignition_saved_at = on, now
        if on:
            self._send_due_notices(now)

    def _heard_head_unit(self, now: float) -> None:
        """Kept in memory and saved with the policy state (hourly, at shutdown); only the
        first answer ever is written at once. A head unit that sends its answer frame
        cyclically must not cost a flash write a minute."""
        first = self._head_unit_heard_at is None
        self._head_unit_heard_at = now
        if first:
            self.store.put_state("notices.head_unit_heard_at", now)
            self._head_unit_saved = now

    def _send_due_notices(self, now: float) -> None:
        """Starts the attempts that are due, then delivers every attempt still owed on a
        channel; a failed channel is retried every ``retry_interval_s`` and reported."""
        if not self.notifiers:
            return
        channels = [n.channel for n in self.notifiers]
        for notice in self.notices.due(now, self._ignition_on):
            self.notices.start_attempt(notice, now, channels)
            self.store.put_state("notices", self.notices.to_state())
        by_channel = {n.channel: n for n in self.notifiers}
        for notice in self.notices.active():
            for channel in list(notice.undelivered):
                key = (notice.seq, channel)
                if now < self._retry_at.get(key, float("-inf")):
                    continue
                notifier = by_channel.get(channel)
                if notifier is None:  # the channel left the configuration
                    self.notices.delivered(notice, channel)
                    self.store.put_state("notices", self.notices.to_state())
                    continue
                try:
                    extras = notifier.send(notice, now)
                except BusError as exc:
                    self._send_failed(notice, channel, exc, now)
                    continue
                self._retry_at.pop(key, None)
                retries = self._failing.pop(key, 0)
                self.notices.delivered(notice, channel)
                self._count(f"notified.{channel}")
                with self.store.transaction():
                    self.store.put_state("notices", self.notices.to_state())
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

    def _on_ack(self, ack: NoticeAck, channel: str, now: float) -> None:
        if ack.response == "displayed":  # the head unit shows it: not an owner's answer
            key = (ack.seq, ack.notice_id)
            shown = [n for n in self.notices.active() if (n.seq, n.notice_id) == key]
            if shown:
                self._count("displayed")
                data = self._notice_data(shown[0], channel)
                data["attempt"] = ack.attempt or shown[0].attempts
                data["displayed_at"] = utc_from_timestamp(now).isoformat()
                self._emit("owner.notice_displayed", data, now)
            return
        notice = self.notices.on_ack(ack, now)
        if notice is None:
            return  # an answer to nothing open: a repeat, or a stray frame
        self._count(f"answer.{ack.response}")
        with self.store.transaction():
            self.store.put_state("notices", self.notices.to_state())
            data = self._notice_data(notice, channel)
            data["response"] = notice.response
            data["acknowledged_at"] = utc_from_timestamp(now).isoformat()
            data["follow_up"] = notice.follow_up
            self._emit("owner.acknowledged", data, now)

    def _check_notice_failures(self, now: float) -> None:
        if not self.notifiers:
            return
        found = self.notices.failures(now, self._head_unit_heard_at)
        if not found:
            return
        with self.store.transaction():
            self.store.put_state("notices", self.notices.to_state())
            for notice, reason in found:
                self._count(f"failed.{reason}")
                data = self._notice_data(notice, self.notifiers[0].channel)
                data["reason"] = reason
                if self._head_unit_heard_at is not None:
                    data["head_unit_last_heard"] = utc_from_timestamp(
                        self._head_unit_heard_at
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
            "pack_code": self.tracker.code,
        }

    def e2e_status(self) -> dict[str, Any]:
        """Frame-integrity findings (a counter that stopped or jumped) and refusals, by
        message: what a status reader needs to see a failing or attacked sender."""
        findings = dict(self.decoder.e2e.findings)
        refused = dict(self.decoder.e2e.refused)
        for notifier in self.notifiers:
            e2e = getattr(notifier, "e2e", None)
            if e2e is not None:
                findings.update(e2e.findings)
                refused.update(e2e.refused)
        return {
            "refused": dict(sorted(refused.items())),
            "findings": {
                name: {**f, "last_at": utc_from_timestamp(f["last_at"]).isoformat()}
                for name, f in sorted(findings.items())
            },
        }

    def _count(self, key: str) -> None:
        self._counts[key] = self._counts.get(key, 0) + 1

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
            "ignition_on": self._ignition_on,
            "head_unit_last_heard": when(self._head_unit_heard_at),
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
                for n in self.notices.active()
            ],
        }

    # -- time -----------------------------------------------------------------

    def handle_uds(self, result: UdsResult, now: float) -> None:
        """One poll's outcome: a reading, a code, or why there is none (logged, counted)."""
        source = result.job.source
        self.uds_counts[f"{source} {result.outcome}"] += 1
        if result.outcome == "timeout":
            self._warn(source, f"{source}: BMS does not answer: {result.detail}")
            self._apply(self.tracker.on_source_failure(source, now, result.detail), now)
            return
        self._apply(self.tracker.on_source_answer(source, now), now)
        if result.outcome in ("negative", "invalid"):
            self._warn(source, f"{source}: {result.detail}")
        elif result.outcome == "value" and result.value is not None:
            self._on_reading(Reading(result.job.target, result.value, result.time), now)
        elif result.outcome == "text" and result.text is not None:
            code = self.assembler.feed(CodePage(0, result.text, result.time))
            if code is not None:
                self._on_code(code, now)

    def tick(self, now: float) -> None:
        """Timers: BMS silence, health samples, notices due again."""
        self._judge_time(now)  # a clock that goes back is seen
        if self.uds is not None:
            for result in self.uds.drain():
                self.handle_uds(result, now)
        self._apply(self.tracker.check_silence(now), now)
        snapshot, waiting = self._health_sample(now)
        if self._policy_saved_at is None:
            self._policy_saved_at = now
        # the hourly save: skipped while nothing changed (a parked car writes nothing), and
        # held while a sample waits after a wake-up (bounded), so that the two share one
        # commit on a trip's first tick too
        hourly = (
            now - self._policy_saved_at >= self.config.policy.persist_interval_s
            and not waiting
            and self._unsaved_changes()
        )
        asked = self._save_asked(now)  # taken every tick: an hourly save answers it too
        if snapshot is not None or hourly or asked:
            # one commit for the sample and the save: a sample always takes the save with
            # it and restarts the save schedule, so with the default intervals (both an
            # hour) the two stay in step, and in steady state this is the agent's only
            # write (the store adds the deferred delete of the last delivered sample to
            # it). A save the policy asks for is the same commit; it keeps the schedule.
            with self.store.transaction():
                if snapshot is not None:
                    snapshot["trend"] = self.policy.trend(now)
                    if self._rebase_unreported and self.clock_rebased is not None:
                        snapshot["clock_rebased"] = self.clock_rebased
                        self._rebase_unreported = False
                    self._emit("pack.health", snapshot, now)
                    self._sampled_at = now
                    if now >= PLAUSIBLE_SINCE:  # a 1970 boot's time is never the schedule
                        self.store.put_state(HEALTH_SAMPLED_KEY, now)
                self.flush(now if hourly or snapshot is not None else None)
                self._saved_at = now
        self._send_due_notices(now)
        self._check_notice_failures(now)

    def _health_sample(self, now: float) -> tuple[dict[str, Any] | None, bool]:
        """The due ``pack.health`` sample, and whether one is due but waits after a wake-up.

        At most one per ``publish_interval_s`` after the last (also across restarts).
        While the car is parked (nothing fresh) a due sample waits for the next trip, so
        a car on short trips reports on each trip, not only when the schedule falls inside
        one. After a wake-up it waits for the pack's SOH (the trend metric, which may come
        on a slower cycle than the first frames) and for the pack code to be confirmed
        again (after a swap the new pack's readings must not go out under the old code),
        each up to ``SAMPLE_WAIT_S`` (the SOH: at most its own freshness limit)."""
        interval = self.config.health.publish_interval_s
        if not self._sampled_at_checked and now >= PLAUSIBLE_SINCE:
            self._sampled_at_checked = True
            if self._sampled_at is not None and self._sampled_at - now > interval:
                self._sampled_at = None  # stored by a clock that was ahead: due at once
        if self._sampled_at is not None and now - self._sampled_at < interval:
            return None, False  # not due; also while the clock is behind the last sample
        tracker = self.tracker
        if not tracker.heard_lately(now):
            return None, False  # parked: checked in O(1), every tick
        awake = tracker.awake_since if tracker.awake_since is not None else now
        key = self.config.policy.trend_metric
        if key in self.config.metrics and tracker.fresh(key, now) is None:
            limit = min(tracker.max_age(key), max(self.config.health.bms_timeout_s, SAMPLE_WAIT_S))
            if now - awake < limit:
                return None, True
        heard = tracker.code_heard_at
        code_awaited = self.config.pack_code.source != "none" and (heard is None or heard < awake)
        if code_awaited and now - awake < SAMPLE_WAIT_S:
            return None, True
        snapshot = tracker.health_snapshot(now)
        return (snapshot if snapshot["metrics"] else None), False

    def _unsaved_changes(self) -> bool:
        """Whether a save would write anything new: the rules' state changes only with
        readings (every reading passes the tracker), the rest with its own values."""
        return (
            self.tracker.last_frame != self._saved_frame_at
            or self._head_unit_heard_at != self._head_unit_saved
            or self._ignition_on != self._ignition_saved
        )

    def _save_asked(self, now: float) -> bool:
        """The policy asks for a save at ignition Off and on a new day (docs/policy.md, "The
        latch and what survives a restart"). A new day is not saved when this life saved
        less than ``persist_interval_s`` ago: the hourly save already bounds the loss, so a
        steady day costs no extra write; it matters to a life too short for an hourly save."""
        asked = self.policy.take_save_request()
        if asked == "new_day" and self._saved_at is not None:
            return now - self._saved_at >= self.config.policy.persist_interval_s
        return asked is not None

    def flush(self, now: float | None = None) -> None:
        """Persist the rules' windows, the SOH history and when the head unit was last
        heard: hourly, when the policy asks (ignition Off, a new day) and at shutdown
        (not on every reading: flash wears). ``now`` restarts the hourly schedule."""
        with self.store.transaction():
            self.store.put_state("policy.state", self.policy.to_state())
            self._saved_frame_at = self.tracker.last_frame
            if self._head_unit_heard_at != self._head_unit_saved:
                self.store.put_state("notices.head_unit_heard_at", self._head_unit_heard_at)
                self._head_unit_saved = self._head_unit_heard_at
            if self._ignition_on != self._ignition_saved:
                self.store.put_state("ignition.on", self._ignition_on)
                self._ignition_saved = self._ignition_on
        if now is not None:
            self._policy_saved_at = now

    # -- events ---------------------------------------------------------------

    def _apply(self, happenings: list[Happening], now: float) -> None:
        for event_type, data in happenings:
            self._emit(event_type, data, now)

    def record(self, event_type: str, data: dict[str, Any], now: float) -> None:
        """An event about the agent itself (e.g. ``store.reset``), not caused by a frame."""
        self._emit(event_type, data, now)

    def _emit(self, event_type: str, data: dict[str, Any], now: float) -> None:
        # seq is the order of truth; the time is flagged when the clock is unset or went back
        unsure = now < PLAUSIBLE_SINCE or not self._judge_time(now)
        if unsure:
            self._warn(
                "time",
                f"clock unsure ({utc_from_timestamp(now).isoformat()}): "
                "events say time_unsure; order them by seq",
                every_s=3600.0,
            )
        draft = EventDraft(
            type=event_type,  # type: ignore[arg-type]
            vin=self.config.vin,
            time=utc_from_timestamp(now),
            data=data,
            time_unsure=unsure,
        )
        event = self.store.append(draft)
        log.info("event %s seq=%d %s", event.type, event.seq, event.event_id)
        if self._on_event is not None:
            self._on_event(event)

    def _judge_time(self, now: float) -> bool:
        """True when ``now`` is on the agent's time line (events are not ``time_unsure``)."""
        verdict = self.clock.judge(now)
        if verdict is Verdict.REBASED:
            assert self.clock.abandoned is not None and self.clock.adopted_from is not None
            self._rebased("events", self.clock.abandoned, self.clock.adopted_from, now)
        return verdict in (Verdict.ON_LINE, Verdict.AHEAD, Verdict.REBASED)

    @property
    def latest_time(self) -> float:
        """The newest time on the agent's line (-inf before the first): how far a
        simulated run has been read (the demo waits on it)."""
        return float("-inf") if self.clock.newest is None else self.clock.newest

    def _rebased(self, by: str, abandoned: float, start: float, now: float) -> None:
        """A clock step back was confirmed (by the rules' readings or the agent's own
        time): logged, and reported in the status file and the next ``pack.health``.
        The health and save schedules and the BMS silence watch start again on the new
        time."""
        if self._sampled_at is not None and self._sampled_at > now:
            self._sampled_at = None  # a sample on the abandoned line: due at once
        self._policy_saved_at = None
        self._ignition_saved_at = -math.inf  # its save schedule too
        self.tracker.rebase(now)
        self._rebase_unreported = True
        self.clock_rebased = {
            "by": by,
            "abandoned": utc_from_timestamp(abandoned).isoformat(),
            "start": utc_from_timestamp(start).isoformat(),
        }
        log.warning(
            "clock stepped back from %s to %s and stayed: the %s continue on the new time",
            self.clock_rebased["abandoned"],
            self.clock_rebased["start"],
            "rules" if by == "rules" else "event times",
        )

    def _warn(self, key: str, message: str, exc: bool = False, every_s: float = 60.0) -> None:
        """At most one warning per ``key`` a minute: a broken frame at 100 Hz must not fill
        the journal."""
        t = time.monotonic()
        if t - self._warned.get(key, -every_s) >= every_s:
            self._warned[key] = t
            log.warning(message, exc_info=exc)


def _uds_max_age(config: AgentConfig) -> dict[str, float]:
    from pack_agent.canbus.uds import uds_max_age

    return {
        m: uds_max_age(ref.uds, config.health.bms_timeout_s)
        for m, ref in config.metrics.items()
        if ref.uds is not None
    }


def run_loop(
    agent: Agent,
    source: Source,
    uplink: Uplink | None,
    stop: threading.Event,
    clock: Callable[[], float] | None = time.time,
    housekeeping: Callable[[], None] | None = None,
) -> None:
    """The main loop. ``clock=None`` takes time from the frames (replay, simulated time).

    While the uplink has a backlog (``uplink.busy``) the loop does not sleep on the
    bus: it takes the frames that are there and waits on the uplink's PUBACKs instead
    (``PUMP_WAIT_S`` at a time), so the outbox drains at the broker's pace.

    ``housekeeping`` runs every tick on this thread (watchdog, reload, status file)."""
    last_tick = 0.0  # monotonic
    frame_time = last_frame_tick = 0.0  # frame time, when the frames are the clock
    while not stop.is_set():
        pumping = uplink is not None and uplink.busy
        item = source.recv(0.0 if pumping else TICK_S)
        if item is not None:
            bus, frame = item
            frame_time = max(frame_time, frame.timestamp)
            agent.handle_frame(bus, frame, frame.timestamp if clock is None else clock())
            if clock is None:
                newest = agent.clock.newest
                if newest is not None and newest < frame_time:
                    # a stray stamp ahead (not taken) or a step back the agent adopted
                    frame_time = last_frame_tick = newest
                if frame_time - last_frame_tick >= TICK_S:
                    last_frame_tick = frame_time
                    agent.tick(frame_time)
        if uplink is not None and (pumping or item is not None):
            # an event a frame caused goes out now, not at the next tick
            uplink.poll(PUMP_WAIT_S if pumping and item is None else 0.0)
        mono = time.monotonic()
        if mono - last_tick >= TICK_S:
            last_tick = mono
            if clock is not None:
                agent.tick(clock())
            if uplink is not None:
                uplink.poll()
            if housekeeping is not None:
                housekeeping()
