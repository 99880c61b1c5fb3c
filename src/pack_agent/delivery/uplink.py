"""Where events go: the :class:`Uplink` interface the agent's main loop drives.

Owns the contract only (start, poll, busy, stop, connected, status), so that the
agent depends on it and not on paho; the one real implementation is
:class:`pack_agent.delivery.mqtt.MqttUplink`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

__all__ = ["Uplink"]


class Uplink(ABC):
    """Where events go. The main loop calls ``poll()`` often; nothing here blocks."""

    @abstractmethod
    def start(self) -> None:
        """Begin connecting in the background; an unreachable backend is not an error."""

    @abstractmethod
    def poll(self, wait: float = 0.0) -> None:
        """Record acknowledgements and send more pending events (main thread); with
        ``wait`` > 0, keep doing so for up to ``wait`` seconds while acknowledgements
        are outstanding."""

    @property
    def busy(self) -> bool:
        """True while there is work that ``poll(wait)`` can make progress on now (a
        backlog and a link that moves): the main loop then polls without sleeping."""
        return False

    @abstractmethod
    def stop(self, timeout: float = 5.0) -> None:
        """Wait up to ``timeout`` for outstanding acknowledgements, say goodbye, disconnect."""

    @property
    @abstractmethod
    def connected(self) -> bool:
        """Connected, as of the last ``poll()``."""

    @abstractmethod
    def status(self) -> dict[str, Any]:
        """``connected``, ``inflight``, ``last_error``, ``reconnects``."""
