"""SIGHUP's reload in a real daemon (its own thread, a virtual bus, a real broker, the
configuration file on disk): every key is either applied or reported as needing a restart,
from the one ``RELOADABLE`` list; none is silently taken or silently dropped."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path

import pytest

from daemon_toml import daemon_toml
from pack_agent.config import load_config
from pack_agent.runtime.daemon import RELOADABLE, Daemon
from pack_agent.runtime.status import read_status


def write_config(path: Path, port: int, tmp: Path, channel: str, **daemon: object) -> None:
    path.write_text(daemon_toml(port, tmp, channel, daemon=daemon))


class DaemonThread:
    """``pack-agent run``'s daemon in a thread, built there (the store belongs to it)."""

    def __init__(self, path: Path) -> None:
        self.daemon: Daemon | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, args=(path,), daemon=True)
        self._thread.start()
        assert self._ready.wait(20), "daemon did not start"
        assert self.daemon is not None

    def _main(self, path: Path) -> None:
        try:
            self.daemon = Daemon(load_config(path), config_path=path)
        finally:
            self._ready.set()
        self.daemon.run()

    def stop(self) -> None:
        assert self.daemon is not None
        self.daemon.stop_event.set()
        self._thread.join(15)
        assert not self._thread.is_alive()


def reload_and_wait(daemon: Daemon, caplog: pytest.LogCaptureFixture) -> str:
    """SIGHUP's path (the handler only asks; the main loop reloads): the reload's log line."""
    caplog.clear()
    daemon.request_reload()
    deadline = time.monotonic() + 10
    while True:
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("SIGHUP")]
        if lines:
            return lines[-1]
        assert time.monotonic() < deadline, "no reload within 10 s"
        time.sleep(0.02)


def test_every_key_is_applied_or_reported(broker, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="pack_agent.runtime.daemon")
    path = tmp_path / "agent.toml"
    channel = f"reload-{uuid.uuid4().hex[:10]}"
    write_config(path, broker.port, tmp_path, channel)
    run = DaemonThread(path)
    try:
        daemon = run.daemon
        assert daemon is not None
        first_file = daemon.status_file
        assert first_file is not None
        # the clock and the status file: neither can change under a running daemon
        write_config(
            path,
            broker.port,
            tmp_path,
            channel,
            clock="frames",
            status_file=str(tmp_path / "elsewhere" / "status.json"),
            status_interval_s=0.5,
            shutdown_timeout_s=4,
        )
        line = reload_and_wait(daemon, caplog)
        assert "take effect after a restart: daemon.clock, daemon.status_file" in line
        # not applied: the daemon still runs on the wall clock and writes where it did
        assert daemon.clock is time.time and daemon.status_file == first_file
        assert daemon.config.daemon.clock == "system"
        # the reloadable ones are: the status file says the new interval
        assert daemon.config.daemon.status_interval_s == 0.5
        assert daemon.config.daemon.shutdown_timeout_s == 4
        # (None until the daemon's first write: the thread may not have reached its loop)
        deadline = time.monotonic() + 20
        while (read_status(first_file) or {}).get("status_interval_s") != 0.5:
            assert time.monotonic() < deadline, read_status(first_file)
            time.sleep(0.05)
        assert not (tmp_path / "elsewhere").exists()
        # reported again at the next reload: it still needs the restart
        line = reload_and_wait(daemon, caplog)
        assert "take effect after a restart: daemon.clock, daemon.status_file" in line
        # back as it runs: nothing needs a restart
        write_config(path, broker.port, tmp_path, channel, status_interval_s=0.5)
        line = reload_and_wait(daemon, caplog)
        assert "after a restart" not in line and "configuration reloaded" in line
    finally:
        run.stop()


def test_the_reloadable_keys_are_real_keys():
    from pack_agent.config import as_data, reference_config_path

    data = as_data(load_config(reference_config_path()))
    for key in RELOADABLE:
        section, name = key.split(".")
        assert name in data[section], key
