"""Where frames come from: live python-can buses (with kernel filters) or a recorded log.

``Source`` is the extension point; ``BusSource`` opens the configured buses
with filters for exactly the frame ids the mapping uses, so on SocketCAN the
kernel drops everything else before Python sees it.
"""

from __future__ import annotations

import queue
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from pack_agent.config import BusSettings
from pack_agent.errors import BusError

if TYPE_CHECKING:
    import can

Frame = tuple[str, "can.Message"]  # (bus name, message)


class Source(ABC):
    """Yields frames one at a time, tagged with the configured bus name."""

    @abstractmethod
    def recv(self, timeout: float) -> Frame | None: ...

    def bus(self, name: str) -> can.BusABC | None:
        """The bus to send on (owner notices); None where the source cannot send."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


def can_filters(ids: list[tuple[int, bool]]) -> list[dict[str, Any]]:
    return [
        {"can_id": fid, "can_mask": 0x1FFFFFFF if ext else 0x7FF, "extended": ext}
        for fid, ext in sorted(set(ids))
    ]


def open_bus(settings: BusSettings, filters: list[dict[str, Any]] | None) -> can.BusABC:
    import can

    kwargs: dict[str, Any] = dict(settings.options)
    if settings.bitrate is not None:
        kwargs["bitrate"] = settings.bitrate
    if settings.fd:
        kwargs["fd"] = True
        if settings.data_bitrate is not None:
            kwargs["data_bitrate"] = settings.data_bitrate
    try:
        return can.Bus(
            interface=settings.interface,
            channel=settings.channel,
            can_filters=filters or None,
            **kwargs,
        )
    except Exception as exc:  # python-can raises CanError, OSError, ImportError, ValueError...
        raise BusError(
            f"bus {settings.name!r} ({settings.interface}:{settings.channel}) cannot be opened: "
            f"{exc}"
        ) from exc


class BusSource(Source):
    """One or several live buses. With several, python-can's Notifier threads feed one queue."""

    def __init__(self, buses: dict[str, can.BusABC]) -> None:
        import can

        self._buses = buses
        self._single = next(iter(buses.items())) if len(buses) == 1 else None
        self._queue: queue.SimpleQueue[Frame] = queue.SimpleQueue()
        # one notifier per bus, so each frame keeps the name of the bus it came from
        self._notifiers = (
            []
            if self._single is not None
            else [can.Notifier(bus, [_Tagger(name, self._queue)]) for name, bus in buses.items()]
        )

    def recv(self, timeout: float) -> Frame | None:
        if self._single is not None:
            name, bus = self._single
            msg = bus.recv(timeout)
            return None if msg is None else (name, msg)
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def bus(self, name: str) -> can.BusABC | None:
        return self._buses.get(name)

    def close(self) -> None:
        for notifier in self._notifiers:
            notifier.stop()
        for bus in self._buses.values():
            bus.shutdown()


class _Tagger:
    """A python-can listener that tags each frame with its bus name."""

    def __init__(self, name: str, out: queue.SimpleQueue[Frame]) -> None:
        self.name = name
        self._out = out

    def __call__(self, msg: can.Message) -> None:
        self._out.put((self.name, msg))

    def on_error(self, exc: Exception) -> None:
        pass

    def stop(self) -> None:
        pass
