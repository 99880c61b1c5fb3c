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


def test_the_article_24_table_names_real_event_fields() -> None:
    """Issue 16 item 5: each report of Article 24 says which event and fields serve it
    (fields that exist in the events' models) and what the backend must add."""
    from pack_agent.api.models import data_models

    text = DOC.read_text(encoding="utf-8")
    section = text.split("### The maker's reporting duties (Article 24)", 1)[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| 24")]
    assert [r.split("|")[1].strip() for r in rows] == [
        "24(1)",
        "24(2)",
        "24(4)",
        "24(5)",
        "24(6)-(8)",
        "24, last paragraph",
    ]
    models = data_models()
    known = {"vin", "time"} | {
        name
        for t in ("pack.identified", "pack.replaced", "pack.code_invalid")
        for name in models[t].model_fields
    }
    for row in rows:
        backend_adds = row.split("|")[4].strip()
        assert backend_adds, row  # what the vehicle cannot know, said for each report
        for name in re.findall(r"`([a-z_]+)`", row.split("|")[3]):
            assert name in known, (row, name)
    swap = next(r for r in rows if r.startswith("| 24(4)"))
    assert "`pack.replaced`" in swap and "station" in swap.split("|")[4]
