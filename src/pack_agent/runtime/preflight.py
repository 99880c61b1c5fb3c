"""What ``run`` would refuse, found before anything opens: ``check-config`` runs the same.

The daemon calls ``preflight_problems`` first, so a broker reached in plain text, a
TLS file it cannot read, or a store it cannot write is a configuration error with
its key, before the buses open and before ``READY=1``, not a failure after it.
"""

from __future__ import annotations

import os
from pathlib import Path

from pack_agent.config import AgentConfig


def preflight_problems(config: AgentConfig) -> list[str]:
    """Every problem ``run`` would meet with this configuration outside the CAN side."""
    from pack_agent.delivery.mqtt import check_transport_security
    from pack_agent.errors import PackAgentError

    problems: list[str] = []
    mqtt = config.mqtt_settings()
    try:
        check_transport_security(mqtt)
    except PackAgentError as exc:
        problems.append(str(exc))
    if mqtt.tls is not None:
        for key in ("ca_file", "cert_file", "key_file"):
            value = getattr(mqtt.tls, key)
            if value is not None:
                problem = _unreadable(Path(value))
                if problem:
                    problems.append(f"mqtt.tls.{key}: {problem}")
    problems += [f"store.path: {p}" for p in store_path_problems(config)]
    return problems


def _unreadable(path: Path) -> str | None:
    if "\0" in str(path):
        return "contains a NUL character"
    if not path.is_file():
        return f"file not found: {path}"
    if not os.access(path, os.R_OK):
        return f"not readable: {path}"
    return None


def store_path_problems(config: AgentConfig) -> list[str]:
    """The store's file (or, before the first start, its folder) must be writable: SQLite
    opens a read-only file without a word and fails at the first write."""
    raw = config.store.path
    if "\0" in raw:
        return ["contains a NUL character"]
    path = config.store_path()
    if path.is_dir():
        return [f"{path} is a folder, not a file"]
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the store creates missing folders: the first that exists
    if not folder.is_dir():
        return [f"{folder} is not a folder"]
    if not os.access(folder, os.W_OK | os.X_OK):
        return [f"folder {folder} is not writable (the store and its journal live there)"]
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        return [f"{path} is not readable and writable"]
    return []
