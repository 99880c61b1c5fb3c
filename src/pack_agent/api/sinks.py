"""Where the reference subscriber keeps the events it receives: stdout, JSON lines,
SQLite (the embedded default) or PostgreSQL (a fleet's backend).

Owns the :class:`Sink` protocol and its three immediate implementations, and
:class:`PostgresSink`, a *batching* sink (:class:`BatchSink`): it commits every N
events or T ms, de-duplicates in the database (``event_id`` primary key) and keeps
each vehicle's ``seq`` gaps in a table, so several listeners in one shared
subscription together store each event once. psycopg is imported only there. A sink also says
what it already holds (``seen()``), so a restarted listener still de-duplicates and
knows each vehicle's ``seq``. The subscriber (``pack_agent.api.subscriber``) calls
``keep`` once per new event; nothing here talks to a broker. The seam, at ~430 lines:
``PostgresSink`` (schema, migrations, batches) would stand alone in ``sinks_postgres``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from pack_agent.api.ordering import Gap, SeqConflict
from pack_agent.core.events import Event
from pack_agent.errors import PackAgentError

__all__ = ["BatchSink", "Committed", "JsonlSink", "PostgresSink", "PrintSink", "Sink", "SqliteSink"]


class Sink(Protocol):
    def seen(self) -> Iterator[tuple[str, str, int]]:
        """(event_id, vin, seq) of every event already kept."""

    def keep(self, event: Event, raw: str) -> None: ...

    def conflict(self, conflict: SeqConflict) -> None:
        """Keep a ``seq`` that arrived with a second ``event_id`` (both events are kept)."""

    def close(self) -> None: ...


class PrintSink:
    """One JSON line per new event on ``out`` (stdout)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def seen(self) -> Iterator[tuple[str, str, int]]:
        return iter(())

    def keep(self, event: Event, raw: str) -> None:
        print(raw, file=self.out, flush=True)

    def conflict(self, conflict: SeqConflict) -> None:
        pass  # reported (stderr): stdout stays one event per line

    def close(self) -> None:
        pass


class JsonlSink:
    """Appends one JSON line per new event; the file is read back on start, so a
    restarted listener still de-duplicates and knows each vehicle's seq."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = self.path.open("a", encoding="utf-8")

    def seen(self) -> Iterator[tuple[str, str, int]]:
        with self.path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    e = json.loads(line)
                    yield e["event_id"], e["vin"], int(e["seq"])
                except (ValueError, KeyError, TypeError):
                    raise PackAgentError(f"{self.path}:{n}: not an event line") from None

    def keep(self, event: Event, raw: str) -> None:
        self._file.write(raw.strip() + "\n")
        self._file.flush()

    def conflict(self, conflict: SeqConflict) -> None:
        """One JSON line in ``<path>.conflicts`` (the events file stays events only)."""
        line = json.dumps({**asdict(conflict), "received_at": time.time()})
        with self.path.with_name(self.path.name + ".conflicts").open("a", encoding="utf-8") as f:
            f.write(line + "\n")

    def close(self) -> None:
        self._file.close()


class SqliteSink:
    """A table ``events`` (event_id primary key, vin, seq, type, time, body)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS events (event_id TEXT PRIMARY KEY, vin TEXT NOT NULL,"
                " seq INTEGER NOT NULL, type TEXT NOT NULL, time TEXT NOT NULL, body TEXT NOT NULL,"
                " received_at REAL NOT NULL)"
            )
            self._conn.execute("CREATE INDEX IF NOT EXISTS events_vin_seq ON events (vin, seq)")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS seq_conflicts (vin TEXT NOT NULL, seq INTEGER NOT NULL,"
                " first_event_id TEXT NOT NULL, second_event_id TEXT NOT NULL,"
                " received_at REAL NOT NULL)"
            )
        except sqlite3.Error as exc:
            raise PackAgentError(f"{self.path}: cannot use as an event store: {exc}") from None

    def seen(self) -> Iterator[tuple[str, str, int]]:
        yield from self._conn.execute("SELECT event_id, vin, seq FROM events")

    def keep(self, event: Event, raw: str) -> None:
        self._conn.execute(
            "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?)",
            (event.event_id, event.vin, event.seq, event.type, event.time.isoformat(), raw,
             time.time()),
        )  # fmt: skip

    def conflict(self, conflict: SeqConflict) -> None:
        c = conflict
        self._conn.execute(
            "INSERT INTO seq_conflicts VALUES (?, ?, ?, ?, ?)",
            (c.vin, c.seq, c.first_event_id, c.second_event_id, time.time()),
        )

    def close(self) -> None:
        self._conn.close()


# -- PostgreSQL: a batching sink, authoritative for de-duplication and gaps --------


@dataclass
class Committed:
    """What one batch commit did: events stored for the first time, redeliveries
    (already stored, by this or another listener), gaps opened and gaps closed."""

    new: int = 0
    duplicates: int = 0
    opened: list[Gap] = field(default_factory=list)
    closed: list[Gap] = field(default_factory=list)
    conflicts: list[SeqConflict] = field(default_factory=list)


class BatchSink(Protocol):
    """A sink that commits in batches and de-duplicates and tracks gaps itself (so that
    several listeners can share one store). The subscriber acknowledges an event to
    the broker only once ``add``/``due``/``flush`` returned the commit holding it."""

    def add(self, event: Event, raw: str, now: float) -> Committed | None: ...

    def due(self, now: float) -> Committed | None: ...

    def flush(self) -> Committed: ...

    def close(self) -> None: ...


# schema version -> statements; applied in order, each version in one transaction
_MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE events (event_id text PRIMARY KEY, vin text NOT NULL,"
        " seq bigint NOT NULL, type text NOT NULL, time timestamptz NOT NULL,"
        " body jsonb NOT NULL, received_at timestamptz NOT NULL DEFAULT clock_timestamp())",
        "CREATE INDEX events_vin_seq ON events (vin, seq)",
        # per vehicle: the lowest seq stored, every seq up to `contiguous` stored, the highest
        "CREATE TABLE vehicles (vin text PRIMARY KEY, first_seq bigint NOT NULL,"
        " contiguous bigint NOT NULL, highest bigint NOT NULL)",
        # a gap as it was first seen; closed_at once every seq in it arrived
        "CREATE TABLE seq_gaps (vin text NOT NULL, first_seq bigint NOT NULL,"
        " last_seq bigint NOT NULL, opened_at timestamptz NOT NULL DEFAULT now(),"
        " closed_at timestamptz, PRIMARY KEY (vin, first_seq))",
        "CREATE INDEX seq_gaps_open ON seq_gaps (vin) WHERE closed_at IS NULL",
    ],
    # a seq that arrived with a second event_id (both events are kept), as SqliteSink keeps
    2: [
        "CREATE TABLE seq_conflicts (vin text NOT NULL, seq bigint NOT NULL,"
        " first_event_id text NOT NULL, second_event_id text NOT NULL,"
        " received_at timestamptz NOT NULL DEFAULT now(),"
        " PRIMARY KEY (vin, seq, second_event_id))",
    ],
}
SCHEMA_VERSION = max(_MIGRATIONS)
_MIGRATION_LOCK = 0x7061636B  # pg_advisory_xact_lock key: one listener migrates at a time

_INSERT = (
    "INSERT INTO events (event_id, vin, seq, type, time, body)"
    " SELECT * FROM unnest(%b::text[], %b::text[], %b::bigint[], %b::text[],"
    " %b::timestamptz[], %b::jsonb[]) ON CONFLICT (event_id) DO NOTHING"
    " RETURNING vin, seq, event_id"
)
# the events just stored whose vin and seq an earlier (committed or same-batch) row holds
_CONFLICTS = (
    "SELECT n.vin, n.seq, min(o.event_id), n.event_id FROM unnest(%b::text[], %b::bigint[],"
    " %b::text[]) AS n(vin, seq, event_id) JOIN events o ON o.vin = n.vin AND o.seq = n.seq"
    " AND o.event_id <> n.event_id AND (o.event_id < n.event_id OR NOT o.event_id = ANY(%b))"
    " GROUP BY n.vin, n.seq, n.event_id"
)
# missing seq ranges of the given vehicles, from each one's contiguous point (or lower)
_MISSING = (
    "WITH v AS (SELECT vin, least(contiguous, lo) AS start FROM vehicles"
    " JOIN unnest(%b::text[], %b::bigint[]) AS b(bvin, lo) ON vin = bvin),"
    " s AS (SELECT e.vin, e.seq, lead(e.seq) OVER (PARTITION BY e.vin ORDER BY e.seq) AS nxt"
    " FROM events e JOIN v ON e.vin = v.vin AND e.seq >= v.start)"
    " SELECT vin, seq + 1, nxt - 1 FROM s WHERE nxt > seq + 1"
)


class PostgresSink:
    """Events in PostgreSQL (psycopg 3): ``events`` (``event_id`` primary key, the
    body as jsonb), ``vehicles`` (per-vehicle seq bookkeeping) and ``seq_gaps``. The
    schema is created and migrated on open (``schema_version``).

    Events are buffered and committed every ``batch`` events or ``batch_ms``
    milliseconds, whichever comes first, in one transaction: insert (a redelivery is
    a no-op), then, with the touched vehicles' rows locked (in VIN order, so two
    listeners never deadlock), recompute their missing seq ranges from what is
    committed, open the new gaps and close the filled ones. Listeners sharing a
    subscription therefore agree on the gaps: the last to commit sees everything."""

    def __init__(self, url: str, *, batch: int = 500, batch_ms: float = 50.0) -> None:
        try:
            import psycopg
        except ImportError:
            raise PackAgentError(
                "--database needs psycopg 3: pip install 'pack-agent[backend]'"
            ) from None
        if batch < 1 or batch_ms <= 0:
            raise PackAgentError("--batch must be >= 1 and --batch-ms > 0")
        self._psycopg = psycopg
        self.url, self.batch, self.batch_s = url, batch, batch_ms / 1000
        self._redacted = _redact(url)
        try:
            self._conn = psycopg.connect(url, autocommit=False, connect_timeout=10)
        except psycopg.Error as exc:
            raise PackAgentError(f"{self._redacted}: cannot connect: {exc}") from None
        self._buffer: dict[str, tuple[Event, str]] = {}
        self._oldest: float | None = None
        self._repeats = 0  # repeats of buffered events, counted with the next commit
        self.commits = 0
        self.migrate()

    def migrate(self) -> int:
        """Create or upgrade the schema to ``SCHEMA_VERSION``; return the version found."""
        psycopg = self._psycopg
        try:
            with self._conn.transaction():
                self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                self._conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version int)")
                row = self._conn.execute("SELECT max(version) FROM schema_version").fetchone()
                found = int(row[0]) if row and row[0] is not None else 0
                if found > SCHEMA_VERSION:
                    raise PackAgentError(
                        f"{self._redacted}: schema version {found} is newer than this "
                        f"pack-agent knows ({SCHEMA_VERSION}); upgrade pack-agent"
                    )
                for version in range(found + 1, SCHEMA_VERSION + 1):
                    for statement in _MIGRATIONS[version]:
                        self._conn.execute(statement)
                    self._conn.execute("INSERT INTO schema_version VALUES (%s)", (version,))
        except psycopg.Error as exc:
            raise PackAgentError(f"{self._redacted}: cannot create the schema: {exc}") from None
        return found

    def add(self, event: Event, raw: str, now: float) -> Committed | None:
        if event.event_id in self._buffer:
            self._repeats += 1  # redelivered before its first copy was committed
        else:
            self._buffer[event.event_id] = (event, raw)
        if self._oldest is None:
            self._oldest = now
        if len(self._buffer) >= self.batch:
            return self.flush()
        return self.due(now)

    def due(self, now: float) -> Committed | None:
        if self._oldest is not None and now - self._oldest >= self.batch_s:
            return self.flush()
        return None

    def flush(self) -> Committed:
        """Commit the buffer (retried on a deadlock or serialization failure)."""
        if not self._buffer:
            return Committed(duplicates=self._pop_repeats())
        psycopg = self._psycopg
        for attempt in range(5):
            try:
                done = self._commit(list(self._buffer.values()))
                break
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                if attempt == 4:
                    raise
                time.sleep(0.01 * (attempt + 1))
            except psycopg.Error as exc:
                raise PackAgentError(f"{self._redacted}: cannot store events: {exc}") from None
        self._buffer.clear()
        self._oldest = None
        self.commits += 1
        done.duplicates += self._pop_repeats()
        return done

    def _pop_repeats(self) -> int:
        n, self._repeats = self._repeats, 0
        return n

    def _commit(self, items: list[tuple[Event, str]]) -> Committed:
        cols: list[list[Any]] = [[], [], [], [], [], []]
        for event, raw in items:
            for col, value in zip(
                cols, (event.event_id, event.vin, event.seq, event.type, event.time, raw),
                strict=True,
            ):  # fmt: skip
                col.append(value)
        with self._conn.transaction():
            stored = self._conn.execute(_INSERT, cols).fetchall()
            done = Committed(new=len(stored), duplicates=len(items) - len(stored))
            if stored:
                self._gaps([(vin, seq) for vin, seq, _ in stored], done)
                self._conflicts(stored, done)
        return done

    def _conflicts(self, stored: list[tuple[str, int, str]], done: Committed) -> None:
        """Rows in ``seq_conflicts`` for events whose seq another event_id already has.
        Within one batch the smaller event_id counts as the first."""
        ids = [e for _, _, e in stored]
        rows = self._conn.execute(
            _CONFLICTS, ([v for v, _, _ in stored], [s for _, s, _ in stored], ids, ids)
        ).fetchall()
        if not rows:
            return
        self._conn.execute(
            "INSERT INTO seq_conflicts (vin, seq, first_event_id, second_event_id) SELECT *"
            " FROM unnest(%b::text[], %b::bigint[], %b::text[], %b::text[])"
            " ON CONFLICT DO NOTHING",
            tuple(list(col) for col in zip(*rows, strict=True)),
        )
        done.conflicts.extend(SeqConflict(v, s, first, second) for v, s, first, second in rows)

    def _gaps(self, stored: list[tuple[str, int]], done: Committed) -> None:
        lo: dict[str, int] = {}
        hi: dict[str, int] = {}
        for vin, seq in stored:
            lo[vin] = min(lo.get(vin, seq), seq)
            hi[vin] = max(hi.get(vin, seq), seq)
        vins = sorted(lo)
        c = self._conn
        c.execute(
            "INSERT INTO vehicles SELECT v, l, l - 1, l FROM unnest(%b::text[], %b::bigint[])"
            " AS b(v, l) ORDER BY v ON CONFLICT (vin) DO NOTHING",
            (vins, [lo[v] for v in vins]),
        )
        c.execute(  # the lock that makes two listeners' gap updates take turns
            "SELECT vin FROM vehicles WHERE vin = ANY(%b) ORDER BY vin FOR UPDATE", (vins,)
        ).fetchall()
        missing: dict[str, list[tuple[int, int]]] = {v: [] for v in vins}
        for vin, first, last in c.execute(_MISSING, (vins, [lo[v] for v in vins])):
            missing[vin].append((first, last))
        now = time.monotonic()
        open_gaps: dict[str, list[tuple[int, int]]] = {v: [] for v in vins}
        for vin, first, last in c.execute(
            "SELECT vin, first_seq, last_seq FROM seq_gaps WHERE vin = ANY(%b)"
            " AND closed_at IS NULL", (vins,),
        ):  # fmt: skip
            open_gaps[vin].append((first, last))
        closing: list[tuple[str, int]] = []
        opening: list[tuple[str, int, int]] = []
        for vin in vins:
            holes = missing[vin]
            for first, last in open_gaps[vin]:
                if not any(f <= last and first <= t for f, t in holes):
                    closing.append((vin, first))
                    done.closed.append(Gap(vin, first, last, now))
            for first, last in holes:
                if not any(f <= last and first <= t for f, t in open_gaps[vin]):
                    opening.append((vin, first, last))
                    done.opened.append(Gap(vin, first, last, now))
        if closing:
            c.execute(
                "UPDATE seq_gaps SET closed_at = now() FROM unnest(%b::text[], %b::bigint[])"
                " AS g(v, f) WHERE vin = v AND first_seq = f",
                ([v for v, _ in closing], [f for _, f in closing]),
            )
        if opening:
            c.execute(
                "INSERT INTO seq_gaps (vin, first_seq, last_seq) SELECT * FROM"
                " unnest(%b::text[], %b::bigint[], %b::bigint[]) ON CONFLICT DO NOTHING",
                ([v for v, _, _ in opening], [f for _, f, _ in opening],
                 [t for _, _, t in opening]),
            )  # fmt: skip
        c.execute(
            "UPDATE vehicles SET first_seq = least(first_seq, b.l),"
            " highest = greatest(highest, b.h), contiguous = coalesce(b.c, greatest(highest, b.h))"
            " FROM unnest(%b::text[], %b::bigint[], %b::bigint[], %b::bigint[]) AS b(v, l, h, c)"
            " WHERE vin = b.v",
            (
                vins,
                [lo[v] for v in vins],
                [hi[v] for v in vins],
                # no hole: contiguous up to its highest seq
                [min(f for f, _ in missing[v]) - 1 if missing[v] else None for v in vins],
            ),
        )

    def open_gaps(self) -> list[Gap]:
        """Every gap not closed yet, from the database (every listener's view)."""
        rows = self._conn.execute(
            "SELECT vin, first_seq, last_seq FROM seq_gaps WHERE closed_at IS NULL"
            " ORDER BY vin, first_seq"
        ).fetchall()
        self._conn.commit()
        return [Gap(vin, first, last, 0.0) for vin, first, last in rows]

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._conn.close()


def _redact(url: str) -> str:
    """The URL without its password, for error messages."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in creds:
        return url
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
