"""JSON Schemas of the MQTT API, generated from the models (``pack-agent schema``).

``docs/schema/`` holds what this module makes; a test fails when they differ, so
the published contract cannot drift from the code. Pure: ``schemas()`` returns
file name -> text; writing is the command's job.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from pack_agent.api.models import data_models
from pack_agent.core.events import EVENT_TYPES, SCHEMA_VERSION, Event

DRAFT = "https://json-schema.org/draft/2020-12/schema"
BASE_ID = "https://pack-agent.example/schema/v1/"  # an identifier, not a download address


class StatusPayload(BaseModel):
    """The retained ``<prefix>/<vin>/status`` message (and the agent's last will)."""

    model_config = ConfigDict(extra="allow")

    state: Literal["online", "offline"]
    agent_version: str
    queue_depth: int | None = Field(
        default=None, description="Events in the outbox, not yet acknowledged (not in the will)."
    )
    time: str | None = Field(default=None, description="ISO 8601, UTC (not in the will).")
    reason: str | None = Field(
        default=None, description='offline only: "stopped" (clean) or "connection lost" (will).'
    )
    notice_overrides: dict[str, str] | None = Field(
        default=None,
        description="The [notice] fields the backend set (notice.contact command), when any.",
    )


def _dump(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def _with_header(schema: dict[str, Any], name: str, title: str) -> dict[str, Any]:
    return {"$schema": DRAFT, "$id": BASE_ID + name, **schema, "title": title}


def envelope_schema() -> dict[str, Any]:
    """Every event: the envelope; ``data`` is an object whose shape depends on ``type``."""
    schema = TypeAdapter(Event).json_schema()
    # the published order: the version first, as in every event's JSON
    props = schema["properties"]
    schema["properties"] = {"schema_version": props.pop("schema_version"), **props}
    schema["properties"]["schema_version"] = {
        "const": SCHEMA_VERSION,
        "description": "Changes only with a breaking change (and a new topic prefix).",
    }
    schema["properties"]["type"]["description"] = (
        "The event type; also the last topic level. Unknown types must be ignored, "
        "not rejected: new types are added without a new schema_version."
    )
    schema["properties"]["data"]["description"] = "Depends on type: see data/<type>.schema.json."
    schema["required"] = ["schema_version", "event_id", "seq", "type", "vin", "time", "data"]
    schema["properties"]["type"].pop("enum", None)
    schema["properties"]["type"]["examples"] = list(EVENT_TYPES)
    schema["properties"]["type"]["type"] = "string"
    return schema


def schemas() -> dict[str, str]:
    """Relative file name -> schema text, for docs/schema/."""
    out: dict[str, str] = {}
    envelope = envelope_schema()
    out["event.schema.json"] = _dump(_with_header(envelope, "event.schema.json", "Event"))
    out["status.schema.json"] = _dump(
        _with_header(StatusPayload.model_json_schema(), "status.schema.json", "Status")
    )
    for event_type, model in data_models().items():
        data_name = f"data/{event_type}.schema.json"
        out[data_name] = _dump(_with_header(model.model_json_schema(), data_name, model.__name__))
        event = copy.deepcopy(envelope)
        event["properties"]["type"] = {"const": event_type}
        event["properties"]["data"] = {"$ref": f"../{data_name}"}
        name = f"events/{event_type}.schema.json"
        out[name] = _dump(_with_header(event, name, f"Event {event_type}"))
    return out
