"""Power cuts, not process crashes: only what was synced survives, plus any part of the rest.

The harness is ``bench/powercut.py`` (its docstring says how): an ``LD_PRELOAD`` shim,
compiled here with ``cc``, records every write and sync a real ``pack-agent run``
makes to its store, every MQTT publish and every CAN frame it sends; the store is
then rebuilt as power cuts at hundreds of points could leave it (synced content, plus
none, all, a torn prefix or a random subset of the later writes) and the agent is
started on each. ``python bench/powercut.py --cuts 1000`` is the full run
(docs/reliability.md has its figures); CI runs a small one here.

First the harness itself is checked on the store alone: with ``synchronous = FULL``
(every commit synced) a cut never loses a committed event, and with ``NORMAL`` (a
``pack.health`` commit synced only with the next checkpoint) it must find losses; a
harness that finds nothing either way would prove nothing.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from pack_agent.store import Store

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import powercut  # noqa: E402  (bench/powercut.py)

CUTS = int(os.environ.get("PACK_AGENT_POWERCUTS") or 300)
DAYS = 50


@pytest.fixture(scope="module")
def compiler() -> str:
    found = shutil.which("cc") or shutil.which("gcc")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("a C compiler is required in CI (./scripts/setup installs gcc)")
        pytest.skip("no C compiler (./scripts/setup installs gcc)")
    return found


WORKLOAD = """
import sys
from pack_agent.core.events import EventDraft, utc_from_timestamp
from pack_agent.store import Store

with Store(sys.argv[1], synchronous=sys.argv[2]) as store:
    for i in range(60):
        event = store.append(EventDraft(
            type="pack.health", vin="LPACK2026AGENT001", time=utc_from_timestamp(1.8e9 + i),
            data={"pad": "x" * 700}))
        print(f"event {event.type} seq={event.seq} {event.event_id}", flush=True)
"""


def store_cuts(tmp_path: Path, synchronous: str) -> list[tuple[int, int]]:
    """The store alone under the shim: 60 appends of ``pack.health`` (not essential: the
    store need not sync it at once), each printed once it returned. For each print, the
    store rebuilt with only the synced writes: (seq printed, last seq it knows)."""
    shim = powercut.compile_shim(tmp_path / "shim")
    store = (tmp_path / synchronous / "pack-agent.db").resolve()
    store.parent.mkdir()
    log = tmp_path / f"{synchronous}.log"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "LD_PRELOAD": str(shim),
        "POWERCUT_LOG": str(log),
        "POWERCUT_MATCH": str(store),
    }
    subprocess.run([sys.executable, "-c", WORKLOAD, str(store), synchronous], env=env, check=True)
    ops = powercut.read_log(log, store)
    assert any(op.op == powercut.OP_WRITE and op.file == "-wal" for op in ops)
    disk = powercut.Disk()
    out = []
    for op in ops:
        disk.step(op)
        match = powercut._EVENT_LINE.search(op.data) if op.op == powercut.OP_STDIO else None
        if match is None:
            continue
        files = disk.cut("synced", None)  # type: ignore[arg-type]  (no randomness in "synced")
        folder = tmp_path / "cut"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir()
        for suffix, data in files.items():
            (folder / f"pack-agent.db{suffix}").write_bytes(data)
        Store(folder / "pack-agent.db").close()  # opened as the agent opens it (WAL recovery)
        with sqlite3.connect(folder / "pack-agent.db") as conn:
            last = conn.execute("SELECT coalesce(max(last), 0) FROM seq").fetchone()[0]
        out.append((int(match.group(2)), last))
    assert len(out) == 60
    return out


def test_the_harness_finds_unsynced_commits_and_only_those(tmp_path, compiler):
    full = store_cuts(tmp_path, "FULL")
    assert all(last >= seq for seq, last in full), "FULL syncs every commit: nothing lost"
    normal = store_cuts(tmp_path, "NORMAL")
    lost = [(seq, last) for seq, last in normal if last < seq]
    # NORMAL syncs a pack.health commit only with a checkpoint: a cut after it loses it
    assert len(lost) > 30, normal


def test_power_cuts_over_a_story(tmp_path, compiler, mosquitto_binary):
    """A decision, notices, the head unit's answers and a swap; CUTS cut points."""
    figures = powercut.run(CUTS, DAYS, seed=1, work=tmp_path, real_restarts=2)
    print("powercut:", {k: v for k, v in figures.items() if k != "examples"})
    story = figures["story"]
    assert story["events"]["scrap.condition_met"] >= 1 and story["notice_frames"] > 0
    assert figures["cuts"] == CUTS
    # the store always opens (or is moved aside, kept byte for byte, with store.reset)
    assert figures["failed_to_start"] == 0, figures["examples"]
    assert figures["reset_not_kept"] == 0
    # every seq the store used reaches the backend or is still queued
    assert figures["unexplained_gaps"] == 0
    # all the writes kept is a crash of the process: nothing acted on may be missing
    assert figures["by_variant"]["all"].get("essential_lost", 0) == 0
    # a power cut anywhere: no essential event the agent acted on is forgotten, and no
    # published event of any type (its seq would be numbered twice)
    assert figures["essential_lost"] == 0, figures["examples"]
    assert figures["seq_reused"] == 0, figures["examples"]
    # a real `pack-agent run` on rebuilt stores starts, delivers its outbox, stops cleanly
    assert figures["real_restarts"] and figures["real_restart_failures"] == 0, figures[
        "real_restarts"
    ]
