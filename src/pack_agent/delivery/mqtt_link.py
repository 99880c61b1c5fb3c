"""The uplink's network, driven from the main loop's thread: no paho network thread.

paho's external-loop API (``socket()``, ``loop_read()``, ``loop_write()``,
``loop_misc()``) lets the caller do the I/O. :class:`InlineLink` does it inside
``MqttUplink.poll``: wait on the socket for up to the poll's ``wait``, read the
PUBACKs, write what is queued, send the keepalive. ``publish()`` then writes at once
on the caller's thread (paho does that when no thread runs its loop), so an event
leaves without waking another thread, and a PUBACK is read by the thread that
deletes the event: no hand-over of the GIL per message (bench/uplink.py measures it).

What must not run on the main loop, which reads CAN frames between two short
waits, is paho's ``reconnect()``: a DNS lookup, a blocking TCP connect and a TLS
handshake, each up to paho's connect timeout. It runs on one small helper thread
(``pack-agent-mqtt-link``), which hands the connected socket back by a report on the
uplink's queue; until then the main thread does not touch the client. The same
thread keeps the link alive when the main loop is held up: if nobody did the I/O for
``KEEPER_S`` (a quarter of the keepalive, if that is shorter), it does it once (reads
PUBACKs and PINGRESPs, sends PINGREQ), so a slow moment of the main loop does not
cost the connection (and a last will).

Ownership of the paho client, so that two threads never use it at once:

- while a connection attempt runs (``connecting``), the helper thread alone;
- otherwise whoever holds :attr:`InlineLink.lock`: the main thread for all of
  ``poll``, ``respond``, ``announce`` and ``stop``; the helper only when the main
  thread has not done the I/O for ``KEEPER_S`` (and never waits for the lock).

Reconnects keep paho's back-off as the uplink sets it: after a lost connection the
first delay is the jittered one (``mqtt_connection.jittered``), then it doubles up
to ``reconnect_max_s`` with each failed attempt, and starts over once connected.
"""

from __future__ import annotations

import contextlib
import math
import select
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

__all__ = ["KEEPER_S", "InlineLink"]

KEEPER_S = 1.0  # the helper does the I/O when the main thread has not for this long
_READ = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP


class InlineLink:
    """One paho client's network I/O on the caller's thread, its connects on a helper."""

    def __init__(
        self,
        client: mqtt.Client,
        report: Callable[[tuple[Any, ...]], None],
        *,
        first_delay: float,
        max_delay: float,
        keepalive: float,
        name: str = "pack-agent-mqtt-link",
    ) -> None:
        self.client = client
        self._report = report  # the uplink's queue: ("linked",) or ("connect_fail", exc)
        self.lock = threading.RLock()  # who may use the client now (see the module doc)
        self.connecting = False  # the helper owns the client (main thread's view)
        self._first, self._max = first_delay, max_delay
        self._delay: float | None = None  # the last back-off; None: the next is the first
        self._retry_at = 0.0  # monotonic time of the next attempt
        self._io_at = time.monotonic()  # the last time somebody did the I/O
        # a PINGREQ goes out within keepalive + this, well before the broker's 1.5 x keepalive
        self._keep_every = min(KEEPER_S, keepalive / 4)
        self._wake = threading.Event()
        self._want_connect = False
        self._quit = False
        self._handover = threading.Lock()  # the helper's report against stop()
        self._poller: Any = None  # select.poll on the current socket
        self._fd, self._mask = -1, 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # -- main thread ----------------------------------------------------------

    def start(self) -> None:
        """Start the helper and the first connection attempt (at once)."""
        self._thread.start()
        self._request()

    def connect_if_due(self) -> None:
        """Start the next attempt when the back-off says so and no link is up (lock held)."""
        if self.connecting or time.monotonic() < self._retry_at:
            return
        if self.client.socket() is not None:  # connected, or waiting for the CONNACK
            return
        self._request()

    def _request(self) -> None:
        self.connecting, self._retry_at = True, math.inf
        self._want_connect = True  # before the wake-up: the helper reads it after one
        self._wake.set()

    def attempt_done(self, ok: bool) -> None:
        """The helper's report reached the main thread: the client is the main thread's
        again; a failed attempt waits for the next back-off step."""
        self.connecting = False
        if not ok:
            self._back_off()

    def connected(self) -> None:
        """A CONNACK that accepted us: the next loss waits the first delay again."""
        self._delay = None

    def lost(self, first_delay: float) -> None:
        """The connection closed (by the broker, the network, keepalive or a refused
        CONNACK): retry after ``first_delay``, the jittered first step."""
        self._first, self._delay = first_delay, None
        self._back_off()

    def _back_off(self) -> None:
        if self._delay is None:
            self._delay = self._first
        else:
            self._delay = min(self._delay * 2, self._max)
        self._retry_at = time.monotonic() + self._delay

    def service(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the socket, then read, write and keep alive (lock
        held). Without a socket (or while connecting) it only waits."""
        sock = None if self.connecting else self.client.socket()
        if sock is None:
            if timeout > 0:
                time.sleep(timeout)
            return
        client = self.client
        mask = select.POLLIN | (select.POLLOUT if client.want_write() else 0)
        fd = sock.fileno()
        if fd != self._fd:  # a new connection, a new socket
            self._poller = select.poll()
            self._poller.register(fd, mask)
            self._fd, self._mask = fd, mask
        elif mask != self._mask:
            self._poller.modify(fd, mask)
            self._mask = mask
        # TLS: bytes already decrypted into the SSL object do not make the fd readable
        pending = sock.pending() if hasattr(sock, "pending") else 0
        ready = self._poller.poll(0 if pending else timeout * 1000)
        if pending or (ready and ready[0][1] & _READ):
            client.loop_read()
        if client.want_write():
            client.loop_write()
        client.loop_misc()  # keepalive: PINGREQ when due, a dead link closed
        self._io_at = time.monotonic()

    def stop(self, timeout: float) -> None:
        """End the helper (main thread, after the uplink's last I/O). An attempt still
        running is left to close its own socket; it is not waited on past ``timeout``."""
        with self._handover:
            self._quit = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(max(0.0, timeout))

    # -- the helper thread -----------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self._keep_every)
            self._wake.clear()
            if self._quit:
                return
            if self._want_connect:
                self._want_connect = False
                self._connect()
            elif not self.connecting and time.monotonic() - self._io_at >= self._keep_every:
                self._keep()

    def _connect(self) -> None:
        """paho's ``reconnect()``: DNS, TCP, TLS, then CONNECT (sent from here). The
        CONNACK is read by whoever does the I/O next."""
        try:
            self.client.reconnect()
        except Exception as exc:  # OSError, ssl.SSLError, ValueError (a bad host)...
            result: tuple[Any, ...] = ("connect_fail", exc)
        else:
            result = ("linked",)
        with self._handover:
            if not self._quit:
                self._report(result)
                return
        if result[0] == "linked":  # stopped meanwhile: nobody will read this socket
            with contextlib.suppress(Exception):  # best effort, on the way out
                self.client.disconnect()

    def _keep(self) -> None:
        """The main loop is held up: do its I/O once, if it is not doing it now. Its
        reports wait in the uplink's queue for the main thread."""
        if not self.lock.acquire(blocking=False):
            return
        try:
            if not self._quit:
                self.service(0.0)
        finally:
            self.lock.release()
