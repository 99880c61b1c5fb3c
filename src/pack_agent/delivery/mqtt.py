"""The uplink: drains the store's outbox to the backend over MQTT, QoS 1.

An event leaves the outbox only after the broker's PUBACK, so whatever happens
to the network or the process, an event is sent at least once; backends
de-duplicate by ``event_id``.

Threads: paho's network thread runs the callbacks, which only put tuples on a
``SimpleQueue``. ``poll()``, on the main loop's thread, does everything else:
it turns PUBACKs into ``store.mark_delivered`` and publishes more events. The
store is never touched from paho's thread.

Pumping: while there is a backlog, the main loop asks ``busy`` and, when true,
calls ``poll(wait=...)`` instead of sleeping on the CAN bus. ``poll`` reads the
outbox ahead (``READ_AHEAD`` rows per query, bodies published as stored), hands
paho up to ``max_inflight + QUEUED_IN_PAHO`` events (paho keeps ``max_inflight``
on the wire and sends the next one from its own thread on each PUBACK), and
waits for PUBACKs, gathering them while paho has a queue. Acknowledged events
are handed to ``store.mark_delivered``, which notes them in memory and deletes
them with the store's next write (the next event or state save), every
``store.DELETE_BATCH`` events, and, while a backlog drains, at least every
``DELETE_EVERY_S``. So the drain rate is set by the broker and paho, not by the
main loop's 50 ms tick, and the main loop still reads CAN frames between two
short waits. Every event handed to paho, and every acknowledged event not yet
deleted, is still in the outbox: a crash means re-sending it, never losing it.

Reconnects: paho keeps its unacknowledged messages in memory and sends them
again after a reconnect; the uplink remembers them (``mid -> (event_id, row)``) and
does not publish those events itself meanwhile, so a flapping link does not
multiply messages. After a restart of the process, paho's memory is gone but
the outbox is not: the events are simply published again.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import queue
import random
import socket
import ssl
import sys
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from pack_agent.config import MqttSettings
from pack_agent.core.events import topic_for, utc_from_timestamp
from pack_agent.errors import PackAgentError
from pack_agent.store.database import Store

log = logging.getLogger(__name__)


_paho_log = logging.getLogger(f"{__name__}.paho")


class _PahoLog:
    """What paho logs, for one uplink. paho reports some failures only in its log (a
    broker that refuses this vehicle's certificate sends a TLS alert that paho meets
    as "failed to receive on socket: ... certificate expired"): its errors go to the
    uplink, which says them once at WARNING, instead of an ERROR line per retry.
    Everything else goes to the ``pack_agent.delivery.mqtt.paho`` logger."""

    def __init__(self, report: Callable[[str], None]) -> None:
        self._report = report
        # paho logs two DEBUG lines per event: decide once (when the uplink is made)
        self._forward_from = _paho_log.getEffectiveLevel()

    def log(self, level: int, msg: str, *args: Any) -> None:
        if level < logging.ERROR:
            if level >= self._forward_from:
                _paho_log.log(level, msg, *args)
            return
        text = msg % args if args else msg
        if not text.startswith("Client is not connected"):  # every failed reconnect
            self._report(text)


ClientFactory = Callable[..., mqtt.Client]


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


# while a backlog drains, acknowledged events are deleted at least this often (and every
# store.DELETE_BATCH events, which comes first on any link faster than ~50 events/s)
DELETE_EVERY_S = 5.0
READ_AHEAD = 200  # outbox rows read at once
GATHER_S = 0.005  # pumping with paho's queue full: look at the PUBACKs this often
QUEUED_IN_PAHO = 200  # events handed to paho beyond the in-flight window (see _handoff)
_HELD = (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN)  # paho keeps the message


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


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address. Not ``*.localhost``: paho hands such a name to
    the resolver, which may send it anywhere, so it needs TLS like any remote name."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_transport_security(settings: MqttSettings) -> None:
    """Refuse to send events and credentials in clear text across a network."""
    if settings.tls or settings.allow_insecure or is_loopback(settings.host):
        return
    raise PackAgentError(
        f"mqtt.host is {settings.host!r}, not this machine, and mqtt.tls is not set: events "
        "and credentials would cross the network unencrypted. Configure [mqtt.tls] (ca_file, "
        "and cert_file/key_file for a client certificate), or set mqtt.allow_insecure = true "
        "if the network itself is trusted."
    )


class MqttUplink(Uplink):
    """paho-mqtt 2.x, MQTT v5 (or 3.1.1), QoS 1, a retained status with a last will.

    Status topic ``<prefix>/<vin>/status`` (retained): ``online`` on every connect,
    ``offline`` on a clean stop, and the same ``offline`` as the last will when the
    connection dies. A PUBACK with a failure reason (v5, e.g. 0x87 not authorized)
    leaves the event pending and pauses publishing with an exponential backoff
    (``reconnect_min_s`` .. ``reconnect_max_s``) instead of resending at once.
    """

    def __init__(
        self,
        settings: MqttSettings,
        store: Store,
        vin: str,
        *,
        agent_version: str,
        client_factory: ClientFactory | None = None,
    ) -> None:
        check_transport_security(settings)
        if not settings.tls and not is_loopback(settings.host):
            log.warning("mqtt.allow_insecure: talking to %s without TLS", settings.host)
        self.settings = settings
        self.store = store
        self.vin = vin
        self.agent_version = agent_version
        self.client_id = settings.client_id or f"pack-agent-{vin}"
        self.status_topic = f"{settings.topic_prefix}/{vin}/status"
        self._v5 = settings.protocol == "5"
        self._events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._inflight: dict[int, tuple[str, int]] = {}  # paho mid -> (event_id, outbox row)
        self._status_mids: set[int] = set()
        self._connected = self._announce = self._started = self._stopped = False
        self._connects = 0
        self._last_error: str | None = None
        self._error_kind = ""  # what was last logged at WARNING
        self._refusals = 0  # PUBACKs refused in a row
        self._hold_until = 0.0  # monotonic time before which nothing new is published
        self._cursor = 0  # outbox row of the last event read; rows after it are new
        self._ahead: deque[tuple[int, str, str, str, str]] = deque()  # read, not yet published
        # handed to paho at once: max_inflight on the wire (paho enforces it), the rest
        # queued in paho, which sends the next one from its own thread on each PUBACK
        self._handoff = settings.max_inflight + QUEUED_IN_PAHO
        self._rescan = False  # a refused event lies behind the cursor: look from the start
        self._progress_at = 0.0  # monotonic time of the last publish or PUBACK
        self._client = self._make_client(client_factory or mqtt.Client)

    def _make_client(self, factory: ClientFactory) -> mqtt.Client:
        s = self.settings
        client = factory(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5 if self._v5 else mqtt.MQTTv311,
        )
        client.enable_logger(_PahoLog(lambda text: self._events.put(("paho_error", text))))  # type: ignore[arg-type]
        client.reconnect_delay_set(s.reconnect_min_s, s.reconnect_max_s)  # type: ignore[arg-type]
        client.max_inflight_messages_set(s.max_inflight)
        if s.username is not None:
            password = s.password.get_secret_value() if s.password is not None else None
            client.username_pw_set(s.username, password)
        if s.tls is not None:
            try:  # PROTOCOL_TLS_CLIENT checks the host name; never tls_insecure_set(True)
                client.tls_set(
                    ca_certs=s.tls.ca_file,
                    certfile=s.tls.cert_file,
                    keyfile=s.tls.key_file,
                    cert_reqs=ssl.CERT_REQUIRED,
                    tls_version=ssl.PROTOCOL_TLS_CLIENT,
                )
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise PackAgentError(f"mqtt.tls: cannot load the certificates: {exc}") from None
        will = json.dumps(
            {"state": "offline", "agent_version": self.agent_version, "reason": "connection lost"}
        )
        client.will_set(
            self.status_topic,
            will,
            qos=1,
            retain=True,
            properties=self._props(PacketTypes.WILLMESSAGE),
        )
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _props(self, packet: int = PacketTypes.PUBLISH) -> Properties | None:
        if not self._v5:
            return None
        props = Properties(packet)
        props.ContentType = "application/json"
        props.PayloadFormatIndicator = 1  # UTF-8
        return props

    # -- paho's thread: hand over, nothing else -------------------------------

    def _on_connect(self, client: Any, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        sock = client.socket()
        if sock is not None:  # small MQTT packets go out now, not when the last one is ACKed
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._events.put(("connect", rc))

    def _on_connect_fail(self, _c: Any, _u: Any) -> None:
        # paho calls this inside its ``except OSError`` without passing the error: take it
        # from there, it says why (refused, DNS, certificate...)
        self._events.put(("connect_fail", sys.exc_info()[1]))

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        self._events.put(("disconnect", rc))

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: ReasonCode, _p: Any) -> None:
        self._events.put(("puback", mid, rc))

    # -- main thread ------------------------------------------------------------

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        s = self.settings
        log.info(
            "connecting to %s:%d as %s (MQTT %s, %s)",
            s.host,
            s.port,
            self.client_id,
            s.protocol,
            "TLS" if s.tls else "no TLS",
        )
        self._client.connect_async(s.host, s.port, s.keepalive_s)
        self._client.loop_start()

    def poll(self, wait: float = 0.0) -> None:
        if not self._started or self._stopped:
            return
        deadline = time.monotonic() + wait
        block = 0.0
        while True:
            self._drain(block)
            if not self._connected:
                return
            if self._announce:
                self._announce = False
                self._publish_status("online")
            self._fill()
            block = deadline - time.monotonic()
            if block <= 0 or not self._inflight:
                return
            if len(self._inflight) > self.settings.max_inflight:
                # paho has events queued behind its window and sends them from its own
                # thread: let PUBACKs gather instead of waking up for each one
                time.sleep(min(block, GATHER_S))
                block = 0.0

    @property
    def busy(self) -> bool:
        if not self._connected or self._stopped or time.monotonic() < self._hold_until:
            return False
        if len(self._inflight) < self._handoff and self._has_new():
            return True
        # PUBACKs outstanding on a link that moves; a stalled one (paused broker) is left
        # to the main loop's tick instead of being waited on in a loop
        return bool(self._inflight) and time.monotonic() - self._progress_at < 1.0

    def _has_new(self) -> bool:
        return self.store.pending_count() > len(self._inflight)

    def _fill(self) -> None:
        """Publish pending events until the in-flight window is full.

        Rows are read ahead, ``READ_AHEAD`` at a time, into ``_ahead``: one query per
        few hundred events rather than one per freed slot (each SQLite call gives
        paho's thread the GIL, and getting it back costs more than the query)."""
        free = self._handoff - len(self._inflight)
        if free <= 0 or time.monotonic() < self._hold_until or not self._has_new():
            return
        if self._rescan:  # from the start (acknowledged rows are no longer pending)
            self._rescan, self._cursor = False, 0
            self._ahead.clear()
        prefix = self.settings.topic_prefix
        while free > 0:
            if not self._ahead:
                # after a rescan, rows past the cursor may still be in flight: skip them
                skip = {r for _, r in self._inflight.values() if r > self._cursor}
                rows = self.store.pending_rows(self._cursor, READ_AHEAD + len(skip))
                if not rows:
                    return
                self._cursor = rows[-1][0]
                self._ahead.extend(r for r in rows if r[0] not in skip)
                continue
            row, event_id, vin, event_type, body = self._ahead[0]
            # the stored vin, not self.vin: an event keeps the vehicle it was recorded for
            info = self._client.publish(
                topic_for(prefix, vin, event_type),
                body,
                qos=1,
                properties=EventProperties(event_id) if self._v5 else None,  # type: ignore[arg-type]
            )
            if info.rc not in _HELD:
                self._note_error(f"publish failed: {mqtt.error_string(info.rc)}")
                return
            self._ahead.popleft()
            self._inflight[info.mid] = (event_id, row)
            self._progress_at = time.monotonic()
            free -= 1
            log.debug("published %s (mid %d)", event_id, info.mid)

    def _drain(self, block: float = 0.0) -> None:
        """Apply what paho's thread reported (waiting up to ``block`` seconds for the
        first report), then hand the acknowledged events to the store.

        The store deletes them with its next write, not in a commit of their own
        (flash wears out): in steady state that is the next hourly sample. While a
        backlog drains, nothing else writes, so they are deleted every
        ``DELETE_EVERY_S`` at least (and every ``store.DELETE_BATCH`` events). An
        acknowledged event that a crash leaves in the outbox is only sent again (at
        least once); meanwhile it is no longer pending, so it is not published twice."""
        acked: list[int] = []
        while True:
            try:
                if block > 0:
                    kind, *args = self._events.get(timeout=block)
                    block = 0.0
                else:
                    kind, *args = self._events.get_nowait()
            except queue.Empty:
                break
            if kind == "puback":
                self._puback(args[0], args[1], acked)
            elif kind == "connect":
                self._connected_event(args[0])
            elif kind == "connect_fail":
                self._note_error(self._why_unreachable(args[0]))
            elif kind == "paho_error":
                self._note_error(self._why_lost(args[0]), kind=f"paho {args[0].split(':')[0]}")
            elif kind == "disconnect":
                if self._connected:
                    s = self.settings
                    log.info("disconnected from %s:%d (%s)", s.host, s.port, args[0])
                    if not self._stopped:
                        self._last_error = self._error_kind = f"connection lost: {args[0]}"
                self._connected = False
        if not acked:
            return
        self._progress_at = time.monotonic()
        self.store.mark_delivered(rows=acked)
        if self._connected and self._has_new():  # a backlog drains: free the disk as it goes
            self.store.flush_delivered(older_than=DELETE_EVERY_S)

    def _why_lost(self, text: str) -> str:
        s = self.settings
        if "alert" in text and ("certificate" in text or "unknown ca" in text):
            return (
                f"{s.host}:{s.port} refused this vehicle's TLS certificate "
                f"(mqtt.tls.cert_file): {text}"
            )
        return f"{s.host}:{s.port}: {text}"

    def _why_unreachable(self, exc: BaseException | None) -> str:
        """The reason a connection attempt failed, with a hint for TLS failures."""
        s = self.settings
        where = f"cannot reach {s.host}:{s.port}"
        if exc is None:
            return where
        if isinstance(exc, ssl.SSLCertVerificationError):
            return (
                f"{where}: TLS: the broker's certificate was refused: {exc.verify_message} "
                f"(checked against mqtt.tls.ca_file and the host name {s.host!r})"
            )
        if isinstance(exc, ssl.SSLError):
            return (
                f"{where}: TLS handshake failed: {exc} (is this vehicle's certificate, "
                "mqtt.tls.cert_file, signed by the broker's CA and still valid?)"
            )
        return f"{where}: {exc}"

    def _connected_event(self, rc: ReasonCode) -> None:
        s = self.settings
        if rc.is_failure:
            self._note_error(f"{s.host}:{s.port} refused the connection: {rc}")
            return
        self._connected = self._announce = True
        self._connects += 1
        log.info(
            "connected to %s:%d (%d reconnects, %d in flight)",
            s.host,
            s.port,
            self._connects - 1,
            len(self._inflight),
        )

    def _puback(self, mid: int, rc: ReasonCode, acked: list[int]) -> None:
        """Note one PUBACK: ``acked`` collects the outbox rows to delete."""
        if mid in self._status_mids:
            self._status_mids.discard(mid)
            if rc.is_failure:
                self._note_error(f"broker refused the status message: {rc}")
            return
        entry = self._inflight.pop(mid, None)
        if entry is None:
            return
        event_id, row = entry
        if not rc.is_failure:
            acked.append(row)
            self._refusals = 0
            return
        self._refusals += 1
        s = self.settings
        delay = min(s.reconnect_max_s, s.reconnect_min_s * 2 ** min(self._refusals - 1, 30))
        delay *= random.uniform(0.8, 1.0)  # a fleet of vehicles does not retry in step
        self._hold_until = max(self._hold_until, time.monotonic() + delay)
        self._rescan = True
        self._note_error(
            f"broker refused event {event_id}: {rc} (0x{rc.value:02x}); "
            f"it stays in the outbox, publishing paused {delay:.1f} s",
            kind=f"refused {rc}",
        )

    def _note_error(self, message: str, kind: str = "") -> None:
        """Remember the error; log it at WARNING only when its kind changes (no log
        flood while the broker is away for a week)."""
        kind = kind or message
        log.log(logging.DEBUG if kind == self._error_kind else logging.WARNING, "%s", message)
        self._last_error, self._error_kind = message, kind

    def _publish_status(self, state: str, **extra: Any) -> int:
        # queue_depth: pending_count() leaves out acknowledged events awaiting their delete
        payload = {
            "state": state,
            "agent_version": self.agent_version,
            "queue_depth": self.store.pending_count(),
            "time": utc_from_timestamp(time.time()).isoformat(),
            **extra,
        }
        info = self._client.publish(
            self.status_topic, json.dumps(payload), qos=1, retain=True, properties=self._props()
        )
        self._status_mids.add(info.mid)
        return info.mid

    def stop(self, timeout: float = 5.0) -> None:
        if not self._started or self._stopped:
            self._stopped = True
            return
        deadline = time.monotonic() + timeout
        self._drain()
        while self._connected and self._inflight and time.monotonic() < deadline:
            time.sleep(0.01)
            self._drain()
        if self._connected:  # last, so its queue_depth is final; sent before DISCONNECT
            offline = self._publish_status("offline", reason="stopped")
            while self._connected and offline in self._status_mids:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.01)
                self._drain()
        self._stopped = True
        self._client.disconnect()  # a clean DISCONNECT: the broker discards the will
        self._client.loop_stop()
        self._drain()  # acknowledgements that arrived at the last moment (deleted at close)
        self._connected = False
        log.info(
            "uplink stopped: %d events in the outbox, %d unacknowledged",
            self.store.pending_count(),
            len(self._inflight),
        )
        self._inflight.clear()

    @property
    def connected(self) -> bool:
        return self._connected

    def status(self) -> dict[str, Any]:
        return {
            "connected": self._connected,
            "inflight": len(self._inflight),
            "last_error": self._last_error,
            "reconnects": max(self._connects - 1, 0),
        }
