"""The benchmarks still run: each one, small, as `scripts/bench` runs it (a change to the
agent's interfaces once broke bench/uplink.py without any test noticing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pack_agent.dev.postgres import find_postgres

ROOT = Path(__file__).resolve().parents[1]
KONA = ROOT.parent / "shared" / "real-world" / "kona-ev"


def run_bench(*args: str, timeout: float = 120) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_uplink_bench_runs() -> None:
    figures = run_bench("bench/uplink.py", "--events", "2000", "--rounds", "1", "--seconds", "1")
    assert figures["events"] == 2000 and figures["drain_per_s"] > 0
    assert figures["latency_events"] > 0


def test_policy_bench_runs() -> None:
    figures = run_bench("bench/bench_policy.py", "--readings", "2000")
    assert figures["reading_us_reference_rules"] > 0 and figures["history_points_after_15_years"]


@pytest.mark.skipif(not KONA.exists(), reason="real-world data not beside the project")
def test_ingest_bench_runs() -> None:
    figures = run_bench("bench/ingest.py", "--frames", "50000", "--rounds", "1")
    assert figures["pack_agent_fps"] > 0 and figures["frames"] >= 50000


def test_footprint_bench_runs() -> None:
    figures = run_bench(
        "bench/footprint.py",
        *("--sim-minutes", "0.2", "--realtime-s", "0.5", "--day-step-s", "120"),
        *("--life-days", "120"),
    )
    assert figures["ready_s"] > 0 and figures["rss_peak_mib"] > 0
    # the quiet days (each message every 120 s) are steady days: an hourly pack.health
    # sample each hour, committed and delivered; the SQLite writes counted (under strace)
    for phase, writes in (("sim_day", "day_writes"), ("sim_decision_day", "decision_day_writes")):
        day = figures["phases"][phase]
        assert day["frames"] > 0 and day["outbox_pending"] == 0, day
        assert day["events"].get("pack.health") == 24, day
        if "db_writes" in figures[writes]:  # strace installed
            assert figures[writes]["db_writes"] > 0, figures[writes]
    life = figures["life"]
    assert life["days"] == 120 and len(life["rss_by_day_mib"]) == 11  # day 0, then every 12
    assert life["sync_gave_up"] == 0 and life["outbox_pending"] == 0, life
    # two trips a day, a health sample each, all delivered through the real broker
    assert life["events"]["pack.health"] == 240, life["events"]
    assert life["delivered_total"] == sum(life["events"].values()), life


def test_powercut_bench_runs() -> None:
    figures = run_bench(
        "bench/powercut.py", *("--cuts", "20", "--days", "50", "--real-restarts", "1")
    )
    assert figures["cuts"] == 20 and figures["failed_to_start"] == 0
    for key in ("essential_lost", "store_reset", "unexplained_gaps"):
        assert isinstance(figures[key], int), key
    assert figures["story"]["syncs"] > 0 and len(figures["real_restarts"]) == 1


@pytest.mark.skipif(find_postgres() is None, reason="PostgreSQL is not installed")
def test_fleet_bench_runs() -> None:
    """50 vehicles (the agent's real uplink and outbox each) through mosquitto, restarted
    mid-run, into two listeners and PostgreSQL: every event stored once, no gap left.
    (Small: each vehicle's store is created and synced on the way; the full run is
    scripts/bench's.)"""
    pytest.importorskip("psycopg", reason="psycopg 3 is not installed")
    figures = run_bench(
        *("bench/fleet.py", "--vehicles", "50", "--rate", "100", "--steady-s", "2"),
        *("--outage-s", "1", "--backlog", "5", "--raw", "1000"),
        # vehicles that publish after the storm before the listeners subscribe again back
        # off, by default up to 30 s (most of this test's time): 3 s here
        *("--retry-max-s", "3"),
        timeout=240,
    )
    assert figures["vehicles"] == 50 and figures["events"] > 50 * 5, figures
    assert figures["stored"] == figures["events"], figures
    assert figures["lost"] == 0 and figures["duplicate_rows"] == 0, figures
    assert figures["seq_gaps_open"] == 0 and figures["vehicles_with_holes"] == 0, figures
    assert figures["storm"]["reconnected"] == 50, figures["storm"]
    assert figures["events_per_s"] > 0 and figures["raw_per_s"] > 0


@pytest.mark.skipif(find_postgres() is None, reason="PostgreSQL is not installed")
def test_backend_bench_runs() -> None:
    """The database stage alone (PostgresSink against a bare INSERT and COPY) and one and
    two `listen --database` draining a queued share group: every event stored once."""
    pytest.importorskip("psycopg", reason="psycopg 3 is not installed")
    figures = run_bench(
        *("bench/backend.py", "--events", "600", "--vehicles", "50", "--batches", "50,200"),
        *("--listeners", "1,2"),
        timeout=180,
    )
    assert figures["events"] == 600
    for batch in ("batch_50", "batch_200"):
        row = figures["database"][batch]
        assert row["insert_rows_per_s"] > 0 and row["copy_rows_per_s"] > 0, row
        assert row["in_order"]["gaps_opened"] == 0, row  # fleet order leaves no hole
        shuffled = row["shuffled"]
        assert shuffled["gaps_opened"] > 0 and shuffled["gaps_closed"] == shuffled["gaps_opened"]
        assert shuffled["vs_insert"] > 0
    listener = figures["listener"]
    assert listener["raw_paho"]["events"] == 600 and listener["listen_print"]["vs_raw"] > 0
    two = listener["database_2"]
    # the share group split the queue, and the two stored each event once (the bench checks
    # the rows; the listeners' own summaries say who stored what)
    assert sum(two["per_listener"]) == 600 and min(two["per_listener"]) > 0, two
    assert listener["database_1"]["rows_per_commit"] > 1, listener["database_1"]
