"""pydantic checks a configuration's data against the dataclasses in ``settings``.

Kept apart so only the processes that validate import pydantic: the CLI's
``check-config`` and the tests in this process, the daemon in a short-lived
child (``isolated.load_config_isolated`` runs ``python -m pack_agent.config.isolated``).
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from pack_agent.config.rules import RULE_KINDS
from pack_agent.config.settings import AgentConfig
from pack_agent.errors import ConfigError

_ADAPTER = TypeAdapter(AgentConfig)
_UNKNOWN_KEY = {"extra_forbidden", "unexpected_keyword_argument"}


def validate(data: dict[str, Any], source: str) -> AgentConfig:
    """Types, bounds and patterns of every key; raises ``ConfigError`` with them all."""
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc), source) from None


def validation_problems(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        msg = err["msg"]
        loc = _loc(err["loc"])
        if err["type"] in _UNKNOWN_KEY:
            msg = "unknown key"
        elif err["type"] == "union_tag_invalid":
            tag = err.get("ctx", {}).get("tag")
            loc, msg = f"{loc}.kind", f"unknown rule kind {tag!r} (kinds: {', '.join(RULE_KINDS)})"
        elif err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        problems.append(f"{loc}: {msg}")
    return problems


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    # a rule's kind tag (rules[0].capacity.threshold) is noise in a key: drop it
    loc = tuple(
        p for i, p in enumerate(loc) if not (i == 2 and loc[0] == "rules" and p in RULE_KINDS)
    )
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"
