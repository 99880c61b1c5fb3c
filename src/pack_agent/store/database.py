"""The agent's disk: one SQLite file (WAL) with the outbox and the agent's own state.

Nothing else in pack-agent touches SQLite (``diskfull`` replays this store's
transactions on its connection, after a full disk). This module holds the
connection, its pragmas, the schema and the transactions; the ``Store`` is put
together from ``store.outbox`` (events until the broker acknowledges them) and
``store.state`` (the key/value state and the name of every key). A damaged file is
moved aside by ``store.recovery``; ``store.view`` reads a store without writing.

Durability (docs/reliability.md): the file is in WAL mode. ``synchronous="NORMAL"``
(the default) survives any crash of the process, but a commit reaches the medium only
at the next sync of the WAL. So a transaction that appends an essential event
(``core.events.ESSENTIAL_TYPES``) or writes a state key that latches one
(``state.DURABLE_KEYS``) is synced before ``transaction`` returns: the agent acts
only on what a power cut cannot take back. Cheap commits (``pack.health``, the
hourly windows) are not; they become durable with the next synced commit or when the
uplink asks for them (``sync_if_due``, at its next poll while connected). The uplink
publishes only rows up to ``durable_upto``, so a ``seq`` that left the vehicle is
never numbered again after a cut. ``"FULL"`` syncs every commit.

Space: after each commit the volume's free space is measured (``diskfull.Space``);
while it is tight the WAL is checkpointed and truncated, under ``reserve_bytes`` cheap
events are refused (``StoreSpaceShort``) and ``stats`` says so.

Ownership: one thread (the main loop) owns a ``Store``; sqlite3 enforces it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pack_agent.core.events import utc_from_timestamp
from pack_agent.errors import StoreError
from pack_agent.store.diskfull import (
    RESERVE_BYTES,
    HeldWrites,
    NotWritten,
    Space,
    Write,
    is_disk_full,
)
from pack_agent.store.durable import SYNC_DELAY_S, Durable
from pack_agent.store.outbox import DELETE_BATCH, Outbox
from pack_agent.store.state import LAST_DELIVERED_AT, State

log = logging.getLogger(__name__)

# 2: outbox ids never reused (AUTOINCREMENT: the uplink keeps a cursor into them), and
# no index on event_id: random UUID keys made every append and every delete dirty one
# more random page (write amplification on flash, and most of the cost of a drain)
SCHEMA_VERSION = 2
SYNCHRONOUS_MODES = ("NORMAL", "FULL")
JOURNAL_SIZE_LIMIT = 4 * 1024 * 1024  # the -wal file is truncated back to this
_SCHEMA = """
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- append order, never reused
    event_id TEXT NOT NULL,        -- a UUID4, unique by construction, not indexed
    vin TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    body TEXT NOT NULL             -- Event.to_json(), exactly what is published
);
CREATE TABLE seq (vin TEXT PRIMARY KEY, last INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID
"""


class Store(Durable, Outbox, State):
    """The outbox and the agent state. Every method raises ``StoreError`` (naming the
    file) for any SQLite failure, so the caller sees one kind of error."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_events: int = 100_000,
        synchronous: str = "NORMAL",
        busy_timeout_ms: int = 5000,
        reserve_bytes: int = RESERVE_BYTES,
    ) -> None:
        if synchronous.upper() not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, not {synchronous!r}")
        if max_events < 1:
            raise ValueError("max_events must be >= 1")
        self.path = Path(path)
        self.max_events = max_events
        self._depth = 0  # transaction nesting
        self._count: int | None = None  # cached pending_count, None = unknown
        self._delivered: int | None = None  # delivered_total, with the deferred deletes
        # delivered (PUBACK) but still in the file: no longer pending, deleted later
        self._acked: set[int] = set()  # outbox rows whose delete is not committed
        self._unwritten: list[int] = []  # of those, the rows in no transaction yet
        self._unwritten_since: float | None = None  # monotonic time of the oldest
        self._held_acked: set[int] = set()  # rows whose delete is held (disk full)
        self._last_delivered_at: float | None = None  # not yet written
        self._dropped_upto = 0  # rows up to this one may have been dropped by the size bound
        self._warned_full = False  # one warning per episode of a full outbox
        self.commits = 0  # write transactions committed by this handle (flash wear: bench, tests)
        self._seq: dict[str, int] = {}  # vin -> last seq, also while writes are held
        self._ops: list[Write] = []  # the open transaction's writes
        self._holding = False  # the open transaction is kept in memory (disk full)
        self._held = HeldWrites(self.path)  # transactions not yet written (disk full)
        self._space = Space(self.path, reserve_bytes)
        self._wal = self.path.with_name(self.path.name + "-wal")
        self._full = synchronous.upper() == "FULL"  # SQLite syncs every commit itself
        self._tx_durable = False  # the open transaction must be synced at its commit
        self._tx_rows = 0  # events the open transaction appended (written, not held)
        self._tx_last_row = 0
        self._last_row = 0  # the newest outbox row committed
        self.durable_upto = 0  # outbox rows up to this one are on the medium: publishable
        self._undurable = 0  # events committed after durable_upto
        self._unsynced_since: float | None = None  # monotonic time of the oldest unsynced commit
        self._dir_synced = False  # the directory entry of the -wal file, once per life
        self.syncs = 0  # syncs of the WAL made by this handle (bench, tests)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():  # the file holds the VIN and pack codes: owner only
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        except OSError as exc:
            why = exc.strerror or exc
            raise StoreError(f"{self.path}: cannot create the store: {why}") from None
        with self._guard("cannot open"):
            self._conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            self._setup(synchronous.upper(), busy_timeout_ms)
        except BaseException:
            self._conn.close()
            raise

    def _setup(self, synchronous: str, busy_timeout_ms: int) -> None:
        with self._guard("not a usable SQLite database", StoreDamaged):
            c = self._conn
            c.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            version = c.execute("PRAGMA user_version").fetchone()[0]
            tables = [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            # a truncated or damaged file can open and fail later, mid-run: look at every page
            # now (the file is as small as the backlog, so this is quick)
            verdict = c.execute("PRAGMA quick_check").fetchone()[0]
            if verdict != "ok":
                found = [x for x in verdict.splitlines() if not x.startswith("***")]
                first = found[0] if found else verdict
                raise sqlite3.DatabaseError(
                    f"database disk image is malformed (quick_check: {first})"
                )
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: written by a newer pack-agent (schema {version}, "
                f"this one knows up to {SCHEMA_VERSION})"
            )
        if version == 0 and tables:
            raise StoreError(f"{self.path}: an SQLite database, but not a pack-agent store")
        with self._guard("cannot set up"):
            mode = c.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                log.warning("%s: journal mode is %s, not WAL (filesystem?)", self.path, mode)
            c.execute(f"PRAGMA synchronous = {synchronous}")
            c.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")  # a bounded -wal
            if version == 0:
                with self.transaction():
                    for statement in filter(str.strip, _SCHEMA.split(";")):
                        c.execute(statement)
                    c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version == 1:
                self._migrate_from_1()
            c.execute("PRAGMA wal_autocheckpoint = 1000")  # SQLite's default, stated
            self._last_row = c.execute("SELECT max(id) FROM outbox").fetchone()[0] or 0
        # what a crashed process left in the WAL may still be only in the page cache
        self._unsynced_since = time.monotonic()
        self.sync_after_commit()
        self._space.measure()

    def _migrate_from_1(self) -> None:
        """Schema 1 let SQLite reuse the id of a deleted last row (the uplink keeps a
        cursor into the outbox, so ids must only grow) and indexed event_id. Copy into
        the schema 2 table."""
        c = self._conn
        create = _SCHEMA.split(";")[0].replace("CREATE TABLE outbox", "CREATE TABLE outbox_new")
        with self.transaction():
            c.execute(create)
            c.execute("INSERT INTO outbox_new SELECT * FROM outbox")
            c.execute("DROP TABLE outbox")
            c.execute("ALTER TABLE outbox_new RENAME TO outbox")
            c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        log.info("%s: store schema upgraded from 1 to %d", self.path, SCHEMA_VERSION)

    @contextlib.contextmanager
    def _guard(self, what: str, kind: type[StoreError] = StoreError) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise kind(f"{self.path}: {what}: {exc}") from None

    @contextlib.contextmanager
    def transaction(self, durable: bool = False) -> Iterator[None]:
        """Everything inside commits together, or (on an exception) not at all.

        Nested blocks join the outermost one: an exception caught inside the outer
        block does not undo the inner block's writes. The commit is synced to the medium
        before this returns when ``durable`` (at any depth), or when the transaction
        appended an essential event or wrote a key of ``state.DURABLE_KEYS``."""
        if self._depth:
            self._tx_durable = self._tx_durable or durable
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        if self._held:
            self.write_held()  # order: what is held goes first (tried once a second)
        seq_before = dict(self._seq)
        self._ops = []
        self._tx_durable, self._tx_rows, self._tx_last_row = durable, 0, self._last_row
        self._holding = bool(self._held)  # still full: this one is held too, after the rest
        if not self._holding:
            with self._guard("cannot begin a transaction"):
                self._conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        # the deferred deletes ride on this transaction (rows noted inside it wait)
        deleting, since = self._unwritten, self._unwritten_since
        self._unwritten, self._unwritten_since = [], None
        try:
            self._delete_delivered(deleting)
            yield
            if self._holding:
                self._hold()
            else:
                try:
                    with self._guard("cannot commit"):
                        self._conn.execute("COMMIT")
                    self._committed()
                except StoreError as exc:
                    if not is_disk_full(exc):
                        raise
                    self._start_holding(exc)
                    self._hold()
            if self._holding:  # the deletes are held with the rest: still in the file
                self._held_acked.update(deleting)
            self._acked.difference_update(deleting)
        except BaseException:
            self._count = None
            self._seq = seq_before
            self._unwritten = deleting + self._unwritten
            if deleting:
                self._unwritten_since = since
            if self._conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
            raise
        finally:
            self._depth = 0
            self._ops = []
            self._holding = False

    # -- a full disk ------------------------------------------------------------

    def _start_holding(self, exc: BaseException) -> None:
        """The disk (or ``max_page_count``) is full: undo the open transaction in SQLite
        and keep it, and every following one, in memory, in order (``diskfull``)."""
        if self._conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
        self._holding = True
        self._held.full(exc)

    def _hold(self) -> None:
        self._held.hold(self._ops)

    def write_held(self, force: bool = False) -> bool:
        """Write what is held in memory, oldest first, in one transaction; at most once a
        second unless ``force``. True when nothing is held any more."""
        if not self._held:
            return True
        events = self._held.events
        if not self._held.write(self._conn, force, before=self.checkpoint):
            return False
        self.commits += 1
        self._held_acked.clear()
        self._count = None  # the held deletes ran too: count again
        self._last_row = self._query("SELECT max(id) FROM outbox")[0][0] or 0
        self._undurable += events
        self._unsynced_since = time.monotonic()
        self.sync_after_commit()  # they waited long enough, and may be essential
        return True

    @property
    def held_events(self) -> int:
        """Events numbered and kept in memory because the disk is full."""
        return self._held.events

    def _exec(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor | NotWritten:
        """A write, inside a transaction: recorded, so that it can be held in memory."""
        args = tuple(params)
        self._ops.append((sql, args))
        if self._holding:
            return NotWritten()
        try:
            with self._guard("write failed"):
                return self._conn.execute(sql, args)
        except StoreError as exc:
            if not (is_disk_full(exc) and self._depth):
                raise
            self._start_holding(exc)
            return NotWritten()

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        with self._guard("read failed"):  # rows are read lazily: fetch inside the guard
            return self._conn.execute(sql, tuple(params)).fetchall()

    def stats(self) -> dict[str, Any]:
        size = sum(
            p.stat().st_size
            for p in (self.path, self.path.with_name(self.path.name + "-wal"))
            if p.exists()
        )
        return {
            "pending": self.pending_count(),
            "delivered_total": self.delivered_total,
            "dropped_total": self.dropped_total,
            "last_delivered_at": utc_from_timestamp(self._last_delivered_at).isoformat()
            if self._last_delivered_at is not None
            else self._get(LAST_DELIVERED_AT),
            "delivered_not_deleted": self.delivered_waiting,
            "file_bytes": size,
            "held_in_memory": self._held.events,
            "disk_full_since": utc_from_timestamp(self._held.since).isoformat()
            if self._held.since is not None
            else None,
            "not_durable": self._undurable,
            **self.space(),
            "space_short_since": utc_from_timestamp(self._space.short_since).isoformat()
            if self._space.short_since is not None
            else None,
        }

    def close(self) -> None:
        """Close the file (idempotent). WAL contents are folded into the main file.
        Delivered events are deleted first (one commit, if any are waiting). Events
        still held in memory (disk full) are tried once more, then lost: logged."""
        with contextlib.suppress(sqlite3.ProgrammingError):  # already closed
            if self._unwritten:
                try:
                    self.flush_delivered()
                except StoreError as exc:
                    log.warning(
                        "%s: %d delivered events not deleted (%s): sent again after a restart",
                        self.path,
                        len(self._unwritten),
                        exc,
                    )
            if self._held and not self.write_held(force=True):
                log.error(
                    "%s: disk still full at close: %d held events lost",
                    self.path,
                    self._held.events,
                )
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StoreDamaged(StoreError):
    """The file is not a readable SQLite database (truncated, overwritten, corrupt)."""


__all__ = ["DELETE_BATCH", "SYNC_DELAY_S", "Store", "StoreDamaged"]
