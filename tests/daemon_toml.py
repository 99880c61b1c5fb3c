"""The small daemon configuration the daemon tests write to disk (``pack-agent run`` in a
child, the daemon in a thread, SIGHUP reloads): one virtual bus with the built-in
reference DBC, the SOH as the only metric, a private broker, the store and the status
file under the test's folder. One template, so the tests that edit it agree on the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomli_w

VIN = "LPACK2026AGENT001"


def daemon_toml(
    port: int,
    tmp: Path,
    channel: str,
    *,
    mqtt: dict[str, Any] | None = None,
    health: dict[str, Any] | None = None,
    daemon: dict[str, Any] | None = None,
) -> str:
    """The configuration's text; ``mqtt``/``health``/``daemon`` keys replace or add to
    the defaults of their section (wall clock, hourly samples, 0.2 s status interval)."""
    return tomli_w.dumps(
        {
            "vin": VIN,
            "databases": ["builtin:pack_agent_reference.dbc"],
            "buses": [{"name": "powertrain", "interface": "virtual", "channel": channel}],
            "metrics": {"soh": {"message": "BMS_Health", "signal": "BMS_SOH"}},
            "mqtt": {"port": port, **(mqtt or {})},
            "store": {"path": str(tmp / "state" / "pack-agent.db")},
            "health": {"publish_interval_s": 3600, **(health or {})},
            "daemon": {
                "shutdown_timeout_s": 3,
                "status_interval_s": 0.2,
                "clock": "system",
                "status_file": str(tmp / "run" / "status.json"),
                **(daemon or {}),
            },
        }
    )
