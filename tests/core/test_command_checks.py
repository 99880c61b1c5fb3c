"""The checks a backend command must pass (pure): each refusal names the field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pack_agent.core.commands import (
    MAX_PAYLOAD_BYTES,
    NOTICE_FIELDS,
    CommandRefused,
    command_id,
    parse_command,
)
from pack_agent.core.notices import MAX_TEXT_BYTES


def parse(name: str, **body: Any) -> Any:
    return parse_command(name, json.dumps(body).encode())


def refused(name: str, payload: bytes | dict[str, Any], current: Any = None) -> CommandRefused:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    with pytest.raises(CommandRefused) as info:
        parse_command(name, raw, current)
    return info.value


@pytest.mark.parametrize(
    "phone", ["+86 21 5555 0000", "400-800-8888", "(021) 5555 0000", "+8613800138000", ""]
)
def test_phone_numbers_people_write_are_taken(phone: str) -> None:
    cmd = parse("notice.contact", id="c-1", fields={"service_phone": phone})
    assert cmd.args == {"fields": {"service_phone": phone}} and cmd.id == "c-1"


@pytest.mark.parametrize(
    ("phone", "reason"),
    [
        ("+86 21 5555 0000 1234 5", "is 23 characters, at most 20"),
        ("call us", "must be digits"),
        ("+86 21\n5555", "must be digits"),
        ("++8621", "must be digits"),
    ],
)
def test_bad_phone_numbers_are_refused_naming_the_field(phone: str, reason: str) -> None:
    exc = refused("notice.contact", {"id": "c-1", "fields": {"service_phone": phone}})
    assert exc.reason.startswith("fields.service_phone: ") and reason in exc.reason
    assert exc.command_id == "c-1"


def test_outlet_and_phone_must_fit_the_head_units_text_pages_together() -> None:
    outlet = "网" * (MAX_TEXT_BYTES // 3 - 5)  # 3 bytes each: fits with a short phone
    parse("notice.contact", id="c-1", fields={"service_outlet": outlet})
    current = {"service_outlet": outlet, "service_phone": ""}
    fits = {"id": "c-2", "fields": {"service_phone": "+86 21"}}
    parse_command("notice.contact", json.dumps(fits).encode(), current)
    too_long = {"id": "c-3", "fields": {"service_phone": "+86 21 5555 0000"}}
    exc = refused("notice.contact", too_long, current)
    assert exc.reason.startswith("fields: outlet and phone would be")
    assert f"at most {MAX_TEXT_BYTES}" in exc.reason and exc.command_id == "c-3"
    exc = refused("notice.contact", {"id": "c-4", "fields": {"service_outlet": "a\nb"}})
    assert exc.reason == "fields.service_outlet: must be one line"


def test_null_restores_and_unknown_or_missing_fields_are_refused() -> None:
    assert parse("notice.contact", id="c", fields={"service_phone": None}).args == {
        "fields": {"service_phone": None}
    }
    assert refused("notice.contact", {"id": "c", "fields": {}}).reason.startswith("fields:")
    assert refused("notice.contact", {"id": "c"}).reason.startswith("fields:")
    exc = refused("notice.contact", {"id": "c", "fields": {"service_phone": 5}})
    assert exc.reason.startswith("fields.service_phone: must be text")
    exc = refused("notice.contact", {"id": "c", "fields": {"colour": "red"}})
    assert exc.reason.startswith("fields.colour: not a notice field")
    for key in NOTICE_FIELDS:
        assert key in exc.reason  # it lists what may be set


def test_owner_answer_needs_a_notice_and_a_known_response() -> None:
    cmd = parse("owner.answer", id="a", seq=3, notice_id=0x0101, response="dismissed")
    assert cmd.args == {"seq": 3, "notice_id": 0x0101, "response": "dismissed"}
    assert refused("owner.answer", {"id": "a", "seq": 300, "notice_id": 1, "response": "seen"})
    exc = refused("owner.answer", {"id": "a", "seq": True, "notice_id": 1, "response": "seen"})
    assert exc.reason.startswith("seq:")
    exc = refused("owner.answer", {"id": "a", "seq": 1, "notice_id": 1, "response": "yes"})
    assert exc.reason.startswith("response:")


def test_the_payload_and_its_id() -> None:
    assert refused("report.now", b"[1]").reason == "payload must be a JSON object"
    assert refused("report.now", b"\xff").reason.startswith("payload is not UTF-8 JSON")
    assert refused("report.now", {"id": "has space"}).reason.startswith("id:")
    assert refused("report.now", {"id": "x" * 65}).reason.startswith("id:")
    big = json.dumps({"id": "big", "pad": "x" * MAX_PAYLOAD_BYTES}).encode()
    exc = refused("report.now", big)
    assert exc.reason.startswith("payload is") and exc.command_id == "big"
    exc = refused("reboot", {"id": "r"})
    assert exc.reason.startswith("unknown command 'reboot'") and exc.command_id == "r"
    assert command_id(b'{"id": "ok-1"}') == "ok-1" and command_id(b"nope") is None
    assert parse("report.now", id="n").args == {}
