"""Fleet benchmark: N vehicles through one mosquitto into `pack-agent listen` and PostgreSQL.

    PYTHONPATH=src python bench/fleet.py [--vehicles 10000] [--listeners 2] [--rate 500]

Everything runs on this machine, on loopback: a private mosquitto (dev/broker.py), a
private PostgreSQL (dev/postgres.py, fsync off), 1-4 `pack-agent listen --database`
processes in one MQTT v5 shared subscription, and the vehicles. Each vehicle is the
agent's real uplink (``MqttUplink``: its own client id, retained status and last will,
QoS 1, an event leaves the outbox only after its PUBACK) over its own real SQLite
outbox (``Store``); thousands of them run in a few worker processes, each driving its
paho clients with paho's external-loop API (``socket()``, ``loop_read()``,
``loop_write()``, ``loop_misc()``) from one epoll loop, so what is measured is the
product, not a second implementation.

Phases:

1. connect: every vehicle connects (connects/s);
2. steady: the fleet appends ``--rate`` events/s for ``--steady-s`` seconds; events/s
   end to end, and p50/p99 from ``Store.append`` to the row inserted in PostgreSQL
   in its committing transaction (the event's ``time`` against ``received_at``);
3. storm: the broker is stopped (``--storm term``: SIGTERM, its persistence saved;
   ``kill``: SIGKILL, a crash) and started again after ``--outage-s`` while the fleet
   keeps appending: connects/s, time until the whole fleet is back, and how the
   uplink's reconnect jitter spreads it (percentiles of each vehicle's reconnect);
4. backlog: a day of events (``--backlog`` per vehicle) is appended while the uplinks
   are held, then released at once: drain events/s.

Then it waits until every outbox is empty and checks PostgreSQL: ``lost`` (appended,
never stored), ``duplicate_rows`` (two rows for one vehicle's seq), ``seq_gaps_open``.
The baseline, in the same run and broker: raw ``mosquitto_pub -l -q 1`` throughput
(raw paho when mosquitto_pub is not installed); the ratio is printed beside.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import math
import multiprocessing as mp
import os
import random
import resource
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "pack-agent/v1"
VEHICLES_PER_WORKER = 2500  # 4 descriptors each (socket, SQLite file, -wal, -shm)
CONNECT_THREADS = 64  # per worker: TCP connects in progress at once
BACKLOG_SLICE = 20  # vehicles given their backlog per turn of a worker's loop


def raise_open_files() -> int:
    """Soft open-files limit up to the hard one (inherited by mosquitto and listeners)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def vin_of(i: int) -> str:
    return f"LFLEET{i:011d}"


# -- a worker: many vehicles, one epoll loop ---------------------------------------------


class Vehicle:
    __slots__ = ("attempt", "fd", "lost_at", "next_try", "reconnected_at", "store", "uplink", "vin")

    def __init__(self, vin: str, store: Any, uplink: Any) -> None:
        self.vin, self.store, self.uplink = vin, store, uplink
        self.fd = -1
        self.attempt = 0
        self.next_try = 0.0
        self.lost_at: float | None = None
        self.reconnected_at: float | None = None


def worker_main(
    index: int,
    first: int,
    count: int,
    host: str,
    port: int,
    folder: str,
    require_subscriber: bool,
    cmds: Any,
    out: Any,
    retry_max_s: float = 30.0,
) -> None:
    """Runs ``count`` vehicles; obeys commands from ``cmds``, answers on ``out``."""
    raise_open_files()
    import logging

    # thousands of uplinks each saying "connection lost" at a broker restart: counted, not logged
    logging.getLogger("pack_agent").setLevel(logging.ERROR)
    from pack_agent.config import MqttSettings
    from pack_agent.core.events import EventDraft, utc_from_timestamp
    from pack_agent.delivery.mqtt import MqttUplink
    from pack_agent.store.database import Store

    # require_subscriber: mosquitto 2.0 forgets shared subscriptions at a restart; what a
    # vehicle sends before the listeners subscribe again is kept, not acknowledged into the void
    settings = MqttSettings(host=host, port=port, reconnect_min_s=1.0,
                            reconnect_max_s=retry_max_s,
                            require_subscriber=require_subscriber)  # fmt: skip
    sel = selectors.DefaultSelector()
    by_fd: dict[int, Vehicle] = {}
    fleet: list[Vehicle] = []
    for i in range(first, first + count):
        vin = vin_of(i)
        store = Store(Path(folder) / f"{vin}.db")
        uplink = MqttUplink(settings, store, vin, agent_version="fleet-bench")
        uplink.start(external_loop=True)
        fleet.append(Vehicle(vin, store, uplink))
    by_vin = {v.vin: k for k, v in enumerate(fleet)}
    rng = random.Random(index)
    waiting: set[Vehicle] = set(fleet)  # not connected: try at next_try
    # (next_try, vehicle index) of the waiting ones: a heap, not a scan of the fleet per loop
    timers: list[tuple[float, int]] = [(0.0, k) for k in range(len(fleet))]
    dirty: set[Vehicle] = set()
    connecting: dict[Vehicle, Any] = {}  # vehicle -> its reconnect() running on a thread
    connector = ThreadPoolExecutor(max_workers=CONNECT_THREADS)
    backlog_left: list[Vehicle] = []  # still to get their day of events (cmd "backlog")
    backlog_each = 0
    rate = 0.0  # events/s appended by this worker
    credit = 0.0
    hold = False  # uplinks not polled: a backlog builds up in the outboxes
    appended = 0
    last = time.monotonic()
    last_misc = last

    def draft(v: Vehicle) -> Any:
        data = {"pack_code": "0RJPEA00HAU0AAF131001955", "soh": 91.5, "soc": 63.0}
        return EventDraft(type="pack.health", vin=v.vin, time=utc_from_timestamp(time.time()),
                          data=data)  # fmt: skip

    def watch(v: Vehicle) -> None:
        """Keep the selector in step with the client's socket (closed on a loss)."""
        if v in connecting:  # the client is the connect thread's until it is done
            return
        sock = v.uplink.client.socket()
        fd = sock.fileno() if sock is not None else -1
        if fd != v.fd:
            if v.fd >= 0:
                with contextlib.suppress(KeyError, ValueError, OSError):
                    sel.unregister(v.fd)
                by_fd.pop(v.fd, None)
            v.fd = fd
            if fd >= 0:
                sel.register(fd, selectors.EVENT_READ, v)
                by_fd[fd] = v
        if fd < 0 and v not in waiting:  # lost: paho's back-off as the uplink set it
            client = v.uplink.client
            v.attempt, v.lost_at = 0, time.monotonic()
            v.next_try = v.lost_at + client._reconnect_min_delay
            waiting.add(v)
            heapq.heappush(timers, (v.next_try, by_vin[v.vin]))
        elif fd >= 0:
            want = selectors.EVENT_READ | (selectors.EVENT_WRITE if v.uplink.client.want_write()
                                           else 0)  # fmt: skip
            if sel.get_key(fd).events != want:
                sel.modify(fd, want, v)

    def stuck(v: Vehicle) -> dict[str, Any] | None:
        """What a vehicle with events still to send is doing (a stalled run says where)."""
        up, store, client = v.uplink, v.store, v.uplink.client
        if not store.pending_count() and not up._inflight:
            return None
        states: dict[int, int] = {}
        for m in client._out_messages.values():
            states[m.state] = states.get(m.state, 0) + 1
        return {
            "vin": v.vin, "connected": up.connected, "fd": v.fd, "waiting": v in waiting,
            "pending": store.pending_count(), "publishable": store.publishable_count(),
            "inflight": len(up._inflight), "hold_s": round(up._hold_until - time.monotonic(), 1),
            "rescan": up._rescan, "cursor": up._cursor, "ahead": len(up._ahead),
            "durable_upto": store.durable_upto, "acked_waiting": store.delivered_waiting,
            "last_error": up._last_error, "paho_state": str(client._state),
            "paho_out": len(client._out_messages), "paho_inflight": client._inflight_messages,
            "paho_states": states, "paho_out_packets": len(client._out_packet),
            "want_write": client.want_write(),
            "since_in_s": round(time.monotonic() - client._last_bytes_received, 1),
        }  # fmt: skip

    def try_connect(v: Vehicle) -> None:
        """paho's ``reconnect()`` blocks until the TCP connect is done (a second or more when
        a broker's accept queue overflows and a SYN is dropped): run it on a thread, so that
        one vehicle's connect does not stall the others, as in a real fleet."""
        connecting[v] = connector.submit(v.uplink.client.reconnect)

    def connected(v: Vehicle, failure: BaseException | None, now: float) -> None:
        if failure is not None:
            client = v.uplink.client
            v.attempt += 1  # paho's doubling, from the jittered first delay
            delay = min(client._reconnect_min_delay * 2**v.attempt, client._reconnect_max_delay)
            v.next_try = now + delay
            heapq.heappush(timers, (v.next_try, by_vin[v.vin]))
            return
        waiting.discard(v)
        watch(v)

    while True:
        now = time.monotonic()
        while not cmds.empty():
            cmd, arg = cmds.get()
            if cmd == "rate":
                rate, credit = float(arg), 0.0
            elif cmd == "hold":
                hold = bool(arg)
                if not hold:
                    dirty.update(fleet)
            elif cmd == "backlog":  # appended a few vehicles per turn of the loop, below
                backlog_left, backlog_each = list(fleet), int(arg)
            elif cmd == "mark":
                for v in fleet:
                    v.reconnected_at = None
            elif cmd == "report":
                out.put(("report", index, {
                    "connected": sum(1 for v in fleet if v.uplink.connected),
                    "pending": sum(v.store.pending_count() for v in fleet),
                    "appended": appended,
                    "reconnected_at": [v.reconnected_at for v in fleet
                                       if v.reconnected_at is not None],
                    "waiting": len(waiting),
                }))  # fmt: skip
            elif cmd == "diagnose":
                out.put(("diagnose", index, [d for v in fleet if (d := stuck(v))]))
            elif cmd == "stop":
                for v in fleet:
                    with contextlib.suppress(Exception):
                        v.uplink.client.disconnect()
                    v.store.close()
                out.put(("stopped", index, appended))
                return
        if backlog_left:
            # a slice per turn: appending 2,500 vehicles' day at once would stop this loop for
            # tens of seconds, and every vehicle's keepalive with it (a real vehicle's PINGREQ
            # does not wait for 2,499 others to write their outboxes)
            for v in backlog_left[-BACKLOG_SLICE:]:
                with v.store.transaction():
                    for _ in range(backlog_each):
                        v.store.append(draft(v))
                appended += backlog_each
            del backlog_left[-BACKLOG_SLICE:]
            if not backlog_left:
                out.put(("backlog", index, appended))
        if rate > 0:
            credit += rate * (now - last)
            while credit >= 1:
                credit -= 1
                v = fleet[rng.randrange(len(fleet))]
                v.store.append(draft(v))
                appended += 1
                dirty.add(v)
        last = now
        while timers and timers[0][0] <= now:
            _, k = heapq.heappop(timers)
            if fleet[k] in waiting and fleet[k] not in connecting:
                try_connect(fleet[k])
        for v, job in [(v, job) for v, job in connecting.items() if job.done()]:
            del connecting[v]
            connected(v, job.exception(), now)
        for key, mask in sel.select(timeout=0.005):
            v = key.data
            client = v.uplink.client
            if mask & selectors.EVENT_READ:
                client.loop_read()
            if mask & selectors.EVENT_WRITE:
                client.loop_write()
            dirty.add(v)
        if now - last_misc >= 1.0:
            last_misc = now
            for v in fleet:
                if v.fd >= 0:
                    v.uplink.client.loop_misc()
                    dirty.add(v)
        if not hold:
            for v in dirty:
                was = v.uplink.connected
                before = v.uplink.status()["reconnects"]
                v.uplink.poll(0)
                # connected now, or lost and back between two polls
                if v.uplink.connected and (not was or v.uplink.status()["reconnects"] != before):
                    v.reconnected_at = time.time()
                watch(v)
        else:
            for v in dirty:
                watch(v)
        dirty.clear()


class Fleet:
    """The worker processes, spoken to by command queues."""

    def __init__(
        self,
        n: int,
        host: str,
        port: int,
        folder: Path,
        require_subscriber: bool,
        retry_max_s: float = 30.0,
    ) -> None:
        ctx = mp.get_context("spawn")
        self.out = ctx.Queue()
        self.queues: list[Any] = []
        self.procs: list[Any] = []
        workers = max(1, math.ceil(n / VEHICLES_PER_WORKER))
        size = math.ceil(n / workers)
        for w in range(workers):
            first, count = w * size, min(size, n - w * size)
            q = ctx.Queue()
            p = ctx.Process(target=worker_main, daemon=True,
                            args=(w, first, count, host, port, str(folder), require_subscriber, q,
                                  self.out, retry_max_s))  # fmt: skip
            p.start()
            self.queues.append(q)
            self.procs.append(p)

    def tell(self, cmd: str, arg: Any = None) -> None:
        for q in self.queues:
            q.put((cmd, arg))

    def ask(self, cmd: str, arg: Any = None, timeout: float = 600.0) -> list[Any]:
        self.tell(cmd, arg)
        answers: list[Any] = []
        for _ in self.queues:
            answers.append(self.out.get(timeout=timeout)[2])
        return answers

    def report(self) -> dict[str, Any]:
        parts = self.ask("report")
        return {
            "connected": sum(p["connected"] for p in parts),
            "pending": sum(p["pending"] for p in parts),
            "appended": sum(p["appended"] for p in parts),
            "waiting": sum(p["waiting"] for p in parts),
            "reconnected_at": sorted(t for p in parts for t in p["reconnected_at"]),
        }

    def set_rate(self, total: float) -> None:
        self.tell("rate", total / len(self.queues))

    def stop(self) -> int:
        appended = sum(self.ask("stop", timeout=120))
        for p in self.procs:
            p.join(10)
        return appended


# -- the backend side --------------------------------------------------------------------


def start_listeners(
    n: int, port: int, url: str, batch: int, batch_ms: float, folder: Path, quiet: bool = True
) -> list[Any]:
    """The listeners; each one's stderr goes to a file (a pipe read only at the end would
    block a listener that writes more than the pipe holds)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    procs = []
    for i in range(n):
        err = open(folder / f"listener-{i}.err", "w+")  # noqa: SIM115 (closed in stop_listeners)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "pack_agent", "listen", "--broker", f"127.0.0.1:{port}",
             "--database", url, "--share", "fleet", "--client-id", f"fleet-listener-{i}",
             "--session-expiry", "3600", "--batch", str(batch), "--batch-ms", str(batch_ms),
             *(["--quiet"] if quiet else [])],
            env=env, stdout=subprocess.DEVNULL, stderr=err, text=True,
            # a shell's background job ignores SIGINT, and its children would too: SIGINT is
            # how they are stopped with a summary
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        ))  # fmt: skip
        procs[-1].err_file = err
    return procs


def stop_listeners(procs: list[Any]) -> list[dict[str, Any]]:
    summaries = []
    for p in procs:
        p.send_signal(signal.SIGINT)
    for p in procs:
        p.wait(timeout=60)
        p.err_file.seek(0)
        err = p.err_file.read()
        p.err_file.close()
        lines = [line for line in err.splitlines() if line.startswith("{")]
        summary = json.loads(lines[-1]) if lines else {"error": err[-500:]}
        summary.pop("statuses", None)
        summaries.append(summary)
    return summaries


def take_over(port: int, client_id: str) -> None:
    """Connect as ``client_id`` with its session kept, then leave: the broker closes that
    listener's connection ("already connected, closing old connection") and the listener
    reconnects to its session, as after a network cut or a load balancer's failover."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id, protocol=mqtt.MQTTv5)
    client.manual_ack_set(True)  # what the session sends it meanwhile stays unacknowledged
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    client.connect("127.0.0.1", port, clean_start=False, properties=props)
    client.loop_start()
    deadline = time.monotonic() + 10
    while not client.is_connected() and time.monotonic() < deadline:
        time.sleep(0.01)
    client.disconnect()
    client.loop_stop()


def count_rows(conn: Any) -> int:
    row = conn.execute("SELECT count(*) FROM events").fetchone()
    conn.commit()
    return int(row[0])


def latencies(conn: Any, since: float, until: float) -> dict[str, Any]:
    rows = conn.execute(
        "SELECT extract(epoch FROM received_at - time) * 1000 FROM events"
        " WHERE time >= to_timestamp(%s) AND time < to_timestamp(%s)",
        (since, until),
    ).fetchall()
    conn.commit()
    ms = sorted(float(r[0]) for r in rows)
    if not ms:
        return {"events": 0}
    return {
        "events": len(ms),
        "events_per_s": round(len(ms) / (until - since), 1),
        "p50_ms": round(ms[len(ms) // 2], 1),
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 1),
        "max_ms": round(ms[-1], 1),
    }


STALL_S = 60.0  # no progress for this long: say where the events are (once per wait; --stall-s)


def wait_for(
    what: str,
    check: Any,
    timeout: float,
    step: float = 0.5,
    progress: Any = None,
    on_stall: Any = None,
) -> float:
    """Seconds until ``check()`` is true (raises after ``timeout``). When ``progress()``
    has not changed for ``STALL_S``, ``on_stall(what)`` is called once."""
    started = time.monotonic()
    last, moved_at, told = None, started, False
    while not check():
        now = time.monotonic()
        if now - started > timeout:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        if progress is not None:
            value = progress()
            if value != last:
                last, moved_at = value, now
            elif not told and now - moved_at >= STALL_S and on_stall is not None:
                told = True
                on_stall(what)
        time.sleep(step)
    return time.monotonic() - started


# -- the baseline ----------------------------------------------------------------------


def raw_publish_rate(port: int, n: int, body: str) -> tuple[str, float]:
    """Messages/s of one raw publisher at QoS 1 into the same broker (unsubscribed topic)."""
    tool = shutil.which("mosquitto_pub")
    if tool:
        lines = (body + "\n") * n
        started = time.monotonic()
        subprocess.run([tool, "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-V", "5",
                        "-t", "bench/raw", "-l"], input=lines, text=True, check=True,
                       timeout=300)  # fmt: skip
        return "mosquitto_pub", n / (time.monotonic() - started)
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, "fleet-raw", protocol=mqtt.MQTTv5)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    started = time.monotonic()
    infos = [client.publish("bench/raw", body, qos=1) for _ in range(n)]
    for info in infos:
        info.wait_for_publish(60)
    took = time.monotonic() - started
    client.disconnect()
    client.loop_stop()
    return "raw paho", n / took


# -- the run ---------------------------------------------------------------------------


def main() -> int:
    global STALL_S
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vehicles", type=int, default=10_000)
    ap.add_argument("--listeners", type=int, default=2, choices=[1, 2, 3, 4])
    # 500/s at 10,000 vehicles is what the 2-core build machine sustains (docs/scaling.md)
    ap.add_argument("--rate", type=float, default=500.0, help="fleet events/s, steady phase")
    ap.add_argument("--steady-s", type=float, default=20.0)
    ap.add_argument("--storm", choices=["term", "kill", "none"], default="term")
    ap.add_argument("--outage-s", type=float, default=3.0)
    ap.add_argument("--backlog", type=int, default=24, help="events per vehicle (a day, hourly)")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--batch-ms", type=float, default=50.0)
    ap.add_argument("--raw", type=int, default=20_000, help="messages for the baseline")
    ap.add_argument("--timeout", type=float, default=900.0, help="for each wait")
    ap.add_argument(
        "--retry-max-s",
        type=float,
        default=30.0,
        help="each vehicle's longest reconnect and refusal back-off (mqtt.reconnect_max_s): "
        "after the storm, vehicles that published before the listeners subscribed again "
        "wait up to this long (the suite's small run: 3)",
    )
    ap.add_argument(
        "--no-require-subscriber",
        action="store_true",
        help="vehicles with mqtt.require_subscriber off (shows what it saves)",
    )
    ap.add_argument(
        "--takeovers",
        type=int,
        default=0,
        help="during the backlog, take listener 0's session over this many times",
    )
    ap.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="copy the broker's log and the listeners' reports (not quiet) here",
    )
    ap.add_argument("--stall-s", type=float, default=STALL_S,
                    help="no progress for this long: print where the events are")  # fmt: skip
    args = ap.parse_args()

    STALL_S = args.stall_s
    import psycopg

    from pack_agent.dev.broker import LocalBroker
    from pack_agent.dev.postgres import LocalPostgres

    nofile = raise_open_files()
    # stopped from outside (timeout, kill): clean up (the finally below) all the same
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    n = args.vehicles
    folder = Path(tempfile.mkdtemp(prefix="pack-agent-fleet-"))
    persist = folder / "mosquitto"
    persist.mkdir()
    conf = "\n".join([
        "max_connections -1",
        "max_queued_messages 0",  # the listeners' sessions queue whatever they have not taken
        "max_inflight_messages 1000",
        "persistence true",  # saved on SIGTERM: the listeners' sessions survive a restart
        f"persistence_location {persist}/",
    ])  # fmt: skip
    result: dict[str, Any] = {"vehicles": n, "listeners": args.listeners, "open_files": nofile,
                              "require_subscriber": not args.no_require_subscriber}  # fmt: skip
    pg = LocalPostgres()
    broker = LocalBroker(extra_conf=conf, start_timeout=30)
    fleet: Fleet | None = None
    listeners: list[Any] = []
    try:
        pg.start()
        broker.start()
        conn = psycopg.connect(pg.url, autocommit=False)
        listeners = start_listeners(args.listeners, broker.port, pg.url, args.batch, args.batch_ms,
                                    folder, quiet=args.keep is None)  # fmt: skip

        def on_stall(what: str) -> None:
            """Where the events are, when nothing moved for STALL_S (printed to stderr)."""
            say = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
            say(f"STALL in {what!r}: nothing moved for {STALL_S:g} s; diagnosis:")
            stuck = [d for part in fleet.ask("diagnose") for d in part] if fleet else []
            say(f"  vehicles with events left: {len(stuck)}")
            for key in ("connected", "waiting", "rescan", "want_write", "paho_state"):
                counts: dict[str, int] = {}
                for d in stuck:
                    counts[str(d[key])] = counts.get(str(d[key]), 0) + 1
                say(f"  by {key}: {counts}")
            for key in ("pending", "publishable", "inflight", "paho_out", "hold_s", "since_in_s"):
                vals = sorted(d[key] for d in stuck)
                if vals:
                    say(f"  {key}: min {vals[0]} median {vals[len(vals) // 2]} max {vals[-1]}")
            for d in stuck[:8]:
                say(f"  {d}")
            gaps = conn.execute("SELECT vin, first, last FROM seq_gaps WHERE closed_at IS NULL"
                                " ORDER BY opened_at LIMIT 8").fetchall()  # fmt: skip
            total = conn.execute("SELECT count(*), count(DISTINCT vin) FROM seq_gaps"
                                 " WHERE closed_at IS NULL").fetchone()  # fmt: skip
            conn.commit()
            say(f"  open gaps: {total[0]} over {total[1]} vehicles; first: {gaps}")
            for i, p in enumerate(listeners):
                say(f"  listener {i}: {'running' if p.poll() is None else p.returncode}")
                here = str(Path(sys.executable).parent)  # py-spy in the venv, if installed
                spy = shutil.which("py-spy") or shutil.which("py-spy", path=here)
                if spy and p.poll() is None:
                    dump = subprocess.run([spy, "dump", "--pid", str(p.pid)], text=True,
                                          capture_output=True, timeout=60)  # fmt: skip
                    say(dump.stdout[-3000:] or dump.stderr[-500:])
            say("  broker log, last lines:\n" + broker.log_tail(40))
            keep = Path(tempfile.gettempdir()) / f"fleet-stall-{os.getpid()}"
            keep.mkdir(exist_ok=True)
            with contextlib.suppress(OSError):
                shutil.copy(broker.log_path, keep / "mosquitto.log")
                for f in folder.glob("listener-*.err"):
                    shutil.copy(f, keep / f.name)
            say(f"  broker log and listeners' stderr copied to {keep}")

        wait_for("schema", lambda: _has_events_table(conn), 60, 0.2)
        time.sleep(1.0)  # the listeners subscribe

        # 1. connect
        fleet = Fleet(n, broker.host, broker.port, folder, not args.no_require_subscriber,
                      args.retry_max_s)  # fmt: skip
        took = wait_for("fleet connected", lambda: fleet.report()["connected"] == n,
                        args.timeout, 0.5)  # fmt: skip
        at = fleet.report()["reconnected_at"]  # each vehicle's first CONNACK
        spread = max(at[-1] - at[0], 1e-3)
        result["connect"] = {"seconds_with_store_setup": round(took, 1),
                             "first_to_last_connack_s": round(spread, 1),
                             "connects_per_s": round(n / spread, 1)}  # fmt: skip
        print(f"connect: {n} vehicles, {took:.1f} s with their stores' creation; "
              f"first to last CONNACK {spread:.1f} s", flush=True)  # fmt: skip

        # 2. steady
        fleet.set_rate(args.rate)
        t0 = time.time()
        time.sleep(args.steady_s)
        t1 = time.time()
        fleet.set_rate(0)
        pending = lambda: fleet.report()["pending"]  # noqa: E731
        wait_for("steady drained", lambda: pending() == 0, args.timeout, 0.5, pending, on_stall)
        time.sleep(args.batch_ms / 1000 + 0.5)
        steady = latencies(conn, t0, t1)
        steady["offered_per_s"] = args.rate
        result["steady"] = steady
        print(f"steady: {steady}", flush=True)

        # 3. storm
        if args.storm != "none":
            fleet.set_rate(args.rate)
            time.sleep(2.0)
            fleet.tell("mark")
            if args.storm == "kill":
                broker.kill()
            else:
                broker.stop()
            down_at = time.time()
            time.sleep(args.outage_s)
            broker.start()
            up_at = time.time()
            took = wait_for("fleet back", lambda: fleet.report()["connected"] == n,
                            args.timeout, 0.2)  # fmt: skip
            fleet.set_rate(0)
            back = [t - up_at for t in fleet.report()["reconnected_at"]]
            per_s: dict[int, int] = {}
            for t in back:
                per_s[int(t)] = per_s.get(int(t), 0) + 1
            pct = statistics.quantiles(back, n=10) if len(back) > 1 else back * 9
            result["storm"] = {
                "how": args.storm,
                "outage_s": round(up_at - down_at, 2),
                "back_after_s": round(took, 1),
                "reconnected": len(back),
                "reconnect_s_p10": round(pct[0], 2),
                "reconnect_s_p50": round(pct[4], 2),
                "reconnect_s_p90": round(pct[8], 2),
                "reconnect_s_max": round(max(back, default=0), 2),
                "connects_per_s_peak": max(per_s.values(), default=0),
                "connects_per_s_mean": round(len(back) / max(max(back, default=1), 1e-3), 1),
                "connects_by_second": [per_s.get(s, 0) for s in range(int(max(back, default=0)) + 1)],  # noqa: E501
            }  # fmt: skip
            print(f"storm: {result['storm']}", flush=True)
            wait_for("storm drained", lambda: pending() == 0, args.timeout, 0.5, pending, on_stall)

        # 4. backlog
        if args.backlog > 0:
            fleet.tell("hold", True)
            time.sleep(0.5)
            before = count_rows(conn)
            fleet.ask("backlog", args.backlog)
            total = n * args.backlog
            fleet.tell("hold", False)
            if args.takeovers:
                time.sleep(2.0)
                for _ in range(args.takeovers):
                    take_over(broker.port, "fleet-listener-0")
                    time.sleep(3.0)
            rows = lambda: count_rows(conn)  # noqa: E731
            took = wait_for("backlog stored", lambda: rows() >= before + total, args.timeout, 0.2,
                            rows, on_stall)  # fmt: skip
            result["backlog"] = {"events": total, "seconds": round(took, 1),
                                 "events_per_s": round(total / took, 1)}  # fmt: skip
            print(f"backlog: {result['backlog']}", flush=True)

        # the end: every outbox empty, every listener done
        wait_for("outboxes empty", lambda: pending() == 0, args.timeout, 0.5, pending, on_stall)
        appended = fleet.stop()
        fleet = None
        time.sleep(1.0 + args.batch_ms / 1000)
        result["listener_summaries"] = stop_listeners(listeners)
        listeners = []
        rows = conn.execute(
            "SELECT count(*), count(DISTINCT event_id), count(DISTINCT (vin, seq)) FROM events"
        ).fetchone()
        gaps = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE closed_at IS NULL) FROM seq_gaps"
        ).fetchone()
        behind = conn.execute("SELECT count(*) FROM vehicles WHERE contiguous < highest").fetchone()
        result.update({
            "events": appended,
            "stored": rows[0],
            "lost": appended - rows[1],
            "duplicate_rows": rows[0] - rows[2],
            "redelivered": sum(s.get("duplicates", 0) for s in result["listener_summaries"]),
            "seq_gaps_seen": gaps[0],
            "seq_gaps_open": gaps[1],
            "vehicles_with_holes": behind[0],
        })  # fmt: skip
        conn.close()
        tool, raw = raw_publish_rate(broker.port, args.raw, json.dumps({"x": "y" * 300}))
        result["events_per_s"] = result["steady"].get("events_per_s", 0)
        result["p99_ms"] = result["steady"].get("p99_ms")
        result["raw_tool"] = tool
        result["raw_per_s"] = round(raw, 1)
        drain = result.get("backlog", {}).get("events_per_s", 0)
        result["drain_vs_raw"] = round(drain / raw, 3)
        result["steady_vs_raw"] = round(result["events_per_s"] / raw, 3)
        print(f"baseline: {tool} {raw:,.0f} msg/s; backlog drain {drain:,.0f} events/s "
              f"(ratio {result['drain_vs_raw']}); steady {result['events_per_s']:,.0f} events/s "
              f"offered {args.rate:g} (ratio {result['steady_vs_raw']})")  # fmt: skip
        print(
            f"lost {result['lost']}, duplicate rows {result['duplicate_rows']}, "
            f"seq gaps open {result['seq_gaps_open']} (seen {result['seq_gaps_seen']})"
        )
    finally:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                shutil.copy(broker.log_path, args.keep / "mosquitto.log")
            for f in folder.glob("listener-*.err"):
                with contextlib.suppress(OSError):
                    shutil.copy(f, args.keep / f.name)
        if fleet is not None:
            for p in fleet.procs:
                p.kill()
        for p in listeners:
            p.kill()
            p.wait()
        broker.close()
        pg.close()
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(result))
    return 0 if result.get("lost") == 0 and result.get("duplicate_rows") == 0 else 1


def _has_events_table(conn: Any) -> bool:
    row = conn.execute("SELECT to_regclass('public.events') IS NOT NULL").fetchone()
    conn.commit()
    return bool(row[0])


if __name__ == "__main__":
    sys.exit(main())
