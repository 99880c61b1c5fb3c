"""The daemon's live status: a small JSON file on tmpfs, rewritten every few seconds.

Bus and broker state change by the second and do not belong in the SQLite file
(flash wear); ``pack-agent status`` reads this file for them. The file is written
to a temporary name and renamed, so a reader never sees half of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pack_agent.store.state import LAST_EVENT_KEY

DEFAULT_RUNTIME_DIR = "/run/pack-agent"
FILE_NAME = "status.json"
# LAST_EVENT_KEY: the store state key prefix under which the daemon keeps the latest event
# of a type (named with the other keys, in store.state; re-exported here)
__all__ = ["LAST_EVENT_KEY", "read_status", "status_path", "write_status"]


def status_path(configured: str | None) -> Path:
    """``[daemon] status_file``, else ``$RUNTIME_DIRECTORY/status.json`` (systemd's
    ``RuntimeDirectory=``), else ``/run/pack-agent/status.json``."""
    if configured:
        return Path(configured).expanduser()
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return Path(runtime or DEFAULT_RUNTIME_DIR) / FILE_NAME


def write_status(path: Path, snapshot: dict[str, Any]) -> None:
    """Atomically replace ``path`` with ``snapshot`` as JSON (write, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(snapshot, f, ensure_ascii=False, indent=1, default=str)
        os.chmod(tmp, 0o644)  # state, not secrets: the operator may read it without sudo
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_status(path: Path) -> dict[str, Any] | None:
    """The last snapshot, or None when there is none (daemon never ran, or no permission)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
