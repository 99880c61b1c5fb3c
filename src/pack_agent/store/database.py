"""The agent's disk: the event outbox and its own small state, in one SQLite file.

Nothing else in pack-agent touches SQLite (``diskfull`` replays this store's
transactions on its connection, after a full disk). An event is numbered (per-vehicle
``seq``) and written here before anyone tries to send it, and leaves only when
the broker has acknowledged it, so crashes, power cuts and weeks offline lose
nothing.

Durability: the file is in WAL mode. ``synchronous="NORMAL"`` (the default)
survives any crash of the process; after a power cut the last few commits may
be missing (the file stays consistent). ``"FULL"`` syncs every commit and
survives power loss too, at about a fifth of the write rate and more flash
wear. Delivered events are deleted, not flagged: the file stays as small as the
backlog (SQLite reuses the freed pages) and nobody needs delivered events here.

Deferred deletes: ``mark_delivered`` (the broker's PUBACK) only notes the rows in
memory; they are no longer pending (``pending``, ``pending_rows`` and
``pending_count`` leave them out) and are deleted in the next write transaction
the store makes anyway (the next event, the hourly state save), or in one of
their own once ``DELETE_BATCH`` have gathered, when the uplink asks while a
backlog drains (``flush_delivered``), and at ``close``. So a steady agent writes
once per event, not twice. A crash in between only sends those events again
after the restart (same ``event_id`` and ``seq``: at least once).

Ownership: one thread (the main loop) owns a ``Store``; sqlite3 enforces it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import sys
import time
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

from pack_agent.core.events import Event, EventDraft, utc_from_timestamp
from pack_agent.errors import StoreError
from pack_agent.store.diskfull import HeldWrites, NotWritten, Write, is_disk_full

log = logging.getLogger(__name__)

# 2: outbox ids never reused (AUTOINCREMENT: the uplink keeps a cursor into them), and
# no index on event_id: random UUID keys made every append and every delete dirty one
# more random page (write amplification on flash, and most of the cost of a drain)
SCHEMA_VERSION = 2
SYNCHRONOUS_MODES = ("NORMAL", "FULL")
_DROPPABLE = "pack.health"  # the only type the size bound may drop; see ESSENTIAL_TYPES
_K_DELIVERED, _K_DROPPED = "store.delivered_total", "store.dropped_total"
_K_LAST = "store.last_delivered_at"
_IN_CHUNK = 500  # values per IN (...): under SQLite's variable limit
DELETE_BATCH = 256  # delivered events noted in memory before their delete gets its own commit
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


class Store:
    """The outbox and the agent state. Every method raises ``StoreError`` (naming the
    file) for any SQLite failure, so the caller sees one kind of error."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_events: int = 100_000,
        synchronous: str = "NORMAL",
        busy_timeout_ms: int = 5000,
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
            c.execute("PRAGMA journal_size_limit = 4194304")  # keep the -wal file bounded
            if version == 0:
                with self.transaction():
                    for statement in filter(str.strip, _SCHEMA.split(";")):
                        c.execute(statement)
                    c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version == 1:
                self._migrate_from_1()

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
    def transaction(self) -> Iterator[None]:
        """Everything inside commits together, or (on an exception) not at all.

        Nested blocks join the outermost one: an exception caught inside the outer
        block does not undo the inner block's writes."""
        if self._depth:
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
                    self.commits += 1
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
        if not self._held.write(self._conn, force):
            return False
        self.commits += 1
        self._held_acked.clear()
        self._count = None  # the held deletes ran too: count again
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

    # -- outbox ---------------------------------------------------------------

    def append(self, draft: EventDraft) -> Event:
        """Number the draft (next ``seq`` for its VIN) and store it.

        When the outbox already holds ``max_events``, the oldest undelivered
        ``pack.health`` events are deleted to make room (counted in
        ``dropped_total``). Essential events are never dropped: with an outbox
        full of them the append still succeeds and the outbox grows past
        ``max_events``; the caller may compare ``pending_count()`` with
        ``max_events`` and warn."""
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
            self._exec(
                "INSERT INTO outbox (event_id, vin, seq, type, body) VALUES (?, ?, ?, ?, ?)",
                (event.event_id, event.vin, seq, event.type, event.to_json()),
            )
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
            self._put(_K_DROPPED, self.dropped_total + cur.rowcount)

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

    def pending_rows(self, after: int, limit: int) -> list[tuple[int, str, str, str, str]]:
        """Up to ``limit`` undelivered events after outbox row ``after``, oldest first,
        as ``(row, event_id, vin, type, body)``: the uplink publishes ``body`` as it
        is, without parsing it again."""
        # delivered rows not yet deleted are left out; while a backlog drains they all lie
        # behind ``after`` (the uplink's cursor), so this costs nothing then
        gone = {r for r in self._acked if r > after} | {r for r in self._held_acked if r > after}
        rows = self._query(
            "SELECT id, event_id, vin, type, body FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
            (after, limit + len(gone)),
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
        self._put(_K_DELIVERED, self.delivered_total)
        if self._last_delivered_at is not None:
            self._put(_K_LAST, utc_from_timestamp(self._last_delivered_at).isoformat())

    @property
    def delivered_total(self) -> int:
        """Events acknowledged by the broker, ever."""
        if self._delivered is None:
            self._delivered = int(self._get(_K_DELIVERED) or 0)
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
        return int(self._get(_K_DROPPED) or 0)

    # -- agent state ----------------------------------------------------------

    def _get(self, key: str, default: Any = None) -> Any:
        rows = self._query("SELECT value FROM state WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else default

    def _put(self, key: str, value: Any) -> None:
        sql = "INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)"
        self._exec(sql, (key, json.dumps(value)))

    def get_state(self, key: str, default: Any = None) -> Any:
        return self._get(key, default)

    def put_state(self, key: str, value: Any) -> None:
        """Store any JSON value under ``key`` (keys starting with ``store.`` are this
        module's own counters)."""
        with self.transaction():
            self._put(key, value)

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
            else self._get(_K_LAST),
            "delivered_not_deleted": self.delivered_waiting,
            "file_bytes": size,
            "held_in_memory": self._held.events,
            "disk_full_since": utc_from_timestamp(self._held.since).isoformat()
            if self._held.since is not None
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


def _in_chunks(values: list[Any]) -> Iterator[tuple[list[Any], str]]:
    """``values`` in slices for ``IN (?, ...)``, each with its placeholders: SQLite
    limits the variables in one statement."""
    for i in range(0, len(values), _IN_CHUNK):
        chunk = values[i : i + _IN_CHUNK]
        yield chunk, ",".join("?" * len(chunk))


class StoreDamaged(StoreError):
    """The file is not a readable SQLite database (truncated, overwritten, corrupt)."""


def open_store(path: str | Path, **options: Any) -> tuple[Store, dict[str, Any] | None]:
    """Open the store; a damaged file is moved aside and a fresh store started.

    A vehicle has nobody to restore a backup, and an agent that refuses to start
    loses everything that happens from then on. So a file SQLite cannot read
    (truncated, corrupt, not a database at all) is renamed to
    ``<name>.corrupt-<UTC time>`` (with its ``-wal`` and ``-shm``), kept for a
    post-mortem, and a fresh store is opened. The second value says what happened
    (``moved_to``, ``error``); the daemon publishes it as a ``store.reset`` event,
    the first event of the fresh store (``seq`` 1). Not reset: a store written by a
    newer pack-agent, or an SQLite file that is not a pack-agent store (a wrong
    ``store.path``): those stay errors, nothing is moved."""
    try:
        return Store(path, **options), None
    except StoreDamaged as exc:
        error = str(exc)
    p = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    moved = p.with_name(f"{p.name}.corrupt-{stamp}")
    try:
        for suffix in ("", "-wal", "-shm"):
            side = p.with_name(p.name + suffix)
            if side.exists():
                side.rename(moved.with_name(moved.name + suffix))
    except OSError as exc:
        raise StoreError(f"{error}; and it cannot be moved aside: {exc}") from None
    log.error("%s; moved to %s, starting a fresh store (event store.reset)", error, moved)
    return Store(path, **options), {"moved_to": str(moved), "error": error}


def read_only_view(path: str | Path) -> dict[str, Any]:
    """What ``pack-agent status`` shows from the store, read without writing a byte.

    Opens the file with SQLite's ``mode=ro`` (safe while the daemon runs: WAL lets a
    reader see the last commit without blocking the writer). Returns every state
    key (JSON values), the outbox depth in total and by event type, and the oldest
    and newest pending ``seq``. Raises ``StoreError`` naming the file."""
    p = Path(path)
    if not p.exists():
        raise StoreError(f"{p}: no store here (has the agent run with this configuration?)")
    try:
        conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StoreError(f"{p}: cannot open read-only: {exc}") from None
    try:
        conn.execute("PRAGMA busy_timeout = 2000")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            raise StoreError(f"{p}: not a pack-agent store")
        state = {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM state")}
        by_type = dict(conn.execute("SELECT type, count(*) FROM outbox GROUP BY type"))
        lo, hi = conn.execute("SELECT min(seq), max(seq) FROM outbox").fetchone()
    except sqlite3.Error as exc:
        raise StoreError(f"{p}: cannot read: {exc}") from None
    finally:
        conn.close()
    return {
        "path": str(p),
        "schema": version,
        "state": state,
        "pending": sum(by_type.values()),
        "pending_by_type": by_type,
        "pending_seq": [lo, hi] if lo is not None else None,
    }
