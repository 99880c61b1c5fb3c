"""A store SQLite cannot read is moved aside and a fresh one started (``store.reset``).

Kept apart from the holding of writes while the disk is full (``store.diskfull``):
that one lives inside every transaction of an open store and knows nothing of files;
this one runs once, before a store exists, and renames files. (Merged, this module
would import ``store.database`` and be imported by it: a circle.)
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from pack_agent.errors import StoreError
from pack_agent.store.database import Store, StoreDamaged

log = logging.getLogger("pack_agent.store.database")  # the store's messages, as before


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
