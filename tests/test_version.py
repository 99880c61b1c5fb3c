"""The version has one source, the package metadata (``pyproject.toml`` at install), and
every place that shows it says the same: ``--version``, the retained MQTT status and the
live status file. Looking it up costs nothing until it is asked for."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from importlib.metadata import version
from pathlib import Path

from test_daemon_reload import DaemonThread, write_config

from conftest import Subscriber
from pack_agent.runtime.status import read_status

SRC = Path(__file__).resolve().parents[1] / "src"
INSTALLED = version("pack-agent")


def python(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, check=True
    )
    return out.stdout.strip()


def test_version_option_shows_the_installed_version() -> None:
    assert python("-m", "pack_agent", "--version") == f"pack-agent {INSTALLED}"


def test_a_source_tree_that_is_not_installed_says_unknown(tmp_path: Path) -> None:
    # the package's code alone (src/ may hold an egg-info), and -S: no site-packages
    shutil.copytree(SRC / "pack_agent", tmp_path / "pack_agent")
    code = f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import pack_agent as p"
    assert python("-S", "-c", code + "; print(p.__version__)") == "0+unknown"


def test_importing_the_package_does_not_look_the_version_up() -> None:
    code = "import sys, pack_agent; print('importlib.metadata' in sys.modules)"
    assert python("-c", code) == "False"


def test_the_retained_status_and_the_status_file_carry_it(broker, tmp_path) -> None:
    path = tmp_path / "agent.toml"
    write_config(path, broker.port, tmp_path, f"version-{uuid.uuid4().hex[:10]}")
    with Subscriber(broker) as backend:
        run = DaemonThread(path)
        try:
            backend.wait_for(lambda s: any(x.get("state") == "online" for x in s.statuses), 10)
            online = next(x for x in backend.statuses if x.get("state") == "online")
            assert run.daemon is not None and run.daemon.status_file is not None
            # the status file is written at the daemon's first status tick, which may come
            # after the broker's retained status: wait for it as for the broker's
            deadline = time.monotonic() + 10
            while (live := read_status(run.daemon.status_file)) is None:
                assert time.monotonic() < deadline, "no status file within 10 s"
                time.sleep(0.05)
        finally:
            run.stop()
    assert online["agent_version"] == INSTALLED
    assert live["agent_version"] == INSTALLED
