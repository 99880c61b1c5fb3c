"""A private mosquitto on a free loopback port, for the tests and ``pack-agent demo``.

It listens on 127.0.0.1 only and keeps everything (config, log) in its own
temporary folder, so it never touches the system broker or the network.
``kill``/``restart``/``pause`` exist so tests can play the broker's failures.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from types import TracebackType

from pack_agent.errors import PackAgentError

HOST = "127.0.0.1"
_CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def find_mosquitto() -> str | None:
    """The mosquitto binary, or None: ``PATH`` first, then the usual sbin folders."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((p for p in _CANDIDATES if os.access(p, os.X_OK)), None)


def free_port() -> int:
    """A free TCP port on 127.0.0.1, chosen below the kernel's ephemeral range when
    possible: a client reconnecting while the broker is down then cannot be handed
    the broker's port as its own source port."""
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(50) if low > 20100 else ():
        port = random.randint(20000, low - 1)
        if _bindable(port):
            return port
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


def _cleanup(proc_box: list[subprocess.Popen[bytes]], workdir: str) -> None:
    for proc in proc_box:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    shutil.rmtree(workdir, ignore_errors=True)


class LocalBroker:
    """``with LocalBroker() as b: ... b.host, b.port``.

    The port is chosen at construction, so a test can point a client at a broker
    that does not run yet. ``extra_conf`` is appended after the listener line (so
    TLS or ACL options apply to that listener); it is re-read on every start, and
    ``reload()`` (SIGHUP) makes a running mosquitto re-read e.g. its ACL file.
    """

    host = HOST

    def __init__(
        self,
        port: int | None = None,
        *,
        extra_conf: str = "",
        binary: str | None = None,
        start_timeout: float = 5.0,
    ) -> None:
        found = binary or find_mosquitto()
        if not found:
            raise PackAgentError(
                "mosquitto is not installed (looked in PATH, /usr/sbin, /usr/local/sbin); "
                "install it with `apt-get install mosquitto`"
            )
        self.binary = found
        self.port = port or free_port()
        self.extra_conf = extra_conf
        self.start_timeout = start_timeout
        self.workdir = Path(tempfile.mkdtemp(prefix="pack-agent-broker-"))
        self.log_path = self.workdir / "mosquitto.log"
        self._procs: list[subprocess.Popen[bytes]] = []  # at most one; a list for finalize
        self._finalizer = weakref.finalize(self, _cleanup, self._procs, str(self.workdir))

    @property
    def running(self) -> bool:
        return bool(self._procs) and self._procs[0].poll() is None

    def _write_conf(self) -> Path:
        lines = [
            f"listener {self.port} {HOST}",
            "allow_anonymous true",
            "persistence false",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        if os.geteuid() == 0:  # otherwise mosquitto drops to user "mosquitto" and cannot log here
            lines.append("user root")
        conf = self.workdir / "mosquitto.conf"
        conf.write_text("\n".join([*lines, self.extra_conf, ""]))
        return conf

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def start(self) -> LocalBroker:
        """Start mosquitto and return once its port accepts connections."""
        if self.running:
            return self
        conf = self._write_conf()
        with open(self.workdir / "stderr.log", "wb") as err_file:
            proc = subprocess.Popen(
                [self.binary, "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=err_file,
                stderr=subprocess.STDOUT,
            )
        self._procs[:] = [proc]
        deadline = time.monotonic() + self.start_timeout
        while True:
            if proc.poll() is not None:
                err = (self.workdir / "stderr.log").read_text(errors="replace")
                raise PackAgentError(
                    f"mosquitto exited with status {proc.returncode} on port {self.port}:\n"
                    f"{err.strip()}\n{self.log_tail()}"
                )
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 0.2):
                return self
            if time.monotonic() > deadline:
                self.kill()
                raise PackAgentError(
                    f"mosquitto did not accept connections on {HOST}:{self.port} within "
                    f"{self.start_timeout:g} s; log:\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def _signal(self, sig: int) -> None:
        if self.running:
            self._procs[0].send_signal(sig)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop cleanly (SIGTERM), killing it if it does not exit within ``timeout``."""
        if not self.running:
            return
        proc = self._procs[0]
        proc.send_signal(signal.SIGCONT)  # a paused broker cannot act on SIGTERM
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL: the broker dies without closing anything, like a power cut."""
        if self.running:
            self._procs[0].kill()
            self._procs[0].wait()

    def restart(self) -> LocalBroker:
        """Stop and start again on the same port (sessions and retained messages are gone)."""
        self.stop()
        return self.start()

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing is answered (a hung broker)."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def reload(self) -> None:
        """SIGHUP: mosquitto re-reads its config, ACL and password files."""
        self._write_conf()
        self._signal(signal.SIGHUP)

    def close(self) -> None:
        """Stop and remove the temporary folder (config and log)."""
        self.stop()
        self._finalizer()

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LocalBroker({HOST}:{self.port}, running={self.running})"
