"""Typed events: what the agent says happened, exactly as the backend receives it.

Pure: no clock and no I/O. The store gives each event its per-vehicle ``seq``
when it is appended, so ``EventDraft`` (no seq) becomes ``Event`` (with seq)
only once it is on disk.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

EventType = Literal[
    "pack.identified",
    "pack.replaced",
    "pack.code_invalid",
    "pack.health",
    "scrap.condition_met",
    "scrap.forecast",
    "owner.notified",
    "owner.acknowledged",
    "owner.notice",
    "owner.notice_failed",
    "bms.silent",
    "bms.recovered",
    "store.reset",
]

EVENT_TYPES: tuple[str, ...] = EventType.__args__  # type: ignore[attr-defined]

# Events that must never be dropped to make room in a full outbox.
ESSENTIAL_TYPES: frozenset[str] = frozenset(EVENT_TYPES) - {"pack.health"}


# A clock before this is not set (a gateway that booted at 1970 before NTP): events
# stamped earlier say ``time_unsure``. 2026-01-01, before pack-agent's first release.
PLAUSIBLE_SINCE = 1_767_225_600.0


def utc_from_timestamp(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def iso_time(ts: float | None) -> str | None:
    """An ISO 8601 UTC time for an event's data; None stays None."""
    return None if ts is None else utc_from_timestamp(ts).isoformat()


def iso_date(ts: float | None) -> str | None:
    """An ISO 8601 UTC date (forecasts, production dates); None stays None."""
    return None if ts is None else utc_from_timestamp(ts).date().isoformat()


def new_event_id() -> str:
    return uuid.uuid4().hex


class EventDraft(BaseModel):
    """An event before the store has numbered it."""

    model_config = ConfigDict(frozen=True)

    type: EventType
    vin: str
    time: datetime
    data: dict[str, Any] = Field(default_factory=dict)
    event_id: str = Field(default_factory=new_event_id)
    time_unsure: bool = False


class Event(BaseModel):
    """An event as stored in the outbox and published on MQTT (one JSON object)."""

    model_config = ConfigDict(frozen=True)

    schema_version: int = SCHEMA_VERSION
    event_id: str = Field(description="Unique id; backends de-duplicate on it.")
    seq: int = Field(ge=1, description="Per-vehicle sequence number, gap-free, from 1.")
    type: EventType
    vin: str
    time: datetime = Field(description="When it happened, by the agent's clock (UTC).")
    data: dict[str, Any] = Field(default_factory=dict)
    time_unsure: bool = Field(
        default=False,
        description="Present (true) when the clock was not to be trusted: before 2026, or "
        "behind a time the agent had already seen (it jumped back). Order by seq.",
    )

    @classmethod
    def from_draft(cls, draft: EventDraft, seq: int) -> Event:
        return cls(
            event_id=draft.event_id,
            seq=seq,
            type=draft.type,
            vin=draft.vin,
            time=draft.time,
            data=draft.data,
            time_unsure=draft.time_unsure,
        )

    def to_json(self) -> str:
        """The published JSON; ``time_unsure`` only when true (most events do not have it)."""
        if self.time_unsure:
            return self.model_dump_json()
        return self.model_dump_json(exclude={"time_unsure"})


def topic_for(prefix: str, vin: str, event_type: str) -> str:
    """``<prefix>/<vin>/events/<type>``: one topic per event type, so a backend can
    subscribe to exactly what it handles (``+/events/scrap.condition_met``)."""
    return f"{prefix}/{vin}/events/{event_type}"
