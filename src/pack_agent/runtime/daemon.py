"""Builds a running agent from a configuration: the only place that opens outside things.

Lifecycle (see docs/operations.md): ``READY=1`` to systemd once the store and the
buses are open (the broker may come later); the watchdog is fed from the main
loop; SIGTERM finishes the frame at hand, waits up to ``daemon.shutdown_timeout_s``
for the broker's acknowledgements, publishes ``offline`` and returns; SIGHUP
re-reads the configuration file and applies what can change without a restart
(``RELOADABLE``); a bus that goes away is reopened by ``GuardedBus``; the uplink
reconnects to the broker by itself.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pack_agent import __version__
from pack_agent.canbus.checks import load_all
from pack_agent.canbus.decoder import Decoder
from pack_agent.canbus.guard import GuardedBus
from pack_agent.canbus.source import BusSource, can_filters, open_bus
from pack_agent.config import AgentConfig, as_data
from pack_agent.core.events import utc_from_timestamp
from pack_agent.errors import ConfigError
from pack_agent.runtime.agent import Agent, run_loop
from pack_agent.runtime.preflight import preflight_problems
from pack_agent.runtime.sdnotify import SystemdNotifier
from pack_agent.runtime.status import LAST_EVENT_KEY, status_path, write_status

if TYPE_CHECKING:
    import can

    from pack_agent.canbus.uds import UdsPoller

log = logging.getLogger(__name__)


def _take(daemon: Daemon, new: AgentConfig, key: str) -> None:
    """The running configuration takes the new value: whoever reads it next uses it."""
    section, name = key.split(".")
    setattr(getattr(daemon.config, section), name, getattr(getattr(new, section), name))


def _take_log_level(daemon: Daemon, new: AgentConfig, key: str) -> None:
    from pack_agent.runtime.logsetup import set_level

    _take(daemon, new, key)
    if new.daemon.log_level is not None and not daemon.log_level_fixed:
        set_level(new.daemon.log_level)  # --log-level on the command line wins


# What SIGHUP applies, and how (each is read live where it is used: the main loop, the
# health sampler). The one list: a changed key that is not here is logged as needing a
# restart (``daemon.clock`` and ``daemon.status_file`` among them: both are taken once,
# when the daemon starts), and the running configuration keeps its old value.
RELOADABLE: dict[str, Callable[[Daemon, AgentConfig, str], None]] = {
    "daemon.log_level": _take_log_level,
    "daemon.status_interval_s": _take,
    "daemon.shutdown_timeout_s": _take,
    "health.publish_interval_s": _take,
}
# the latest event of these types is kept in the store's state for `pack-agent status`
REMEMBERED = (
    "pack.health",
    "scrap.condition_met",
    "owner.notified",
    "owner.acknowledged",
    "pack.replaced",
    "pack.code_invalid",
    "bms.silent",
    "bms.recovered",
)


class Daemon:
    """Store, buses, owner channel, uplink and agent, opened in that order and closed in reverse."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        clock: Callable[[], float] | str | None = "config",
        on_event: Callable[[Any], None] | None = None,
        buses: dict[str, can.BusABC] | None = None,
        config_path: str | Path | None = None,
        systemd: SystemdNotifier | None = None,
    ) -> None:
        from pack_agent.delivery.mqtt import MqttUplink
        from pack_agent.delivery.owner_channel import owner_notifiers
        from pack_agent.store import open_store

        self.config = config
        self.config_path = Path(config_path) if config_path is not None else None
        if clock == "config":  # [daemon] clock: the wall clock, or the frames' own time
            clock = time.time if config.daemon.clock == "system" else None
        self.clock: Callable[[], float] | None = clock  # type: ignore[assignment]
        self.stop_event = threading.Event()
        self.systemd = systemd or SystemdNotifier(address="")
        self.started_at = time.time()
        self._reload_requested = threading.Event()
        self._next_status = 0.0
        self._space_reported: float | None = None  # the short-space episode reported
        self._state = "starting"
        self._user_on_event = on_event
        self.log_level_fixed = False  # True: --log-level given, a reload keeps it
        self.stop_reason = "stop requested"
        self.status_file: Path | None = status_path(config.daemon.status_file)
        dbs = load_all(config)  # its findings join config.warnings
        problems = preflight_problems(config)  # before anything opens, and before READY
        if problems:
            raise ConfigError(problems, config.source)
        for warning in config.warnings:  # deprecated keys, DBC findings (as check-config)
            log.warning("%s: %s", config.source, warning)
        decoder = Decoder(config, dbs.vehicle)
        notice_bus = config.notice.bus or config.buses[0].name
        ack = None  # no CAN channel to the head unit: no answer frames to receive
        if dbs.notice is not None:
            ack = dbs.notice.get_message_by_name(config.notice.ack_message)
        self.store, reset = open_store(  # an unreadable file is moved aside: store.reset
            config.store_path(),
            max_events=config.store.max_events,
            synchronous=config.store.synchronous,
            reserve_bytes=config.store.reserve_bytes,
        )
        opened: dict[str, can.BusABC] = {}
        self.guards: dict[str, GuardedBus] = {}
        try:
            for settings in config.buses:
                if buses is not None and settings.name in buses:
                    opened[settings.name] = buses[settings.name]
                    continue
                ids = decoder.frame_ids(settings.name)
                if settings.name == notice_bus and ack is not None:
                    ids.append((ack.frame_id, ack.is_extended_frame))
                filters = can_filters(ids)
                guard = GuardedBus(
                    settings.name,
                    lambda s=settings, f=filters: open_bus(s, f),  # type: ignore[misc]
                )
                self.guards[settings.name] = guard
                opened[settings.name] = guard  # type: ignore[assignment]
        except Exception:
            for bus in opened.values():
                bus.shutdown()
            self.store.close()
            raise
        self.source = BusSource(opened)
        self.uds = self._uds_poller(config)
        self.notifier, extra = owner_notifiers(config, notice_bus, opened[notice_bus], dbs.notice)
        self._notice_bus = (notice_bus, opened[notice_bus], dbs.notice)  # to rebuild the channels
        self.uplink = MqttUplink(
            config.mqtt_settings(), self.store, config.vin, agent_version=__version__
        )
        self.agent = Agent(
            config,
            decoder,
            self.store,
            self.notifier,
            on_event=self._on_event,
            extra_notifiers=extra,
            uds=self.uds,
        )
        if reset is not None:
            self.agent.record("store.reset", reset, time.time())
        # the backend's notice.contact: the owner channels take the stored overrides now
        # (the agent put them into config.notice) and every new value later
        self.agent.commands.contact_changed = self._contact_changed
        if self.agent.commands.overrides:
            self._contact_changed()

    def _contact_changed(self) -> None:
        from pack_agent.delivery.owner_channel import owner_notifiers

        notifier, extra = owner_notifiers(self.config, *self._notice_bus)
        self.notifier = notifier
        self.agent.replace_notifiers(notifier, extra)
        self.uplink.announce(notice_overrides=dict(sorted(self.agent.commands.overrides.items())))

    def _uds_poller(self, config: AgentConfig) -> UdsPoller | None:
        """Diagnostic requests, each on its own bus handle filtered to its response id."""
        from pack_agent.canbus.uds import UdsPoller, job_filters, jobs_from_config

        jobs = jobs_from_config(config)
        if not jobs:
            return None
        settings = {b.name: b for b in config.buses}
        try:
            return UdsPoller(jobs, lambda job: open_bus(settings[job.bus], job_filters(job)))
        except Exception:
            self.source.close()
            self.store.close()
            raise

    # -- running --------------------------------------------------------------

    def run(self) -> None:
        """Runs until ``stop_event`` is set; then flushes and closes everything."""
        self.uplink.start()
        if self.uds is not None:
            self.uds.start()
        self._state = "running"
        log.info("pack-agent %s running for %s", __version__, self.config.vin)
        self.systemd.ready(self._status_line())
        try:
            run_loop(
                self.agent,
                self.source,
                self.uplink,
                self.stop_event,
                self.clock,
                housekeeping=self.housekeeping,
            )
        finally:
            log.info(
                "%s: stopping (up to %.1f s)",
                self.stop_reason,
                self.config.daemon.shutdown_timeout_s,
            )
            self.systemd.stopping("stopping: flushing the outbox")
            self.close(self.config.daemon.shutdown_timeout_s)

    def housekeeping(self) -> None:
        """Called by the main loop every tick: watchdog, reload, live status."""
        self.systemd.watchdog()
        self.store.write_held()  # a full disk: held events go to the file once it has room
        self._report_space()
        if self._reload_requested.is_set():
            self._reload_requested.clear()
            self.reload()
        now = time.monotonic()
        if now >= self._next_status:
            self._next_status = now + self.config.daemon.status_interval_s
            self.write_status()
            self.systemd.status(self._status_line())

    def _report_space(self) -> None:
        """One ``store.space_low`` per episode of a volume under ``store.reserve_bytes``
        (an essential event: it is written into the reserve)."""
        since = self.store.space_short_since
        if since is None or since == self._space_reported:
            return
        self._space_reported = since
        self.agent.record("store.space_low", self.store.space(), time.time())

    def request_reload(self) -> None:
        """Safe from a signal handler: the main loop reloads at its next tick."""
        self._reload_requested.set()

    def reload(self) -> list[str]:
        """Re-read the configuration file; apply ``RELOADABLE``, report the rest.

        Returns the changed keys that need a restart. A file that does not validate
        is reported and the running configuration is kept."""
        from pack_agent.config.isolated import load_config_isolated
        from pack_agent.errors import ConfigError
        from pack_agent.runtime.commands import apply_overrides
        from pack_agent.runtime.logsetup import add_secrets

        if self.config_path is None:
            log.warning("SIGHUP: no configuration file to reload")
            return []
        self.systemd.reloading()
        try:
            new = load_config_isolated(self.config_path)
        except ConfigError as exc:
            log.error("SIGHUP: configuration not reloaded, the running one is kept:\n%s", exc)
            self.systemd.ready(self._status_line())
            return []
        if new.mqtt.password is not None:
            add_secrets([new.mqtt.password.get_secret_value()])
        # the backend's notice overrides win over the file's values (and are no change)
        apply_overrides(new.notice, self.agent.commands.overrides)
        for key, apply in RELOADABLE.items():
            apply(self, new, key)
        self._next_status = 0.0
        restart = [k for k in _changed_keys(self.config, new) if k not in RELOADABLE]
        if restart:
            log.warning(
                "SIGHUP: reloaded; these changes take effect after a restart: %s",
                ", ".join(restart),
            )
        else:
            log.info("SIGHUP: configuration reloaded (%s)", ", ".join(RELOADABLE))
        self.systemd.ready(self._status_line())
        return restart

    # -- live status ------------------------------------------------------------

    def _on_event(self, event: Any) -> None:
        if event.type in REMEMBERED:  # a few rows, at the rate of rare events
            self.store.put_state(
                LAST_EVENT_KEY + event.type,
                {"seq": event.seq, "time": event.time.isoformat(), "data": event.data},
            )
        if self._user_on_event is not None:
            self._user_on_event(event)

    def snapshot(self) -> dict[str, Any]:
        """Bus, broker and agent state for the status file (live, not persisted)."""
        buses: dict[str, Any] = {}
        for s in self.config.buses:
            guard = self.guards.get(s.name)
            info: dict[str, Any] = {"interface": s.interface, "channel": s.channel}
            info.update(guard.status() if guard is not None else {"state": "external"})
            buses[s.name] = info
        tracker = self.agent.tracker
        m = self.config.mqtt
        return {
            "schema": 1,
            "state": self._state,
            "time": utc_from_timestamp(time.time()).isoformat(),
            "pid": os.getpid(),
            "agent_version": __version__,
            "vin": self.config.vin,
            "config": str(self.config_path) if self.config_path else None,
            "started_at": utc_from_timestamp(self.started_at).isoformat(),
            "status_interval_s": self.config.daemon.status_interval_s,
            "buses": buses,
            "broker": {"host": m.host, "port": m.port, **self.uplink.status()},
            "agent": {
                "pack_code": tracker.code,
                "bms_silent": tracker.bms_silent,
                "frame_errors": self.agent.frame_errors,
                "frames_decoded": self.agent.decoder.stats.frames,
                "frames_dropped": dict(self.agent.decoder.stats.dropped.most_common(20)),
                "e2e": self.agent.e2e_status(),
                "stale_readings": self.agent.stale_readings,
                # the newest time read (frames and ticks): how far a simulated or replayed
                # run has been read, also while readings wait for the pack code
                "frame_time": self.agent.clock.newest,
                "clock_rebased": self.agent.clock_rebased,
                "notice_failures": self.agent.notice_failures,
                "commands": self.agent.commands.status(),
                "latest": {
                    k: {"value": r.value, "time": r.time} for k, r in sorted(tracker.latest.items())
                },
            },
            "queue": self.store.stats(),
        }

    def write_status(self) -> None:
        if self.status_file is None:
            return
        try:
            write_status(self.status_file, self.snapshot())
        except OSError as exc:
            log.warning(
                "status file %s not written (%s); status shows no live state", self.status_file, exc
            )
            self.status_file = None  # once; `pack-agent status` still reads the store

    def _status_line(self) -> str:
        buses = ", ".join(f"{n} {g.state}" for n, g in self.guards.items()) or "buses external"
        broker = "broker connected" if self.uplink.connected else "broker not connected"
        return f"{self._state}: {buses}; {broker}; {self.store.pending_count()} queued"

    # -- closing ----------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> None:
        started = time.monotonic()
        try:
            self.agent.flush()
        except Exception:
            log.exception("policy state not saved at shutdown")
        try:
            self.uplink.stop(max(0.1, timeout - 0.5))  # keep time to close the rest
        finally:
            self._state = "stopped"
            try:
                self.write_status()
            finally:
                if self.uds is not None:
                    self.uds.close()
                self.source.close()
                self.store.close()
                self.systemd.close()
        log.info("stopped in %.2f s", time.monotonic() - started)


def _changed_keys(old: AgentConfig, new: AgentConfig) -> list[str]:
    """Dotted keys (to the section level) that differ."""
    a = as_data(old, reveal_secrets=True)  # a new password needs a restart too
    b = as_data(new, reveal_secrets=True)
    changed = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            changed += [f"{key}.{k}" for k in sorted(set(va) | set(vb)) if va.get(k) != vb.get(k)]
        elif va != vb:
            changed.append(key)
    return changed
