"""The configuration check in a short-lived child process.

pydantic and the schemas it builds for the configuration take about 8 MiB that a
daemon would hold for ever after using them once. So ``pack-agent run`` checks
its file in a child: the child imports pydantic, checks, pickles the dataclasses
(or the problems) back over a pipe, and exits, and the daemon never imports
pydantic at all (``tests/cli/test_cli_imports.py`` holds it to that).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from pack_agent.config.settings import AgentConfig
from pack_agent.errors import ConfigError


class IsolatedCheck:
    """``load_config`` in a short-lived child process: pydantic and its schemas (about
    8 MiB) stay in the child, so the long-running daemon never holds them.

    The child pickles the checked dataclasses, or the problems, back over a pipe. It
    starts at once; the caller imports the rest of the daemon while it works. While
    this process has one thread (the daemon's start) the child is a fork, which skips
    a new interpreter's start; later (SIGHUP, threads running) it is a fresh
    ``python -m pack_agent.config.isolated``, since forking a threaded process is unsafe."""

    def __init__(self, path: str | Path, fork: bool | None = None) -> None:
        import threading

        self.path = Path(path)
        self._stderr = b""
        self._started = time.monotonic()
        self._error: str | None = None  # the child could not be started
        self._pid, self._proc = 0, None
        self.seconds: float | None = None  # start to result
        # the forked child's peak resident memory, pages shared with this process included
        self.peak_rss_kib: int | None = None
        if fork is None:
            fork = hasattr(os, "fork") and threading.active_count() == 1
        try:
            if fork:
                self._pid = self._fork()
            else:
                self._proc = self._spawn()
        except OSError as exc:  # no memory, no file descriptors, the interpreter gone
            self._error = str(exc)

    def _fork(self) -> int:
        import signal

        read_end, write_end = os.pipe()
        stops = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
        # blocked across the fork: a Ctrl-C must never carry the child into our code
        old = signal.pthread_sigmask(signal.SIG_BLOCK, stops)
        try:
            pid = os.fork()
            if pid == 0:  # the child: check, write, and leave without running our code
                status = 1
                try:
                    for signum in stops:
                        signal.signal(signum, signal.SIG_DFL)
                    signal.pthread_sigmask(signal.SIG_SETMASK, old)
                    status = _checked_in_fork(self.path, read_end, write_end)
                finally:
                    os._exit(status)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        os.close(write_end)
        self._pipe = os.fdopen(read_end, "rb")
        return pid

    def _spawn(self) -> subprocess.Popen[bytes]:
        # the package stays importable in the child, after (never ahead of) the usual path
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), package_root]))
        return subprocess.Popen(
            [sys.executable, "-m", "pack_agent.config.isolated", "--pickle", str(self.path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )

    def _wait(self) -> tuple[bytes, int]:
        if self._proc is not None:
            out, self._stderr = self._proc.communicate()
            return out, self._proc.returncode
        with self._pipe:
            out = self._pipe.read()
        _, status, usage = os.wait4(self._pid, 0)
        self.peak_rss_kib = usage.ru_maxrss  # KiB on Linux
        return out, os.waitstatus_to_exitcode(status)

    def result(self) -> AgentConfig:
        """The checked configuration; every failure, the child's included, is a
        ``ConfigError`` (a reload that fails keeps the running configuration)."""
        import pickle

        if self._error is not None:
            self._fail(f"could not start: {self._error}")
        try:
            out, status = self._wait()
        except OSError as exc:
            self._fail(f"could not read the result: {exc}")
        self.seconds = time.monotonic() - self._started
        try:
            result = pickle.loads(out) if out else None  # our own child's output
        except Exception as exc:  # a child killed while writing: a truncated pickle
            result = None if status != 0 else self._fail(f"unreadable result: {exc!r}")
        if status == 0 and isinstance(result, AgentConfig):
            return result
        if status == 0 and isinstance(result, tuple):
            problems, source = result
            raise ConfigError(problems, source)
        lines = self._stderr.decode("utf-8", "replace").strip().splitlines()
        why = result if isinstance(result, str) else lines[-1] if lines else "no result"
        self._fail(f"exit status {status}: {why}")

    def _fail(self, why: str) -> NoReturn:
        raise ConfigError([f"the configuration check failed ({why})"], str(self.path))


def _checked_in_fork(path: Path, read_end: int, write_end: int) -> int:
    """The forked child's whole life: its stderr goes nowhere (the daemon's journal
    gets no stray output); a crash comes back as text in place of the result."""
    import pickle

    try:
        os.close(read_end)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
        body, status = checked_pickle(path), 0
    except BaseException as exc:  # reported to the parent, never raised in the child
        body, status = pickle.dumps(f"{type(exc).__name__}: {exc}"), 1
    with os.fdopen(write_end, "wb") as pipe:
        pipe.write(body)
    return status


def load_config_isolated(path: str | Path, fork: bool | None = None) -> AgentConfig:
    return IsolatedCheck(path, fork).result()


def checked_pickle(path: str | Path) -> bytes:
    """The checked configuration, or (problems, source), pickled for the parent
    (``IsolatedCheck``). Runs in the child only: it imports pydantic."""
    import pickle

    from pack_agent.config.load import load_config

    try:
        result: Any = load_config(path)
    except ConfigError as exc:
        result = (exc.problems, exc.source)
    return pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)


def main(argv: list[str]) -> int:
    """``--pickle FILE``: write the checked configuration, or (problems, source), as a
    pickle on stdout for ``load_config_isolated``."""
    if len(argv) != 2 or argv[0] != "--pickle":
        print("usage: python -m pack_agent.config.isolated --pickle FILE", file=sys.stderr)
        return 2
    sys.stdout.buffer.write(checked_pickle(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
