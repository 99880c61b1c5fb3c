"""Replay: the whole pipeline over a recorded CAN log, with the log's time stamps as the clock.

Decoder, tracker, policy, notice bookkeeping and store run exactly as in the
daemon (``agent.run_loop`` with ``clock=None``); only MQTT is left out and the
owner channel records notices instead of sending them. A log spanning days
therefore exercises day-long rules in seconds, and the same log gives the same
events at the same times on every run.

The log formats and readers are in ``pack_agent.canbus.logs``.
"""

from __future__ import annotations

import hashlib
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pack_agent.canbus.logs import LogSource, ReadStats, channel_map, log_filter, read_log
from pack_agent.config import AgentConfig
from pack_agent.delivery.owner_channel import CanOwnerChannel

if TYPE_CHECKING:
    from pack_agent.core.events import Event
    from pack_agent.core.notices import Notice


class ReplayOwnerChannel(CanOwnerChannel):
    """Keeps the notices the agent would have shown; reads head-unit answers from the log."""

    channel = "replay"
    # the log holds the original attempts' challenges, not the replay's: its answers are
    # the record, taken for the open notice with their sequence number
    verify_attempt = False

    def __init__(self, bus_name: str, db: Any, notice_message: str, ack_message: str) -> None:
        super().__init__(bus_name, None, db, notice_message, ack_message, None)  # type: ignore[arg-type]
        self.sent: list[Notice] = []

    def send(self, notice: Notice, now: float) -> list[Any]:
        self.sent.append(notice)
        self.restore([notice])
        return []

    def withdraw(self, notice: Notice) -> None:
        pass


# -- the replay -------------------------------------------------------------------


@dataclass
class ReplayResult:
    events: list[Event] = field(default_factory=list)
    frames: int = 0
    per_bus: dict[str, int] = field(default_factory=dict)
    unmapped_channels: dict[str, int] = field(default_factory=dict)
    decoder: dict[str, Any] = field(default_factory=dict)
    latest: dict[str, float] = field(default_factory=dict)  # metric -> last value
    first_time: float | None = None
    last_time: float | None = None


def deterministic_id(log_digest: str, vin: str, seq: int) -> str:
    """An event id that is the same on every replay of the same log: a UUID5 of the log's
    content hash, the VIN and the event's seq."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"pack-agent-replay:{log_digest}:{vin}:{seq}").hex


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def replay(
    config: AgentConfig,
    log: Path,
    fmt: str | None = None,
    on_event: Callable[[Event], None] | None = None,
    state_path: Path | None = None,
    deterministic_ids: bool = False,
    filter_ids: bool = True,
) -> ReplayResult:
    """Runs the whole pipeline over ``log``; events go to ``on_event`` as they happen.

    The store is a temporary SQLite file unless ``state_path`` is given (then a
    second replay continues from the first one's pack code, latches and notices).
    Raises ``LogError`` at a bad record, after the events before it were delivered.
    ``filter_ids`` drops unmapped frames while parsing, as the kernel would on a bus.
    """
    from pack_agent.canbus.checks import load_all
    from pack_agent.canbus.decoder import Decoder
    from pack_agent.delivery.owner_channel import OwnerChannel, owner_notifiers
    from pack_agent.runtime.agent import Agent, run_loop
    from pack_agent.store import Store

    dbs = load_all(config)
    digest = file_digest(log) if deterministic_ids else ""
    result = ReplayResult()

    def emit(event: Event) -> None:
        if deterministic_ids:
            event = replace(event, event_id=deterministic_id(digest, event.vin, event.seq))
        result.events.append(event)
        if on_event is not None:
            on_event(event)

    with tempfile.TemporaryDirectory(prefix="pack-agent-replay-") as tmp:
        store = Store(state_path or Path(tmp) / "replay.db", max_events=config.store.max_events)
        try:
            decoder = Decoder(config, dbs.vehicle)
            notifier: OwnerChannel | None = None
            extra: list[OwnerChannel] = []
            if dbs.notice is not None:
                notifier = ReplayOwnerChannel(
                    config.notice.bus or config.buses[0].name,
                    dbs.notice,
                    config.notice.message,
                    config.notice.ack_message,
                )
            else:  # [notice] channel = "none": the MQTT copy is the notice (an event here)
                _, extra = owner_notifiers(config, "", None, None)  # type: ignore[arg-type]
            agent = Agent(config, decoder, store, notifier, on_event=emit, extra_notifiers=extra)
            wanted = {
                b.name: decoder.frame_ids(b.name) + (notifier.frame_ids(b.name) if notifier else [])
                for b in config.buses
            }
            stats = ReadStats()
            frames = read_log(log, fmt, log_filter(config, wanted) if filter_ids else None, stats)
            source = LogSource(frames, config)
            try:
                run_loop(agent, source, None, source.stop, clock=None)
            finally:
                result.frames = stats.frames
                result.first_time, result.last_time = source.first_time, source.last_time
                _count_buses(config, stats, result)
                result.latest = {m: r.value for m, r in agent.tracker.latest.items()}
                result.decoder = {
                    "mapped_frames": decoder.stats.frames,
                    "readings": decoder.stats.readings,
                    "dropped": dict(decoder.stats.dropped),
                }
        finally:
            store.close()
    return result


def _count_buses(config: AgentConfig, stats: ReadStats, result: ReplayResult) -> None:
    mapping = {str(k): v for k, v in channel_map(config).items()}
    single = config.buses[0].name if len(config.buses) == 1 else None
    for ch, n in stats.per_channel.items():
        bus = single or mapping.get(ch)
        if bus is None:
            result.unmapped_channels[ch] = result.unmapped_channels.get(ch, 0) + n
        else:
            result.per_bus[bus] = result.per_bus.get(bus, 0) + n
