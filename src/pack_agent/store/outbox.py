"""The outbox: events numbered and kept until the broker acknowledges them (``Store``).

An event is numbered (per-vehicle ``seq``) and written here before anyone tries to
send it, and leaves only when the broker has acknowledged it. Delivered events are
deleted, not flagged: the file stays as small as the backlog (SQLite reuses the freed
pages) and nobody needs delivered events here. The size bound (``max_events``) drops
the oldest ``pack.health`` events, never an essential one (``ESSENTIAL_TYPES``).

Deferred deletes: ``mark_delivered`` (the broker's PUBACK) only notes the rows in
memory; they are no longer pending (``pending``, ``pending_rows`` and
``pending_count`` leave them out) and are deleted in the next write transaction
the store makes anyway (the next event, the hourly state save), or in one of
their own once ``DELETE_BATCH`` have gathered, when the uplink asks while a
backlog drains (``flush_delivered``), and at ``close``. So a steady agent writes
once per event, not twice. A crash in between only sends those events again
after the restart (same ``event_id`` and ``seq``: at least once).

A mixin of ``store.database.Store``: it writes through the store's transactions.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pack_agent.core.events import ESSENTIAL_TYPES, Event, EventDraft, utc_from_timestamp
from pack_agent.store.state import DELIVERED_TOTAL, DROPPED_TOTAL, LAST_DELIVERED_AT

if TYPE_CHECKING:
    import sqlite3

    from pack_agent.store.diskfull import NotWritten, Space

log = logging.getLogger("pack_agent.store.database")  # the store's messages, as before

_DROPPABLE = "pack.health"  # the only type the size bound may drop
assert _DROPPABLE not in ESSENTIAL_TYPES
_IN_CHUNK = 500  # values per IN (...): under SQLite's variable limit
DELETE_BATCH = 256  # delivered events noted in memory before their delete gets its own commit


class Outbox:
    """The outbox half of ``Store``: numbering, pending, delivered, the size bound."""

    path: Path
    max_events: int
    _seq: dict[str, int]
    _count: int | None
    _delivered: int | None
    _acked: set[int]
    _unwritten: list[int]
    _unwritten_since: float | None
    _held_acked: set[int]
    _last_delivered_at: float | None
    _dropped_upto: int
    _warned_full: bool
    _holding: bool
    _depth: int
    _space: Space
    _tx_durable: bool
    _tx_rows: int
    _tx_last_row: int
    _undurable: int
    durable_upto: int

    if TYPE_CHECKING:  # provided by Store (store.database) and State (store.state)

        @property
        def held_events(self) -> int: ...

        def transaction(self) -> contextlib.AbstractContextManager[None]: ...
        def _exec(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor | NotWritten: ...
        def _query(self, sql: str, params: Iterable[Any] = ()) -> list[Any]: ...
        def _get(self, key: str, default: Any = None) -> Any: ...
        def _put(self, key: str, value: Any) -> None: ...

    def append(self, draft: EventDraft) -> Event:
        """Number the draft (next ``seq`` for its VIN) and store it.

        When the outbox already holds ``max_events``, the oldest undelivered
        ``pack.health`` events are deleted to make room (counted in
        ``dropped_total``). Essential events are never dropped: with an outbox
        full of them the append still succeeds and the outbox grows past
        ``max_events``; the caller may compare ``pending_count()`` with
        ``max_events`` and warn.

        On a volume under ``reserve_bytes`` free a cheap event (``pack.health``) is
        refused before it is numbered: ``StoreSpaceShort``. An essential event makes
        its transaction a synced one (``store.durable``)."""
        essential = draft.type in ESSENTIAL_TYPES
        if not essential:
            self._space.refuse(draft.type)
        with self.transaction():
            if draft.vin not in self._seq:
                rows = self._query("SELECT last FROM seq WHERE vin = ?", (draft.vin,))
                self._seq[draft.vin] = rows[0][0] if rows else 0
            seq = self._seq[draft.vin] + 1
            event = Event.from_draft(draft, seq)
            excess = self.pending_count() + 1 - self.max_events
            if excess > 0:
                self._drop_health(excess)
                self._warn_full(draft.type)
            self._exec("INSERT OR REPLACE INTO seq (vin, last) VALUES (?, ?)", (draft.vin, seq))
            cur = self._exec(
                "INSERT INTO outbox (event_id, vin, seq, type, body) VALUES (?, ?, ?, ?, ?)",
                (event.event_id, event.vin, seq, event.type, event.to_json()),
            )
            if cur.rowcount:  # written (not held in memory: a full disk)
                self._tx_rows += 1
                self._tx_last_row = int(getattr(cur, "lastrowid", 0) or 0)
            self._tx_durable = self._tx_durable or essential
            self._seq[draft.vin] = seq
            self._count = (self._count or 0) + 1
        return event

    def _drop_health(self, n: int) -> None:
        # an event in flight may be dropped before its PUBACK comes: mark_delivered checks
        # the rows up to here (held, the drop runs later on rows unknown now: check all)
        reach = self._query(
            "SELECT max(id) FROM (SELECT id FROM outbox WHERE type = ? ORDER BY id LIMIT ?)",
            (_DROPPABLE, n),
        )[0][0]
        reach = sys.maxsize if self._holding else reach or 0
        self._dropped_upto = max(self._dropped_upto, reach)
        cur = self._exec(
            "DELETE FROM outbox WHERE id IN "
            "(SELECT id FROM outbox WHERE type = ? ORDER BY id LIMIT ?)",
            (_DROPPABLE, n),
        )
        if cur.rowcount:
            self._count = (self._count or 0) - cur.rowcount
            self._put(DROPPED_TOTAL, self.dropped_total + cur.rowcount)

    def _warn_full(self, incoming: str) -> None:
        """Say once per episode (until the backlog is under the bound again) that the
        outbox is full: the backend has not acknowledged anything for a long time."""
        if self._warned_full:
            return
        self._warned_full = True
        pending = self.pending_count() + 1
        if pending > self.max_events:
            log.warning(
                "%s: outbox over store.max_events (%d events, bound %d) and nothing left to "
                "drop: every pending event is essential, so it keeps growing (is the broker "
                "reachable?)",
                self.path,
                pending,
                self.max_events,
            )
        else:
            log.warning(
                "%s: outbox full (store.max_events = %d): dropping the oldest pack.health "
                "events to keep %s and every essential event (%d dropped so far)",
                self.path,
                self.max_events,
                incoming,
                self.dropped_total,
            )

    def pending(self, limit: int, exclude: Collection[str] = ()) -> list[Event]:
        """Up to ``limit`` undelivered events, oldest first, skipping ``exclude``
        (the ids in flight)."""
        skip = set(exclude)
        gone = self._acked | self._held_acked  # delivered, not yet deleted
        rows = self._query(
            "SELECT id, event_id, body FROM outbox ORDER BY id LIMIT ?",
            (limit + len(skip) + len(gone),),
        )
        bodies = [b for row, event_id, b in rows if event_id not in skip and row not in gone]
        return [Event.from_json(body) for body in bodies[:limit]]

    def publishable_count(self) -> int:
        """Events the uplink may publish now: pending, on the medium (``durable_upto``),
        not held in memory."""
        return max(0, self.pending_count() - self._undurable - self.held_events)

    def publishable_rows(self, after: int, limit: int) -> list[tuple[int, str, str, str, str]]:
        """``pending_rows`` up to ``durable_upto``: what the uplink may publish (no event
        leaves the vehicle before its commit is on the medium)."""
        return self.pending_rows(after, limit, upto=self.durable_upto)

    def pending_rows(
        self, after: int, limit: int, upto: int | None = None
    ) -> list[tuple[int, str, str, str, str]]:
        """Up to ``limit`` undelivered events after outbox row ``after`` (and up to row
        ``upto``), oldest first, as ``(row, event_id, vin, type, body)``: the uplink
        publishes ``body`` as it is, without parsing it again."""
        # delivered rows not yet deleted are left out; while a backlog drains they all lie
        # behind ``after`` (the uplink's cursor), so this costs nothing then
        gone = {r for r in self._acked if r > after} | {r for r in self._held_acked if r > after}
        rows = self._query(
            "SELECT id, event_id, vin, type, body FROM outbox WHERE id > ? AND id <= ? "
            "ORDER BY id LIMIT ?",
            (after, sys.maxsize if upto is None else upto, limit + len(gone)),
        )
        return [r for r in rows if r[0] not in gone][:limit] if gone else rows

    def mark_delivered(
        self,
        event_ids: Iterable[str] = (),
        *,
        rows: Iterable[int] = (),
        now: float | None = None,
    ) -> int:
        """Note acknowledged events, named by outbox row (the uplink's way: rows are
        never reused) or by event id (a table scan per 500 ids: for tools and tests);
        returns how many were still pending (one that was dropped or already delivered
        is ignored).

        They stop being pending at once; the rows are deleted later (see the module's
        docstring): in the next write transaction, or in one of their own when
        ``DELETE_BATCH`` have gathered."""
        found = set(rows)
        names = list(dict.fromkeys(event_ids))
        for chunk, marks in _in_chunks(names):
            sql = f"SELECT id FROM outbox WHERE event_id IN ({marks})"
            found.update(r for (r,) in self._query(sql, chunk))
        new = found - self._acked - self._held_acked
        suspect = sorted(r for r in new if r <= self._dropped_upto)
        for chunk, marks in _in_chunks(suspect):  # dropped by the size bound while in flight?
            sql = f"SELECT id FROM outbox WHERE id IN ({marks})"
            new -= set(chunk) - {r for (r,) in self._query(sql, chunk)}
        if not new:
            return 0
        self._acked.update(new)
        self._unwritten.extend(sorted(new))
        if self._unwritten_since is None:
            self._unwritten_since = time.monotonic()
        if self._count is not None:
            self._count -= len(new)
        self._delivered = self.delivered_total + len(new)
        self._last_delivered_at = time.time() if now is None else now
        if len(self._unwritten) >= DELETE_BATCH:
            self.flush_delivered()
        if self._warned_full and self.pending_count() < self.max_events:
            self._warned_full = False
            log.info("%s: outbox under store.max_events again", self.path)
        return len(new)

    def flush_delivered(self, older_than: float = 0.0) -> bool:
        """Delete the delivered events noted so far, in one commit of their own; with
        ``older_than`` only if the oldest was noted at least that many seconds ago (the
        uplink's pace while a backlog drains). True when a commit was made."""
        if not self._unwritten or self._depth:
            return False
        since = self._unwritten_since
        if older_than > 0 and since is not None and time.monotonic() - since < older_than:
            return False
        with self.transaction():
            pass  # the transaction writes them (_delete_delivered)
        return True

    @property
    def delivered_waiting(self) -> int:
        """Events delivered but still in the file (their delete is deferred or held)."""
        return len(self._acked) + len(self._held_acked)

    def _delete_delivered(self, rows: list[int]) -> None:
        """Inside a transaction: delete ``rows`` (delivered) and write the counters."""
        if not rows:
            return
        self.pending_count()  # a count made later must not subtract these rows twice
        for chunk, marks in _in_chunks(rows):
            self._exec(f"DELETE FROM outbox WHERE id IN ({marks})", chunk)
        self._put(DELIVERED_TOTAL, self.delivered_total)
        if self._last_delivered_at is not None:
            self._put(LAST_DELIVERED_AT, utc_from_timestamp(self._last_delivered_at).isoformat())

    @property
    def delivered_total(self) -> int:
        """Events acknowledged by the broker, ever."""
        if self._delivered is None:
            self._delivered = int(self._get(DELIVERED_TOTAL) or 0)
        return self._delivered

    def pending_count(self) -> int:
        """Events not yet delivered (delivered ones awaiting their delete do not count)."""
        if self._count is None:
            rows = int(self._query("SELECT count(*) FROM outbox")[0][0])
            self._count = rows - len(self._acked) - len(self._held_acked)
        return self._count

    @property
    def dropped_total(self) -> int:
        """``pack.health`` events dropped by the size bound, ever."""
        return int(self._get(DROPPED_TOTAL) or 0)


def _in_chunks(values: list[Any]) -> Iterator[tuple[list[Any], str]]:
    """``values`` in slices for ``IN (?, ...)``, each with its placeholders: SQLite
    limits the variables in one statement."""
    for i in range(0, len(values), _IN_CHUNK):
        chunk = values[i : i + _IN_CHUNK]
        yield chunk, ",".join("?" * len(chunk))
