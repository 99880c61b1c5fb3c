"""Where the reference subscriber keeps the events it receives: stdout, JSON lines, SQLite.

Owns the :class:`Sink` protocol and its three implementations. A sink also says
what it already holds (``seen()``), so a restarted listener still de-duplicates and
knows each vehicle's ``seq``. The subscriber (``pack_agent.api.subscriber``) calls
``keep`` once per new event; nothing here talks to a broker.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Protocol, TextIO

from pack_agent.api.ordering import SeqConflict
from pack_agent.core.events import Event
from pack_agent.errors import PackAgentError

__all__ = ["JsonlSink", "PrintSink", "Sink", "SqliteSink"]


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
