"""pack_agent.api.models: the typed data of every event type matches what the
agent's stages really produce, and the models stay open to new fields."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pack_agent.api.models import PackHealth, data_model, data_models, parse_data
from pack_agent.config.rules import ConsecutiveRule
from pack_agent.core.events import EVENT_TYPES
from pack_agent.core.policy import ScrapPolicy
from pack_agent.core.readings import Reading
from pack_agent.core.tracker import PackTracker

CODE = "0RJPEA00HAU0AAF131001955"
OTHER = "X12PCPM27KLPCLX2M2382320"


def test_every_event_type_has_a_data_model() -> None:
    missing = sorted(set(EVENT_TYPES) - set(data_models()))
    assert missing == [], (
        f"event types without a data model: {missing}: add a class decorated with "
        "@data_model(type) in pack_agent/api/models.py, then run `pack-agent schema`"
    )


def test_tracker_happenings_match_their_models() -> None:
    tracker = PackTracker(None, bms_timeout_s=10)
    happenings = tracker.on_code(CODE, 0.0)
    happenings += tracker.on_code(OTHER[:-1] + "X", 0.0)  # not a valid code
    for trip in (50.0, 60.0):  # another code in two trips: a replacement
        tracker.on_trip_start(trip)
        happenings += tracker.on_code(OTHER, trip)
    tracker.on_reading(Reading("soh", 91.5, 100.0))
    tracker.on_reading(Reading("soc", 63.0, 100.0))
    happenings += tracker.check_silence(200.0)
    happenings += tracker.on_frame(201.0)
    happenings.append(("pack.health", tracker.health_snapshot(201.0)))
    types = [t for t, _ in happenings]
    assert types == [
        "pack.identified",
        "pack.code_invalid",
        "pack.replaced",
        "bms.silent",
        "bms.recovered",
        "pack.health",
    ]
    for event_type, data in happenings:
        model = parse_data(event_type, data)
        assert model.model_dump(exclude_unset=True) == data  # nothing lost or renamed


def test_decision_evidence_matches_its_model() -> None:
    rule = ConsecutiveRule(
        id="capacity-80", below=80, consecutive=3, description_en="e", description_zh="z"
    )
    policy = ScrapPolicy([rule])
    decisions = []
    for i, value in enumerate([79.0, 78.5, 78.0]):
        decisions += policy.observe(Reading("soh", value, 1_780_000_000 + i * 86400), CODE)
    assert len(decisions) == 1
    evidence = decisions[0].evidence()
    assert parse_data("scrap.condition_met", evidence).model_dump(exclude_unset=True) == evidence


def test_models_accept_new_fields_and_refuse_wrong_ones() -> None:
    data = {"pack_code": CODE, "metrics": {"soh": 90.0}, "added_later": 1}
    assert (
        parse_data("pack.health", data).model_dump(exclude_unset=True) == data
    )  # adding is not breaking
    with pytest.raises(ValidationError, match="metrics"):
        parse_data("pack.health", {"pack_code": CODE, "metrics": "90"})
    with pytest.raises(ValueError, match="already has a data model"):
        data_model("pack.health")(type("Other", (PackHealth,), {}))


def test_every_event_of_a_whole_vehicle_story_matches_its_model(broker, tmp_path) -> None:
    """The real daemon on a virtual vehicle (decision, notices, the owner's answer)."""
    from test_daemon import FAST, AgentThread, make_config, run_vehicle

    cfg, channel = make_config(tmp_path, broker.port)
    agent = AgentThread(cfg)
    try:
        run_vehicle(cfg, channel, FAST, response="service_booked", agent=agent)
    finally:
        agent.stop()
    seen = {e.type for e in agent.emitted}
    assert {"pack.identified", "scrap.condition_met", "owner.notified"} <= seen
    assert "owner.acknowledged" in seen
    for event in agent.emitted:
        assert parse_data(event.type, event.data).model_dump(exclude_unset=True) == event.data, (
            event.type
        )
