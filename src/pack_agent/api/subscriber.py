"""The backend side of the MQTT API: a reference subscriber (``pack-agent listen``).

It shows what a vehicle maker's backend has to do with pack-agent's events:

- de-duplicate by ``event_id`` (delivery is at least once);
- order each vehicle's events by ``seq`` and notice gaps (``SeqTracker``): a gap
  is an event still on its way (or lost by the backend's own subscription), and it
  closes when the missing events arrive;
- notice a ``seq`` that arrives with a second, different ``event_id`` (``SeqIds``): the
  vehicle numbered two events alike (a store that lost its last commits, or a copied
  store on another gateway). Reported, kept (both events) and stored as a conflict;
- keep the events (SQLite or JSON lines), or print them.

``SeqTracker`` and ``Deduplicator`` are pure; ``EventSubscriber`` is the paho adapter.
Unlike the agent this module is not on the vehicle, so it may use paho directly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import TypeAdapter, ValidationError

from pack_agent.core.events import Event
from pack_agent.delivery.mqtt import is_loopback
from pack_agent.errors import PackAgentError

log = logging.getLogger(__name__)
_EVENT = TypeAdapter(Event)  # validates what arrives from the network


# -- pure -------------------------------------------------------------------------


@dataclass(frozen=True)
class Gap:
    """Events ``first``..``last`` of ``vin`` not received (yet)."""

    vin: str
    first: int
    last: int
    opened_at: float

    def __str__(self) -> str:
        span = f"seq {self.first}" if self.first == self.last else f"seq {self.first}-{self.last}"
        return f"{self.vin}: {span}"


@dataclass
class _Vehicle:
    contiguous: int  # every seq up to this one was received
    ahead: set[int] = field(default_factory=set)  # received beyond a gap
    gaps: list[Gap] = field(default_factory=list)


class SeqTracker:
    """Per-vehicle ``seq`` bookkeeping. ``observe`` returns the gaps it opened and
    the gaps it closed. A vehicle first seen at seq N (a backend that starts late)
    starts its count at N unless ``baseline`` says what came before."""

    def __init__(self, baseline: dict[str, int] | None = None) -> None:
        self._vehicles: dict[str, _Vehicle] = {
            vin: _Vehicle(contiguous=last) for vin, last in (baseline or {}).items()
        }

    def observe(self, vin: str, seq: int, now: float) -> tuple[list[Gap], list[Gap]]:
        v = self._vehicles.get(vin)
        if v is None:
            self._vehicles[vin] = _Vehicle(contiguous=seq)
            return [], []
        if seq <= v.contiguous or seq in v.ahead:
            return [], []  # a repeat
        opened: list[Gap] = []
        highest = max(v.ahead, default=v.contiguous)
        if seq > highest + 1:
            opened.append(Gap(vin, highest + 1, seq - 1, now))
            v.gaps.extend(opened)
        v.ahead.add(seq)
        while v.contiguous + 1 in v.ahead:
            v.contiguous += 1
            v.ahead.discard(v.contiguous)
        closed = [g for g in v.gaps if self._filled(v, g)]
        v.gaps = [g for g in v.gaps if g not in closed]
        return opened, closed

    @staticmethod
    def _filled(v: _Vehicle, gap: Gap) -> bool:
        return all(s <= v.contiguous or s in v.ahead for s in range(gap.first, gap.last + 1))

    def open_gaps(self) -> list[Gap]:
        return [g for v in self._vehicles.values() for g in v.gaps]

    def contiguous(self) -> dict[str, int]:
        """Per vehicle, the seq up to which nothing is missing."""
        return {vin: v.contiguous for vin, v in self._vehicles.items()}


@dataclass(frozen=True)
class SeqConflict:
    """``seq`` of ``vin`` arrived as ``first_event_id`` and again as ``second_event_id``."""

    vin: str
    seq: int
    first_event_id: str
    second_event_id: str

    def __str__(self) -> str:
        return (
            f"{self.vin}: seq {self.seq} arrived with a second event_id "
            f"{self.second_event_id} (first {self.first_event_id})"
        )


class SeqIds:
    """The ``event_id`` each vehicle's ``seq`` first arrived with (seeded from what a sink
    holds). At least once delivery repeats an event with its own id: not a conflict."""

    def __init__(self, seen: Iterable[tuple[str, str, int]] = ()) -> None:
        self._ids: dict[tuple[str, int], str] = {}
        for event_id, vin, seq in seen:
            self._ids.setdefault((vin, seq), event_id)

    def observe(self, vin: str, seq: int, event_id: str) -> SeqConflict | None:
        first = self._ids.setdefault((vin, seq), event_id)
        return None if first == event_id else SeqConflict(vin, seq, first, event_id)


class Deduplicator:
    """Remembers every ``event_id`` seen (seeded from what a sink already holds)."""

    def __init__(self, seen: Iterable[str] = ()) -> None:
        self._seen = set(seen)

    def first_time(self, event_id: str) -> bool:
        if event_id in self._seen:
            return False
        self._seen.add(event_id)
        return True

    def __len__(self) -> int:
        return len(self._seen)


# -- sinks ------------------------------------------------------------------------


class Sink(Protocol):
    def seen(self) -> Iterator[tuple[str, str, int]]:
        """(event_id, vin, seq) of every event already kept."""

    def keep(self, event: Event, raw: str) -> None: ...

    def conflict(self, conflict: SeqConflict) -> None:
        """Keep a ``seq`` that arrived with a second ``event_id`` (both events are kept)."""

    def close(self) -> None: ...


class PrintSink:
    """One JSON line per new event on ``out`` (stdout)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def seen(self) -> Iterator[tuple[str, str, int]]:
        return iter(())

    def keep(self, event: Event, raw: str) -> None:
        print(raw, file=self.out, flush=True)

    def conflict(self, conflict: SeqConflict) -> None:
        pass  # reported (stderr): stdout stays one event per line

    def close(self) -> None:
        pass


class JsonlSink:
    """Appends one JSON line per new event; the file is read back on start, so a
    restarted listener still de-duplicates and knows each vehicle's seq."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = self.path.open("a", encoding="utf-8")

    def seen(self) -> Iterator[tuple[str, str, int]]:
        with self.path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    e = json.loads(line)
                    yield e["event_id"], e["vin"], int(e["seq"])
                except (ValueError, KeyError, TypeError):
                    raise PackAgentError(f"{self.path}:{n}: not an event line") from None

    def keep(self, event: Event, raw: str) -> None:
        self._file.write(raw.strip() + "\n")
        self._file.flush()

    def conflict(self, conflict: SeqConflict) -> None:
        """One JSON line in ``<path>.conflicts`` (the events file stays events only)."""
        line = json.dumps({**asdict(conflict), "received_at": time.time()})
        with self.path.with_name(self.path.name + ".conflicts").open("a", encoding="utf-8") as f:
            f.write(line + "\n")

    def close(self) -> None:
        self._file.close()


class SqliteSink:
    """A table ``events`` (event_id primary key, vin, seq, type, time, body)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS events (event_id TEXT PRIMARY KEY, vin TEXT NOT NULL,"
                " seq INTEGER NOT NULL, type TEXT NOT NULL, time TEXT NOT NULL, body TEXT NOT NULL,"
                " received_at REAL NOT NULL)"
            )
            self._conn.execute("CREATE INDEX IF NOT EXISTS events_vin_seq ON events (vin, seq)")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS seq_conflicts (vin TEXT NOT NULL, seq INTEGER NOT NULL,"
                " first_event_id TEXT NOT NULL, second_event_id TEXT NOT NULL,"
                " received_at REAL NOT NULL)"
            )
        except sqlite3.Error as exc:
            raise PackAgentError(f"{self.path}: cannot use as an event store: {exc}") from None

    def seen(self) -> Iterator[tuple[str, str, int]]:
        yield from self._conn.execute("SELECT event_id, vin, seq FROM events")

    def keep(self, event: Event, raw: str) -> None:
        self._conn.execute(
            "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?)",
            (event.event_id, event.vin, event.seq, event.type, event.time.isoformat(), raw,
             time.time()),
        )  # fmt: skip

    def conflict(self, conflict: SeqConflict) -> None:
        c = conflict
        self._conn.execute(
            "INSERT INTO seq_conflicts VALUES (?, ?, ?, ?, ?)",
            (c.vin, c.seq, c.first_event_id, c.second_event_id, time.time()),
        )

    def close(self) -> None:
        self._conn.close()


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "unique": self.unique,
            "duplicates": self.duplicates,
            "invalid": self.invalid,
            "seq_conflicts": self.seq_conflicts,
            "gaps_open": self.gaps_open,
            "statuses": self.statuses,
        }


Report = Callable[[str], None]


class EventSubscriber:
    """Subscribes at QoS 1 to ``<prefix>/+/events/#`` and ``<prefix>/+/status``;
    ``run()`` handles messages on the calling thread (paho's thread only queues)."""

    def __init__(self, settings: SubscriberSettings, sink: Sink, report: Report) -> None:
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
        baseline: dict[str, int] = {}
        self.seq_ids = SeqIds()
        for event_id, vin, seq in sink.seen():
            self.dedup.first_time(event_id)
            self.seq_ids.observe(vin, seq, event_id)
            baseline.setdefault(vin, 0)
            baseline[vin] = max(baseline[vin], seq)  # kept events are the baseline
        self.seqs = SeqTracker(baseline)
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._subscribed = threading.Event()
        self._client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        v5 = s.protocol == "5"
        kwargs: dict[str, Any] = {"protocol": mqtt.MQTTv5 if v5 else mqtt.MQTTv311}
        if not v5:
            kwargs["clean_session"] = s.session_expiry_s <= 0
        client = mqtt.Client(CallbackAPIVersion.VERSION2, s.client_id, **kwargs)
        client.reconnect_delay_set(0.1, 5)  # type: ignore[arg-type]
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
        client.on_connect = lambda _c, _u, _f, rc, _p: self._inbox.put(("connect", rc))
        client.on_connect_fail = lambda *_: self._inbox.put(("connect_fail", None))
        client.on_subscribe = lambda _c, _u, _m, rcs, _p: self._inbox.put(("suback", rcs))
        client.on_disconnect = lambda _c, _u, _f, rc, _p: self._inbox.put(("disconnect", rc))
        client.on_message = lambda _c, _u, msg: self._inbox.put(("message", msg))
        return client

    def start(self) -> None:
        s = self.settings
        props = None
        if s.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = max(s.session_expiry_s, 0)
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
        try:
            kind, arg = self._inbox.get(timeout=wait) if wait > 0 else self._inbox.get_nowait()
        except queue.Empty:
            return
        s = self.settings
        if kind == "message":
            self._on_message(arg)
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
            self._subscribed.clear()
            self.report(f"disconnected: {arg}")

    def _on_message(self, msg: mqtt.MQTTMessage) -> None:
        raw = msg.payload.decode("utf-8", errors="replace")
        if msg.topic.endswith("/status"):
            vin = msg.topic.split("/")[-2]
            with contextlib.suppress(ValueError):
                self.summary.statuses[vin] = json.loads(raw)
                self.report(f"status {vin}: {raw}")
            return
        self.summary.received += 1
        try:
            event = _EVENT.validate_json(raw)
        except ValidationError as exc:
            self.summary.invalid += 1
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            self.report(f"invalid event on {msg.topic}: {where}: {first['msg']}")
            return
        if not self.dedup.first_time(event.event_id):
            self.summary.duplicates += 1
            return
        self.summary.unique += 1
        conflict = self.seq_ids.observe(event.vin, event.seq, event.event_id)
        if conflict is not None:
            self.summary.seq_conflicts.append(str(conflict))
            self.report(f"seq conflict {conflict}")
            log.warning("seq conflict %s", conflict)
            self.sink.conflict(conflict)
        opened, closed = self.seqs.observe(event.vin, event.seq, time.monotonic())
        for gap in opened:
            self.report(f"gap {gap} missing (received seq {event.seq})")
        for gap in closed:
            took = time.monotonic() - gap.opened_at
            self.report(f"gap {gap} closed after {took:.1f} s")
        self.sink.keep(event, raw)

    def stop(self) -> Summary:
        self._client.disconnect()
        self._client.loop_stop()
        while True:  # what arrived before the disconnect
            try:
                kind, arg = self._inbox.get_nowait()
            except queue.Empty:
                break
            if kind == "message":
                self._on_message(arg)
        self.summary.gaps_open = [str(g) for g in self.seqs.open_gaps()]
        self.sink.close()
        return self.summary
