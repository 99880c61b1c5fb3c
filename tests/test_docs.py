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
