"""Commands from the backend, applied: once each, checked, and each leaving an event.

``CommandHandler`` takes a command as the uplink received it (``CommandRequest``),
checks it (``pack_agent.core.commands``), applies it and returns the answer for the
response topic. Every command carries the backend's ``id``: an id already applied is
answered again from the store (``commands.applied``), not applied twice, across
restarts too. A command is applied in one commit with its ``command.applied`` event
and its id; a refused one changes nothing and leaves ``command.refused``.

Commands: ``notice.contact`` (override ``[notice]`` fields such as the service outlet
and phone; persisted under ``notice.overrides``, used by the next notice, shown in the
status), ``owner.answer`` (the owner answered in the maker's app: the same effect as
the head unit's answer, ``owner.acknowledged`` with ``channel = "app"``) and
``report.now`` (a ``pack.health`` and the retained status now).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pack_agent.config import AgentConfig
from pack_agent.config.settings import NoticeSettings
from pack_agent.core.commands import (
    NOTICE_FIELDS,
    Command,
    CommandRefused,
    command_id,
    parse_command,
)
from pack_agent.core.notices import MAX_TEXT_BYTES, NoticeAck, text_bytes
from pack_agent.store.state import COMMANDS_APPLIED, NOTICE_OVERRIDES

if TYPE_CHECKING:
    from pack_agent.delivery.uplink import CommandRequest
    from pack_agent.runtime.notice_dispatch import NoticeDispatcher
    from pack_agent.store.database import Store

log = logging.getLogger(__name__)

APPLIED_KEY = COMMANDS_APPLIED  # id -> the answer given, the newest KEEP_APPLIED
OVERRIDES_KEY = NOTICE_OVERRIDES  # [notice] field -> the backend's value
KEEP_APPLIED = 500  # ids remembered: a backend retries within minutes, not 500 commands later

Emit = Callable[[str, dict[str, Any], float], None]


def apply_overrides(notice: NoticeSettings, overrides: dict[str, str] | None) -> dict[str, str]:
    """Put the backend's values into the running ``[notice]`` settings (at start, before
    the owner channels are built); returns the configured values they replace."""
    configured: dict[str, str] = {}
    for key, value in (overrides or {}).items():
        if key in NOTICE_FIELDS and hasattr(notice, key):
            configured[key] = getattr(notice, key)
            setattr(notice, key, value)
    return configured


class CommandHandler:
    """Applies the backend's commands; the agent builds it, the main loop feeds it."""

    def __init__(
        self,
        config: AgentConfig,
        store: Store,
        dispatch: NoticeDispatcher,
        emit: Emit,
        health_now: Callable[[float], bool],
    ) -> None:
        self.config = config
        self.store = store
        self.dispatch = dispatch
        self._emit = emit
        self._health_now = health_now
        self.overrides: dict[str, str] = dict(store.get_state(OVERRIDES_KEY) or {})
        # the configured values under the overrides (to restore one with null)
        self._configured = {k: getattr(config.notice, k) for k in NOTICE_FIELDS}
        self._configured.update(apply_overrides(config.notice, self.overrides))
        # called after a notice.contact: the owner channels take the new values
        self.contact_changed: Callable[[], None] | None = None
        self.wants_status = False  # report.now: the main loop publishes the status
        self.counts = {"applied": 0, "refused": 0, "repeated": 0}

    def handle(self, request: CommandRequest, now: float) -> dict[str, Any]:
        """The answer to ``request`` (applied, repeated or refused, with the reason)."""
        applied = self.store.get_state(APPLIED_KEY) or {}
        cid = command_id(request.payload)
        if cid is not None and cid in applied:  # answered as the first time, whatever it says
            self.counts["repeated"] += 1
            log.info("command %s %s: already applied, answered again", request.name, cid)
            return {**applied[cid], "repeated": True}
        try:
            command = parse_command(request.name, request.payload, self.contact())
            if command.name == "notice.contact":
                self._check_text_size(command.id, command.args["fields"])
        except CommandRefused as exc:
            return self._refuse(request.name, exc.command_id, exc.reason, now)
        try:
            with self.store.transaction():
                result = self._apply(command, now)
                answer: dict[str, Any] = {
                    "id": command.id,
                    "command": command.name,
                    "status": "applied",
                    "result": result,
                }
                applied[command.id] = answer
                while len(applied) > KEEP_APPLIED:
                    del applied[next(iter(applied))]
                self.store.put_state(APPLIED_KEY, applied)
                data: dict[str, Any] = {
                    "command_id": command.id,
                    "command": command.name,
                    "args": command.args,
                    "result": result,
                }
                self._emit("command.applied", data, now)
        except CommandRefused as exc:  # refused while applying: the transaction undid it
            self._restore()
            return self._refuse(command.name, command.id, exc.reason, now)
        self.counts["applied"] += 1
        log.info("command %s %s applied", command.name, command.id)
        if command.name == "notice.contact" and self.contact_changed is not None:
            self.contact_changed()
        return answer

    def _check_text_size(self, command_id: str, fields: dict[str, str | None]) -> None:
        """Every line the head unit's text pages would carry, with the new values, fits."""
        settings = replace(self.config.notice)  # a copy: the running settings stay as they are
        for key, value in fields.items():
            setattr(settings, key, self._configured[key] if value is None else value)
        size = text_bytes(settings, (getattr(r, "within_days", None) for r in self.config.rules))
        if size > MAX_TEXT_BYTES:
            raise CommandRefused(
                f"fields: the notice's text lines would be {size} bytes of UTF-8, at most "
                f"{MAX_TEXT_BYTES} fit in the head unit's text pages",
                command_id,
            )

    def contact(self) -> dict[str, str]:
        """The notice fields in force (configured, or the backend's override)."""
        return {k: getattr(self.config.notice, k) for k in NOTICE_FIELDS}

    def _apply(self, command: Command, now: float) -> dict[str, Any]:
        if command.name == "notice.contact":
            for key, value in command.args["fields"].items():
                if value is None:
                    self.overrides.pop(key, None)
                    setattr(self.config.notice, key, self._configured[key])
                else:
                    self.overrides[key] = value
                    setattr(self.config.notice, key, value)
            self.store.put_state(OVERRIDES_KEY, self.overrides)
            return {"notice": self.contact(), "overridden": sorted(self.overrides)}
        if command.name == "owner.answer":
            args = command.args
            ack = NoticeAck(args["seq"], args["notice_id"], args["response"])
            notice = self.dispatch.answer(ack, "app", now)
            if notice is None:
                raise CommandRefused(
                    f"seq {args['seq']}, notice_id {args['notice_id']}: no open notice with "
                    "that seq and id has been shown, or this answer to it is already recorded"
                )
            return {"seq": notice.seq, "response": notice.response, "follow_up": notice.follow_up}
        # report.now
        health = self._health_now(now)
        self.wants_status = True
        return {"pack_health": health, "status": True}

    def _restore(self) -> None:
        """After a refusal inside the commit: memory as the store has it again."""
        self.overrides = dict(self.store.get_state(OVERRIDES_KEY) or {})
        for key in NOTICE_FIELDS:
            setattr(self.config.notice, key, self.overrides.get(key, self._configured[key]))

    def _refuse(self, name: str, command_id: str | None, reason: str, now: float) -> dict[str, Any]:
        self.counts["refused"] += 1
        log.warning("command %s %s refused: %s", name, command_id, reason)
        data = {"command_id": command_id, "command": name, "reason": reason}
        self._emit("command.refused", data, now)
        return {"id": command_id, "command": name, "status": "refused", "reason": reason}

    def status(self) -> dict[str, Any]:
        """For the status file: counters since start and the overrides in force."""
        return {**self.counts, "notice_overrides": dict(sorted(self.overrides.items()))}
