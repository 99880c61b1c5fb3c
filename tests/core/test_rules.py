"""The rule engines' common ground (``pack_agent.core.rules``): the abstract base, the engine
for each rule kind, the comparison. The engines' behaviour is tested through the policy
(tests/core/test_policy.py), which is how the agent uses them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import TypeAdapter

from pack_agent.config.rules import RuleConfig
from pack_agent.core.readings import Reading
from pack_agent.core.rules import (
    AgeEngine,
    ConfirmEngine,
    ConsecutiveEngine,
    RuleEngine,
    WindowEngine,
    compare,
    engine_for,
)

RULE = TypeAdapter(RuleConfig)
BASE = {"description_en": "e", "description_zh": "z"}


def make(**kw: Any) -> Any:
    return RULE.validate_python({**BASE, **kw})


KINDS = {
    "consecutive": (dict(below=80.0), ConsecutiveEngine),
    "capacity": (dict(threshold=80.0), WindowEngine),
    "resistance": (dict(threshold=50.0), WindowEngine),
    "usage": (dict(metric="full_cycles", threshold=3000), ConfirmEngine),
    "safety": (dict(metric="thermal_event", comparison="at_least", threshold=1), ConfirmEngine),
    "age": (dict(threshold=15.0), AgeEngine),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_rule_kind_has_its_engine_and_its_state_round_trips(kind):
    fields, cls = KINDS[kind]
    engine = engine_for(make(id="r", kind=kind, **fields))
    assert type(engine) is cls and isinstance(engine, RuleEngine)
    engine.observe(Reading(engine.metric or "soh", 1.0, 1.8e9), "0RJPEA00HAU0AAF131001955")
    state = json.loads(json.dumps(engine.to_state()))  # what the store keeps
    again = engine_for(make(id="r", kind=kind, **fields))
    assert again is not None
    again.load_state(state)
    assert json.loads(json.dumps(again.to_state())) == state
    again.load_state({})  # a state from before a key existed: defaults, no error


def test_combinations_and_forecasts_have_no_engine():
    assert engine_for(make(id="c", kind="any", rules=["a"])) is None
    assert engine_for(make(id="f", kind="forecast", rule="a")) is None


def test_only_window_engines_keep_daily_aggregates():
    daily = {
        k for k, (fields, _) in KINDS.items() if engine_for(make(id="r", kind=k, **fields)).daily
    }
    assert daily == {"capacity", "resistance"}


def test_an_engine_must_say_how_it_persists():
    class Forgetful(RuleEngine):
        def observe(self, r: Reading, code: str | None) -> None:
            return None

    with pytest.raises(TypeError, match="load_state"):
        Forgetful()  # type: ignore[abstract]


@pytest.mark.parametrize(
    ("comparison", "bad", "good"),
    [
        ("below", 79.9, 80.0),
        ("above", 80.1, 80.0),
        ("at_least", 80.0, 79.9),
        ("at_most", 80.0, 80.1),
    ],
)
def test_compare_is_strict_or_not_as_named(comparison, bad, good):
    assert compare(bad, comparison, 80.0) and not compare(good, comparison, 80.0)
