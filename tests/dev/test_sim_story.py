"""The story check (sim/story.py) fails when a piece of a safety story is missing.

The events come from one real run of the safety-fault demo (mosquitto, virtual bus,
the real daemon); each test takes one piece away and expects the check to name it."""

from __future__ import annotations

import copy
import io
from typing import Any

import pytest

from pack_agent.dev.demo import DemoResult, run_demo
from pack_agent.dev.sim import SCENARIOS
from pack_agent.dev.sim.story import Showing, story_problems


@pytest.fixture(scope="module")
def thermal(mosquitto_binary: str) -> DemoResult:
    out = io.StringIO()
    r = run_demo("safety-fault", pace_s=0.001, out=out)
    assert r.ok, out.getvalue()
    return r


def check(r: DemoResult, events: list[dict[str, Any]], shown: list[Showing] | None = None):
    return story_problems(
        SCENARIOS["safety-fault"], r.config, events, r.shown if shown is None else shown
    )


def unique(r: DemoResult) -> list[dict[str, Any]]:
    events = {e["event_id"]: e for e in r.received}.values()
    return copy.deepcopy(sorted(events, key=lambda e: e["seq"]))


def test_the_complete_story_passes(thermal):
    assert check(thermal, unique(thermal)) == []


def test_no_answer_is_named(thermal):
    events = [e for e in unique(thermal) if e["type"] != "owner.acknowledged"]
    problems = check(thermal, events)
    assert "no owner.acknowledged event" in problems
    assert "no owner.acknowledged for rule thermal-event" in problems


def test_no_decision_is_named(thermal):
    events = [e for e in unique(thermal) if e["type"] != "scrap.condition_met"]
    assert "0 scrap.condition_met for rule thermal-event, expected 1" in check(thermal, events)


def test_a_decision_on_one_reading_is_named(thermal):
    events = unique(thermal)
    d = next(e for e in events if e["type"] == "scrap.condition_met")["data"]
    d["sample_count"], d["samples"] = 1, d["samples"][:1]
    d["last_reading_time"] = d["first_reading_time"]
    problems = check(thermal, events)
    assert any(p.startswith("decision on 1 reading(s)") for p in problems), problems
    assert any(p.startswith("decision evidence spans 0.0 s") for p in problems), problems


def test_a_decision_from_the_stray_frame_is_named(thermal):
    events = unique(thermal)
    d = next(e for e in events if e["type"] == "scrap.condition_met")["data"]
    d["first_reading_time"] = "2026-05-31T08:20:00+00:00"  # the stray frame's day
    assert "decision evidence starts before the fault (a stray frame decided)" in check(
        thermal, events
    )


def test_the_generic_notice_instead_of_the_rules_is_named(thermal):
    events = unique(thermal)
    for e in events:
        if e["type"] == "owner.notified":
            e["data"]["notice_id"] = 0x0201
    assert "head-unit notice ids [513], expected 0x0202" in check(thermal, events)


def test_a_notice_shown_without_its_text_is_named(thermal):
    blank = [Showing(s.time, s.notice_id, False) for s in thermal.shown]
    assert "the head unit never showed notice 0x0202 with its catalogue text" in check(
        thermal, unique(thermal), blank
    )


def test_missing_or_early_repeats_are_named(thermal):
    events = unique(thermal)
    can = [e for e in events if e["type"] == "owner.notified" and e["data"]["channel"] == "can"]
    assert len(can) >= 3
    only_first = [e for e in events if e not in can[1:]]
    assert "the critical notice was never repeated (1 attempt)" in check(thermal, only_first)
    can[1]["time"] = can[0]["time"].replace("08:20:00", "08:50:00")  # half an hour later
    problems = check(thermal, events)
    assert any(p.startswith("critical repeats 1800 s, ") for p in problems), problems


def test_a_story_without_an_ignition_repeat_is_named(thermal):
    ageing = SCENARIOS["ageing"]
    assert ageing.expect_ignition_repeat
    problems = story_problems(ageing, thermal.config, unique(thermal), thermal.shown, [])
    assert "no notice repeated at an ignition Off->On (notice.repeat_on_ignition)" in problems
