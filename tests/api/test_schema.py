"""The committed JSON Schemas (docs/schema) are what the models generate, and the
events the agent publishes are valid against them."""

from __future__ import annotations

import json
from pathlib import Path

from pack_agent.api.schema import schemas
from pack_agent.cli import main

DOCS_SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "schema"


def test_committed_schemas_are_current() -> None:
    wanted = schemas()
    on_disk = {
        str(p.relative_to(DOCS_SCHEMA)): p.read_text(encoding="utf-8")
        for p in DOCS_SCHEMA.rglob("*.schema.json")
    }
    stale = sorted(n for n in wanted.keys() | on_disk.keys() if wanted.get(n) != on_disk.get(n))
    assert stale == [], f"docs/schema is stale ({stale}): run `pack-agent schema`"


def test_schema_command_writes_and_checks(tmp_path: Path, capsys) -> None:
    out = tmp_path / "schema"
    assert main(["schema", "--check", "--out", str(out)]) == 1
    assert main(["schema", "--out", str(out)]) == 0
    assert main(["schema", "--check", "--out", str(out)]) == 0
    (out / "data" / "pack.health.schema.json").write_text("{}")
    (out / "old.schema.json").write_text("{}")
    assert main(["schema", "--check", "--out", str(out)]) == 1
    text = capsys.readouterr().out
    assert "pack.health.schema.json: stale" in text and "old.schema.json: not generated" in text
    assert main(["schema", "--out", str(out)]) == 0
    assert not (out / "old.schema.json").exists()


def test_event_schemas_say_what_a_backend_relies_on() -> None:
    event = json.loads(schemas()["events/scrap.condition_met.schema.json"])
    assert event["properties"]["type"] == {"const": "scrap.condition_met"}
    assert event["properties"]["data"] == {"$ref": "../data/scrap.condition_met.schema.json"}
    assert set(event["required"]) == {
        "schema_version", "event_id", "seq", "type", "vin", "time", "data"
    }  # fmt: skip
    data = json.loads(schemas()["data/scrap.condition_met.schema.json"])
    # every decision says which rule, of which kind, on which pack; a combination (any/all)
    # has no threshold or samples of its own, so those are described but optional
    assert {"rule_id", "kind", "severity", "description", "pack_code"} <= set(data["required"])
    assert {"threshold", "samples", "statistic", "rules"} <= set(data["properties"])
