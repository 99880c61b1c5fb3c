"""The documentation stays true: every configuration key is documented."""

from pathlib import Path

from pydantic import BaseModel

from pack_agent.config import AgentConfig

DOCS = Path(__file__).parents[1] / "docs"


def keys(model: type[BaseModel]) -> set[str]:
    out = set()
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        out.add(name)
        ann = field.annotation
        for arg in getattr(ann, "__args__", (ann,)):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                out |= keys(arg)
    return out


def test_every_configuration_key_is_documented():
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    forms = ("`{k}", ".{k}`", "`[{k}]`", "`[[{k}]]`")
    missing = sorted(k for k in keys(AgentConfig) if not any(f.format(k=k) in text for f in forms))
    assert missing == []
