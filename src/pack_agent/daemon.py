"""Builds a running agent from a configuration: the only place that opens outside things."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pack_agent import __version__
from pack_agent.agent import Agent, run_loop
from pack_agent.config import AgentConfig
from pack_agent.database import load_and_check
from pack_agent.decoder import Decoder
from pack_agent.source import BusSource, can_filters, open_bus

if TYPE_CHECKING:
    import can

    from pack_agent.uds import UdsPoller

log = logging.getLogger(__name__)


class Daemon:
    """Store, buses, owner channel, uplink and agent, opened in that order and closed in reverse."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        clock: Callable[[], float] | None = time.time,
        on_event: Callable[[Any], None] | None = None,
        buses: dict[str, can.BusABC] | None = None,
    ) -> None:
        from pack_agent.catalogue import load_catalogue
        from pack_agent.config import resolve_path
        from pack_agent.hmi import CanOwnerNotifier, OutboxOwnerNotifier
        from pack_agent.notices import outlet_text
        from pack_agent.store import Store
        from pack_agent.uplink import MqttUplink

        self.config = config
        self.clock = clock
        self.stop_event = threading.Event()
        db = load_and_check(config)
        decoder = Decoder(config, db)
        notice_bus = config.notice.bus or config.buses[0].name
        ack = db.get_message_by_name(config.notice.ack_message)
        self.store = Store(
            config.store_path(),
            max_events=config.store.max_events,
            synchronous=config.store.synchronous,
        )
        opened: dict[str, can.BusABC] = {}
        try:
            for settings in config.buses:
                if buses is not None and settings.name in buses:
                    opened[settings.name] = buses[settings.name]
                    continue
                ids = decoder.frame_ids(settings.name)
                if settings.name == notice_bus:
                    ids.append((ack.frame_id, ack.is_extended_frame))
                opened[settings.name] = open_bus(settings, can_filters(ids))
        except Exception:
            for bus in opened.values():
                bus.shutdown()
            self.store.close()
            raise
        self.source = BusSource(opened)
        self.uds = self._uds_poller(config)
        n = config.notice
        self.notifier = CanOwnerNotifier(
            notice_bus,
            opened[notice_bus],
            db,
            n.message,
            n.ack_message,
            n.text_message,
            outlet_text(n.service_outlet, n.service_phone),
        )
        extra = []
        if n.mqtt_copy:
            catalogue = load_catalogue(
                resolve_path(n.catalogue, config.base_dir), n.service_outlet, n.service_phone
            )
            extra.append(OutboxOwnerNotifier(catalogue, n.service_outlet, n.service_phone))
        self.uplink = MqttUplink(
            config.mqtt_settings(), self.store, config.vin, agent_version=__version__
        )
        self.agent = Agent(
            config,
            decoder,
            self.store,
            self.notifier,
            on_event=on_event,
            extra_notifiers=extra,
            uds=self.uds,
        )

    def _uds_poller(self, config: AgentConfig) -> UdsPoller | None:
        """Diagnostic requests, each on its own bus handle filtered to its response id."""
        from pack_agent.uds import UdsPoller, job_filters, jobs_from_config

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

    def run(self) -> None:
        """Runs until ``stop_event`` is set; then flushes and closes everything."""
        self.uplink.start()
        if self.uds is not None:
            self.uds.start()
        log.info("pack-agent %s running for %s", __version__, self.config.vin)
        try:
            run_loop(self.agent, self.source, self.uplink, self.stop_event, self.clock)
        finally:
            self.close()

    def close(self, timeout: float = 5.0) -> None:
        try:
            self.agent.flush()
        except Exception:
            log.exception("policy state not saved at shutdown")
        try:
            self.uplink.stop(timeout)
        finally:
            if self.uds is not None:
                self.uds.close()
            self.source.close()
            self.store.close()
