"""docs/asyncapi.yaml: one message per event type, every reference resolves (inside
the document, and to the generated schema files), and the examples are valid."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pack_agent.api.schema import StatusPayload
from pack_agent.core.commands import COMMANDS
from pack_agent.core.events import EVENT_TYPES

yaml = pytest.importorskip("yaml")

DOCS = Path(__file__).resolve().parents[2] / "docs"
PARSER = Path(__file__).resolve().parents[2] / "tools" / "asyncapi"


def load() -> dict[str, Any]:
    return yaml.safe_load((DOCS / "asyncapi.yaml").read_text(encoding="utf-8"))


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [
            r for v in node.values() for r in refs(v)
        ]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def resolve(doc: dict[str, Any], pointer: str) -> Any:
    node: Any = doc
    for part in pointer.lstrip("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_one_message_per_event_type_in_channel_and_operation() -> None:
    doc = load()
    assert doc["asyncapi"].startswith("3.")
    events = doc["channels"]["events"]["messages"].values()
    names = {resolve(doc, m["$ref"])["name"] for m in events}
    assert names == set(EVENT_TYPES), "add the new event type to docs/asyncapi.yaml"
    assert len(doc["channels"]["events"]["messages"]) == len(EVENT_TYPES)
    assert len(doc["operations"]["sendEvent"]["messages"]) == len(EVENT_TYPES)
    assert doc["operations"]["sendEvent"]["bindings"]["mqtt"]["qos"] == 1
    assert doc["operations"]["sendStatus"]["bindings"]["mqtt"]["retain"] is True


def test_every_command_is_received_with_a_reply() -> None:
    doc = load()
    op = doc["operations"]["receiveCommand"]
    assert op["action"] == "receive" and op["reply"]["channel"]["$ref"] == "#/channels/responses"
    names = {resolve(doc, resolve(doc, m["$ref"])["$ref"])["name"] for m in op["messages"]}
    assert names == set(COMMANDS), "add the new command to docs/asyncapi.yaml"


def test_every_reference_resolves() -> None:
    doc = load()
    for ref in refs(doc):
        if ref.startswith("#/"):
            resolve(doc, ref)
        else:
            assert (DOCS / ref).is_file(), ref


def test_status_examples_are_valid() -> None:
    for example in load()["components"]["messages"]["status"]["examples"]:
        StatusPayload.model_validate(example["payload"])


@pytest.mark.skipif(
    shutil.which("node") is None or not (PARSER / "node_modules" / "@asyncapi" / "parser").is_dir(),
    reason="the AsyncAPI parser is not installed (./scripts/setup installs it with npm)",
)
def test_the_official_asyncapi_parser_accepts_the_document() -> None:
    run = subprocess.run(
        ["node", str(PARSER / "validate.mjs"), str(DOCS / "asyncapi.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "valid AsyncAPI 3.0.0" in run.stdout
    assert "error:" not in run.stdout
