"""systemd's readiness and watchdog protocol (sd_notify), without a dependency.

The protocol is one datagram per notification on the Unix socket named by
``$NOTIFY_SOCKET``: ``READY=1``, ``STATUS=...``, ``WATCHDOG=1``, ``STOPPING=1``,
``RELOADING=1``. A name starting with ``@`` is in the abstract namespace (the
``@`` stands for a NUL byte). Outside systemd the variable is unset and every
call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends notifications to systemd; a no-op when ``$NOTIFY_SOCKET`` is not set."""

    def __init__(self, address: str | None = None, watchdog_usec: str | None = None) -> None:
        address = os.environ.get("NOTIFY_SOCKET") if address is None else address
        self._address: str | bytes | None = None
        self._sock: socket.socket | None = None
        if address:
            self._address = "\0" + address[1:] if address.startswith("@") else address
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)
        self.watchdog_interval_s = _watchdog_interval(
            os.environ.get("WATCHDOG_USEC") if watchdog_usec is None else watchdog_usec,
            os.environ.get("WATCHDOG_PID"),
        )
        self._next_ping = 0.0
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, *lines: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; False if it could not be sent."""
        if self._sock is None or self._address is None:
            return False
        try:
            self._sock.sendto("\n".join(lines).encode("utf-8"), self._address)
        except OSError as exc:
            if not self._failed:  # once, not at every watchdog ping
                log.warning("sd_notify to %s failed: %s", os.environ.get("NOTIFY_SOCKET"), exc)
                self._failed = True
            return False
        self._failed = False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def stopping(self, status: str = "") -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def watchdog(self, now: float | None = None) -> bool:
        """Pet the watchdog at half its interval; call it from the main loop as often as
        you like (a stuck loop stops the pings, and systemd restarts the service)."""
        if self.watchdog_interval_s is None:
            return False
        t = time.monotonic() if now is None else now
        if t < self._next_ping:
            return False
        self._next_ping = t + self.watchdog_interval_s
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_interval(usec: str | None, pid: str | None) -> float | None:
    """Half of ``WATCHDOG_USEC`` in seconds, or None when there is no watchdog for us."""
    if not usec:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None  # meant for another process
    try:
        value = int(usec)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not a number; watchdog not fed", usec)
        return None
    return value / 2e6 if value > 0 else None
