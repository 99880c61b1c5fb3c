"""Typed events: what the agent says happened, exactly as the backend receives it.

Pure: no clock and no I/O. The store gives each event its per-vehicle ``seq``
when it is appended, so ``EventDraft`` (no seq) becomes ``Event`` (with seq)
only once it is on disk.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from datetime import time as dt_time
from enum import Enum
from typing import Annotated, Any, ClassVar, Literal

from annotated_types import Ge

SCHEMA_VERSION = 1

EventType = Literal[
    "pack.identified",
    "pack.replaced",
    "pack.code_invalid",
    "pack.health",
    "scrap.condition_met",
    "scrap.forecast",
    "owner.notified",
    "owner.notice_displayed",
    "owner.acknowledged",
    "owner.notice",
    "owner.notice_failed",
    "bms.silent",
    "bms.recovered",
    "store.reset",
    "store.space_low",
    "command.applied",
    "command.refused",
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


@dataclass(frozen=True, slots=True)
class EventDraft:
    """An event before the store has numbered it. ``data`` holds JSON values (str,
    int, float, bool, None, lists, dicts with str keys) and datetimes; a wrong type or
    time is a programming error, so it fails here and not in the store or uplink."""

    type: EventType
    vin: str
    time: datetime
    data: dict[str, Any] = field(default_factory=dict)
    event_id: str = field(default_factory=new_event_id)
    time_unsure: bool = False

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {self.type!r}")
        if not isinstance(self.time, datetime) or self.time.tzinfo is None:
            raise ValueError(f"event time must be an aware datetime, not {self.time!r}")
        if not all(isinstance(k, str) for k in self.data):
            raise ValueError(f"event data keys must be text: {list(self.data)!r}")


@dataclass(frozen=True, slots=True)
class Event:
    """An event as stored in the outbox and published on MQTT (one JSON object)."""

    __pydantic_config__: ClassVar[dict[str, Any]] = {"use_attribute_docstrings": True}

    event_id: str
    """Unique id; backends de-duplicate on it."""
    seq: Annotated[int, Ge(1)]
    """Per-vehicle sequence number, gap-free, from 1."""
    type: EventType
    vin: str
    time: datetime
    """When it happened, by the agent's clock (UTC)."""
    data: dict[str, Any] = field(default_factory=dict)
    time_unsure: bool = False
    (
        "Present (true) when the clock was not to be trusted: before 2026, or behind a time "
        "the agent had already seen (it jumped back). Order by seq."
    )
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_draft(cls, draft: EventDraft, seq: int) -> Event:
        if seq < 1:
            raise ValueError(f"seq starts at 1, not {seq}")
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
        body: dict[str, Any] = {
            "schema_version": self.schema_version,
            "event_id": self.event_id,
            "seq": self.seq,
            "type": self.type,
            "vin": self.vin,
            "time": self.time,
            "data": self.data,
        }
        if self.time_unsure:
            body["time_unsure"] = True
        return dumps(body)

    @classmethod
    def from_json(cls, text: str | bytes) -> Event:
        """An event the agent wrote itself (the outbox); a backend reading from the network
        validates with ``pack_agent.api.subscriber`` instead."""
        d = json.loads(text)
        return cls(
            event_id=d["event_id"],
            seq=d["seq"],
            type=d["type"],
            vin=d["vin"],
            time=parse_time(d["time"]),
            data=d.get("data", {}),
            time_unsure=d.get("time_unsure", False),
            schema_version=d.get("schema_version", SCHEMA_VERSION),
        )


def format_time(t: datetime) -> str:
    """ISO 8601 with ``Z`` for UTC, as the published JSON has always carried it."""
    text = t.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def parse_time(text: str) -> datetime:
    """Reads ``format_time``'s text back; ``datetime.fromisoformat`` accepts the ``Z`` only
    from Python 3.11 on, and pack-agent runs on 3.10 too."""
    return datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, (date, dt_time)):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _finite(value: Any) -> Any:
    """A non-finite float is not JSON: it is published as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_finite(v) for v in value]
    return value


def dumps(body: dict[str, Any]) -> str:
    """Compact UTF-8 JSON, times as ISO 8601, non-finite numbers as null."""
    try:
        return _ENCODER.encode(body)
    except ValueError:  # NaN or infinity somewhere in data
        return _ENCODER.encode(_finite(body))


_ENCODER = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_json_default
)


def topic_for(prefix: str, vin: str, event_type: str) -> str:
    """``<prefix>/<vin>/events/<type>``: one topic per event type, so a backend can
    subscribe to exactly what it handles (``+/events/scrap.condition_met``)."""
    return f"{prefix}/{vin}/events/{event_type}"
