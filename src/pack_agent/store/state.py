"""The agent's key/value state in the store, and the name of every key (``Store``).

Values are JSON, written in the same transaction as the event a change causes.
Every key is a constant here, never a string literal at a call site: a typo in a
literal reads ``None`` for ever and loses a latch without a word, and one list
shows what a store holds (``pack-agent status`` reads them back by the same names).

A mixin of ``store.database.Store``: it writes through the store's transactions.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite3

    from pack_agent.store.diskfull import NotWritten

# -- the agent's keys (runtime.agent) --------------------------------------------
PACK_CODE = "pack.code"  # the confirmed pack code (the tracker's identity)
PACK_TRACKER = "pack.tracker"  # a different code seen, and in how many trips (a swap?)
PACK_SAVED_PREFIX = "pack.saved."  # + a pack code: its windows, latches, notices (a pack back)
POLICY_STATE = "policy.state"  # the rules' windows, the SOH history (hourly)
POLICY_LATCHED = "policy.latched"  # the rules that decided: never decide again
NOTICES = "notices"  # the owner's notices: attempts, answers
IGNITION_ON = "ignition.on"  # so that a reboot mid-trip is not an Off->On
HEAD_UNIT_HEARD_AT = "notices.head_unit_heard_at"  # the head unit's last answer frame
HEALTH_SAMPLED_AT = "health.sampled_at"  # the last pack.health's time, with the sample
LAST_EVENT_KEY = "status.last_event."  # + an event type: its last event (the daemon)
COMMANDS_APPLIED = "commands.applied"  # backend command id -> the answer given (once per id)
NOTICE_OVERRIDES = "notice.overrides"  # [notice] field -> the backend's value (commands)

# -- the store's own counters (keys starting with "store.") ----------------------
DELIVERED_TOTAL = "store.delivered_total"
DROPPED_TOTAL = "store.dropped_total"
LAST_DELIVERED_AT = "store.last_delivered_at"

# the state that latches an essential event: a write of one of these keys is a synced
# commit, like the essential events themselves (docs/reliability.md)
DURABLE_KEYS: frozenset[str] = frozenset(
    {PACK_CODE, POLICY_LATCHED, NOTICES, COMMANDS_APPLIED, NOTICE_OVERRIDES}
)


class State:
    """The key/value half of ``Store``."""

    _tx_durable: bool

    if TYPE_CHECKING:  # provided by Store (store.database)

        def transaction(self) -> contextlib.AbstractContextManager[None]: ...
        def _exec(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor | NotWritten: ...
        def _query(self, sql: str, params: Iterable[Any] = ()) -> list[Any]: ...

    def _get(self, key: str, default: Any = None) -> Any:
        rows = self._query("SELECT value FROM state WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else default

    def _put(self, key: str, value: Any) -> None:
        sql = "INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)"
        self._exec(sql, (key, json.dumps(value)))
        if key in DURABLE_KEYS:  # it latches an essential event: a synced commit
            self._tx_durable = True

    def get_state(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key`` (one of this module's constants)."""
        return self._get(key, default)

    def put_state(self, key: str, value: Any) -> None:
        """Store any JSON value under ``key`` (one of this module's constants; keys
        starting with ``store.`` are the store's own counters)."""
        with self.transaction():
            self._put(key, value)
