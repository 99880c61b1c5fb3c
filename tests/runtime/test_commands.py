"""The backend's commands applied by the agent: a real Store, real python-can virtual
buses to a virtual head unit, simulated time (the ``Rig`` of test_agent_notices). The
same commands over a real mosquitto and the real daemon: test_daemon_commands.py."""

from __future__ import annotations

import json
from typing import Any

from test_agent_notices import DAY, HOUR, PHONE, T0, Rig, make_config, rig_factory

from pack_agent.canbus.decoder import Decoder
from pack_agent.delivery.owner_channel import owner_notifiers
from pack_agent.delivery.uplink import CommandRequest
from pack_agent.runtime.agent import Agent
from pack_agent.runtime.commands import APPLIED_KEY, OVERRIDES_KEY

__all__ = ["rig_factory"]  # the fixture, shared with test_agent_notices


def command(r: Rig, name: str, t: float, **body: Any) -> dict[str, Any]:
    """The agent's answer to the command ``name`` with the JSON ``body``."""
    return r.agent.commands.handle(CommandRequest(name, json.dumps(body).encode()), t)


def wire(r: Rig) -> None:
    """What the daemon does on notice.contact: the owner channels are built again."""
    r.agent.commands.contact_changed = lambda: r.agent.replace_notifiers(
        *owner_notifiers(r.cfg, "powertrain", r.bus, r.db)
    )


def snapshot(r: Rig) -> tuple[Any, ...]:
    """Everything a refused command must leave as it was."""
    return (
        r.store.get_state(OVERRIDES_KEY),
        r.store.get_state(APPLIED_KEY),
        r.store.get_state("notices"),
        r.cfg.notice.service_outlet,
        r.cfg.notice.service_phone,
        [e.type for e in r.events if e.type != "command.refused"],
    )


def test_contact_is_used_by_the_next_notice_persisted_and_applied_once(rig_factory, tmp_path):
    r = rig_factory(response=None)
    wire(r)
    answer = command(
        r, "notice.contact", T0, id="c-1", fields={"service_phone": "+86 21 5555 0000"}
    )
    assert answer["status"] == "applied" and answer["id"] == "c-1"
    assert answer["result"]["notice"]["service_phone"] == "+86 21 5555 0000"
    again = command(r, "notice.contact", T0 + 1, id="c-1", fields={"service_phone": "+86 1"})
    assert again == {**answer, "repeated": True}  # answered, not applied again
    assert [e.data["command_id"] for e in r.events if e.type == "command.applied"] == ["c-1"]
    assert r.cfg.notice.service_phone == "+86 21 5555 0000"
    r.decide(T0 + HOUR)
    (shown,) = r.hu.shown
    assert shown.outlet is not None  # the text lines: outlet, phone, procedure...
    assert shown.outlet.split("\n")[1] == "+86 21 5555 0000"
    # a restart: the override is the store's, the configured value stays under it
    fresh = make_config(tmp_path / "r0", r.channel)
    assert fresh.notice.service_phone == PHONE
    r.store.close()
    from pack_agent.store.database import Store

    r.store = Store(fresh.store_path())
    agent = Agent(fresh, Decoder(fresh, r.db), r.store)
    assert fresh.notice.service_phone == "+86 21 5555 0000"
    assert agent.commands.status()["notice_overrides"] == {"service_phone": "+86 21 5555 0000"}
    answer = command_on(agent, "notice.contact", T0 + DAY, id="c-1", fields={})
    assert answer.get("repeated") is True  # the applied ids survive the restart too
    restored = command_on(
        agent, "notice.contact", T0 + DAY, id="c-2", fields={"service_phone": None}
    )
    assert restored["status"] == "applied" and fresh.notice.service_phone == PHONE


def command_on(agent: Agent, name: str, t: float, **body: Any) -> dict[str, Any]:
    return agent.commands.handle(CommandRequest(name, json.dumps(body).encode()), t)


def test_each_refusal_changes_nothing_and_leaves_command_refused(rig_factory):
    r = rig_factory(response=None)
    wire(r)
    r.decide(T0)
    before = snapshot(r)
    cases = {
        ("reboot", json.dumps({"id": "r-1"})): "unknown command 'reboot'",
        ("notice.contact", json.dumps({"id": "r-2", "fields": {"colour": "red"}})): (
            "fields.colour: not a notice field"
        ),
        (
            "notice.contact",
            json.dumps({"id": "r-3", "fields": {"service_phone": "+86" + "1" * 30}}),
        ): ("fields.service_phone: is 33 characters, at most 20"),
        ("notice.contact", json.dumps({"id": "r-4", "fields": {"service_outlet": "a\nb"}})): (
            "fields.service_outlet: must be one line"
        ),
        (
            "owner.answer",
            json.dumps({"id": "r-5", "seq": 9, "notice_id": 0x0101, "response": "seen"}),
        ): ("seq 9, notice_id 257: no open notice"),
        (
            "owner.answer",
            json.dumps({"id": "r-6", "seq": 1, "notice_id": 0x0101, "response": "ok"}),
        ): ("response: one of dismissed, seen, service_booked"),
        ("report.now", "not json"): "payload is not UTF-8 JSON",
        ("report.now", json.dumps({"no": "id"})): "id: a text of 1..64 characters",
    }
    for (name, payload), reason in cases.items():
        answer = r.agent.commands.handle(CommandRequest(name, payload.encode()), T0 + HOUR)
        assert answer["status"] == "refused", (name, payload, answer)
        assert answer["reason"].startswith(reason), (answer["reason"], reason)
        assert snapshot(r) == before
    refused = [e.data for e in r.events if e.type == "command.refused"]
    assert [d["command_id"] for d in refused] == [
        "r-1",
        "r-2",
        "r-3",
        "r-4",
        "r-5",
        "r-6",
        None,
        None,
    ]
    assert all(d["reason"] for d in refused)
    # a refused id is not remembered: the corrected command with it is applied
    answer = command(r, "notice.contact", T0 + HOUR, id="r-3", fields={"service_phone": "+86 1"})
    assert answer["status"] == "applied"


def test_the_app_answer_has_the_head_units_effect_and_stops_the_repeats(rig_factory):
    r = rig_factory(response=None)  # the head unit shows the notice and never answers
    r.decide(T0)
    r.run(T0, T0 + 3 * DAY)
    repeats = len(r.of("owner.notified"))
    assert repeats >= 2  # unanswered: it comes back daily
    (notice,) = r.agent.notice_status()["open"]
    t = T0 + 3 * DAY + HOUR
    answer = command(
        r, "owner.answer", t, id="a-1", seq=notice["seq"], notice_id=notice["notice_id"],
        response="service_booked",
    )  # fmt: skip
    assert answer["status"] == "applied" and answer["result"]["follow_up"] == "stop"
    (ack,) = r.of("owner.acknowledged")
    assert ack["channel"] == "app" and ack["response"] == "service_booked"
    assert ack["seq"] == notice["seq"] and ack["follow_up"] == "stop"
    assert command(r, "owner.answer", t + 1, id="a-1", seq=1, notice_id=1, response="seen")[
        "repeated"
    ]
    r.drive_days(T0 + 4 * DAY, days=3, trips=2)
    r.run(T0 + 7 * DAY, T0 + 20 * DAY, 6 * HOUR)
    assert len(r.of("owner.notified")) == repeats  # no notice after the app's answer
    assert r.agent.notice_status()["open"] == []
    assert len(r.of("owner.acknowledged")) == 1


def test_report_now_publishes_a_health_sample_or_says_there_is_none(rig_factory):
    r = rig_factory(response=None)
    answer = command(r, "report.now", T0, id="n-1")
    assert answer["result"] == {"pack_health": False, "status": True}
    assert r.agent.commands.wants_status
    assert r.of("pack.health") == []
    r.identify(T0)
    r.soh(91.0, T0 + 10)
    answer = command(r, "report.now", T0 + 20, id="n-2")
    assert answer["result"]["pack_health"] is True
    (health,) = r.of("pack.health")
    assert health["metrics"]["soh"] == 91.0


def test_the_emergency_phone_and_procedure_reach_the_next_notice_and_must_fit(rig_factory):
    r = rig_factory(response=None)
    wire(r)
    r.decide(T0)
    url = "https://service.example.com/battery/recycling"
    answer = command(
        r,
        "notice.contact",
        T0 + HOUR,
        id="e-1",
        fields={"emergency_phone": "+86 400 000 0119", "procedure_url": url},
    )
    assert answer["status"] == "applied", answer
    assert r.cfg.notice.emergency_phone == "+86 400 000 0119"
    assert r.cfg.notice.procedure_url == url
    # every text line must still fit the head unit's pages: a long outlet is refused whole
    before = snapshot(r)
    too_long = command(
        r, "notice.contact", T0 + 2 * HOUR, id="e-2", fields={"service_outlet": "长" * 420}
    )
    assert too_long["status"] == "refused"
    assert "bytes of UTF-8, at most 1275" in too_long["reason"]
    assert snapshot(r) == before and r.cfg.notice.procedure_url == url
    bad_url = command(r, "notice.contact", T0 + 2 * HOUR, id="e-3", fields={"procedure_url": "x"})
    assert bad_url["status"] == "refused" and bad_url["reason"].startswith("fields.procedure_url")
