"""Where events go: the :class:`Uplink` interface the agent's main loop drives.

Owns the contract only (start, poll, busy, stop, connected, status), so that the
agent depends on it and not on paho; the one real implementation is
:class:`pack_agent.delivery.mqtt.MqttUplink`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

__all__ = ["CommandRequest", "Uplink"]


@dataclass(frozen=True)
class CommandRequest:
    """A command as it came from the backend: its name (the topic's last level), the raw
    payload, and where to answer (MQTT v5 response topic and correlation data; with
    3.1.1, or when the backend set none, the agent's own responses topic)."""

    name: str
    payload: bytes
    response_topic: str | None = None
    correlation_data: bytes | None = None


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

    def take_commands(self) -> list[CommandRequest]:
        """Commands received since the last call (main thread); none by default."""
        return []

    def respond(self, request: CommandRequest, body: dict[str, Any]) -> None:  # noqa: B027
        """Answer ``request`` (best effort: a lost answer is asked again with the same id)."""

    def announce(self, **fields: Any) -> None:  # noqa: B027
        """Publish the retained status now, with ``fields`` in every later one too."""

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
