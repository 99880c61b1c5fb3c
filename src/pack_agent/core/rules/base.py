"""What every rule engine is: one configured rule's memory, readings in, evidence out.

Each rule kind has its engine in a module of its own (``consecutive``, ``window``,
``confirm``, ``age``); ``pack_agent.core.policy.ScrapPolicy`` wires them to the
readings, gates them by the ignition, latches what they find and persists their
state. Engines are pure: time comes with the reading, nothing is read or written.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from pack_agent.core.readings import Reading

Evidence = dict[str, Any]  # what a met rule found: the data of its event


def compare(value: float, comparison: str, threshold: float) -> bool:
    """True when ``value`` is on the bad side of ``threshold``."""
    if comparison == "below":
        return value < threshold
    if comparison == "above":
        return value > threshold
    if comparison == "at_least":
        return value >= threshold
    return value <= threshold  # at_most


class Stream:
    """Only readings later than the newest one seen are new evidence."""

    def __init__(self) -> None:
        self.last: float | None = None

    def fresh(self, t: float) -> bool:
        if self.last is not None and t <= self.last:
            return False
        self.last = t
        return True


class RuleEngine(ABC):
    """One rule's debounce. The policy hands it the readings of ``metric`` (every reading
    when ``metric`` is None) and latches the rule when ``observe`` returns evidence; the
    engine is not asked again until the pack is replaced."""

    gated = False  # judged only on readings taken with the ignition on
    daily = False  # keeps daily aggregates: a reading on a new day closes the last one
    metric: str | None = None

    @abstractmethod
    def observe(self, r: Reading, code: str | None) -> Evidence | None:
        """One reading (and the pack code it is about); the evidence when the rule is met."""

    @abstractmethod
    def to_state(self) -> dict[str, Any]:
        """Everything the engine remembers, as JSON-able data (the store keeps it)."""

    @abstractmethod
    def load_state(self, s: dict[str, Any]) -> None:
        """Takes back what ``to_state`` gave, possibly from an earlier version: every key
        is optional."""
