"""Commands from the backend: what each one may carry, and the checks it must pass.

Pure: no I/O, no clock. ``parse_command`` turns a command topic's name and its JSON
payload into a :class:`Command`, or raises :class:`CommandRefused` with a reason that
says which field is wrong and why; the runtime applies the command
(``pack_agent.runtime.commands``). A command that fails here changes nothing.

Overridable notice fields are one table (:data:`NOTICE_FIELDS`): a ``[notice]`` key the
backend may set is one line there, with its check.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pack_agent.core.notices import ACK_RESPONSES, MAX_TEXT_BYTES, outlet_text

__all__ = [
    "COMMANDS",
    "MAX_ID_CHARS",
    "MAX_PAYLOAD_BYTES",
    "NOTICE_FIELDS",
    "Command",
    "CommandRefused",
    "command_id",
    "parse_command",
]

MAX_PAYLOAD_BYTES = 4096  # a command is a few fields; anything larger is not one
MAX_ID_CHARS = 64
MAX_PHONE_CHARS = 20  # E.164 is at most 15 digits; room for "+", spaces and dashes
MAX_OUTLET_BYTES = MAX_TEXT_BYTES  # with the phone: checked together, as [notice] is
MAX_URL_CHARS = 200
_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_PHONE = re.compile(r"\+?[0-9(][0-9 ()-]*[0-9]")
_URL = re.compile(r"https://[^\s/?#]+[^\s]*")


class CommandRefused(ValueError):
    """A command that is not applied: ``reason`` says what is wrong, naming the field."""

    def __init__(self, reason: str, command_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.command_id = command_id


def _one_line(value: str, max_bytes: int) -> str | None:
    if "\n" in value or "\r" in value:
        return "must be one line"
    if len(value.encode("utf-8")) > max_bytes:
        return f"is {len(value.encode('utf-8'))} bytes of UTF-8, at most {max_bytes}"
    return None


def _outlet(value: str) -> str | None:
    return _one_line(value, MAX_OUTLET_BYTES)


def _phone(value: str) -> str | None:
    if value == "":
        return None  # unset: the notice shows no phone
    if len(value) > MAX_PHONE_CHARS:
        return f"is {len(value)} characters, at most {MAX_PHONE_CHARS}"
    if not _PHONE.fullmatch(value):
        return "must be digits, with an optional leading + and spaces, dashes or brackets"
    return None


def _url(value: str) -> str | None:
    if value == "":
        return None
    if len(value) > MAX_URL_CHARS:
        return f"is {len(value)} characters, at most {MAX_URL_CHARS}"
    if not _URL.fullmatch(value):
        return "must be an https:// URL without spaces"
    return None


# [notice] keys the backend may override (``notice.contact``), each with its check: the
# value is a string; the check returns what is wrong with it, or None
NOTICE_FIELDS: dict[str, Callable[[str], str | None]] = {
    "service_outlet": _outlet,
    "service_phone": _phone,
    "emergency_phone": _phone,
    "procedure_url": _url,
}


@dataclass(frozen=True)
class Command:
    """A valid command: ``id`` (the backend's, for idempotency), ``name`` and its ``args``."""

    id: str
    name: str
    args: dict[str, Any] = field(default_factory=dict)


def _notice_contact(args: dict[str, Any], current: dict[str, str]) -> dict[str, Any]:
    fields = args.get("fields")
    if not isinstance(fields, dict) or not fields:
        raise CommandRefused("fields: an object of [notice] keys to set is required")
    for key, value in fields.items():
        if key not in NOTICE_FIELDS:
            known = ", ".join(sorted(NOTICE_FIELDS))
            raise CommandRefused(f"fields.{key}: not a notice field the backend may set ({known})")
        if value is not None and not isinstance(value, str):
            raise CommandRefused(f"fields.{key}: must be text, or null to restore the configured")
        wrong = NOTICE_FIELDS[key](value) if value is not None else None
        if wrong:
            raise CommandRefused(f"fields.{key}: {wrong}")
    merged = {**current, **{k: v for k, v in fields.items() if v is not None}}
    size = len(
        outlet_text(merged.get("service_outlet", ""), merged.get("service_phone", "")).encode()
    )
    if size > MAX_TEXT_BYTES:
        raise CommandRefused(
            f"fields: outlet and phone would be {size} bytes of UTF-8, "
            f"at most {MAX_TEXT_BYTES} fit in the head unit's text pages"
        )
    return {"fields": dict(fields)}


def _owner_answer(args: dict[str, Any], _current: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, top in (("seq", 255), ("notice_id", 0xFFFF)):
        value = args.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
            raise CommandRefused(f"{key}: an integer 0..{top} is required")
        out[key] = value
    responses = sorted(ACK_RESPONSES.values())
    if args.get("response") not in responses:
        raise CommandRefused(f"response: one of {', '.join(responses)} is required")
    out["response"] = args["response"]
    return out


def _report_now(args: dict[str, Any], _current: dict[str, str]) -> dict[str, Any]:
    return {}


# command name (the last level of its topic) -> its argument check
COMMANDS: dict[str, Callable[[dict[str, Any], dict[str, str]], dict[str, Any]]] = {
    "notice.contact": _notice_contact,
    "owner.answer": _owner_answer,
    "report.now": _report_now,
}


def command_id(payload: bytes) -> str | None:
    """The payload's ``id`` when it has a usable one (to answer even a refused command)."""
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    value = body.get("id") if isinstance(body, dict) else None
    return value if isinstance(value, str) and _ID.fullmatch(value) else None


def parse_command(name: str, payload: bytes, current: dict[str, str] | None = None) -> Command:
    """The command ``name`` with its JSON ``payload``, checked; ``current`` is the notice
    contact in force (a change is checked as a whole: outlet and phone must fit together).
    Raises ``CommandRefused``."""
    cid = command_id(payload)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise CommandRefused(f"payload is {len(payload)} bytes, at most {MAX_PAYLOAD_BYTES}", cid)
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CommandRefused(f"payload is not UTF-8 JSON: {exc}") from None
    if not isinstance(body, dict):
        raise CommandRefused("payload must be a JSON object")
    if cid is None:
        raise CommandRefused(
            f"id: a text of 1..{MAX_ID_CHARS} characters A-Z a-z 0-9 . _ : - is required"
        )
    check = COMMANDS.get(name)
    if check is None:
        raise CommandRefused(f"unknown command {name!r} (known: {', '.join(COMMANDS)})", cid)
    args = {k: v for k, v in body.items() if k != "id"}
    try:
        return Command(cid, name, check(args, current or {}))
    except CommandRefused as exc:
        raise CommandRefused(exc.reason, cid) from None
