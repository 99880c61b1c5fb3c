"""The simulated ECUs' end-to-end protection: the alive counter and CRC each protected
message of the reference database carries (its ``[e2e.*]`` sections in reference.toml).

Every simulated frame goes through ``encode``; a message without protection is
encoded as it is. The counters advance per database, one step per frame built.
"""

from __future__ import annotations

import sys
import weakref
from typing import TYPE_CHECKING, Any

from pack_agent.canbus.dbc import encode_message
from pack_agent.canbus.e2e import Protection
from pack_agent.config.settings import E2ESettings, reference_config_path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

if TYPE_CHECKING:
    import can
    import cantools.database


def reference_e2e() -> dict[str, E2ESettings]:
    """The reference configuration's ``[e2e]`` sections (the simulator speaks them)."""
    data = tomllib.loads(reference_config_path().read_text(encoding="utf-8"))
    return {name: E2ESettings(**table) for name, table in data.get("e2e", {}).items()}


class Sender:
    """Protects frames as a sending ECU does: the next counter value, then the CRC."""

    def __init__(self, db: cantools.database.Database, e2e: dict[str, E2ESettings]) -> None:
        self._protections: dict[str, Protection] = {}
        for name, settings in e2e.items():
            try:
                message = db.get_message_by_name(name)
                self._protections[name] = Protection(message, settings)
            except KeyError:
                # a database without that message (a real-world one), or whose message of
                # that name has no checksum signals (a vehicle's own BMS_Health)
                continue
        self._counters: dict[str, int] = {}

    def protect(self, name: str, frame: can.Message) -> can.Message:
        p = self._protections.get(name)
        if p is None:
            return frame
        counter = self._counters.get(name, -1) + 1
        counter %= p.modulus or 1
        self._counters[name] = counter
        frame.data = bytearray(p.protect(bytes(frame.data), counter))
        return frame


_SENDERS: weakref.WeakKeyDictionary[Any, Sender] = weakref.WeakKeyDictionary()


def sender(db: cantools.database.Database) -> Sender:
    if db not in _SENDERS:
        _SENDERS[db] = Sender(db, reference_e2e())
    return _SENDERS[db]


def encode(
    db: cantools.database.Database, name: str, values: dict[str, Any], t: float
) -> can.Message:
    """A frame of message ``name`` at time ``t``, protected as the reference database says."""
    return sender(db).protect(name, encode_message(db, name, values, t))


def seal(db: cantools.database.Database, name: str, data: bytes) -> bytes:
    """``data`` (bytes of message ``name`` changed by hand: tests) with its CRC made right
    again, its counter kept."""
    p = sender(db)._protections.get(name)
    if p is None:
        return bytes(data)
    return p.protect(bytes(data), p.read_counter(bytes(data)) or 0)
