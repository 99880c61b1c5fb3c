"""The documentation stays true: every configuration key is documented."""

import dataclasses
import typing
from pathlib import Path
from typing import Any, get_args

from pack_agent.config import AgentConfig

DOCS = Path(__file__).parents[1] / "docs"


def keys(section: type) -> set[str]:
    out = set()
    hints = typing.get_type_hints(section, include_extras=True)
    for f in dataclasses.fields(section):
        if not f.init:
            continue  # base_dir, source: where the file was read, not keys
        out.add(f.name)
        for sub in sections_in(hints[f.name]):
            out |= keys(sub)
    return out


def sections_in(ann: Any) -> list[type]:
    """Sections inside an annotation: list[...], unions, Annotated (the rule kinds)."""
    if dataclasses.is_dataclass(ann) and isinstance(ann, type):
        return [ann]
    return [m for arg in get_args(ann) for m in sections_in(arg)]


def test_every_configuration_key_is_documented():
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    forms = ("`{k}", ".{k}`", "`[{k}]`", "`[[{k}]]`")
    found = keys(AgentConfig)
    assert {"vin", "threshold", "confirm_days", "ca_file", "start_byte"} <= found  # walks deep
    missing = sorted(k for k in found if not any(f.format(k=k) in text for f in forms))
    assert missing == []


def test_the_owner_notice_table_is_the_catalogue():
    """docs/owner-notices.md lists every notice with its causes, articles and texts."""
    from pack_agent.core.catalogue import NoticeValues, load_catalogue

    text = (DOCS / "owner-notices.md").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.startswith("| 0x")]
    rows = {line.split("|")[1].strip(): line for line in lines}
    catalogue = load_catalogue(values=NoticeValues(within_days=90))
    assert set(rows) == {f"0x{nid:04X}" for nid in catalogue}
    for nid, entry in catalogue.items():
        row = rows[f"0x{nid:04X}"]
        assert f"`{entry.name}`" in row and ", ".join(entry.articles) in row
        assert ", ".join(f"`{c}`" for c in entry.causes) in row
        for lang in ("zh", "en"):
            assert entry.texts[lang].title in row and entry.texts[lang].happened in row
