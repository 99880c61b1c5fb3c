"""The uplink: drains the store's outbox to the backend over MQTT, QoS 1.

An event leaves the outbox only after the broker's PUBACK, so whatever happens
to the network or the process, an event is sent at least once; backends
de-duplicate by ``event_id``.

Threads: paho's network thread runs the callbacks, which only put tuples on a
``SimpleQueue``. ``poll()``, on the main loop's thread, does everything else:
it turns PUBACKs into ``store.mark_delivered`` and publishes more events. The
store is never touched from paho's thread. That is the daemon's design. Made with
``io_in_poll``, the uplink has no paho thread: ``poll()`` does the network I/O
itself through paho's external-loop API, and a helper thread only connects and
keeps the link alive while the main loop is held up (``mqtt_link``); the callbacks
and the queue are the same. It is not the daemon's because it did not drain
faster: bench/uplink.py runs both designs (docs/performance.md, "Uplink"). With
``start(external_loop=True)`` the caller drives the client (bench/fleet.py).

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

This module is the drain loop. Split off along its seams: ``mqtt_connection``
(transport security, the paho client with TLS and credentials, why a link failed),
``mqtt_link`` (the network driven from ``poll()``, for ``io_in_poll``),
``mqtt_messages`` (event properties, the retained status and the last will) and
``uplink`` (the :class:`Uplink` interface). Their names stay importable from here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import random
import socket
import sys
import time
from collections import deque
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from pack_agent.config import MqttSettings
from pack_agent.core.events import topic_for
from pack_agent.delivery.mqtt_connection import (
    ClientFactory,
    check_transport_security,
    jittered,
    make_client,
    why_lost,
    why_unreachable,
)
from pack_agent.delivery.mqtt_link import InlineLink
from pack_agent.delivery.mqtt_messages import (
    EventProperties,
    status_payload,
    status_properties,
    will_payload,
)
from pack_agent.delivery.uplink import CommandRequest, Uplink
from pack_agent.loopback import is_loopback
from pack_agent.store import Store

__all__ = [
    "DELETE_EVERY_S",
    "GATHER_S",
    "QUEUED_IN_PAHO",
    "READ_AHEAD",
    "ClientFactory",
    "CommandRequest",
    "EventProperties",
    "MqttUplink",
    "Uplink",
    "check_transport_security",
    "is_loopback",
]

log = logging.getLogger(__name__)


# while a backlog drains, acknowledged events are deleted at least this often (and every
# store.DELETE_BATCH events, which comes first on any link faster than ~50 events/s)
DELETE_EVERY_S = 5.0
READ_AHEAD = 200  # outbox rows read at once
GATHER_S = 0.005  # pumping with paho's queue full: look at the PUBACKs this often
QUEUED_IN_PAHO = 200  # events handed to paho beyond the in-flight window (see _handoff)
# paho keeps the message (and sends it after a reconnect): queued, not connected, or written
# at once (no network thread) into a connection that just broke
_HELD = (
    MQTTErrorCode.MQTT_ERR_SUCCESS,
    MQTTErrorCode.MQTT_ERR_NO_CONN,
    MQTTErrorCode.MQTT_ERR_CONN_LOST,
)
_KEEPALIVE_TIMEOUT = ReasonCode(PacketTypes.DISCONNECT, "Keep alive timeout")
_NO_SUBSCRIBERS = 0x10  # v5 PUBACK: accepted, but no subscription matched (mqtt.require_subscriber)


class MqttUplink(Uplink):
    """paho-mqtt 2.x, MQTT v5 (or 3.1.1), QoS 1, a retained status with a last will.

    Status topic ``<prefix>/<vin>/status`` (retained): ``online`` on every connect,
    ``offline`` on a clean stop, and the same ``offline`` as the last will when the
    connection dies. A PUBACK with a failure reason (v5, e.g. 0x87 not authorized)
    leaves the event pending and pauses publishing with an exponential backoff
    (``reconnect_min_s`` .. ``reconnect_max_s``) instead of resending at once; so does
    0x10 *no matching subscribers* with ``require_subscriber``. A lost connection is
    retried after a jittered first delay (:func:`jittered`), then paho's doubling.
    """

    def __init__(
        self,
        settings: MqttSettings,
        store: Store,
        vin: str,
        *,
        agent_version: str,
        client_factory: ClientFactory | None = None,
        io_in_poll: bool = False,
    ) -> None:
        """``io_in_poll``: ``poll()`` does the network I/O on the caller's thread, through
        paho's external-loop API, and a helper thread the connects
        (:mod:`pack_agent.delivery.mqtt_link`); by default paho's network thread does
        both (bench/uplink.py compares the two designs)."""
        check_transport_security(settings)
        if not settings.tls and not is_loopback(settings.host):
            log.warning("mqtt.allow_insecure: talking to %s without TLS", settings.host)
        self.settings = settings
        self.store = store
        self.vin = vin
        self.agent_version = agent_version
        self.client_id = settings.client_id or f"pack-agent-{vin}"
        self.status_topic = f"{settings.topic_prefix}/{vin}/status"
        # the backend's commands to this vehicle (see docs/mqtt-api.md, "Commands")
        self.command_filter = f"{settings.topic_prefix}/{vin}/commands/+"
        self.responses_prefix = f"{settings.topic_prefix}/{vin}/responses/"
        self._commands: list[CommandRequest] = []
        self.status_fields: dict[str, Any] = {}  # carried by every retained status
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
        self._io_in_poll = io_in_poll
        self._link: InlineLink | None = None  # the network, driven by poll() (io_in_poll)

    def _make_client(self, factory: ClientFactory) -> mqtt.Client:
        client = make_client(
            self.settings,
            factory,
            client_id=self.client_id,
            status_topic=self.status_topic,
            will=will_payload(self.agent_version),
            report=lambda text: self._events.put(("paho_error", text)),
        )
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    # -- paho's thread: hand over, nothing else -------------------------------

    def _on_connect(self, client: Any, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        sock = client.socket()
        if sock is not None:  # small MQTT packets go out now, not when the last one is ACKed
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not rc.is_failure:  # every connect: a clean session forgets subscriptions
            client.subscribe(self.command_filter, qos=1)
        self._events.put(("connect", rc))

    def _on_connect_fail(self, _c: Any, _u: Any) -> None:
        # paho calls this inside its ``except OSError`` without passing the error: take it
        # from there, it says why (refused, DNS, certificate...)
        self._events.put(("connect_fail", sys.exc_info()[1]))

    def _on_disconnect(self, client: Any, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        s = self.settings
        # paho waits reconnect_min_s, then doubles: start each vehicle at its own point
        first = min(jittered(s.reconnect_min_s), s.reconnect_max_s)
        client.reconnect_delay_set(first, s.reconnect_max_s)
        self._events.put(("disconnect", rc, first))

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: ReasonCode, _p: Any) -> None:
        self._events.put(("puback", mid, rc))

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        name = msg.topic.rsplit("/", 1)[-1]
        request = CommandRequest(
            name,
            bytes(msg.payload),
            getattr(props, "ResponseTopic", None) or None,
            getattr(props, "CorrelationData", None),
        )
        self._events.put(("command", request))

    # -- main thread ------------------------------------------------------------

    def start(self, external_loop: bool = False) -> None:
        """Connect in the background: on paho's network thread (``loop_start``, the
        daemon's design), or, made with ``io_in_poll``, on a helper thread, ``poll()``
        doing the I/O. With ``external_loop`` there is no thread: the caller drives
        :attr:`client`
        (``reconnect()``, then ``loop_read``/``loop_write``/``loop_misc`` on its socket),
        as bench/fleet.py does for thousands of vehicles in one process."""
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
        if external_loop:
            return
        if not self._io_in_poll:
            self._client.loop_start()
            return
        self._link = InlineLink(
            self._client,
            self._events.put,
            first_delay=s.reconnect_min_s,
            max_delay=s.reconnect_max_s,
            keepalive=s.keepalive_s,
        )
        self._link.start()

    def _io(self) -> contextlib.AbstractContextManager[Any]:
        """Held while this thread uses the client (the link's helper keeps out)."""
        return self._link.lock if self._link is not None else contextlib.nullcontext()

    @property
    def client(self) -> mqtt.Client:
        """The paho client (for a caller that runs its network loop: ``start(True)``)."""
        return self._client

    def poll(self, wait: float = 0.0) -> None:
        if not self._started or self._stopped:
            return
        if self._link is not None:
            with self._link.lock:
                self._poll_inline(self._link, wait)
            return
        deadline = time.monotonic() + wait
        block = 0.0
        while True:
            self._drain(block)
            if not self._publish_more():
                return
            block = deadline - time.monotonic()
            if block <= 0 or not self._inflight:
                return
            if len(self._inflight) > self.settings.max_inflight:
                # paho has events queued behind its window and sends them from its own
                # thread: let PUBACKs gather instead of waking up for each one
                time.sleep(min(block, GATHER_S))
                block = 0.0

    def _poll_inline(self, link: InlineLink, wait: float) -> None:
        """``poll`` doing its own network I/O: wait on the socket (up to ``wait`` while
        events are in flight), read and apply the PUBACKs, publish more."""
        deadline = time.monotonic() + wait
        block = 0.0
        while True:
            link.service(block)
            self._drain()
            if not self._publish_more():
                link.connect_if_due()
                return
            block = deadline - time.monotonic()
            if block <= 0 or not self._inflight:
                return

    def _publish_more(self) -> bool:
        """Connected: the status first after a (re)connect, then events from the outbox.
        False when not connected (nothing to do until the link is back)."""
        if not self._connected:
            return False
        if self._announce:
            self._announce = False
            self._publish_status("online")
        self._fill()
        return True

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
        # events not yet on the medium wait for a sync (``_fill``), not in a busy loop
        return self.store.publishable_count() > len(self._inflight)

    def _fill(self) -> None:
        """Publish pending events until the in-flight window is full.

        Rows are read ahead, ``READ_AHEAD`` at a time, into ``_ahead``: one query per
        few hundred events rather than one per freed slot (each SQLite call gives
        paho's thread the GIL, and getting it back costs more than the query)."""
        self.store.sync_if_due()  # cheap events leave only once on the medium (bounded)
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
                rows = self.store.publishable_rows(self._cursor, READ_AHEAD + len(skip))
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
            elif kind == "command":
                self._commands.append(args[0])
            elif kind == "connect":
                self._connected_event(args[0])
            elif kind == "linked":  # the helper connected: the client is ours again
                if self._link is not None:
                    self._link.attempt_done(True)
            elif kind == "connect_fail":
                if self._link is not None:
                    self._link.attempt_done(False)
                self._note_error(why_unreachable(self.settings, args[0]))
            elif kind == "paho_error":
                kind = f"paho {args[0].split(':')[0]}"
                self._note_error(why_lost(self.settings, args[0]), kind=kind)
            elif kind == "disconnect":
                if self._connected:
                    s = self.settings
                    log.info("disconnected from %s:%d (%s)", s.host, s.port, args[0])
                    if not self._stopped:
                        self._last_error = self._error_kind = f"connection lost: {args[0]}"
                elif args[0] == _KEEPALIVE_TIMEOUT and not self._stopped:
                    s = self.settings
                    self._note_error(
                        f"{s.host}:{s.port} took the TCP connection but sent no CONNACK within "
                        f"mqtt.keepalive_s ({s.keepalive_s} s); trying again"
                    )
                self._connected = False
                if self._link is not None:
                    self._link.lost(args[1])
        if not acked:
            return
        self._progress_at = time.monotonic()
        self.store.mark_delivered(rows=acked)
        if self._connected and self._has_new():  # a backlog drains: free the disk as it goes
            self.store.flush_delivered(older_than=DELETE_EVERY_S)

    def _connected_event(self, rc: ReasonCode) -> None:
        s = self.settings
        if rc.is_failure:
            self._note_error(f"{s.host}:{s.port} refused the connection: {rc}")
            return
        self._connected = self._announce = True
        self._connects += 1
        if self._link is not None:
            self._link.connected()
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
        unrouted = rc.value == _NO_SUBSCRIBERS and self.settings.require_subscriber
        if not rc.is_failure and not unrouted:
            acked.append(row)
            self._refusals = 0
            return
        self._refusals += 1
        s = self.settings
        delay = min(s.reconnect_max_s, s.reconnect_min_s * 2 ** min(self._refusals - 1, 30))
        delay *= random.uniform(0.8, 1.0)  # a fleet of vehicles does not retry in step
        self._hold_until = max(self._hold_until, time.monotonic() + delay)
        self._rescan = True
        what = "routed to no subscriber" if unrouted else "refused"
        self._note_error(
            f"broker {what} event {event_id}: {rc} (0x{rc.value:02x}); "
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
        depth = self.store.pending_count()
        payload = status_payload(
            state, self.agent_version, depth, time.time(), **self.status_fields, **extra
        )
        props = status_properties(self._v5)
        info = self._client.publish(
            self.status_topic, payload, qos=1, retain=True, properties=props
        )
        self._status_mids.add(info.mid)
        return info.mid

    def take_commands(self) -> list[CommandRequest]:
        taken, self._commands = self._commands, []
        return taken

    def respond(self, request: CommandRequest, body: dict[str, Any]) -> None:
        """On the v5 response topic with its correlation data; else (3.1.1, or none set) on
        ``<prefix>/<vin>/responses/<command>``, where the body's ``id`` correlates."""
        if not self._connected:
            log.info("command %s not answered: not connected", request.name)
            return
        topic = request.response_topic or self.responses_prefix + request.name
        props = None
        if self._v5:
            props = status_properties(True)
            if request.correlation_data is not None:
                props.CorrelationData = request.correlation_data  # type: ignore[union-attr]
        with self._io():
            self._client.publish(topic, json.dumps(body), qos=1, properties=props)

    def announce(self, **fields: Any) -> None:
        self.status_fields.update(fields)
        if self._connected:
            with self._io():
                self._publish_status("online")

    def stop(self, timeout: float = 5.0) -> None:
        if not self._started or self._stopped:
            self._stopped = True
            return
        deadline = time.monotonic() + timeout
        with self._io():
            self._drain()
            while self._connected and self._inflight and time.monotonic() < deadline:
                self._await_reports(0.01)
            if self._connected:  # last, so its queue_depth is final; sent before DISCONNECT
                offline = self._publish_status("offline", reason="stopped")
                while self._connected and offline in self._status_mids:
                    if time.monotonic() >= deadline:
                        break
                    self._await_reports(0.01)
            self._stopped = True
            if self._link is None:
                self._client.disconnect()  # a clean DISCONNECT: the broker discards the will
                self._client.loop_stop()
            else:
                self._link.stop(0.0)  # no attempt starts from now on
                self._drain()  # an attempt that connected just before: the socket is ours
                if not self._link.connecting:  # else the helper closes what it opens
                    self._client.disconnect()
            self._drain()  # acknowledgements that arrived at the last moment (deleted at close)
        if self._link is not None:  # a connect under way is not waited for past the deadline
            self._link.stop(min(1.0, deadline - time.monotonic()))
        self._connected = False
        log.info(
            "uplink stopped: %d events in the outbox, %d unacknowledged",
            self.store.pending_count(),
            len(self._inflight),
        )
        self._inflight.clear()

    def _await_reports(self, seconds: float) -> None:
        """Let paho's reports come in for ``seconds`` (doing the I/O if it is ours)."""
        if self._link is None:
            time.sleep(seconds)
        else:
            self._link.service(seconds)
        self._drain()

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
