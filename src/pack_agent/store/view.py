"""What ``pack-agent status`` reads from the store, without writing a byte."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from pack_agent.errors import StoreError


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
