"""Every benchmark in one run, and one table of their figures and ratios.

    scripts/bench                       # or: PYTHONPATH=src python bench/all.py

Each benchmark runs in its own process (``sys.executable``, this checkout's ``src``) with
the sizes below, smaller than their defaults so that the whole run stays within about
ten minutes on the 2-core build machine; each prints its own baseline ratios, and its last
line (one JSON object) is what goes into the table. Then the machine: nproc, CPU model,
Python. The last line is one JSON object with everything.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# name, script, arguments (sizes chosen for a ~10 minute total; defaults are larger)
BENCHMARKS: list[tuple[str, str, list[str]]] = [
    ("ingest", "bench/ingest.py", ["--frames", "400000", "--rounds", "2"]),
    ("uplink", "bench/uplink.py", ["--events", "20000", "--rounds", "3", "--seconds", "5"]),
    ("policy", "bench/bench_policy.py", []),
    ("footprint", "bench/footprint.py", ["--sim-minutes", "10", "--realtime-s", "10"]),
    # small: bench/fleet.py --vehicles 10000 is its own run (docs/scaling.md has its figures)
    ("fleet", "bench/fleet.py", ["--vehicles", "1000", "--rate", "500", "--backlog", "24"]),
    ("backend", "bench/backend.py", ["--events", "10000"]),
]
# the headline rows: benchmark, figure (dotted), what it is, target
SUMMARY: list[tuple[str, str, str, str]] = [
    ("ingest", "pack_agent_fps", "pipeline on the Kona log, frames/s", ""),
    ("ingest", "c_over_a", "pipeline / bare GVRET reader", ">= 0.8"),
    ("ingest", "c_over_b", "pipeline / reader + cantools decode", ">= 3"),
    ("uplink", "drain_per_s", "outbox drain, events/s", ""),
    ("uplink", "drain_vs_raw", "drain / raw paho, same window", ">= 0.7"),
    ("uplink", "latency_p99_ms", "append to PUBACK at 200/s, p99 ms", "<= 20"),
    ("policy", "reading_us_reference_rules", "reference rules, us per reading", ""),
    ("policy", "reading_ratio", "reference rules / one-rule policy", ""),
    ("policy", "state_bytes_after_15_years", "persisted policy state, bytes", ""),
    ("footprint", "ready_s", "exec to READY=1, s", "<= 0.6"),
    ("footprint", "ready_ratio", "ready / bare imports' start", ""),
    ("footprint", "rss_peak_mib", "peak RSS (VmHWM), MiB", "<= 40"),
    ("footprint", "rss_peak_ratio", "peak RSS / bare imports' RSS", ""),
    ("footprint", "rss_growth_mib", "RSS growth, 1/3 to end of busy run, MiB", "~0"),
    ("footprint", "life.rss_end_mib", "RSS after a 1000-day life (decision, swap), MiB", "<= 40"),
    (
        "footprint",
        "life.rss_growth_settled_mib",
        "RSS growth, day 100 to day 1000 of that life, MiB",
        "~0",
    ),
    ("footprint", "phases.realtime_mapped.cpu_per_bus_s", "CPU s per bus s, mapped only", ""),
    ("footprint", "phases.realtime_busy.cpu_per_bus_s", "CPU s per bus s, busy bus", ""),
    ("footprint", "phases.sim_busy.cpu_per_bus_s", "same, simulated time (10 min)", ""),
    ("fleet", "events_per_s", "fleet, steady events/s into PostgreSQL", ""),
    ("fleet", "p99_ms", "fleet, append to row stored, p99 ms", ""),
    ("fleet", "backlog.events_per_s", "fleet, backlog drain events/s", ""),
    ("fleet", "drain_vs_raw", "backlog drain / raw mosquitto_pub", ""),
    ("fleet", "storm.back_after_s", "fleet back after a broker restart, s", ""),
    ("fleet", "lost", "events lost", "0"),
    ("fleet", "duplicate_rows", "duplicate rows", "0"),
    ("fleet", "seq_gaps_open", "seq gaps still open", "0"),
    ("backend", "database.batch_500.in_order.rows_per_s", "PostgresSink, batch 500, rows/s", ""),
    ("backend", "database.batch_500.in_order.vs_insert", "PostgresSink / bare INSERT", ""),
    ("backend", "listener.database_1.events_per_s", "one listen --database, events/s", ""),
    ("backend", "listener.database_1.vs_raw", "one listen --database / raw paho", ""),
    ("backend", "listener.database_4.events_per_s", "four listen --database, events/s", ""),
    ("footprint", "day_writes.db_writes", "steady day: write calls on the store", ""),
    ("footprint", "day_writes.db_write_bytes", "steady day: bytes written to the store", ""),
    ("footprint", "day_writes.db_syncs", "steady day: fsync/fdatasync on the store", ""),
]


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    """Scalars of nested objects as dotted names; lists of scalars kept whole."""
    if isinstance(value, dict):
        for k, v in value.items():
            flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def run(name: str, script: str, args: list[str]) -> tuple[dict[str, Any], float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, script, *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    took = time.monotonic() - started
    sys.stdout.write(f"\n## {name}: {script} {' '.join(args)} ({took:.0f} s)\n{proc.stdout}")
    if proc.returncode != 0:
        sys.stdout.write(proc.stderr[-3000:])
        return {"error": f"exit {proc.returncode}"}, took
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    try:
        return json.loads(lines[-1]), took
    except (IndexError, ValueError):
        return {"error": "no JSON last line"}, took


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return json.dumps(value) if not isinstance(value, str) else value


def main() -> int:
    only = set(sys.argv[1:])
    results: dict[str, Any] = {"machine": machine()}
    rows: list[tuple[str, str, str]] = []
    flat_all: dict[tuple[str, str], Any] = {}
    for name, script, args in BENCHMARKS:
        if only and name not in only:
            continue
        figures, took = run(name, script, args)
        results[name] = {"command": f"{script} {' '.join(args)}".strip(), "seconds": round(took)}
        results[name]["figures"] = figures
        flat: dict[str, Any] = {}
        flatten("", figures, flat)
        rows += [(name, k, fmt(v)) for k, v in flat.items()]
        flat_all.update({(name, k): v for k, v in flat.items()})
    m = results["machine"]
    print(f"\n## summary ({m['nproc']} x {m['cpu']}, Python {m['python']})\n")
    print("| benchmark | figure | value | target |\n|---|---|---|---|")
    for bench, key, label, target in SUMMARY:
        if (bench, key) in flat_all:
            print(f"| {bench} | {label} | {fmt(flat_all[(bench, key)])} | {target} |")
    print("\n## every figure\n")
    print("| benchmark | figure | value |\n|---|---|---|")
    for bench, key, value in rows:
        print(f"| {bench} | {key} | {value} |")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
