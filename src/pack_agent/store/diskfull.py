"""Transactions kept in memory while the disk is full, for the store (``store.database``).

A vehicle has nobody to free its flash, and an agent that stops deciding when the disk
fills up is worse than one that keeps its decisions in memory for a while. So the store
records every write of a transaction (SQL and parameters); when SQLite says the disk
(or ``max_page_count``) is full, the store undoes the transaction in SQLite and hands
its writes to ``HeldWrites``, and every later transaction goes behind it, in order.
``write`` replays them all in one transaction once there is room (tried at most once a
second). Nothing here knows what the writes mean, except which of them append an
event (to count the events held).

Before it comes to that, ``Space`` watches the volume: under ``store.reserve_bytes``
free the store refuses cheap events (``pack.health``: ``StoreSpaceShort``) and keeps
the rest of the room for essential events and the state that latches them; and while
the volume is tight the store checkpoints its WAL and truncates it, so that the WAL
cannot grow into the last megabytes (``store.database``). Kept apart from
``store.recovery`` (a damaged file moved aside at start): this lives inside every
transaction of an open store and knows nothing of files but their sizes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pack_agent.errors import StoreError

log = logging.getLogger("pack_agent.store.database")  # the store's messages, as before

SQLITE_FULL = 13
SQLITE_FULL_MESSAGE = "database or disk is full"  # sqlite3_errstr(SQLITE_FULL)
MAX_HELD = 10_000  # transactions held in memory while the disk is full (then StoreError)
HELD_RETRY_S = 1.0
_APPEND = "INSERT INTO outbox"  # a write that numbers an event
RESERVE_BYTES = 8 * 1024 * 1024  # store.reserve_bytes by default
# how far the WAL may grow before SQLite checkpoints it by itself (wal_autocheckpoint 1000
# pages of 4 KiB; journal_size_limit truncates it back to this after a checkpoint)
WAL_GROWTH_BYTES = 4 * 1024 * 1024
TIGHT_WAL_BYTES = 64 * 1024  # on a tight volume the WAL is checkpointed and truncated past this

Write = tuple[str, tuple[Any, ...]]


class NotWritten:
    """What a write returns while it is held in memory: it changed no row yet."""

    rowcount = 0


def is_disk_full(exc: StoreError) -> bool:
    """The store's error came from SQLite finding the disk (or its page limit) full."""
    return isinstance(exc.__context__, sqlite3.Error) and _sqlite_full(exc.__context__)


def _sqlite_full(exc: sqlite3.Error) -> bool:
    """SQLITE_FULL: by its code where Python gives it (3.11+), else (3.10, whose exceptions
    carry no code) by SQLite's own message for that code."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return bool(code == SQLITE_FULL)
    return str(exc) == SQLITE_FULL_MESSAGE


class StoreSpaceShort(StoreError):
    """A cheap event (``pack.health``) refused: the volume is under ``store.reserve_bytes``
    free. Nothing was numbered or written."""


def free_bytes(directory: Path) -> int | None:
    """Bytes an unprivileged writer may still use on ``directory``'s volume (None: unknown)."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


class Space:
    """The store's volume against its reserve: ``short`` under ``reserve`` bytes free
    (until a quarter of the reserve more is free again: no flapping), ``tight`` while the
    WAL could still grow into the reserve before SQLite's own checkpoint."""

    def __init__(self, path: Path, reserve: int) -> None:
        if reserve < 0:
            raise ValueError("reserve_bytes must be >= 0")
        self.path = path
        self.reserve = reserve
        self.free: int | None = None  # at the last measure
        self.short_since: float | None = None  # wall time the volume went under the reserve
        self.refused = 0  # cheap events refused, this life (also logged)

    def measure(self) -> int | None:
        """Free bytes now; enters or leaves the short state (logged once each way)."""
        free = self.free = free_bytes(self.path.parent)
        if free is None:
            return None
        if free < self.reserve:
            if self.short_since is None:
                self.short_since = time.time()
                log.warning(
                    "%s: %d bytes free, under store.reserve_bytes (%d): pack.health samples "
                    "are refused; the rest is kept for essential events",
                    self.path,
                    free,
                    self.reserve,
                )
        elif self.short_since is not None and free >= self.reserve + self.reserve // 4:
            log.warning(
                "%s: %d bytes free again: pack.health samples stored again (%d refused)",
                self.path,
                free,
                self.refused,
            )
            self.short_since = None
        return free

    @property
    def tight(self) -> bool:
        return self.free is not None and self.free < self.reserve + WAL_GROWTH_BYTES

    def refuse(self, event_type: str) -> None:
        """A cheap event while short: measured again (room may have come back); raises
        ``StoreSpaceShort`` when still short."""
        if self.short_since is None:
            return
        self.measure()
        if self.short_since is None:
            return
        self.refused += 1
        raise StoreSpaceShort(
            f"{self.path}: {self.free} bytes free, under store.reserve_bytes ({self.reserve}): "
            f"{event_type} not stored ({self.refused} refused)"
        )


class HeldWrites:
    """The transactions not yet written, oldest first; empty (false) while the disk has
    room."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._held: list[list[Write]] = []
        self.events = 0  # events numbered and kept here
        self.since: float | None = None  # wall time the disk was found full
        self._retry_at = 0.0

    def __bool__(self) -> bool:
        return bool(self._held)

    def full(self, exc: BaseException) -> None:
        """The disk is full: say so once per episode."""
        if self.since is None:
            self.since = time.time()
            log.error(
                "%s: disk full (%s): holding events in memory (up to %d transactions) "
                "until they can be written, in order",
                self.path,
                exc,
                MAX_HELD,
            )

    def hold(self, writes: list[Write]) -> None:
        """Keep one transaction's writes, behind the others; ``StoreError`` past the bound."""
        if len(self._held) >= MAX_HELD:
            raise StoreError(
                f"{self.path}: disk full and {MAX_HELD} transactions already held in memory: "
                "this one is lost"
            )
        self._held.append(writes)
        self.events += sum(1 for sql, _ in writes if sql.startswith(_APPEND))

    def write(
        self,
        conn: sqlite3.Connection,
        force: bool = False,
        before: Callable[[], object] | None = None,
    ) -> bool:
        """Write what is held, oldest first, in one transaction on ``conn``; at most once
        a second unless ``force``. ``before`` runs first (the store's checkpoint: a WAL
        that filled the volume is truncated). True when it was written now."""
        if not self._held:
            return False
        now = time.monotonic()
        if not force and now < self._retry_at:
            return False
        self._retry_at = now + HELD_RETRY_S
        if before is not None:
            before()
        try:
            conn.execute("BEGIN IMMEDIATE")
            for writes in self._held:
                for sql, params in writes:
                    conn.execute(sql, params)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if not _sqlite_full(exc):
                raise StoreError(f"{self.path}: held events not written: {exc}") from None
            return False
        log.warning(
            "%s: disk writable again: %d held events written (held for %.0f s)",
            self.path,
            self.events,
            time.time() - (self.since or time.time()),
        )
        self._held, self.events, self.since = [], 0, None
        return True
