"""The configuration check in a child process gives what an in-process check gives."""

import os
import pickle
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pack_agent.config import load_config, reference_config_path
from pack_agent.config.isolated import load_config_isolated
from pack_agent.errors import ConfigError

REFERENCE = reference_config_path().read_text(encoding="utf-8")


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "agent.toml"
    p.write_text(text, encoding="utf-8")
    return p


@contextmanager
def another_thread() -> Iterator[None]:
    """A running thread, as in the daemon at SIGHUP: the check must not fork then."""
    done = threading.Event()
    thread = threading.Thread(target=done.wait)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


@pytest.mark.parametrize("fork", [True, False], ids=["fork", "new interpreter"])
def test_isolated_check_gives_the_same_configuration_and_problems(tmp_path, fork):
    """The daemon validates in a child process (pydantic stays out of its memory): the
    result must be exactly what an in-process check gives, good file or bad."""
    ref = reference_config_path()
    bad = write(tmp_path, REFERENCE.replace("port = 1883", "port = 0\nmystery = 1"))
    here = load_config(ref)
    with pytest.raises(ConfigError) as local:
        load_config(bad)
    there = load_config_isolated(ref, fork)
    with pytest.raises(ConfigError) as child:
        load_config_isolated(bad, fork)
    assert there == here
    assert (there.base_dir, there.source) == (here.base_dir, here.source)
    assert there.mqtt.password == here.mqtt.password
    assert child.value.problems == local.value.problems
    assert "mqtt.port: Input should be greater than or equal to 1" in child.value.problems
    assert "mqtt.mystery: unknown key" in child.value.problems
    assert child.value.source == str(bad)


def test_isolated_check_that_fails_is_a_clear_error(monkeypatch, capfd):
    def crash(path: object) -> bytes:
        raise RuntimeError("the checker broke")

    monkeypatch.setattr("pack_agent.config.isolated.checked_pickle", crash)  # the forked child's
    with pytest.raises(ConfigError) as info:
        load_config_isolated(reference_config_path(), fork=True)
    assert info.value.problems == [
        "the configuration check failed (exit status 1: RuntimeError: the checker broke)"
    ]
    assert capfd.readouterr().err == ""  # nothing stray from the child in the journal
    # with another thread running (SIGHUP in the daemon) it must not fork: a new
    # interpreter runs the check, and this one fails
    monkeypatch.setattr(sys, "executable", "/bin/false")
    with another_thread(), pytest.raises(ConfigError, match=r"check failed \(exit status 1"):
        load_config_isolated(reference_config_path())


def test_a_child_killed_while_writing_or_never_started_is_a_config_error(monkeypatch):
    """A reload must keep the running configuration whatever happens to the check: so
    every failure is a ConfigError, which the daemon handles, never another exception."""

    def killed_mid_write(path: Path, read_end: int, write_end: int) -> int:
        body = pickle.dumps(load_config(path))
        os.write(write_end, body[: len(body) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
        return 0

    monkeypatch.setattr("pack_agent.config.isolated._checked_in_fork", killed_mid_write)
    with pytest.raises(ConfigError, match=r"check failed \(exit status -9: no result\)"):
        load_config_isolated(reference_config_path(), fork=True)
    monkeypatch.setattr(sys, "executable", "/nonexistent/venv/bin/python")
    with pytest.raises(ConfigError, match=r"check failed \(could not start: .*No such file"):
        load_config_isolated(reference_config_path(), fork=False)
