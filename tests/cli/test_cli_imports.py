"""What `pack-agent run` imports: the real daemon process, started to READY=1 and stopped.

The daemon must not pay (memory, start-up) for what only other subcommands use. The
module list comes from ``python -X importtime`` of the real process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

from pack_agent.canbus.logs import FORMATS
from pack_agent.cli.replay import FORMATS as CLI_FORMATS
from pack_agent.config import load_config, reference_config_path
from pack_agent.dev.broker import free_port
from pack_agent.dev.sim.rig import rig_config, write_config

SRC = Path(__file__).resolve().parents[2] / "src"

# used by other subcommands, tests or tools, never by the daemon
NOT_AT_START = (
    "pack_agent.dev.demo",
    "pack_agent.dev.demo_story",
    "pack_agent.runtime.replay",
    "pack_agent.api.schema",
    "pack_agent.api.subscriber",
    "pack_agent.api.ordering",
    "pack_agent.api.sinks",
    "pack_agent.dev.sim",
    "pack_agent.dev.broker",
    "pack_agent.runtime.statusview",
    "pack_agent.api.models",
    "hypothesis",
    "pytest",
    "matplotlib",
    "jsonschema",
    "cantools.subparsers",
    # the configuration is validated in a short-lived child (configproc.IsolatedCheck):
    # pydantic's ~8 MiB never stay in the daemon
    "pydantic",
    "pydantic_core",
    "pack_agent.config.check",
)


def daemon_imports(tmp_path: Path) -> set[str]:
    cfg = rig_config(
        load_config(reference_config_path()),
        {"interface": "virtual", "channel": f"imports-{uuid.uuid4().hex[:8]}"},
        free_port(),  # nobody listens: the daemon starts all the same
        tmp_path,
        daemon={"status_file": str(tmp_path / "status.json"), "shutdown_timeout_s": 1},
    )
    config = write_config(cfg, tmp_path / "agent.toml")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(30)
    env = {**os.environ, "PYTHONPATH": str(SRC), "NOTIFY_SOCKET": str(tmp_path / "notify")}
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "pack_agent", "run", "-c", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while "READY=1" not in notify.recv(4096).decode().split("\n"):
            pass
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        notify.close()
    assert proc.returncode == 0, err[-2000:]
    return {
        line.split("|")[2].strip()
        for line in err.splitlines()
        if line.startswith("import time:") and "imported package" not in line
    }


def test_the_daemon_imports_nothing_it_does_not_use(tmp_path):
    modules = daemon_imports(tmp_path)
    assert {
        "pack_agent.runtime.daemon",
        "pack_agent.store.database",
        "pack_agent.delivery.mqtt",
        "cantools",
    } <= modules
    loaded = sorted(
        m for m in modules if any(m == n or m.startswith(n + ".") for n in NOT_AT_START)
    )
    assert loaded == []


def test_the_replay_formats_the_parser_offers_are_the_replay_formats():
    assert CLI_FORMATS == FORMATS
