"""The backend side of the MQTT API: a reference subscriber (``pack-agent listen``).

It shows what a vehicle maker's backend has to do with pack-agent's events:

- de-duplicate by ``event_id`` (delivery is at least once);
- order each vehicle's events by ``seq`` and notice gaps (``SeqTracker``): a gap
  is an event still on its way (or lost by the backend's own subscription), and it
  closes when the missing events arrive;
- notice a ``seq`` that arrives with a second, different ``event_id`` (``SeqIds``):
  reported, both events kept, and the conflict stored by the sink;
- keep the events (SQLite or JSON lines), or print them;
- acknowledge an event to the broker only once it is kept (paho's manual ack), so
  a listener that dies between the two gets it again, never loses it. With a
  batching sink (PostgreSQL) that is after the batch's commit, and the database,
  not this process, de-duplicates and tracks gaps, so several listeners in one
  shared subscription store each event exactly once.

Split along its seams: ``ordering`` (the pure ``SeqTracker`` and ``Deduplicator``),
``sinks`` (where events are kept) and this module, the paho adapter
(``EventSubscriber``). Their names stay importable from here. Unlike the agent this
module is not on the vehicle, so it may use paho directly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import TypeAdapter, ValidationError

from pack_agent.api.ordering import Deduplicator, Gap, SeqConflict, SeqIds, SeqTracker
from pack_agent.api.sinks import (
    BatchSink,
    Committed,
    JsonlSink,
    PostgresSink,
    PrintSink,
    Sink,
    SqliteSink,
)
from pack_agent.core.events import Event
from pack_agent.errors import PackAgentError
from pack_agent.loopback import is_loopback

__all__ = [
    "Deduplicator",
    "EventSubscriber",
    "Gap",
    "JsonlSink",
    "PostgresSink",
    "PrintSink",
    "SeqConflict",
    "SeqIds",
    "SeqTracker",
    "Sink",
    "SqliteSink",
    "SubscriberSettings",
    "Summary",
]

log = logging.getLogger(__name__)
_EVENT = TypeAdapter(Event)  # validates what arrives from the network

# -- the paho adapter -------------------------------------------------------------


@dataclass
class SubscriberSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    prefix: str = "pack-agent/v1"
    protocol: str = "5"
    client_id: str = ""
    share_group: str | None = None  # MQTT v5 shared subscription: $share/<group>/...
    session_expiry_s: int = 0  # > 0: a persistent session, queued while this is away
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password: str | None = None
    allow_insecure: bool = False
    # MQTT v5 Receive Maximum: how many messages the broker may send before PUBACKs. paho
    # sends none, and then a broker may have 65,535 on their way: with a batching sink that
    # acknowledges only after its commit, they would all wait in memory (None: paho's)
    receive_maximum: int | None = None

    def topics(self) -> list[str]:
        events = f"{self.prefix}/+/events/#"
        if self.share_group:
            events = f"$share/{self.share_group}/{events}"
        return [events, f"{self.prefix}/+/status"]


@dataclass
class Summary:
    received: int = 0  # event messages, duplicates included
    unique: int = 0
    duplicates: int = 0
    invalid: int = 0
    seq_conflicts: list[str] = field(default_factory=list)
    gaps_open: list[str] = field(default_factory=list)
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    peak_rss_mib: float = 0.0  # this process's, at the end (memory is bounded: see above)

    def to_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "unique": self.unique,
            "duplicates": self.duplicates,
            "invalid": self.invalid,
            "seq_conflicts": self.seq_conflicts,
            "gaps_open": self.gaps_open,
            "statuses": self.statuses,
            "peak_rss_mib": self.peak_rss_mib,
        }


Report = Callable[[str], None]


def _peak_rss_mib() -> float:
    """This process's peak resident memory (Linux reports ru_maxrss in KiB)."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return 0.0
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class EventSubscriber:
    """Subscribes at QoS 1 to ``<prefix>/+/events/#`` and ``<prefix>/+/status``;
    ``run()`` handles messages on the calling thread (paho's thread only queues)."""

    def __init__(
        self, settings: SubscriberSettings, sink: Sink | BatchSink, report: Report
    ) -> None:
        s = settings
        if not (s.ca_file or s.allow_insecure or is_loopback(s.host)):
            raise PackAgentError(
                f"--broker {s.host} is not this machine and no --ca-file is given: events would "
                "cross the network unencrypted (add --allow-insecure if the network is trusted)"
            )
        if s.share_group and s.protocol != "5":
            raise PackAgentError("--share needs MQTT v5 (--protocol 5)")
        self.settings, self.sink, self.report = s, sink, report
        self.summary = Summary()
        self.dedup = Deduplicator()
        # a batching sink de-duplicates and tracks gaps itself (shared by several listeners)
        self._batch: BatchSink | None = sink if isinstance(sink, PostgresSink) else None
        # (connection, message id) of events waiting for the batch commit
        self._unacked: list[tuple[int, int]] = []
        # paho's connection count, set on paho's thread: a message id means something only
        # on the connection it came on (see _ack)
        self._connection = 0
        baseline: dict[str, int] = {}
        self.seq_ids = SeqIds()
        for event_id, vin, seq in () if self._batch else sink.seen():  # type: ignore[union-attr]
            self.dedup.first_time(event_id)
            self.seq_ids.observe(vin, seq, event_id)
            baseline.setdefault(vin, 0)
            baseline[vin] = max(baseline[vin], seq)  # kept events are the baseline
        self.seqs = SeqTracker(baseline)
        # what paho's thread received and this one has not handled yet. Bounded: when it is
        # full, paho's thread waits (and stops reading the socket), so a broker that sends
        # past the Receive Maximum (mosquitto 2.0.11 does, after the first window) cannot
        # fill this process's memory; the control events and the broker's window fit in it
        self.inbox_limit = (s.receive_maximum or 1000) + 100
        self._inbox: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=self.inbox_limit)
        self._closing = False  # stop() runs: paho's thread no longer waits for room
        self._spill: list[tuple[str, Any]] = []  # what arrived while closing with no room
        self._subscribed = threading.Event()
        self._client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        v5 = s.protocol == "5"
        kwargs: dict[str, Any] = {"protocol": mqtt.MQTTv5 if v5 else mqtt.MQTTv311}
        if not v5:
            kwargs["clean_session"] = s.session_expiry_s <= 0
        client = mqtt.Client(CallbackAPIVersion.VERSION2, s.client_id, **kwargs)
        # back within a second of a broker restart: mosquitto 2.0 does not restore shared
        # subscriptions, so until a listener subscribes again, events reach nobody
        client.reconnect_delay_set(0.1, 1)  # type: ignore[arg-type]
        client.manual_ack_set(True)  # acknowledged once kept: see _ack
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.ca_file:
            try:
                client.tls_set(
                    ca_certs=s.ca_file,
                    certfile=s.cert_file,
                    keyfile=s.key_file,
                    cert_reqs=ssl.CERT_REQUIRED,
                    tls_version=ssl.PROTOCOL_TLS_CLIENT,
                )
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise PackAgentError(f"TLS: cannot load the certificates: {exc}") from None
        client.on_connect = self._on_connect
        client.on_connect_fail = lambda *_: self._put(("connect_fail", None))
        client.on_subscribe = lambda _c, _u, _m, rcs, _p: self._put(("suback", rcs))
        client.on_disconnect = lambda _c, _u, _f, rc, _p: self._put(("disconnect", rc))
        client.on_message = lambda _c, _u, msg: self._put(("message", (msg, self._connection)))
        return client

    def _put(self, item: tuple[str, Any]) -> None:
        """On paho's thread: hand over, waiting while the inbox is full (see __init__)."""
        while True:
            try:
                self._inbox.put(item, timeout=0.1)
                return
            except queue.Full:
                if self._closing:  # stop() joins this thread: keep it, handled after
                    self._spill.append(item)
                    return

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not rc.is_failure:  # paho's thread: later messages belong to this connection
            self._connection += 1
        self._put(("connect", rc))

    def start(self) -> None:
        s = self.settings
        props = None
        if s.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = max(s.session_expiry_s, 0)
            if s.receive_maximum is not None:
                props.ReceiveMaximum = s.receive_maximum
            self._client.connect_async(
                s.host, s.port, keepalive=30, clean_start=s.session_expiry_s <= 0, properties=props
            )
        else:
            self._client.connect_async(s.host, s.port, keepalive=30)
        self._client.loop_start()

    def wait_subscribed(self, timeout: float) -> bool:
        """Handle messages until the subscription is in place (for scripts and tests)."""
        deadline = time.monotonic() + timeout
        while not self._subscribed.is_set() and time.monotonic() < deadline:
            self._step(min(0.05, max(deadline - time.monotonic(), 0.001)))
        return self._subscribed.is_set()

    def run(self, count: int | None = None, timeout: float | None = None) -> bool:
        """Handle messages until ``count`` unique events were received (True) or
        ``timeout`` seconds passed (True without a count, False with one)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while count is None or self.summary.unique < count:
            if deadline is not None and time.monotonic() >= deadline:
                return count is None
            wait = 0.2 if deadline is None else min(0.2, max(deadline - time.monotonic(), 0))
            self._step(wait)
        return True

    def _step(self, wait: float) -> None:
        if self._batch is not None:
            self._committed(self._batch.due(time.monotonic()))
            if self._unacked:  # the batch commits within batch_ms: wake up for it
                wait = min(wait, 0.01)
        try:
            kind, arg = self._inbox.get(timeout=wait) if wait > 0 else self._inbox.get_nowait()
        except queue.Empty:
            return
        s = self.settings
        if kind == "message":
            self._on_message(*arg)
        elif kind == "connect":
            if arg.is_failure:
                self.report(f"{s.host}:{s.port} refused the connection: {arg}")
            else:
                self.report(f"connected to {s.host}:{s.port}")
                self._client.subscribe([(t, 1) for t in s.topics()])
        elif kind == "suback":
            bad = [str(rc) for rc in arg if getattr(rc, "is_failure", False) or rc == 128]
            if bad:
                self.report(f"subscription refused: {', '.join(bad)} (broker ACL?)")
            else:
                self._subscribed.set()
                self.report(f"subscribed to {', '.join(s.topics())}")
        elif kind == "connect_fail":
            self.report(f"cannot reach {s.host}:{s.port}; retrying")
        elif kind == "disconnect":
            # their ids belonged to that connection; the broker sends them again (a kept
            # session) and the database ignores the repeats
            self._unacked.clear()
            self._subscribed.clear()
            self.report(f"disconnected: {arg}")

    def _ack(self, connection: int, mid: int) -> None:
        """PUBACK ``mid`` if it came on the connection that is up now. After a reconnect the
        broker sends an unacknowledged message again (same session), and it is acknowledged
        then; a PUBACK for the old connection's id could instead acknowledge whichever message
        the broker has given that id since, one this listener has not kept."""
        if connection == self._connection and self._client.is_connected():
            self._client.ack(mid, 1)

    def _committed(self, done: Committed | None) -> None:
        """A batch was committed: count it, report its gaps, acknowledge its events."""
        if done is None:
            return
        self.summary.unique += done.new
        self.summary.duplicates += done.duplicates
        for gap in done.opened:
            self.report(f"gap {gap} missing")
        for gap in done.closed:
            self.report(f"gap {gap} closed")
        for conflict in done.conflicts:
            self.summary.seq_conflicts.append(str(conflict))
            self.report(f"seq conflict {conflict}")
            log.warning("seq conflict %s", conflict)
        for connection, mid in self._unacked:
            self._ack(connection, mid)
        self._unacked.clear()

    def _on_message(self, msg: mqtt.MQTTMessage, connection: int) -> None:
        if self._keep(msg, connection) and msg.qos > 0:
            self._ack(connection, msg.mid)

    def _keep(self, msg: mqtt.MQTTMessage, connection: int) -> bool:
        """Handle one message; True when it may be acknowledged now."""
        raw = msg.payload.decode("utf-8", errors="replace")
        if msg.topic.endswith("/status"):
            vin = msg.topic.split("/")[-2]
            with contextlib.suppress(ValueError):
                self.summary.statuses[vin] = json.loads(raw)
                self.report(f"status {vin}: {raw}")
            return True
        self.summary.received += 1
        try:
            event = _EVENT.validate_json(raw)
        except ValidationError as exc:
            self.summary.invalid += 1
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            self.report(f"invalid event on {msg.topic}: {where}: {first['msg']}")
            return True
        if self._batch is not None:
            if msg.qos > 0:
                self._unacked.append((connection, msg.mid))
            self._committed(self._batch.add(event, raw, time.monotonic()))
            return False
        if not self.dedup.first_time(event.event_id):
            self.summary.duplicates += 1
            return True
        self.summary.unique += 1
        conflict = self.seq_ids.observe(event.vin, event.seq, event.event_id)
        if conflict is not None:
            self.summary.seq_conflicts.append(str(conflict))
            self.report(f"seq conflict {conflict}")
            log.warning("seq conflict %s", conflict)
            self.sink.conflict(conflict)  # type: ignore[union-attr]
        opened, closed = self.seqs.observe(event.vin, event.seq, time.monotonic())
        for gap in opened:
            self.report(f"gap {gap} missing (received seq {event.seq})")
        for gap in closed:
            took = time.monotonic() - gap.opened_at
            self.report(f"gap {gap} closed after {took:.1f} s")
        self.sink.keep(event, raw)  # type: ignore[union-attr]
        return True

    def stop(self) -> Summary:
        if self._batch is not None:  # commit and acknowledge before saying goodbye
            self._committed(self._batch.flush())
        self._closing = True  # paho's thread, if it waits for room, spills instead
        self._client.disconnect()
        self._client.loop_stop()
        rest: list[tuple[str, Any]] = []
        while True:  # what arrived before the disconnect (stored; the broker sends it again)
            try:
                rest.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        for kind, arg in [*rest, *self._spill]:  # the spill came after the inbox's
            if kind == "message":
                self._on_message(*arg)
        if self._batch is not None:
            self._committed(self._batch.flush())
            gaps = self._batch.open_gaps()  # type: ignore[attr-defined]
        else:
            gaps = self.seqs.open_gaps()
        self.summary.gaps_open = [str(g) for g in gaps]
        self.summary.peak_rss_mib = _peak_rss_mib()
        self.sink.close()
        return self.summary
