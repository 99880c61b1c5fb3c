"""A private PostgreSQL on a free loopback port, for the tests and ``bench/fleet.py``.

Like :mod:`pack_agent.dev.broker`: ``initdb`` into a temporary folder, listen on
127.0.0.1 only (and a unix socket inside that folder), start with ``pg_ctl``, stop
and remove everything at the end. It never touches a system cluster.

``fsync``, ``synchronous_commit`` and ``full_page_writes`` are off: this cluster is
thrown away after a test or a benchmark, so a power cut cannot matter, and the
figures it gives for rows/s are therefore an upper bound (docs/scaling.md says so).
``durable=True`` leaves PostgreSQL's defaults (every commit flushed to the disk), to
measure what a production database would do (``bench/backend.py --durable``).
initdb refuses to run as root: as root, the cluster belongs to the ``postgres``
system user (created by Debian's package) and the commands run as that user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from types import TracebackType

from pack_agent.dev.broker import HOST, free_port
from pack_agent.errors import PackAgentError

__all__ = ["LocalPostgres", "find_postgres"]


def find_postgres() -> str | None:
    """The folder holding initdb/pg_ctl/postgres (newest Debian version first), or None."""
    found = shutil.which("pg_ctl")
    folders = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for folder in [*folders, *([str(Path(found).parent)] if found else [])]:
        if all(os.access(f"{folder}/{tool}", os.X_OK) for tool in ("initdb", "pg_ctl", "createdb")):
            return folder
    return None


def _cleanup(cmd: list[str], workdir: str) -> None:
    if Path(workdir, "data", "postmaster.pid").exists():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(cmd, capture_output=True, timeout=30)
    shutil.rmtree(workdir, ignore_errors=True)


class LocalPostgres:
    """``with LocalPostgres() as pg: psycopg.connect(pg.url)``; database ``pack_agent``."""

    host = HOST
    database = "pack_agent"

    def __init__(
        self, *, bindir: str | None = None, start_timeout: float = 30.0, durable: bool = False
    ) -> None:
        found = bindir or find_postgres()
        if not found:
            raise PackAgentError(
                "PostgreSQL is not installed (no initdb, pg_ctl and createdb in PATH or "
                "/usr/lib/postgresql/*/bin); install it with `apt-get install postgresql` "
                "(scripts/setup does)"
            )
        self.bindir = found
        self.port = free_port()
        self.start_timeout = start_timeout
        self.durable = durable
        self.workdir = Path(tempfile.mkdtemp(prefix="pack-agent-postgres-"))
        self.data = self.workdir / "data"
        self.log_path = self.workdir / "postgres.log"
        self._as: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root: the cluster belongs to "postgres"
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise PackAgentError(
                    "running as root, and there is no `postgres` system user to own a "
                    "private cluster (Debian's postgresql package creates it)"
                ) from None
            os.chown(self.workdir, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self.user = "postgres" if self._as else pwd.getpwuid(os.geteuid()).pw_name
        stop = [*self._as, f"{self.bindir}/pg_ctl", "-D", str(self.data), "-m", "immediate", "stop"]
        self._finalizer = weakref.finalize(self, _cleanup, stop, str(self.workdir))

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@{HOST}:{self.port}/{self.database}"

    def _run(self, *args: str, timeout: float = 60.0) -> None:
        proc = subprocess.run(
            [*self._as, *args], capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if proc.returncode != 0:
            raise PackAgentError(
                f"{Path(args[0]).name} failed (exit {proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()[-1500:]}\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def start(self) -> LocalPostgres:
        """initdb (first time), start, create the database; return once it accepts SQL."""
        b = self.bindir
        if not (self.data / "PG_VERSION").exists():
            self._run(f"{b}/initdb", "-D", str(self.data), "-A", "trust", "-U", self.user,
                      "-E", "UTF8", "--no-sync")  # fmt: skip
            conf = [
                f"listen_addresses = '{HOST}'",
                f"port = {self.port}",
                f"unix_socket_directories = '{self.workdir}'",
                *(
                    ()
                    if self.durable
                    else (
                        "fsync = off",  # thrown away afterwards (see the module's docstring)
                        "synchronous_commit = off",
                        "full_page_writes = off",
                    )
                ),
                "max_connections = 100",
                "shared_buffers = 128MB",
            ]
            with (self.data / "postgresql.conf").open("a") as f:
                f.write("\n".join(conf) + "\n")
        self._run(f"{b}/pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-w",
                  "-t", str(int(self.start_timeout)), "start")  # fmt: skip
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                self._run(f"{b}/createdb", "-h", HOST, "-p", str(self.port), "-U", self.user,
                          self.database)  # fmt: skip
                return self
            except PackAgentError as exc:
                if "already exists" in str(exc):
                    return self
                if "failed to execute" in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(f"{self.bindir}/pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def close(self) -> None:
        """Stop and remove the cluster."""
        with contextlib.suppress(PackAgentError):
            self.stop()
        self._finalizer()

    def __enter__(self) -> LocalPostgres:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LocalPostgres({HOST}:{self.port})"
