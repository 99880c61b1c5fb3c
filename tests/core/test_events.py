"""The event envelope: the JSON a backend receives, and drafts that cannot be stored."""

from __future__ import annotations

import json
import math
from datetime import date, datetime, timedelta, timezone
from enum import Enum

import pytest

from pack_agent.core.events import Event, EventDraft

T = datetime(2026, 11, 22, 6, 30, 0, 123456, tzinfo=timezone.utc)
VIN = "LPACK2026AGENT001"


class Answer(Enum):
    SEEN = "seen"


def event(data: dict, **kw: object) -> Event:
    return Event.from_draft(EventDraft(type="pack.health", vin=VIN, time=T, data=data, **kw), 7)


def test_the_published_json_is_compact_utf8_with_z_times() -> None:
    e = event({"soh": 87.5, "text": "中文", "at": T.replace(microsecond=0)}, event_id="ab" * 16)
    assert e.to_json() == (
        '{"schema_version":1,"event_id":"abababababababababababababababab","seq":7,'
        '"type":"pack.health","vin":"LPACK2026AGENT001","time":"2026-11-22T06:30:00.123456Z",'
        '"data":{"soh":87.5,"text":"中文","at":"2026-11-22T06:30:00Z"}}'
    )
    assert Event.from_json(e.to_json()) == Event.from_json(e.to_json().encode())
    back = Event.from_json(e.to_json())
    assert (back.time, back.seq, back.event_id) == (T, 7, e.event_id)


def test_time_unsure_only_when_true() -> None:
    assert "time_unsure" not in event({}).to_json()
    assert json.loads(event({}, time_unsure=True).to_json())["time_unsure"] is True


def test_values_json_cannot_hold_become_null_or_text() -> None:
    body = json.loads(
        event(
            {
                "nan": math.nan,
                "deep": [{"inf": math.inf}],
                "set": {1.0},
                "day": date(2028, 9, 14),
                "answer": Answer.SEEN,
            }
        ).to_json()
    )
    assert body["data"] == {
        "nan": None,
        "deep": [{"inf": None}],
        "set": [1.0],
        "day": "2028-09-14",
        "answer": "seen",
    }


def test_a_draft_that_could_not_be_published_fails_when_built() -> None:
    with pytest.raises(ValueError, match=r"unknown event type 'pack\.exploded'"):
        EventDraft(type="pack.exploded", vin=VIN, time=T)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="aware datetime"):
        EventDraft(type="pack.health", vin=VIN, time=T.replace(tzinfo=None))
    with pytest.raises(ValueError, match="keys must be text"):
        EventDraft(type="pack.health", vin=VIN, time=T, data={1: "x"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="seq starts at 1"):
        Event.from_draft(EventDraft(type="pack.health", vin=VIN, time=T), 0)
    with pytest.raises(TypeError, match="timedelta is not JSON serializable"):
        event({"wait": timedelta(seconds=5)}).to_json()
