"""What the uplink publishes besides an event's stored body: properties, status, will.

Owns :class:`EventProperties` (an event's v5 properties, packed by hand once per
event because paho's generic ``Properties`` costs more than the rest of a publish),
the retained status message (:func:`status_payload`: ``online``/``offline`` with the
queue depth) and the last will the broker publishes when the connection dies
(:func:`will_payload`), with their properties (:func:`status_properties`). The
uplink (``pack_agent.delivery.mqtt``) puts them on the wire; nothing here talks to
a broker.
"""

from __future__ import annotations

import json
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from pack_agent.core.events import utc_from_timestamp

__all__ = ["EventProperties", "status_payload", "status_properties", "will_payload"]


def _vbi(n: int) -> bytes:
    """An MQTT Variable Byte Integer."""
    out = bytearray()
    while True:
        n, byte = divmod(n, 128)
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    raw = text.encode("utf-8")
    return len(raw).to_bytes(2, "big") + raw


class EventProperties:
    """An event's MQTT v5 PUBLISH properties, packed once by hand: Payload Format
    Indicator 1 (UTF-8), Content Type ``application/json`` and the User Property
    ``event_id``. paho's generic ``Properties`` costs more per message than the rest
    of a publish; paho only ever calls ``pack()`` on what it is given here."""

    _FIXED = b"\x01\x01" + b"\x03" + _utf8("application/json") + b"\x26" + _utf8("event_id")

    __slots__ = ("_packed", "event_id")

    def __init__(self, event_id: str) -> None:
        self.event_id = event_id
        body = self._FIXED + _utf8(event_id)
        self._packed = _vbi(len(body)) + body

    def pack(self) -> bytes:
        return self._packed

    def __str__(self) -> str:  # paho's debug log prints it
        return json.dumps(
            {"PayloadFormatIndicator": 1, "ContentType": "application/json",
             "UserProperty": [["event_id", self.event_id]]}
        )  # fmt: skip


def status_properties(v5: bool, packet: int = PacketTypes.PUBLISH) -> Properties | None:
    """Content type and UTF-8 indicator for a status message or the will (v5 only)."""
    if not v5:
        return None
    props = Properties(packet)
    props.ContentType = "application/json"
    props.PayloadFormatIndicator = 1  # UTF-8
    return props


def status_payload(
    state: str, agent_version: str, queue_depth: int, now: float, **extra: Any
) -> str:
    """The retained status: ``state`` (online, offline), the agent's version, the
    events still to send and the time, plus ``extra`` (an offline ``reason``)."""
    payload = {
        "state": state,
        "agent_version": agent_version,
        "queue_depth": queue_depth,
        "time": utc_from_timestamp(now).isoformat(),
        **extra,
    }
    return json.dumps(payload)


def will_payload(agent_version: str) -> str:
    """The last will: the same ``offline`` status, published by the broker for us."""
    return json.dumps(
        {"state": "offline", "agent_version": agent_version, "reason": "connection lost"}
    )
