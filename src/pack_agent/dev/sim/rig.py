"""A configuration pointed at a simulated vehicle: one bus, a loopback broker, a store
in a scratch folder. The demo, the tests and the benchmarks derive theirs here from
the reference file (or the user's), never by editing TOML text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pack_agent.config import BUILTIN_PREFIX, AgentConfig, as_data, parse_config, resolve_path
from pack_agent.config.load import dump_toml


def rig_config(
    base: AgentConfig,
    bus: dict[str, Any],
    broker_port: int,
    state_dir: Path,
    **sections: dict[str, Any],
) -> AgentConfig:
    """``base`` on ``bus`` (python-can arguments: interface, channel...), the broker on
    127.0.0.1:``broker_port`` without a password, ``state_dir/pack-agent.db``, and each
    of ``sections`` (``health={"bms_timeout_s": 60}``) merged into its section. Checked
    as any file is; paths are made absolute so the result can be written anywhere."""
    data = as_data(base, reveal_secrets=True)
    data["buses"] = [{"name": base.buses[0].name, **bus}]
    data["mqtt"].update(host="127.0.0.1", port=broker_port, password=None)
    data["store"]["path"] = str(state_dir / "pack-agent.db")
    data["databases"] = [_absolute(p, base) for p in data["databases"]]
    data["notice"]["catalogue"] = _absolute(data["notice"]["catalogue"], base)
    for name, keys in sections.items():
        data[name].update(keys)
    return parse_config(data, base.base_dir, f"{base.source} (on a simulated vehicle)")


def write_config(cfg: AgentConfig, path: Path) -> Path:
    """``cfg`` as a TOML file for ``pack-agent run --config`` (passwords included)."""
    path.write_text(dump_toml(as_data(cfg, reveal_secrets=True)), encoding="utf-8")
    return path


def _absolute(value: str, base: AgentConfig) -> str:
    return value if value.startswith(BUILTIN_PREFIX) else str(resolve_path(value, base.base_dir))
