"""The documentation stays true: every configuration key is documented."""

from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel

from pack_agent.config import AgentConfig

DOCS = Path(__file__).parents[1] / "docs"


def keys(model: type[BaseModel]) -> set[str]:
    out = set()
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        out.add(name)
        for sub in models_in(field.annotation):
            out |= keys(sub)
    return out


def models_in(ann: Any) -> list[type[BaseModel]]:
    """Models inside an annotation: list[...], unions, Annotated (the rule kinds)."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    return [m for arg in get_args(ann) for m in models_in(arg)]


def test_every_configuration_key_is_documented():
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    forms = ("`{k}", ".{k}`", "`[{k}]`", "`[[{k}]]`")
    missing = sorted(k for k in keys(AgentConfig) if not any(f.format(k=k) in text for f in forms))
    assert missing == []
