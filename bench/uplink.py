"""Uplink benchmark: outbox drain rate against raw paho, and append-to-PUBACK latency.

    PYTHONPATH=src python bench/uplink.py [--events 100000] [--inflight 20] [--seconds 10]

One private mosquitto on a free loopback port serves every phase of one run:

1. baseline: raw paho (callback API v2, MQTT v5, QoS 1, the same in-flight window)
   publishes the same event payloads back to back and waits for every PUBACK;
2. drain: the same number of events is queued in a real SQLite outbox, then the
   agent's real main loop (``agent.run_loop``, an idle CAN source) and ``MqttUplink``
   drain it; the clock stops when the outbox is empty. Twice per round, once per
   network design of the uplink (the order alternates from round to round):
   *threaded*, paho's network thread (the daemon's), and *external*, paho's
   external-loop API driven by ``poll()`` on the main loop's thread, no paho thread
   (``MqttUplink(..., io_in_poll=True)``, delivery/mqtt_link.py);
3. latency: events are appended at a steady rate (200/s) by the main loop, as frames
   would cause them, and the time from ``Store.append`` to the PUBACK being recorded
   in the store (``mark_delivered``) is taken per event, for each design.

Ratios, not absolute figures, are what to compare across machines: threaded / raw,
external / raw and external / threaded, per round and their medians. ``drain_*`` and
``latency_*`` without a design in the name are the daemon's design (threaded). The
last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import can
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from pack_agent.canbus.source import Frame, Source
from pack_agent.config import MqttSettings
from pack_agent.core.events import EventDraft, topic_for, utc_from_timestamp
from pack_agent.delivery.mqtt import MqttUplink
from pack_agent.dev.broker import LocalBroker
from pack_agent.runtime.agent import run_loop
from pack_agent.store import Store

VIN = "LPACK2026AGENT001"
PREFIX = "pack-agent/v1"


def health_draft(i: int) -> EventDraft:
    """A typical ``pack.health`` event (about 400 bytes of JSON)."""
    data = {
        "pack_code": "0RJPEA00HAU0AAF131001955",
        "metrics": {
            "soh": {"value": 91.5 - i * 1e-6, "age_s": 0.4},
            "soc": {"value": 63.0, "age_s": 0.1},
            "pack_voltage": {"value": 371.2, "age_s": 0.1},
            "full_cycles": {"value": 412, "age_s": 2.0},
        },
    }
    return EventDraft(
        type="pack.health", vin=VIN, time=utc_from_timestamp(1_780_000_000 + i), data=data
    )


def raw_paho(broker: LocalBroker, payloads: list[tuple[str, str]], inflight: int) -> float:
    """Seconds for raw paho to publish every payload at QoS 1 and get every PUBACK."""
    done = threading.Event()
    acked = 0

    def on_publish(*_: Any) -> None:
        nonlocal acked
        acked += 1
        if acked == len(payloads):
            done.set()

    connected = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, "bench-raw", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(inflight)
    client.max_queued_messages_set(0)  # unlimited: paho pipelines behind the window
    client.on_connect = lambda *_: connected.set()
    client.on_publish = on_publish
    client.connect(broker.host, broker.port)
    client.loop_start()
    connected.wait(5)
    t0 = time.perf_counter()
    for i, (topic, body) in enumerate(payloads):
        # paho numbers messages 1..65535: keep fewer than that queued behind the window
        while i - acked > 30_000:
            time.sleep(0.001)
        info = client.publish(topic, body, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"raw paho: publish failed: {mqtt.error_string(info.rc)}")
    if not done.wait(600):
        raise RuntimeError(f"raw paho: only {acked} of {len(payloads)} PUBACKs")
    elapsed = time.perf_counter() - t0
    client.disconnect()
    client.loop_stop()
    return elapsed


class IdleSource(Source):
    """A CAN bus with nothing on it."""

    def recv(self, timeout: float) -> Frame | None:
        if timeout > 0:
            time.sleep(timeout)
        return None


class SteadySource(Source):
    """One frame every ``period`` seconds, on time; each one causes one event."""

    def __init__(self, period: float, count: int) -> None:
        self.period, self.left = period, count
        self.next_at = time.monotonic() + 0.2

    def recv(self, timeout: float) -> Frame | None:
        if self.left <= 0:
            time.sleep(timeout)
            return None
        wait = self.next_at - time.monotonic()
        if wait > timeout:
            time.sleep(timeout)
            return None
        if wait > 0:
            time.sleep(wait)
        self.next_at += self.period
        self.left -= 1
        return "bench", can.Message(arbitration_id=0x100, data=b"")


class TimedStore(Store):
    """Records when each event was appended and when its PUBACK reached the store."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.appended: dict[str, float] = {}
        self.acked: dict[str, float] = {}

    def append(self, draft: EventDraft) -> Any:
        event = super().append(draft)
        self.appended[event.event_id] = time.perf_counter()
        return event

    def mark_delivered(
        self, event_ids: Iterable[str] = (), *, rows: Iterable[int] = (), now: float | None = None
    ) -> int:
        t = time.perf_counter()
        rows = list(rows)
        ids = list(event_ids)
        for i in range(0, len(rows), 500):
            chunk = rows[i : i + 500]
            sql = f"SELECT event_id FROM outbox WHERE id IN ({','.join('?' * len(chunk))})"
            ids += [r[0] for r in self._query(sql, chunk)]
        for event_id in ids:
            self.acked.setdefault(event_id, t)
        return super().mark_delivered(ids, now=now)


class NoCommands:
    """What ``run_loop`` asks of the agent's command handler, for a bench that gets none."""

    wants_status = False


class BenchAgent:
    """Stands in for ``Agent`` in ``run_loop``: a frame appends one event; the timer
    stops the loop when the outbox is empty (or after ``until_count`` appends)."""

    def __init__(self, store: Store, uplink: MqttUplink, stop: threading.Event, total: int):
        self.store, self.uplink, self.stop, self.total = store, uplink, stop, total
        self.n = 0
        self.commands = NoCommands()  # run_loop serves the backend's commands: none come here

    def handle_frame(self, _bus: str, _frame: can.Message, _now: float) -> None:
        self.store.append(health_draft(self.n))
        self.n += 1

    def tick(self, _now: float) -> None:
        drained = self.store.pending_count() == 0 and self.uplink.status()["inflight"] == 0
        if self.n >= self.total and drained:
            self.stop.set()


DESIGNS = ("threaded", "external")
DAEMON_DESIGN = "threaded"  # what MqttUplink.start() does, and so the daemon


def uplink_for(broker: LocalBroker, store: Store, inflight: int, design: str) -> MqttUplink:
    """An uplink, started with the network ``design`` (one of ``DESIGNS``)."""
    settings = MqttSettings(host=broker.host, port=broker.port, max_inflight=inflight)
    external = design == "external"
    uplink = MqttUplink(settings, store, VIN, agent_version="bench", io_in_poll=external)
    uplink.start()
    return uplink


def wait_connected(uplink: MqttUplink) -> None:
    deadline = time.monotonic() + 5
    while not uplink.connected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"uplink not connected: {uplink.status()}")
        uplink.poll(0.01)
        time.sleep(0.01)


def drain(broker: LocalBroker, folder: Path, n: int, inflight: int, design: str) -> float:
    """Seconds for the agent's main loop and uplink to empty an outbox of ``n`` events."""
    folder.mkdir(parents=True, exist_ok=True)
    with Store(folder / f"drain-{design}.db", max_events=n + 1) as store:
        with store.transaction():
            for i in range(n):
                store.append(health_draft(i))
        uplink = uplink_for(broker, store, inflight, design)
        wait_connected(uplink)
        stop = threading.Event()
        agent = BenchAgent(store, uplink, stop, total=0)
        t0 = time.perf_counter()
        run_loop(agent, IdleSource(), uplink, stop, clock=time.time)  # type: ignore[arg-type]
        elapsed = time.perf_counter() - t0
        uplink.stop()
        if store.stats()["delivered_total"] != n:
            raise RuntimeError(f"drain: {store.stats()}")
        return elapsed


def latency(
    broker: LocalBroker, folder: Path, rate: float, seconds: float, inflight: int, design: str
) -> list[float]:
    """Append-to-PUBACK latencies (ms) at a steady ``rate`` of events per second."""
    count = int(rate * seconds)
    store = TimedStore(folder / f"latency-{design}.db")
    with store:
        uplink = uplink_for(broker, store, inflight, design)
        wait_connected(uplink)
        stop = threading.Event()
        agent = BenchAgent(store, uplink, stop, total=count)
        source = SteadySource(1.0 / rate, count)
        run_loop(agent, source, uplink, stop, clock=time.time)  # type: ignore[arg-type]
        uplink.stop()
        return sorted((store.acked[k] - t) * 1000 for k, t in store.appended.items())


def pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--inflight", type=int, default=20, help="in-flight window (mqtt.max_inflight)")
    ap.add_argument("--rounds", type=int, default=3, help="raw/drain rounds (median reported)")
    ap.add_argument("--rate", type=float, default=200.0, help="events/s in the latency phase")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the latency phase")
    ap.add_argument(
        "--broker-nagle", action="store_true", help="leave mosquitto's set_tcp_nodelay off"
    )
    args = ap.parse_args()

    payloads = []
    for i in range(args.events):
        draft = health_draft(i)
        body = json.dumps(
            {"schema_version": 1, "event_id": draft.event_id, "seq": i + 1, "type": draft.type,
             "vin": VIN, "time": draft.time.isoformat(), "data": draft.data}
        )  # fmt: skip
        payloads.append((topic_for(PREFIX, VIN, draft.type), body))

    # set_tcp_nodelay: as in deploy/mosquitto/pack-agent.conf; without it the broker's
    # Nagle algorithm holds a PUBACK back for ~5 ms at times (see docs/performance.md)
    broker_conf = "" if args.broker_nagle else "set_tcp_nodelay true"
    raw_rates: list[float] = []
    rates: dict[str, list[float]] = {d: [] for d in DESIGNS}
    lat: dict[str, list[float]] = {}
    with LocalBroker(extra_conf=broker_conf) as broker, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for r in range(args.rounds):  # interleaved: all see the same machine, round by round
            raw_rates.append(args.events / raw_paho(broker, payloads, args.inflight))
            time.sleep(1)  # let the broker settle between phases
            for design in DESIGNS if r % 2 == 0 else DESIGNS[::-1]:
                seconds = drain(broker, folder / f"r{r}", args.events, args.inflight, design)
                rates[design].append(args.events / seconds)
                time.sleep(1)
            th, ex, raw = rates["threaded"][-1], rates["external"][-1], raw_rates[-1]
            print(
                f"round {r + 1}: raw paho {raw:,.0f}/s, "
                f"threaded {th:,.0f}/s ({th / raw:.2f} x raw), "
                f"external {ex:,.0f}/s ({ex / raw:.2f} x raw, {ex / th:.2f} x threaded)",
                flush=True,
            )
        for design in DESIGNS:
            lat[design] = latency(broker, folder, args.rate, args.seconds, args.inflight, design)

    def ratios(num: list[float], den: list[float]) -> list[float]:
        return sorted(n / d for n, d in zip(num, den, strict=True))

    per_round = {
        "threaded_vs_raw": ratios(rates["threaded"], raw_rates),
        "external_vs_raw": ratios(rates["external"], raw_rates),
        "external_vs_threaded": ratios(rates["external"], rates["threaded"]),
    }
    result: dict[str, Any] = {
        "events": args.events,
        "inflight": args.inflight,
        "rounds": args.rounds,
        "raw_paho_per_s": round(statistics.median(raw_rates)),
    }
    for design in DESIGNS:
        result[f"{design}_per_s"] = round(statistics.median(rates[design]))
    for key, values in per_round.items():
        result[key] = round(statistics.median(values), 3)
        result[f"{key}_rounds"] = [round(x, 3) for x in values]
    result["latency_rate_per_s"] = args.rate
    for design in DESIGNS:
        values = lat[design]
        result[f"latency_{design}_events"] = len(values)
        result[f"latency_{design}_p50_ms"] = round(statistics.median(values), 2)
        result[f"latency_{design}_p99_ms"] = round(pct(values, 99), 2)
        result[f"latency_{design}_max_ms"] = round(values[-1], 2)
    # the daemon's design under the names bench/all.py and earlier runs use
    daemon = DAEMON_DESIGN
    result["daemon_design"] = daemon
    result["drain_per_s"] = result[f"{daemon}_per_s"]
    result["drain_vs_raw"] = result[f"{daemon}_vs_raw"]
    for key in ("events", "p50_ms", "p99_ms", "max_ms"):
        result[f"latency_{key}"] = result[f"latency_{daemon}_{key}"]
    result["broker_tcp_nodelay"] = not args.broker_nagle
    result["python"] = sys.version.split()[0]
    print(
        f"median: raw paho {result['raw_paho_per_s']:,}/s; drain threaded "
        f"{result['threaded_per_s']:,}/s, external {result['external_per_s']:,}/s; "
        f"threaded / raw {result['threaded_vs_raw']:.2f}, external / raw "
        f"{result['external_vs_raw']:.2f} (target >= 0.7), external / threaded "
        f"{result['external_vs_threaded']:.2f}"
    )
    for design in DESIGNS:
        print(
            f"append-to-PUBACK at {args.rate:g}/s, {design}: "
            f"p50 {result[f'latency_{design}_p50_ms']} ms, "
            f"p99 {result[f'latency_{design}_p99_ms']} ms (target <= 20 ms), "
            f"max {result[f'latency_{design}_max_ms']} ms"
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
