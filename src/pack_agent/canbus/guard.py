"""A CAN bus that comes back by itself: interface down, adapter unplugged, BMS off.

python-can raises ``CanOperationError`` or ``OSError`` from ``recv``/``send``
when the interface goes away (``ip link set can0 down``, a USB adapter pulled
out). ``GuardedBus`` closes the broken bus, reopens it with an exponential
backoff and reports its state (``up`` / ``down``), so neither the main loop nor
the owner channel ever sees the exception and the daemon never needs a restart.
It has the two methods the agent uses, ``recv`` and ``send``, plus ``shutdown``,
so it can stand where a ``can.BusABC`` stands (python-can's Notifier included).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import can

log = logging.getLogger(__name__)

Opener = Callable[[], "can.BusABC"]


class GuardedBus:
    """Wraps an open bus and an ``opener`` that opens it again (same filters)."""

    def __init__(
        self,
        name: str,
        opener: Opener,
        bus: can.BusABC | None = None,
        *,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._opener = opener
        self._bus: can.BusABC | None = bus if bus is not None else opener()
        self._lock = threading.Lock()
        self._min, self._max = backoff_min_s, backoff_max_s
        self._clock = clock
        self._delay = backoff_min_s
        self._retry_at = 0.0
        self._closed = False
        self.frames = 0
        self.failures = 0  # times the bus went away
        self.reopens = 0  # times it came back
        self.last_error: str | None = None
        self.last_frame_at: float | None = None  # wall time
        self.down_since: float | None = None  # wall time

    @property
    def state(self) -> str:
        return "up" if self._bus is not None else "down"

    @property
    def filters(self) -> Any:
        """The kernel filters of the bus as it is open now (None while it is down)."""
        bus = self._bus
        return bus.filters if bus is not None else None

    @property
    def channel_info(self) -> str:
        bus = self._bus
        return str(getattr(bus, "channel_info", "")) if bus is not None else ""

    def _fail(self, exc: BaseException, during: str) -> None:
        """The bus broke: close it; the next ``recv``/``send`` after the backoff reopens it."""
        with self._lock:
            bus, self._bus = self._bus, None
            if bus is None:
                return
            self.failures += 1
            self.last_error = f"{during}: {exc}"
            self.down_since = time.time()
            self._delay = self._min
            self._retry_at = self._clock() + self._delay
        log.warning("bus %s went away (%s: %s); reopening", self.name, during, exc)
        try:
            bus.shutdown()
        except Exception as close_exc:  # a broken bus may not even close cleanly
            log.debug("bus %s: shutdown after failure: %s", self.name, close_exc)

    def _reopen(self) -> can.BusABC | None:
        if self._closed or self._clock() < self._retry_at:
            return None
        try:
            bus = self._opener()
        except Exception as exc:
            self._delay = min(self._max, self._delay * 2)
            self._retry_at = self._clock() + self._delay
            self.last_error = f"reopen: {exc}"
            log.debug("bus %s still down (%s); next try in %.1f s", self.name, exc, self._delay)
            return None
        with self._lock:
            if self._closed:
                bus.shutdown()
                return None
            self._bus = bus
            self.reopens += 1
            down_for = time.time() - (self.down_since or time.time())
            self.down_since = None
        log.warning("bus %s is back after %.1f s", self.name, down_for)
        return bus

    def recv(self, timeout: float | None = None) -> can.Message | None:
        import can

        bus = self._bus or self._reopen()
        if bus is None:
            time.sleep(min(timeout or 0.0, 0.05))  # never a busy loop while down
            return None
        try:
            msg = bus.recv(timeout)
        except (can.CanOperationError, OSError) as exc:
            self._fail(exc, "recv")
            return None
        if msg is not None:
            self.frames += 1
            self.last_frame_at = time.time()
        return msg

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        """Raises ``can.CanOperationError`` while the bus is down (the caller retries later)."""
        import can

        bus = self._bus or self._reopen()
        if bus is None:
            raise can.CanOperationError(f"bus {self.name} is down: {self.last_error}")
        try:
            bus.send(msg, timeout)
        except can.CanTimeoutError:
            raise  # a full queue, not a broken bus
        except (can.CanOperationError, OSError) as exc:
            self._fail(exc, "send")
            raise can.CanOperationError(f"bus {self.name} is down: {exc}") from exc

    @property
    def inner(self) -> can.BusABC | None:
        return self._bus

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "frames": self.frames,
            "failures": self.failures,
            "reopens": self.reopens,
            "last_error": self.last_error,
            "last_frame_at": self.last_frame_at,
            "down_since": self.down_since,
        }

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            bus, self._bus = self._bus, None
        if bus is not None:
            bus.shutdown()

    # python-can's Notifier and BusABC callers sometimes ask for these
    def fileno(self) -> int:
        return -1

    def __iter__(self) -> Any:
        while not self._closed:
            msg = self.recv(1.0)
            if msg is not None:
                yield msg
