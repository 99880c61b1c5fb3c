"""Rule engines: one small module per rule kind behind ``RuleEngine`` (``base``).

Combinations (``any``, ``all``) and forecasts have no engine: they are judged by
``pack_agent.core.policy.ScrapPolicy`` from what the engines found and from the trend.
"""

from __future__ import annotations

from typing import Any

from pack_agent.config.rules import (
    AgeRule,
    CapacityRule,
    ConsecutiveRule,
    ResistanceRule,
    SafetyRule,
    UsageRule,
)
from pack_agent.core.rules.age import AgeEngine
from pack_agent.core.rules.base import Evidence, RuleEngine, Stream, compare
from pack_agent.core.rules.confirm import ConfirmEngine
from pack_agent.core.rules.consecutive import ConsecutiveEngine
from pack_agent.core.rules.window import WindowEngine

__all__ = [
    "AgeEngine",
    "ConfirmEngine",
    "ConsecutiveEngine",
    "Evidence",
    "RuleEngine",
    "Stream",
    "WindowEngine",
    "compare",
    "engine_for",
]


def engine_for(rule: Any) -> RuleEngine | None:
    """The engine for a configured rule; None for combinations and forecasts."""
    if isinstance(rule, ConsecutiveRule):
        return ConsecutiveEngine(rule)
    if isinstance(rule, CapacityRule | ResistanceRule):
        return WindowEngine(rule)
    if isinstance(rule, SafetyRule | UsageRule):
        return ConfirmEngine(rule)
    if isinstance(rule, AgeRule):
        return AgeEngine(rule)
    return None
