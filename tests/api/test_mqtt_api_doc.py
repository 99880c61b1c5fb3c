"""docs/mqtt-api.md stays true: every event type has a section, and every example
is a valid event whose data matches its type's model."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import TypeAdapter

from pack_agent.api.models import parse_data
from pack_agent.core.events import EVENT_TYPES, Event

DOC = Path(__file__).resolve().parents[2] / "docs" / "mqtt-api.md"


def test_every_event_type_has_a_section_with_a_valid_example() -> None:
    text = DOC.read_text(encoding="utf-8")
    sections = dict(re.findall(r"^### `([a-z_.]+)`\n(.*?)(?=^### |^## )", text, re.M | re.S))
    assert sorted(sections) == sorted(EVENT_TYPES)
    for event_type, body in sections.items():
        blocks = re.findall(r"```json\n(.*?)```", body, re.S)
        assert len(blocks) == 1, event_type
        event = TypeAdapter(Event).validate_python(json.loads(blocks[0]))
        assert event.type == event_type and len(event.event_id) == 32
        assert parse_data(event_type, event.data).model_dump(exclude_unset=True) == event.data, (
            event_type
        )
        fields = set(re.findall(r"^\| `([a-z_]+)`", body, re.M))
        assert fields <= set(event.data) | {"first_reading_time", "last_reading_time"}, fields
