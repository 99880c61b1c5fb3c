"""Backend benchmark: rows/s of the database stage, events/s of one `pack-agent listen`.

    PYTHONPATH=src python bench/backend.py [--events 20000] [--vehicles 1000] [--profile]

bench/fleet.py measures the whole path at once; this one isolates the two backend stages
(docs/scaling.md, "Where the limits are"), each against a baseline in the same run,
on one private PostgreSQL (dev/postgres.py, fsync off) and one private mosquitto:

1. database: ``PostgresSink`` fed in-process with valid events (real ``Event`` models,
   ``--vehicles`` x seq, about 400 bytes of ``pack.health`` each), for each ``--batches``
   size, in fleet order (seq 1 of every vehicle, then seq 2, ...: every batch touches
   many vehicles, no gap) and shuffled (gaps open and close all the time). Baselines:
   the same rows, the same batches, into a plain table of the same shape (primary key,
   ``(vin, seq)`` index) by a bare multi-row ``INSERT`` (no ``ON CONFLICT``, no
   ``RETURNING``, no gap bookkeeping; binary parameters as the sink's, and once more with
   text parameters, whose array quoting psycopg does in Python), and by ``COPY``.
   rows/s and the ratios.
2. listener: N valid event messages are queued by the broker for a persistent session
   in a shared subscription (mosquitto 2.0 queues for an offline member of a share group
   and deals the messages out round robin to the group's members; it forgets shared
   subscriptions only when the broker restarts, which this phase does not do): the
   listeners are started once to subscribe, stopped, the events published at QoS 1,
   then the same listeners started again and timed until every event is committed.
   With 1, 2 and 4 ``listen --database`` processes in one share group, one ``listen``
   printing to /dev/null (validation and paho without a database), and the baseline: a
   raw paho subscriber draining the same kind of queue (messages/s). Each process's CPU
   seconds (the listeners', mosquitto's, PostgreSQL's) are read from /proc, so that
   the share of each is known even on a loaded machine.
3. ``--profile``: one ``listen --database`` drains the queue under cProfile (the main
   thread: validation, batching, the database; paho's network thread is not in it);
   the functions that dominate are printed.

Ratios and CPU seconds per 1000 events are what carry over to another machine. The
last line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pstats
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from pack_agent.core.events import Event, EventDraft, topic_for, utc_from_timestamp
from pack_agent.dev.broker import LocalBroker
from pack_agent.dev.postgres import LocalPostgres

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "pack-agent/v1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def vin_of(i: int) -> str:
    return f"LBACKEND{i:09d}"


def make_events(vehicles: int, per_vehicle: int) -> list[Event]:
    """Fleet order: seq 1 of every vehicle, then seq 2, ... (what a fleet sends)."""
    out = []
    for seq in range(1, per_vehicle + 1):
        for v in range(vehicles):
            data = {
                "pack_code": "0RJPEA00HAU0AAF131001955",
                "metrics": {
                    "soh": {"value": 91.5 - seq * 1e-3, "age_s": 0.4},
                    "soc": {"value": 63.0, "age_s": 0.1},
                    "pack_voltage": {"value": 371.2, "age_s": 0.1},
                    "full_cycles": {"value": 412 + seq, "age_s": 2.0},
                },
            }
            draft = EventDraft(
                type="pack.health",
                vin=vin_of(v),
                time=utc_from_timestamp(1_780_000_000 + seq * 3600),
                data=data,
            )
            out.append(Event.from_draft(draft, seq))
    return out


def reset(url: str) -> None:
    """An empty database: no tables (the sink creates its schema)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


def count_rows(conn: Any, table: str = "events") -> int:
    try:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    except Exception:  # not created yet
        conn.rollback()
        return 0
    conn.commit()
    return int(row[0])


# -- 1. the database stage -------------------------------------------------------------


def sink_run(url: str, items: list[tuple[Event, str]], batch: int) -> dict[str, Any]:
    """rows/s of ``PostgresSink`` alone: add every event, flush, check the result."""
    import psycopg

    from pack_agent.api.sinks import PostgresSink

    reset(url)
    sink = PostgresSink(url, batch=batch, batch_ms=1e12)  # commits by count only
    new = opened = closed = 0
    t0 = time.perf_counter()
    for event, raw in items:
        done = sink.add(event, raw, 0.0)
        if done is not None:
            new, opened, closed = (
                new + done.new,
                opened + len(done.opened),
                closed + len(done.closed),
            )
    done = sink.flush()
    took = time.perf_counter() - t0
    new, opened, closed = new + done.new, opened + len(done.opened), closed + len(done.closed)
    commits = sink.commits
    sink.close()
    with psycopg.connect(url) as conn:
        stored, open_gaps = conn.execute(
            "SELECT (SELECT count(*) FROM events),"
            " (SELECT count(*) FROM seq_gaps WHERE closed_at IS NULL)"
        ).fetchone()
    if stored != len(items) or new != len(items) or open_gaps:
        raise RuntimeError(f"sink: stored {stored}, new {new}, gaps open {open_gaps}")
    return {
        "rows_per_s": round(len(items) / took),
        "seconds": round(took, 3),
        "commits": commits,
        "gaps_opened": opened,
        "gaps_closed": closed,
    }


_PLAIN = (
    "CREATE TABLE plain (event_id text PRIMARY KEY, vin text NOT NULL, seq bigint NOT NULL,"
    " type text NOT NULL, time timestamptz NOT NULL, body jsonb NOT NULL,"
    " received_at timestamptz NOT NULL DEFAULT clock_timestamp());"
    " CREATE INDEX plain_vin_seq ON plain (vin, seq)"
)


def baseline_run(url: str, items: list[tuple[Event, str]], batch: int, how: str) -> int:
    """rows/s of the same rows, same batches, into a plain table of the same shape."""
    import psycopg

    reset(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_PLAIN)
    conn = psycopg.connect(url, autocommit=False)
    t0 = time.perf_counter()
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        rows = [(e.event_id, e.vin, e.seq, e.type, e.time, raw) for e, raw in chunk]
        if how in ("insert", "insert_text"):
            cols = [list(c) for c in zip(*rows, strict=True)]
            p = "%b" if how == "insert" else "%s"  # binary parameters, or text ones
            conn.execute(
                "INSERT INTO plain (event_id, vin, seq, type, time, body) SELECT * FROM"
                f" unnest({p}::text[], {p}::text[], {p}::bigint[], {p}::text[],"
                f" {p}::timestamptz[], {p}::jsonb[])",
                cols,
            )
        else:
            with conn.cursor().copy(
                "COPY plain (event_id, vin, seq, type, time, body) FROM STDIN"
            ) as copy:
                for row in rows:
                    copy.write_row(row)
        conn.commit()
    took = time.perf_counter() - t0
    stored = count_rows(conn, "plain")
    conn.close()
    if stored != len(items):
        raise RuntimeError(f"baseline {how}: {stored} rows of {len(items)}")
    return round(len(items) / took)


def database_phase(url: str, events: list[Event], batches: list[int], rounds: int) -> dict:
    items = [(e, e.to_json()) for e in events]
    shuffled = items[:]
    random.Random(1).shuffle(shuffled)
    out: dict[str, Any] = {"events": len(items)}
    for batch in batches:
        runs: dict[str, list[Any]] = {
            "insert": [],
            "insert_text": [],
            "copy": [],
            "in_order": [],
            "shuffled": [],
        }
        for _ in range(rounds):  # interleaved: each sees the same machine, round by round
            for how in ("insert", "insert_text", "copy"):
                runs[how].append(baseline_run(url, items, batch, how))
            runs["in_order"].append(sink_run(url, items, batch))
            runs["shuffled"].append(sink_run(url, shuffled, batch))
        insert = statistics.median(runs["insert"])
        copy = statistics.median(runs["copy"])
        text = statistics.median(runs["insert_text"])
        row: dict[str, Any] = {
            "insert_rows_per_s": round(insert),
            "copy_rows_per_s": round(copy),
            "insert_text_params_rows_per_s": round(text),
        }
        for order in ("in_order", "shuffled"):
            best = sorted(runs[order], key=lambda r: r["rows_per_s"])[len(runs[order]) // 2]
            row[order] = {
                **best,
                "vs_insert": round(best["rows_per_s"] / insert, 3),
                "vs_copy": round(best["rows_per_s"] / copy, 3),
            }
        out[f"batch_{batch}"] = row
        print(
            f"database, batch {batch}: bare INSERT {insert:,.0f} rows/s (text parameters "
            f"{text:,.0f}), COPY {copy:,.0f}; "
            f"PostgresSink in order {row['in_order']['rows_per_s']:,} "
            f"({row['in_order']['vs_insert']:.2f} x INSERT), "
            f"shuffled {row['shuffled']['rows_per_s']:,} ({row['shuffled']['vs_insert']:.2f} x, "
            f"{row['shuffled']['gaps_opened']} gaps opened and closed)",
            flush=True,
        )
    return out


# -- 2. one listener ------------------------------------------------------------------


def cpu_seconds(pids: list[int]) -> float:
    """user + system CPU seconds of these processes so far (0 for a gone one)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def postgres_pids(pg: LocalPostgres, but: int = 0) -> list[int]:
    """The postmaster and its children (the listeners' backends among them), except the
    backend ``but`` (this benchmark's own, counting rows)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        master = int((pg.data / "postmaster.pid").read_text().split()[0])
        kids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                    if parent == master and int(entry.name) != but:
                        kids.append(int(entry.name))
        return [master, *kids]
    return []


def publish(port: int, payloads: list[tuple[str, str]]) -> float:
    """Publish at QoS 1, wait for every PUBACK; seconds taken."""
    acked = 0

    def on_publish(*_: Any) -> None:
        nonlocal acked
        acked += 1

    client = mqtt.Client(CallbackAPIVersion.VERSION2, "bench-backend-pub", protocol=mqtt.MQTTv5)
    client.max_queued_messages_set(0)
    client.max_inflight_messages_set(100)
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    t0 = time.perf_counter()
    infos = []
    for i, (topic, body) in enumerate(payloads):
        while i - acked > 30_000:  # paho numbers messages 1..65535: keep fewer queued
            time.sleep(0.01)
        infos.append(client.publish(topic, body, qos=1))
    for info in infos:
        info.wait_for_publish(120)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"publish: {mqtt.error_string(info.rc)}")
    took = time.perf_counter() - t0
    client.disconnect()
    client.loop_stop()
    return took


def listen_cmd(port: int, url: str | None, client_id: str, group: str, args: Any) -> list[str]:
    cmd = [
        "-m",
        "pack_agent",
        "listen",
        "--broker",
        f"127.0.0.1:{port}",
        "--share",
        group,
        "--client-id",
        client_id,
        "--session-expiry",
        "3600",
    ]
    if url:
        cmd += ["--database", url, "--batch", str(args.batch), "--batch-ms", str(args.batch_ms)]
    return cmd


class Listeners:
    """k `pack-agent listen` processes; stderr and stdout in files."""

    def __init__(self, cmds: list[list[str]], folder: Path, tag: str) -> None:
        self.cmds, self.folder, self.tag = cmds, folder, tag
        self.procs: list[subprocess.Popen[bytes]] = []
        self.round = 0

    def start(self, prefix: list[str] | None = None) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        self.round += 1
        self.procs = []
        for i, cmd in enumerate(self.cmds):
            base = self.folder / f"{self.tag}-{i}-{self.round}"
            with open(f"{base}.out", "wb") as out, open(f"{base}.err", "wb") as err:
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, *(prefix or []), *cmd],
                        env=env,
                        stdout=out,
                        stderr=err,
                        stdin=subprocess.DEVNULL,
                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                    )
                )

    def files(self, ext: str) -> list[Path]:
        return [self.folder / f"{self.tag}-{i}-{self.round}.{ext}" for i in range(len(self.cmds))]

    def wait_subscribed(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not all("subscribed to" in f.read_text(errors="replace") for f in self.files("err")):
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"listen exited: {self.files('err')[0].read_text()[-800:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("listen did not subscribe")
            time.sleep(0.05)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> list[dict[str, Any]]:
        for p in self.procs:
            p.send_signal(signal.SIGINT)
        summaries = []
        for p, f in zip(self.procs, self.files("err"), strict=True):
            p.wait(120)
            lines = [x for x in f.read_text(errors="replace").splitlines() if x.startswith("{")]
            summaries.append(json.loads(lines[-1]) if lines else {"error": f.read_text()[-800:]})
        return summaries


def drain_watch(count: Callable[[], int], n: int, timeout: float) -> tuple[float, float, int]:
    """Poll ``count()`` every 50 ms until it reaches ``n``: (time of the first nonzero
    count, time of the last, the count first seen); the rate is (n - that count) / (last -
    first). Counting rows is a scan: its backend is left out of PostgreSQL's CPU seconds."""
    deadline = time.monotonic() + timeout
    first_t, first_n = 0.0, 0
    while True:
        c = count()
        now = time.perf_counter()
        if c and not first_n:
            first_t, first_n = now, c
        if c >= n:
            return first_t, now, first_n
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {c} of {n} within {timeout:g} s")
        time.sleep(0.05)


def lines_in(files: list[Path], seen: dict[Path, tuple[int, int]]) -> int:
    """Newlines in the files so far (read incrementally)."""
    total = 0
    for f in files:
        offset, lines = seen.get(f, (0, 0))
        with contextlib.suppress(OSError), f.open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
            offset += len(data)
            lines += data.count(b"\n")
        seen[f] = (offset, lines)
        total += lines
    return total


def listener_run(
    broker: LocalBroker,
    pg: LocalPostgres,
    payloads: list[tuple[str, str]],
    k: int,
    database: bool,
    folder: Path,
    args: Any,
    tag: str,
) -> dict[str, Any]:
    """k listeners in one share group drain a queue of len(payloads) events."""
    import psycopg

    n = len(payloads)
    url = pg.url if database else None
    if database:
        reset(pg.url)
    cmds = [listen_cmd(broker.port, url, f"{tag}-{i}", tag, args) for i in range(k)]
    group = Listeners(cmds, folder, tag)
    group.start()  # 1. the sessions and their shared subscription
    group.wait_subscribed()
    startup_cpu = cpu_seconds(group.pids())  # interpreter, imports, connect: not the drain
    group.stop()
    publish_s = publish(broker.port, payloads)  # 2. queued by the broker for them
    conn = psycopg.connect(pg.url, autocommit=False)
    seen: dict[Path, tuple[int, int]] = {}
    counter = (
        (lambda: count_rows(conn)) if database else (lambda: lines_in(group.files("out"), seen))
    )
    broker_pid = broker._procs[0].pid
    pg_pids = postgres_pids(pg, conn.info.backend_pid)
    cpu0 = (cpu_seconds([broker_pid]), cpu_seconds(pg_pids))
    started = time.perf_counter()
    group.start()  # 3. the same sessions again: the queue drains into them
    pids = group.pids()
    first_t, last_t, first_n = drain_watch(counter, n, args.timeout)
    cpu_listeners = max(cpu_seconds(pids) - startup_cpu, 0.0)
    pg_pids = postgres_pids(pg, conn.info.backend_pid)  # the listeners' backends are new
    cpu1 = (cpu_seconds([broker_pid]), cpu_seconds(pg_pids))
    summaries = group.stop()
    result: dict[str, Any] = {
        "listeners": k,
        "events": n,
        "events_per_s": round((n - first_n) / max(last_t - first_t, 1e-6)),
        "seconds_with_startup": round(last_t - started, 2),
        "publish_s": round(publish_s, 2),
        "cpu_s": {
            "listeners": round(cpu_listeners, 2),
            "mosquitto": round(cpu1[0] - cpu0[0], 2),
            "postgres": round(cpu1[1] - cpu0[1], 2) if database else 0.0,
        },
        "per_listener": [s.get("unique", 0) for s in summaries],
    }
    result["cpu_ms_per_event"] = {k2: round(v * 1000 / n, 3) for k2, v in result["cpu_s"].items()}
    if database:
        stored, distinct, open_gaps = conn.execute(
            "SELECT count(*), count(DISTINCT (vin, seq)),"
            " (SELECT count(*) FROM seq_gaps WHERE closed_at IS NULL) FROM events"
        ).fetchone()
        # rows inserted by one transaction share its xmin: the number of commits
        commits = conn.execute("SELECT count(DISTINCT xmin::text) FROM events").fetchone()
        conn.commit()
        if stored != n or distinct != n or open_gaps or sum(result["per_listener"]) != n:
            raise RuntimeError(
                f"listeners: stored {stored}, distinct {distinct}, gaps open "
                f"{open_gaps}, summaries {summaries}"
            )
        result["gaps_seen"] = conn.execute("SELECT count(*) FROM seq_gaps").fetchone()[0]
        result["rows_per_commit"] = round(n / max(commits[0], 1), 1) if commits else None
        conn.commit()
    conn.close()
    return result


def raw_run(broker: LocalBroker, payloads: list[tuple[str, str]], tag: str) -> dict[str, Any]:
    """Baseline: a raw paho subscriber (auto acknowledgement, no validation) drains the
    same kind of queue: connect, subscribe, go away, the events are published, come back."""
    n = len(payloads)
    times: list[float] = []
    subscribed = threading.Event()

    def client() -> mqtt.Client:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, tag, protocol=mqtt.MQTTv5)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        c.on_subscribe = lambda *_: subscribed.set()
        c.on_message = lambda *_: times.append(time.perf_counter())
        c.connect("127.0.0.1", broker.port, clean_start=False, properties=props)
        return c

    c = client()
    c.on_connect = lambda cl, *_: cl.subscribe(f"$share/{tag}/{PREFIX}/+/events/#", 1)
    c.loop_start()
    if not subscribed.wait(30):
        raise RuntimeError("raw subscriber: no SUBACK")
    c.disconnect()
    c.loop_stop()
    publish_s = publish(broker.port, payloads)
    cpu0 = cpu_seconds([os.getpid()])
    c = client()
    c.loop_start()
    deadline = time.monotonic() + 600
    while len(times) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    cpu = cpu_seconds([os.getpid()]) - cpu0
    c.disconnect()
    c.loop_stop()
    if len(times) < n:
        raise RuntimeError(f"raw subscriber: {len(times)} of {n}")
    took = times[-1] - times[0]
    return {
        "events": n,
        "events_per_s": round((n - 1) / max(took, 1e-6)),
        "publish_s": round(publish_s, 2),
        "cpu_ms_per_event": round(cpu * 1000 / n, 3),
    }


def payloads_of(events: list[Event]) -> list[tuple[str, str]]:
    return [(topic_for(PREFIX, e.vin, e.type), e.to_json()) for e in events]


def forget_sessions(port: int, client_ids: list[str]) -> None:
    """End these persistent sessions (a clean start with no expiry), so that their shared
    subscriptions stop queueing copies of the next runs' events."""
    for client_id in client_ids:
        done = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id, protocol=mqtt.MQTTv5)
        c.on_connect = lambda *_, d=done: d.set()
        c.connect("127.0.0.1", port, clean_start=True)
        c.loop_start()
        done.wait(10)
        c.disconnect()
        c.loop_stop()


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median rate, and every round's rate and ratios beside it."""
    best = dict(sorted(runs, key=lambda r: r["events_per_s"])[len(runs) // 2])
    if len(runs) > 1:
        best["rounds_events_per_s"] = [r["events_per_s"] for r in runs]
        for key in ("vs_raw", "vs_print"):
            if key in best:
                ratios = [r[key] for r in runs]
                best[key] = round(statistics.median(ratios), 3)
                best[f"rounds_{key}"] = ratios
    return best


def listener_phase(
    broker: LocalBroker, pg: LocalPostgres, events: list[Event], folder: Path, args: Any
) -> dict[str, Any]:
    """Each round: raw paho, one printing listener, then 1, 2, 4 listen --database; the
    ratios are taken within a round (the same machine state), the medians reported."""
    payloads = payloads_of(events)
    sizes = [int(x) for x in args.listeners.split(",")]
    runs: dict[str, list[dict[str, Any]]] = {"raw": [], "print": [], **{str(k): [] for k in sizes}}
    for r in range(args.rounds):
        raw = raw_run(broker, payloads, f"r{r}-raw")
        forget_sessions(broker.port, [f"r{r}-raw"])
        runs["raw"].append(raw)
        print(
            f"listener, round {r + 1}: raw paho subscriber {raw['events_per_s']:,} msg/s",
            flush=True,
        )
        plain = listener_run(broker, pg, payloads, 1, False, folder, args, f"r{r}-print")
        forget_sessions(broker.port, [f"r{r}-print-0"])
        plain["vs_raw"] = round(plain["events_per_s"] / raw["events_per_s"], 3)
        runs["print"].append(plain)
        print(
            f"listener, round {r + 1}: 1 listen printing to a file {plain['events_per_s']:,} "
            f"events/s ({plain['vs_raw']:.2f} x raw), CPU ms/event {plain['cpu_ms_per_event']}",
            flush=True,
        )
        for k in sizes:
            tag = f"r{r}-db{k}"
            run = listener_run(broker, pg, payloads, k, True, folder, args, tag)
            forget_sessions(broker.port, [f"{tag}-{i}" for i in range(k)])
            run["vs_raw"] = round(run["events_per_s"] / raw["events_per_s"], 3)
            run["vs_print"] = round(run["events_per_s"] / plain["events_per_s"], 3)
            runs[str(k)].append(run)
            print(
                f"listener, round {r + 1}: {k} listen --database {run['events_per_s']:,} events/s "
                f"({run['vs_raw']:.2f} x raw, {run['vs_print']:.2f} x printing), "
                f"{run['rows_per_commit']} rows per commit, "
                f"CPU ms/event {run['cpu_ms_per_event']}, split {run['per_listener']}",
                flush=True,
            )
    out: dict[str, Any] = {
        "batch": args.batch,
        "batch_ms": args.batch_ms,
        "broker_inflight": args.broker_inflight,
        "raw_paho": median_run(runs["raw"]),
        "listen_print": median_run(runs["print"]),
    }
    for k in sizes:
        out[f"database_{k}"] = median_run(runs[str(k)])
    summary = ", ".join(
        f"{k}: {out[f'database_{k}']['events_per_s']:,} ({out[f'database_{k}']['vs_raw']:.2f})"
        for k in sizes
    )
    print(
        f"listener (medians): raw paho {out['raw_paho']['events_per_s']:,} msg/s; printing "
        f"{out['listen_print']['events_per_s']:,} ({out['listen_print']['vs_raw']:.2f} x raw); "
        f"listen --database by listeners: {summary} events/s (x raw)",
        flush=True,
    )
    return out


# -- 3. the profile ---------------------------------------------------------------------


def profile_run(
    broker: LocalBroker, pg: LocalPostgres, payloads: list[tuple[str, str]], folder: Path, args: Any
) -> list[dict[str, Any]]:
    """One `listen --database` under cProfile drains the queue; the top functions."""
    n = len(payloads)
    reset(pg.url)
    tag = "profile"
    cmd = listen_cmd(broker.port, pg.url, tag, tag, args)
    group = Listeners([cmd], folder, tag)
    group.start()
    group.wait_subscribed()
    group.stop()
    publish(broker.port, payloads)
    out = folder / "listen.prof"
    group.cmds = [[*cmd, "--count", str(n), "--quiet"]]
    group.start(["-m", "cProfile", "-o", str(out)])
    group.procs[0].wait(args.timeout)
    stats = pstats.Stats(str(out), stream=io.StringIO())
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for (file, line, name), (_cc, calls, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{Path(file).parent.name}/{Path(file).name}:{line}({name})" if line else name
        rows.append(
            {
                "function": where,
                "calls": calls,
                "tottime_s": round(tt, 3),
                "cumtime_s": round(ct, 3),
            }
        )
    rows.sort(key=lambda r: -r["tottime_s"])
    top = rows[: args.profile_top]
    print(f"profile: one listener, {n} events, {total:.2f} s on its main thread; by own time:")
    for r in top:
        print(
            f"  {r['tottime_s']:7.3f} s own {r['cumtime_s']:7.3f} s cum {r['calls']:>9,}  "
            f"{r['function']}"
        )
    cum = sorted(rows, key=lambda r: -r["cumtime_s"])
    print("by cumulative time (what the main thread's time is spent under):")
    for r in cum[: args.profile_top]:
        print(f"  {r['cumtime_s']:7.3f} s cum {r['calls']:>9,}  {r['function']}")
    return top


# -- the run --------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vehicles", type=int, default=1000)
    ap.add_argument(
        "--events", type=int, default=20_000, help="events per run (database, listener)"
    )
    ap.add_argument("--batches", default="50,500,2000", help="PostgresSink batch sizes to compare")
    ap.add_argument("--rounds", type=int, default=1, help="runs of each measurement (median)")
    ap.add_argument("--listeners", default="1,2,4", help="listen --database processes per run")
    ap.add_argument("--batch", type=int, default=500, help="listen --batch in the listener phase")
    ap.add_argument("--batch-ms", type=float, default=50.0, help="listen --batch-ms")
    ap.add_argument(
        "--broker-inflight",
        type=int,
        default=100,
        help="mosquitto max_inflight_messages (deploy/mosquitto/pack-agent.conf: 100)",
    )
    ap.add_argument(
        "--durable",
        action="store_true",
        help="PostgreSQL with fsync and synchronous_commit on (its defaults)",
    )
    ap.add_argument("--skip", default="", help="phases to leave out: database,listener")
    ap.add_argument("--profile", action="store_true", help="cProfile one listener (phase 3)")
    ap.add_argument("--profile-top", type=int, default=15)
    ap.add_argument("--timeout", type=float, default=600.0, help="for each drain")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    per_vehicle = max(1, -(-args.events // args.vehicles))
    events = make_events(args.vehicles, per_vehicle)[: args.events]
    n = len(events)
    result: dict[str, Any] = {
        "events": n,
        "vehicles": args.vehicles,
        "load_avg_start": list(os.getloadavg()),
        "nproc": os.cpu_count(),
        "durable": args.durable,
    }
    print(
        f"{n} events of {args.vehicles} vehicles; load average {os.getloadavg()[0]:.2f} "
        f"on {os.cpu_count()} cores",
        flush=True,
    )
    folder = Path(tempfile.mkdtemp(prefix="pack-agent-backend-bench-"))
    conf = "\n".join(
        [
            "max_queued_messages 0",
            f"max_inflight_messages {args.broker_inflight}",
            "set_tcp_nodelay true",
        ]
    )
    try:
        with LocalPostgres(durable=args.durable) as pg, LocalBroker(extra_conf=conf) as broker:
            if "database" not in skip:
                batches = [int(b) for b in args.batches.split(",")]
                result["database"] = database_phase(pg.url, events, batches, args.rounds)
            if "listener" not in skip:
                result["listener"] = listener_phase(broker, pg, events, folder, args)
            if args.profile:
                result["profile"] = profile_run(broker, pg, payloads_of(events), folder, args)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result["load_avg_end"] = list(os.getloadavg())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
