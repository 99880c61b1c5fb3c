"""Durable where it matters, cheap elsewhere: when the store syncs, and its volume's room.

In WAL mode with ``synchronous = NORMAL`` a commit is in the operating system's page
cache, not on the medium, until the WAL is synced (at a checkpoint, or a later synced
commit). A power cut takes back what is not. So:

- a transaction that appends an essential event (``core.events.ESSENTIAL_TYPES``) or
  writes a key of ``state.DURABLE_KEYS`` (what latches one) is synced before
  ``Store.transaction`` returns: one ``fdatasync`` of the WAL, nothing more written;
- cheap commits (``pack.health``, the hourly windows) are not; they are synced with the
  next one that is, or by ``sync_if_due`` (the uplink, while connected, once the oldest
  is ``SYNC_DELAY_S`` old: at its next poll), or by a checkpoint;
- ``durable_upto`` is the newest outbox row on the medium: the uplink publishes nothing
  after it, so a ``seq`` the backend has seen is never numbered again after a cut.

After each commit the volume's free space is measured (``diskfull.Space``); while the
WAL could grow into ``reserve_bytes`` it is checkpointed and truncated.

A mixin of ``store.database.Store``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pack_agent.errors import StoreError
from pack_agent.store.diskfull import TIGHT_WAL_BYTES, Space

if TYPE_CHECKING:
    import contextlib

log = logging.getLogger("pack_agent.store.database")  # the store's messages, as before

# how old the oldest unsynced commit must be before the uplink's sync: none. The uplink
# polls every tick (50 ms), so commits of one tick share a sync anyway; a longer wait held
# published events back, the outbox grew past a page on a decision day and every later
# commit wrote two pages more (bench/footprint.py, docs/reliability.md)
SYNC_DELAY_S = 0.0


class Durable:
    """The syncing and space-watching half of ``Store``."""

    path: Path
    commits: int
    syncs: int
    durable_upto: int
    _conn: sqlite3.Connection
    _space: Space
    _wal: Path
    _full: bool
    _tx_durable: bool
    _tx_rows: int
    _tx_last_row: int
    _last_row: int
    _undurable: int
    _unsynced_since: float | None
    _dir_synced: bool

    if TYPE_CHECKING:  # provided by Store (store.database)

        def _guard(
            self, what: str, kind: type[StoreError] = StoreError
        ) -> contextlib.AbstractContextManager[None]: ...

    def _committed(self) -> None:
        """After a commit: note its rows, sync it when it must be durable, watch space."""
        self.commits += 1
        if self._tx_rows:
            self._last_row = self._tx_last_row
            self._undurable += self._tx_rows
        if self._full:  # SQLite synced the WAL at the commit
            self._durable()
        else:
            if self._unsynced_since is None:
                self._unsynced_since = time.monotonic()
            if self._tx_durable:
                self.sync_after_commit()
        self._space.measure()
        if self._space.tight and self.wal_bytes > TIGHT_WAL_BYTES:
            self.checkpoint()
            self._space.measure()

    def _durable(self) -> None:
        self.durable_upto = self._last_row
        self._undurable = 0
        self._unsynced_since = None

    def sync(self) -> None:
        """Every commit so far onto the medium: one ``fdatasync`` of the WAL (of the
        main file when there is no WAL), and of the directory the first time, so that a
        power cut cannot take them back. Nothing is written."""
        if self._unsynced_since is None:
            return
        target = self._wal if self._wal.exists() else self.path
        try:
            fd = os.open(target, os.O_RDONLY)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
            if not self._dir_synced:
                fd = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                self._dir_synced = True
        except OSError as exc:
            raise StoreError(f"{target}: cannot sync: {exc.strerror or exc}") from None
        self.syncs += 1
        self._durable()

    def sync_after_commit(self) -> None:
        """``sync``, where the commit is already made: a failure is logged, not raised (the
        caller's transaction must not look undone); the rows stay unpublishable and the
        next sync tries again."""
        try:
            self.sync()
        except StoreError as exc:
            log.error("%s: the last commits are not known to be on the medium", exc)

    def sync_if_due(self, delay: float = SYNC_DELAY_S) -> bool:
        """Cheap events wait for a sync before the uplink may publish them: made durable
        once the oldest unsynced commit is ``delay`` seconds old (the uplink calls this
        while connected; offline nothing is synced for them). True when it synced."""
        since = self._unsynced_since
        if not self._undurable or since is None or time.monotonic() - since < delay:
            return False
        self.sync_after_commit()  # a failure is logged: the events wait for the next try
        return self._unsynced_since is None

    def checkpoint(self) -> bool:
        """Copy the WAL into the main file and truncate it (``wal_checkpoint(TRUNCATE)``):
        its space goes back to the volume, and everything committed is synced. False
        when a reader kept it from finishing."""
        if self._conn.in_transaction:
            return False
        try:
            with self._guard("checkpoint failed"):
                busy, _, _ = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except StoreError as exc:
            log.warning("%s", exc)
            return False
        if busy:
            return False
        self._durable()
        return True

    @property
    def wal_bytes(self) -> int:
        try:
            return self._wal.stat().st_size
        except OSError:
            return 0

    def space(self) -> dict[str, int | None]:
        """The volume's room as last measured (``store.space_low``'s data, the status)."""
        return {
            "free_bytes": self._space.free,
            "reserve_bytes": self._space.reserve,
            "wal_bytes": self.wal_bytes,
            "refused_total": self._space.refused,
        }

    @property
    def space_short_since(self) -> float | None:
        """Wall time the volume went under ``reserve_bytes`` free (None: room enough)."""
        return self._space.short_since
