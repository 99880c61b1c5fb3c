"""The agent: wires source, decoder, tracker, policy, notices, store and uplink together.

It owns no outside thing itself. Every event is appended to the store in the
same transaction as the state change that caused it, so a crash between the
two cannot happen: after a restart the agent neither forgets a decision nor
takes it again.

Seams: the agent builds the stages, dispatches frames, UDS results and ticks to
them, and stamps events. The timers' logic is beside it, each class in its own
module: ``notice_dispatch.NoticeDispatcher`` (owner notices: send, retry, answers,
failures), ``health_sampler.HealthSampler`` (when a ``pack.health`` is due, what it
carries), ``save_schedule.SaveSchedule`` (when the policy state is saved) and
``clock_rebase.AgentClock`` (the time line; an adopted step back restarts every
schedule). They get the store and an ``emit`` callable, never the agent. The next seam,
at ~500 lines: whose pack a reading is (holding readings after a wake-up, switching
to another pack's saved state: ``_release_held``, ``_switch_pack``) would make a
``pack_identity`` module of its own.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pack_agent.canbus.checks import bms_bus, resolve_ignition, vehicle_metrics
from pack_agent.canbus.codesource import page_total
from pack_agent.canbus.decoder import CodeAssembler, Decoder
from pack_agent.config import AgentConfig
from pack_agent.core.events import PLAUSIBLE_SINCE, EventDraft, utc_from_timestamp
from pack_agent.core.ignition import IgnitionState
from pack_agent.core.notices import Notice
from pack_agent.core.policy import ScrapDecision, ScrapPolicy
from pack_agent.core.readings import CodePage, Reading
from pack_agent.core.tracker import CODE_WAIT_S, Happening, PackTracker
from pack_agent.runtime.clock_rebase import AgentClock
from pack_agent.runtime.commands import CommandHandler
from pack_agent.runtime.health_sampler import HEALTH_SAMPLED_KEY, HealthSampler
from pack_agent.runtime.notice_dispatch import NoticeDispatcher
from pack_agent.runtime.save_schedule import SaveSchedule
from pack_agent.store.diskfull import StoreSpaceShort
from pack_agent.store.state import (
    PACK_CODE,
    PACK_SAVED_PREFIX,
    PACK_TRACKER,
    POLICY_LATCHED,
    POLICY_STATE,
)

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
__all__ = ["HEALTH_SAMPLED_KEY", "TICK_S", "Agent", "run_loop", "serve_commands"]


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
        # the ignition, one definition ([ignition]) for the rules, notices and bms.silent
        spec = resolve_ignition(config, decoder.database)
        self.ignition = IgnitionState(spec) if spec is not None else None
        self._vehicle_metrics = vehicle_metrics(config, decoder.database)
        self._bms_bus = bms_bus(config)  # other ECUs' frames there say the vehicle is awake
        default_bus = config.buses[0].name
        self._elsewhere = frozenset(  # metrics on another bus than the BMS's
            m for m, ref in config.metrics.items() if (ref.bus or default_bus) != self._bms_bus
        )
        self.tracker = PackTracker(
            store.get_state(PACK_CODE),
            config.health.bms_timeout_s,
            _uds_max_age(config),
            ignition_mapped=spec is not None,
            replaced_after_trips=config.pack_code.replaced_after_trips,
            state=store.get_state(PACK_TRACKER),
            code_wait_s=None if config.pack_code.source == "none" else CODE_WAIT_S,
            code_format=config.pack_code.format,
        )
        self.unattributed_readings = 0  # taken while the BMS presented another code
        self.policy = ScrapPolicy.from_config(
            config,
            store.get_state(POLICY_STATE),
            store.get_state(POLICY_LATCHED, []),
            self.tracker.code,
            ignition=spec,
        )
        self.notifiers: list[OwnerChannel] = ([notifier] if notifier else []) + list(
            extra_notifiers
        )
        self.dispatch = NoticeDispatcher(
            config, store, self.notifiers, self._emit, self._warn, lambda: self.tracker.code
        )
        self.notices = self.dispatch.book
        self.health = HealthSampler(config, store, self.tracker, self.policy)
        # the backend's commands (runtime/commands.py); puts its overrides into config.notice
        self.commands = CommandHandler(config, store, self.dispatch, self._emit, self._health_now)
        self.saves = SaveSchedule(config, store, self.policy, self.tracker, [self.dispatch])
        self._on_event = on_event
        self.frame_errors = 0
        self._warned: dict[str, float] = {}
        # the agent's time line (frames, ticks, events; this life only); an adopted step
        # back restarts every schedule on the new time
        self.time = AgentClock(
            [
                self.health.rebase,
                self.saves.rebase,
                self.dispatch.rebase,
                self._rebase_ignition,
                self.tracker.rebase,
            ]
        )
        self.clock = self.time.line

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
            if self.dispatch.take_frame(bus, frame, now):
                if not held and bus == self._bms_bus:
                    self.tracker.on_other_frame(now)  # the head unit answers: the vehicle is awake
                return  # the head unit's answer
            bms = False  # a frame of the BMS; any other proves the vehicle awake
            for item in self.decoder.decode(bus, frame, now):
                if isinstance(item, CodePage):
                    bms = True
                    code = self.assembler.feed(item)
                    if not held:
                        self._apply(self.tracker.on_frame(now), now)
                    if code is not None:
                        self._on_code(code, now)
                else:
                    bms = bms or item.metric not in self._vehicle_metrics
                    self._on_reading(item, now, held)
            if not bms and not held and bus == self._bms_bus:
                self.tracker.on_other_frame(now)
        except Exception:
            self.frame_errors += 1
            self._warn("frame", f"frame 0x{frame.arbitration_id:X} on {bus} not handled", exc=True)

    def _on_code(self, code: str, now: float) -> None:
        before, tracked = self.tracker.code, self.tracker.to_state()
        happenings = self.tracker.on_code(code, now)
        if not happenings and self.tracker.to_state() == tracked:
            self._release_held(now, code_heard=True)
            return
        with self.store.transaction():
            withdrawn: list[Notice] = []
            if self.tracker.code != before:
                withdrawn = self._switch_pack(before, self.tracker.code)
            self.store.put_state(PACK_TRACKER, self.tracker.to_state())
            self._apply(happenings, now)
        self.dispatch.withdraw(withdrawn)
        self._release_held(now, code_heard=True)

    def _release_held(self, now: float, code_heard: bool = False) -> None:
        """Readings held after a wake-up until the code said whose they are."""
        for reading in self.tracker.release(now, code_heard):
            if self.tracker.attributed:  # judged as if it had not waited: at its own time
                self._judge(reading, min(reading.time, now))
            else:
                self.unattributed_readings += 1

    def _switch_pack(self, old: str | None, new: str | None) -> list[Notice]:
        """Another pack is the vehicle's: the old one's rules and open notices are saved
        under its code, the new one starts afresh or, if it was here before (a swap
        undone), gets its own saved state back. Returns the notices to withdraw."""
        withdrawn, parked = self.dispatch.park()
        if old is not None:
            saved = {"policy": self.policy.to_state(), "notices": parked}
            self.store.put_state(PACK_SAVED_PREFIX + old, saved)
        back = (self.store.get_state(PACK_SAVED_PREFIX + new) if new is not None else None) or {}
        self.policy.restore(new, back.get("policy"))
        self.dispatch.restore(back.get("notices", []))
        self.store.put_state(PACK_CODE, new)
        self.store.put_state(POLICY_LATCHED, sorted(self.policy.latched_rules))
        self.store.put_state(POLICY_STATE, self.policy.to_state())
        return withdrawn

    def _on_reading(self, reading: Reading, now: float, held: bool = False) -> None:
        """``held``: stamped ahead of the time line (the tracker does not take it)."""
        if self.tracker.is_stale(reading, now):
            self.stale_readings += 1  # judged by its own time: never feeds a rule
            return
        self._release_held(now)  # the wait is over: held readings go first, in order
        if held:
            pass
        elif reading.metric in self._vehicle_metrics:
            # another ECU: the vehicle is awake (when it shares the BMS's bus)
            self.tracker.on_vehicle_reading(reading, reading.metric not in self._elsewhere)
        else:
            self._apply(self.tracker.on_reading(reading), now)
        ignition = self.ignition
        if ignition is not None and reading.metric == ignition.spec.metric:
            was = ignition.on
            ignition.update(reading.time, reading.value)
            if ignition.on and was is False:
                self.tracker.on_trip_start(now)  # a trip, for counting another code's trips
            self.dispatch.on_ignition(ignition.on, now)
        if reading.metric not in self._vehicle_metrics:  # the pack's reading: whose pack?
            if self.tracker.awaiting_code(now):  # a wake-up: the code will tell
                self.tracker.hold(reading)
                return
            if not self.tracker.attributed:  # another pack's: never the known pack's
                self.unattributed_readings += 1
                return
        self._judge(reading, now)

    def _judge(self, reading: Reading, now: float) -> None:
        """A reading through the rules (the known pack's, or the vehicle's)."""
        for decision in self.policy.observe(reading, self.tracker.code):
            self._decide(decision, now)
        rebased = self.policy.take_rebase()
        if rebased is not None:
            self.time.rebase("rules", *rebased, now)

    def _decide(self, decision: ScrapDecision, now: float) -> None:
        with self.store.transaction():
            self.store.put_state(POLICY_LATCHED, sorted(self.policy.latched_rules))
            self.store.put_state(POLICY_STATE, self.policy.to_state())
            if decision.publish:
                self._emit(decision.event_type, decision.evidence(), now)
            if decision.notify:
                self.dispatch.open(decision, now)
        log.warning(
            "scrapping condition met: rule %s (%s), pack %s",
            decision.rule_id,
            decision.severity,
            decision.pack_code,
        )
        self.dispatch.send_due(now)

    @property
    def notice_failures(self) -> int:
        """Failed sends of owner notices since start (the status file shows it)."""
        return self.dispatch.notice_failures

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

    def notice_status(self) -> dict[str, Any]:
        """Owner-notice counters and open notices, for the status command."""
        return self.dispatch.notice_status()

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
        """Timers: BMS silence, health samples, the state save, notices due again."""
        self._judge_time(now)  # a clock that goes back is seen
        if self.uds is not None:
            for result in self.uds.drain():
                self.handle_uds(result, now)
        ignition = self.ignition.at(now) if self.ignition is not None else None
        self._apply(self.tracker.check_silence(now, ignition), now)
        self._release_held(now)
        snapshot, waiting = self.health.due(now)
        hourly, asked = self.saves.due(now, waiting)
        if snapshot is not None or hourly or asked:
            # one commit for the sample and the save: a sample always takes the save with
            # it and restarts the save schedule, so with the default intervals (both an
            # hour) the two stay in step, and in steady state this is the agent's only
            # write (the store adds the deferred delete of the last delivered sample to
            # it). A save the policy asks for is the same commit; it keeps the schedule.
            with self.store.transaction():
                if snapshot is not None:
                    rebased = self.time.take_unreported()
                    if rebased is not None:
                        snapshot["clock_rebased"] = rebased
                    self._emit("pack.health", snapshot, now)
                    self.health.taken(now)
                self.saves.save(now, restart=hourly or snapshot is not None)
        self.dispatch.send_due(now)
        self.dispatch.check_failures(now)

    def _health_now(self, now: float) -> bool:
        """A ``pack.health`` now (the backend's ``report.now``, in its commit); False when
        there is no fresh reading to report. The next scheduled one is an interval later."""
        snapshot = self.tracker.health_snapshot(now)
        if not snapshot["metrics"]:
            return False
        snapshot["trend"] = self.policy.trend(now)
        self._emit("pack.health", snapshot, now)
        self.health.taken(now)
        return True

    def replace_notifiers(
        self, notifier: OwnerChannel | None, extra: Sequence[OwnerChannel] = ()
    ) -> None:
        """New owner channels (the backend changed the notice contact): the next send uses
        them; notices and their attempts are the dispatcher's and stay."""
        self.notifier = notifier
        self.notifiers = ([notifier] if notifier else []) + list(extra)
        self.dispatch.notifiers = list(self.notifiers)

    def flush(self, now: float | None = None) -> None:
        """Persist the rules' windows, the SOH history, the ignition and when the head
        unit was last heard (``SaveSchedule``); the daemon calls it at shutdown."""
        self.saves.flush(now)

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
        try:
            event = self.store.append(draft)
        except StoreSpaceShort:
            return  # a cheap event on a volume under store.reserve_bytes: counted, logged
        log.info("event %s seq=%d %s", event.type, event.seq, event.event_id)
        if self._on_event is not None:
            self._on_event(event)

    def _judge_time(self, now: float) -> bool:
        """True when ``now`` is on the agent's time line (events are not ``time_unsure``)."""
        return self.time.judge(now)

    @property
    def clock_rebased(self) -> dict[str, Any] | None:
        """The last adopted clock step back (the status file shows it)."""
        return self.time.rebased

    @property
    def latest_time(self) -> float:
        """The newest time on the agent's line (-inf before the first): how far a
        simulated run has been read (the demo waits on it)."""
        return float("-inf") if self.clock.newest is None else self.clock.newest

    def _rebase_ignition(self, now: float) -> None:
        """After an adopted step back, an ignition frame stamped on the abandoned line says
        nothing of now."""
        ign = self.ignition
        if ign is not None and ign.last_t is not None and ign.last_t > now:
            self.ignition = IgnitionState(ign.spec)

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
                serve_commands(agent, uplink, clock)
            if housekeeping is not None:
                housekeeping()


def serve_commands(agent: Agent, uplink: Uplink, clock: Callable[[], float] | None) -> None:
    """The backend's commands the uplink received, applied on this thread and answered.

    Their time is the agent's: the clock, or (frames as the clock) the newest frame's
    time, or the wall clock before the first frame."""
    for request in uplink.take_commands():
        if clock is not None:
            now = clock()
        else:
            now = agent.latest_time if agent.clock.newest is not None else time.time()
        uplink.respond(request, agent.commands.handle(request, now))
    if agent.commands.wants_status:
        agent.commands.wants_status = False
        uplink.announce()
