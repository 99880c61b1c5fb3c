"""Power-cut test: every write and sync of a real ``pack-agent run``, then power cuts replayed.

    PYTHONPATH=src python bench/powercut.py [--cuts 1000] [--days 70] [--seed 1]

Crash testers for SQLite and file systems (ALICE, CrashMonkey) do it this way, and so
does this: a crash of the *process* (SIGKILL, tests/store/test_crash_consistency.py)
keeps every write the process made, because the kernel's page cache survives it; a
power cut keeps only what was synced, plus whatever part of the later writes the disk
happened to get to. So:

1. **Record.** A virtual vehicle (a pack below 80 % SOH: a decision, the owner's notice
   and the head unit's answers, then a pack swap) plays over ``localbus`` into a real
   ``pack-agent run`` process with a private mosquitto. The process runs with
   ``LD_PRELOAD`` = ``bench/powercut_shim.c`` (compiled here with ``cc`` into a
   temporary directory), which appends to one log, in the order they happened, every
   ``open``/``write``/``pwrite``/``fsync``/``fdatasync``/``ftruncate``/``unlink``/
   ``rename``/``close`` on the store's files (``*.db``, ``-wal``, ``-shm``,
   ``-journal``), every ``send``/``sendto``/``sendmsg`` on a socket (the MQTT
   publishes, the CAN frames to the head unit) and the agent's log lines. The harness
   knows nothing of the store's internals: it sees what the process asked the kernel.
   Why a C shim and not strace: it sees the same calls at a fraction of the cost,
   needs no ptrace (often forbidden in containers), and gets the written bytes and
   their order across threads exactly (one mutex).
2. **Cut.** For each cut point (a position in that log) the store's files are rebuilt as
   a power cut there could leave them: each file as of its last sync, plus one of
   - ``synced``: none of the later writes;
   - ``all``: all of them (what a process crash leaves);
   - ``prefix``: the first n of them, the next one torn at a 512-byte sector boundary;
   - ``subset``: each later write kept or not at random, some of them torn (random
     sectors kept);
   the ``-shm`` file dropped (SQLite rebuilds it). Creating and deleting a file count
   as done (journalled metadata); a truncate is a write like the others.
3. **Restart and check.** On each rebuilt store the agent starts in this process as the
   daemon does (``open_store``, which moves an unreadable file aside and reports
   ``store.reset``, then ``Agent``, which loads the policy, notices and pack state),
   and the harness checks against what the process had *acted on* before the cut: an
   event whose ``event_id`` had gone out on the MQTT socket, and a decision
   (``scrap.*``) logged before a notice frame went out on the bus. Figures:

   - ``essential_lost``: acted-on essential events (every type but ``pack.health``)
     the store no longer knows (its ``seq`` counter is below theirs, or the row with
     their seq is another event), so the agent could decide or notify again and
     reuse their seq;
   - ``store_reset``: cuts where the store was unreadable and moved aside (then the
     backend receives ``store.reset``, and the moved file is checked to be kept
     byte for byte: nothing silently lost);
   - ``unexplained_gaps``: seqs the store has used that the backend will never
     receive (neither published before the cut nor still in the outbox);
   - ``seq_reused``: published events of any type the store forgot (their seq will be
     used again, for another event);
   - ``failed_to_start``: cuts where the store neither opened nor was reset.

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import os
import queue
import random
import re
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import can
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from pack_agent.canbus.checks import load_and_check
from pack_agent.canbus.decoder import Decoder
from pack_agent.config import AgentConfig, load_config, reference_config_path
from pack_agent.core.events import ESSENTIAL_TYPES
from pack_agent.dev.broker import LocalBroker, find_mosquitto
from pack_agent.dev.sim import VirtualHeadUnit
from pack_agent.dev.sim.rig import rig_config, write_config
from pack_agent.dev.sim.scenario import DAY, Scenario
from pack_agent.dev.sim.vehicle import day_frames
from pack_agent.runtime.agent import Agent
from pack_agent.store import open_store

ROOT = Path(__file__).resolve().parents[1]
SHIM_SOURCE = Path(__file__).resolve().with_name("powercut_shim.c")
SECTOR = 512
DECISIONS = ("scrap.condition_met", "scrap.forecast")
VARIANTS = ("synced", "all", "prefix", "subset")
VARIANT_WEIGHTS = (25, 15, 30, 30)
SUFFIXES = ("", "-wal", "-journal")  # rebuilt; "-shm" is dropped (SQLite rebuilds it)

OP_OPEN, OP_WRITE, OP_SYNC, OP_TRUNC, OP_UNLINK, OP_RENAME, OP_CLOSE, OP_SEND, OP_STDIO = range(
    1, 10
)
_REC = struct.Struct("<B3xiqqqI")
_EVENT_LINE = re.compile(rb"event ([a-z_.]+) seq=(\d+) ([0-9a-f][0-9a-f-]{31,35})\b")
_LOCALBUS_HEADER = struct.Struct("<dIBB")  # pack_agent.dev.localbus: time, id, flags, dlc


# -- 1. record ------------------------------------------------------------------------


def compile_shim(into: Path) -> Path:
    """The shim as a shared library in ``into``; a clear error without a C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler (cc/gcc): ./scripts/setup installs gcc")
    into.mkdir(parents=True, exist_ok=True)
    out = into / "powercut_shim.so"
    built = subprocess.run(
        [cc, "-shared", "-fPIC", "-O2", "-o", str(out), str(SHIM_SOURCE), "-ldl", "-lpthread"],
        capture_output=True,
        text=True,
    )
    if built.returncode != 0:
        raise RuntimeError(f"{cc} could not build {SHIM_SOURCE.name}:\n{built.stderr}")
    return out


@dataclass(frozen=True)
class Op:
    """One recorded call. ``file`` is the store file's suffix ("", "-wal", ...) for
    file operations; ``data`` the bytes written or sent, or the path."""

    index: int
    op: int
    fd: int
    off: int
    length: int
    t_ns: int
    data: bytes
    file: str | None = None


def read_log(path: Path, store: Path) -> list[Op]:
    """The shim's records, with each file operation resolved to its store file."""
    raw = path.read_bytes()
    ops: list[Op] = []
    names: dict[int, str] = {}  # fd -> suffix, while open
    base = str(store)
    i = 0
    while i + _REC.size <= len(raw):
        op, fd, off, length, t_ns, extra = _REC.unpack_from(raw, i)
        i += _REC.size
        data = raw[i : i + extra]
        i += extra
        suffix: str | None = None
        if op == OP_OPEN:
            suffix = data.decode()[len(base) :]
            names[fd] = suffix
        elif op in (OP_WRITE, OP_SYNC, OP_TRUNC, OP_CLOSE):
            suffix = names.get(fd)
            if op == OP_CLOSE:
                names.pop(fd, None)
        elif op == OP_UNLINK:
            suffix = data.decode()[len(base) :]
        elif op == OP_RENAME:
            old, new = data.split(b"\0")
            suffix = old.decode()[len(base) :] if old.decode().startswith(base) else None
            if not new.decode().startswith(base):
                raise RuntimeError(f"a store file renamed out of the store: {new!r}")
        ops.append(Op(len(ops), op, fd, off, length, t_ns, data, suffix))
    return ops


@dataclass
class Story:
    """What the recorded process did: its calls, its events, what it acted on."""

    ops: list[Op]
    # event_id -> (type, seq, log index of the agent's line about it, -1 if none)
    events: dict[str, tuple[str, int, int]]
    published: dict[str, int]  # event_id -> log index of the send that carried it out
    notice_frames: list[int]  # log indices of notice frames sent on the bus
    backend: list[dict[str, Any]]  # what the backend received during the story
    vin: str
    config: AgentConfig
    seconds: float

    def acted(self, cut: int) -> dict[str, str]:
        """event_id -> why, for every event acted on in ``ops[:cut]``: published, or a
        decision logged before a notice frame went out."""
        out = {e: "published" for e, at in self.published.items() if at < cut}
        sent = bisect.bisect_left(self.notice_frames, cut)
        if sent:
            last_frame = self.notice_frames[sent - 1]
            for event_id, (kind, _seq, at) in self.events.items():
                if kind in DECISIONS and 0 <= at < last_frame and event_id not in out:
                    out[event_id] = "notice sent"
        return out


def story_scenario(days: int, seed: int) -> Scenario:
    """A pack just below the capacity line: the decision after about four weeks, the
    owner's notice and the head unit's answers, then a pack swap near the end."""
    return Scenario(
        name="powercut",
        description="a pack below 80 % SOH: decision, notices, answers, then a swap",
        days=days,
        soh_start=79.4,
        soh_per_year=3.0,
        swap_day=max(days - 8, 1),
        seed=seed,
    )


def agent_config(
    channel: Path, port: int, state: Path, synchronous: str | None = None
) -> AgentConfig:
    store = {"synchronous": synchronous} if synchronous else {}
    return rig_config(
        load_config(reference_config_path()),
        {"interface": "localbus", "channel": str(channel)},
        port,
        state,
        mqtt={"keepalive_s": 5},
        health={"publish_interval_s": 6 * 3600.0, "bms_timeout_s": 3 * DAY},
        daemon={
            "clock": "frames",
            "shutdown_timeout_s": 5,
            "status_interval_s": 0.2,
            "status_file": str(state / "status.json"),
            "log_level": "info",
        },
        store=store,
    )


class Backend:
    """The maker's backend: every event the broker delivers, at QoS 1."""

    def __init__(self, broker: LocalBroker) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="powercut-backend")
        c.on_connect = lambda c, *_: c.subscribe("pack-agent/v1/+/events/#", qos=1)
        c.on_subscribe = lambda *_: self._subscribed.set()
        c.on_message = self._on_message
        c.connect(broker.host, broker.port, keepalive=5)
        c.loop_start()
        self._client = c
        if not self._subscribed.wait(10):
            raise RuntimeError("the backend could not subscribe")

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.events.append(json.loads(msg.payload))

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.events)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class HeadUnitNode:
    """The head unit on the bus: reads every frame (a localbus node that stops reading
    loses frames) and answers notices in simulated time."""

    def __init__(self, bus: can.BusABC, unit: VirtualHeadUnit) -> None:
        self.bus, self.unit = bus, unit
        self.frames: queue.SimpleQueue[can.Message] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            frame = self.bus.recv(0.05)
            if frame is not None:
                self.frames.put(frame)

    def serve(self, now: float) -> None:
        while not self.frames.empty():
            self.unit.on_frame(self.frames.get(), now)
        for answer in self.unit.answers_due(now):
            self.bus.send(answer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


def live_status(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def record_story(
    work: Path, days: int, seed: int, synchronous: str | None = None, day_pause_s: float = 0.03
) -> Story:
    """Runs the story through a real ``pack-agent run`` under the shim; a clean stop at
    the end (the close folds the WAL in and deletes it: cut points there too)."""
    started = time.monotonic()
    if work.exists():
        shutil.rmtree(work)  # a fresh store: the story starts from nothing
    shim = compile_shim(work)
    binary = find_mosquitto()
    if binary is None:
        raise RuntimeError("mosquitto is not installed (./scripts/setup installs it)")
    channel, state = work / "bus", work / "state"
    state.mkdir(parents=True, exist_ok=True)
    log_path = work / "calls.log"
    broker = LocalBroker(binary=binary).start()
    config = agent_config(channel, broker.port, state, synchronous)
    config_file = write_config(config, work / "agent.toml")
    store = config.store_path().resolve()
    db = load_and_check(config)
    notice_ids = {
        db.get_message_by_name(name).frame_id
        for name in (config.notice.message, config.notice.text_message)
        if name
    }
    backend = Backend(broker)
    bus = can.Bus(interface="localbus", channel=str(channel), preserve_timestamps=True)
    node = HeadUnitNode(bus, VirtualHeadUnit(db, response=["dismissed", "seen"], delay_s=DAY))
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "LD_PRELOAD": str(shim),
        "POWERCUT_LOG": str(log_path),
        "POWERCUT_MATCH": str(store),
    }
    agent_log = work / "agent.log"
    with open(agent_log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pack_agent", "run", "--config", str(config_file)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    status = Path(config.daemon.status_file or "")
    try:
        wait_for(lambda: live_status(status).get("pid") == proc.pid, 30, "the agent to run")
        for day in story_scenario(days, seed).states():
            for frame in day_frames(db, day):
                bus.send(frame)
            node.serve(day.time + 3.0)
            time.sleep(day_pause_s)
            node.serve(day.time + 4.0)
        played = time.time()
        seen: list[tuple[float, int]] = []  # (when, frames decoded) from the live status

        def caught_up() -> bool:
            """Every frame read (the decoded count still for a second), the outbox empty."""
            live = live_status(status)
            if live.get("time", "") <= _iso(played) or live["queue"]["pending"]:
                return False
            now, decoded = time.monotonic(), live["agent"]["frames_decoded"]
            if not seen or seen[-1][1] != decoded:
                seen.append((now, decoded))
            return now - seen[-1][0] >= 1.0

        wait_for(caught_up, 120, "the agent to read every frame and drain its outbox")
        proc.send_signal(signal.SIGTERM)
        if proc.wait(30) != 0:
            raise RuntimeError(f"the agent exited with {proc.returncode}")
        wait_for(lambda: _delivered_all(backend, store), 15, "the backend to hear everything")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        node.close()
        bus.shutdown()
        backend.close()
        broker.close()
    ops = read_log(log_path, store)
    story = Story(
        ops=ops,
        events={},
        published={},
        notice_frames=[],
        backend=backend.snapshot(),
        vin=config.vin,
        config=config,
        seconds=time.monotonic() - started,
    )
    _find_actions(story, notice_ids)
    _check_story(story, agent_log)
    return story


def _iso(t: float) -> str:
    from pack_agent.core.events import utc_from_timestamp

    return utc_from_timestamp(t).isoformat()


def _delivered_all(backend: Backend, store: Path) -> bool:
    with sqlite3.connect(f"{store.as_uri()}?mode=ro", uri=True) as conn:
        last = conn.execute("SELECT max(last) FROM seq").fetchone()[0] or 0
    return len({e["event_id"] for e in backend.snapshot()}) >= last


def _find_actions(story: Story, notice_ids: set[int]) -> None:
    """The events (as the backend received them), when each first went out on a socket,
    when each notice frame went out, and where the agent logged each event (a decision
    is acted on by the notice frames after it)."""
    streams: dict[int, tuple[bytearray, list[int], list[int]]] = {}  # fd -> bytes, ends, ops
    stdio = bytearray()
    stdio_ends: list[int] = []
    stdio_ops: list[int] = []
    for op in story.ops:
        if op.op == OP_SEND:
            data, ends, idx = streams.setdefault(op.fd, (bytearray(), [], []))
            data += op.data
            ends.append(len(data))
            idx.append(op.index)
            if len(op.data) >= _LOCALBUS_HEADER.size:
                _t, arb, _flags, dlc = _LOCALBUS_HEADER.unpack_from(op.data)
                if arb in notice_ids and len(op.data) == _LOCALBUS_HEADER.size + dlc:
                    story.notice_frames.append(op.index)
        elif op.op == OP_STDIO:
            stdio += op.data
            stdio_ends.append(len(stdio))
            stdio_ops.append(op.index)
    logged = {
        m.group(3).decode(): stdio_ops[bisect.bisect_left(stdio_ends, m.end())]
        for m in _EVENT_LINE.finditer(stdio)
    }
    for e in story.backend:
        story.events[e["event_id"]] = (e["type"], e["seq"], logged.get(e["event_id"], -1))
    for event_id in story.events:
        needle = event_id.encode()
        for data, ends, idx in streams.values():
            pos = data.find(needle)
            if pos >= 0:
                at = idx[bisect.bisect_left(ends, pos + len(needle))]
                story.published[event_id] = min(at, story.published.get(event_id, at))


def _check_story(story: Story, agent_log: Path) -> None:
    """The story must have what it is for, and the recording must show every event go
    out; else the figures mean little."""
    got = Counter(kind for kind, _s, _a in story.events.values())
    need = ("scrap.condition_met", "owner.notified", "owner.acknowledged", "pack.replaced")
    missing = [t for t in need if not got[t]]
    if missing or not story.notice_frames:
        tail = agent_log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the story lacks {missing or 'notice frames'}: {dict(got)}\n{tail}")
    unseen = set(story.events) - set(story.published)
    if unseen:
        raise RuntimeError(f"events received but never seen on a socket: {sorted(unseen)[:5]}")
    unlogged = [e for e, (kind, _s, at) in story.events.items() if kind in DECISIONS and at < 0]
    if unlogged:
        raise RuntimeError(
            f"decisions not found in the agent's log (its 'event TYPE seq=N ID' line): {unlogged}"
        )


# -- 2. cut ---------------------------------------------------------------------------


@dataclass
class FileState:
    """One store file: what a sync made durable, and the writes since."""

    durable: bytearray | None = None  # None: the file does not exist
    pending: list[Op] = field(default_factory=list)


def _apply(buf: bytearray, op: Op, sectors: set[int] | None = None) -> None:
    """A write (or a truncate) applied to ``buf``; ``sectors`` (indices of 512-byte
    sectors by absolute offset) keeps only those parts of a torn write."""
    if op.op == OP_TRUNC:
        del buf[op.off :]
        buf.extend(b"\0" * max(0, op.off - len(buf)))
        return
    end = op.off + len(op.data)
    if len(buf) < end:
        buf.extend(b"\0" * (end - len(buf)))
    if sectors is None:
        buf[op.off : end] = op.data
        return
    for s in sectors:
        lo, hi = max(op.off, s * SECTOR), min(end, (s + 1) * SECTOR)
        if lo < hi:
            buf[lo:hi] = op.data[lo - op.off : hi - op.off]


def _sectors(op: Op) -> list[int]:
    return list(range(op.off // SECTOR, (op.off + len(op.data) - 1) // SECTOR + 1))


class Disk:
    """The store's files as the recorded calls leave them, op by op; ``cut`` gives the
    files a power cut at the current point could leave."""

    def __init__(self) -> None:
        self.files: dict[str, FileState] = {}

    def step(self, op: Op) -> None:
        if op.file is None or op.file.endswith("-shm"):
            return
        f = self.files.setdefault(op.file, FileState())
        if op.op == OP_OPEN:
            if f.durable is None:
                f.durable = bytearray()  # creation: journalled metadata
            if op.length == 0:  # O_TRUNC
                f.pending.append(Op(op.index, OP_TRUNC, op.fd, 0, 0, op.t_ns, b"", op.file))
        elif op.op in (OP_WRITE, OP_TRUNC):
            if f.durable is None:
                f.durable = bytearray()
            f.pending.append(op)
        elif op.op == OP_SYNC:
            assert f.durable is not None
            for p in f.pending:
                _apply(f.durable, p)
            f.pending = []
        elif op.op == OP_UNLINK:
            self.files[op.file] = FileState()
        elif op.op == OP_RENAME:
            new = op.data.split(b"\0")[1].decode()
            raise RuntimeError(f"rename of a store file not modelled: {op.file} -> {new}")

    def cut(self, variant: str, rng: random.Random) -> dict[str, bytes]:
        """Each existing file: durable content plus the ``variant``'s part of the rest."""
        pending = sorted(
            ((p, name) for name, f in self.files.items() for p in f.pending),
            key=lambda x: x[0].index,
        )
        keep: dict[int, set[int] | None] = {}  # op index -> None (whole) or sectors kept
        if variant == "all":
            keep = {p.index: None for p, _ in pending}
        elif variant == "prefix" and pending:
            n = rng.randrange(len(pending) + 1)
            keep = {p.index: None for p, _ in pending[:n]}
            if n < len(pending) and pending[n][0].op == OP_WRITE:
                torn = pending[n][0]
                sectors = _sectors(torn)
                if len(sectors) > 1:
                    keep[torn.index] = set(sectors[: rng.randrange(1, len(sectors))])
        elif variant == "subset":
            for p, _ in pending:
                if rng.random() < 0.5:
                    continue
                sectors = _sectors(p) if p.op == OP_WRITE else []
                if len(sectors) > 1 and rng.random() < 0.25:
                    keep[p.index] = {s for s in sectors if rng.random() < 0.5}
                else:
                    keep[p.index] = None
        out: dict[str, bytes] = {}
        for name, f in self.files.items():
            if f.durable is None or name not in SUFFIXES:
                continue
            buf = bytearray(f.durable)
            for p in f.pending:
                if p.index in keep:
                    _apply(buf, p, keep[p.index])
            out[name] = bytes(buf)
        return out


def cut_points(story: Story, n: int, rng: random.Random) -> list[tuple[int, str]]:
    """``n`` (cut, variant) pairs: a cut is a log position (``ops[:cut]`` happened).
    Half right after an action (a publish of an essential event, a notice frame: where
    an unsynced commit would show), half anywhere a store file was touched, one in 50
    while the store is being created."""
    file_ops = [op.index + 1 for op in story.ops if op.file is not None]
    creation = file_ops[:40]  # the store being created: a rolled-back journal, a torn header
    essential_sends = sorted(
        {
            at + 1
            for event_id, at in story.published.items()
            if story.events[event_id][0] in ESSENTIAL_TYPES
        }
        | {at + 1 for at in story.notice_frames}
    )
    points = []
    for i in range(n):
        pool = essential_sends if i % 2 == 0 and essential_sends else file_ops
        if i % 50 == 1:
            pool = creation
        points.append((rng.choice(pool), rng.choices(VARIANTS, VARIANT_WEIGHTS)[0]))
    points.sort()
    return points


def rebuilt_stores(story: Story, points: list[tuple[int, str]], seed: int) -> Iterator[Any]:
    """(cut, variant, files) for each point, in log order: one pass over the calls."""
    disk = Disk()
    done = 0
    for cut, variant in points:
        while done < cut:
            disk.step(story.ops[done])
            done += 1
        rng = random.Random(f"{seed}:{cut}:{variant}")
        yield cut, variant, disk.cut(variant, rng)


# -- 3. restart and check ---------------------------------------------------------------


@dataclass
class Restart:
    reset: dict[str, Any] | None
    last_seq: int
    outbox: dict[int, tuple[str, str]]  # seq -> (event_id, type)
    error: str | None = None


def restart_agent(folder: Path, files: dict[str, bytes], story: Story, decoder: Decoder) -> Restart:
    """The store rebuilt in ``folder``, opened as the daemon opens it, and the agent
    started on it (its policy, notices and pack state loaded from the store)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    path = folder / "pack-agent.db"
    for suffix, data in files.items():
        (folder / f"pack-agent.db{suffix}").write_bytes(data)
    cfg = story.config
    try:
        store, reset = open_store(
            path, max_events=cfg.store.max_events, synchronous=cfg.store.synchronous
        )
    except Exception as exc:
        return Restart(None, 0, {}, error=f"{type(exc).__name__}: {exc}")
    try:
        agent = Agent(cfg, decoder, store)
        if reset is not None:
            agent.record("store.reset", reset, time.time())
        rows = store.pending_rows(0, 10**9)
    except Exception as exc:
        store.close()
        return Restart(reset, 0, {}, error=f"{type(exc).__name__}: {exc}")
    store.close()
    with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as conn:
        found = conn.execute("SELECT last FROM seq WHERE vin = ?", (story.vin,)).fetchone()
    outbox = {json.loads(body)["seq"]: (event_id, kind) for _r, event_id, _v, kind, body in rows}
    return Restart(reset, found[0] if found else 0, outbox)


def real_restart(
    work: Path, story: Story, files: dict[str, bytes], decoder: Decoder
) -> dict[str, Any]:
    """The rebuilt store under a real ``pack-agent run`` process (no shim) with its own
    broker: it must start, deliver its whole outbox (and ``store.reset`` after a reset)
    to the backend, and stop cleanly."""
    if work.exists():
        shutil.rmtree(work)
    state = work / "state"
    state.mkdir(parents=True)
    for suffix, data in files.items():
        (state / f"pack-agent.db{suffix}").write_bytes(data)
    # what it should deliver: the outbox as the in-process restart sees it (on a copy)
    peek = restart_agent(work / "peek", files, story, decoder)
    reset_expected = peek.reset is not None  # then its own store.reset, with its own id
    expected = set() if reset_expected else {event_id for event_id, _k in peek.outbox.values()}
    with contextlib.ExitStack() as stack:
        binary = find_mosquitto()
        broker = stack.enter_context(LocalBroker(binary=binary))
        backend = Backend(broker)
        stack.callback(backend.close)
        config = agent_config(work / "bus", broker.port, state, story.config.store.synchronous)
        config_file = write_config(config, work / "agent.toml")
        status = Path(config.daemon.status_file or "")
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        with open(work / "agent.log", "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pack_agent", "run", "--config", str(config_file)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        stack.callback(lambda: proc.poll() is None and (proc.kill(), proc.wait()))

        def heard() -> set[str]:
            return {e["event_id"] for e in backend.snapshot()}

        def reset_heard() -> bool:
            return any(e["type"] == "store.reset" for e in backend.snapshot())

        ok = True
        try:
            wait_for(lambda: live_status(status).get("pid") == proc.pid, 30, "the agent to run")
            wait_for(
                lambda: expected <= heard() and (reset_heard() or not reset_expected),
                30,
                "the restarted agent to deliver its outbox",
            )
        except RuntimeError:
            ok = False
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        return {
            "started": ok,
            "exit_code": code,
            "outbox": len(expected),
            "delivered": len(expected & heard()),
            "store_reset": reset_expected,
        }


@dataclass
class Figures:
    cuts: int = 0
    essential_lost: int = 0
    cuts_losing_essential: int = 0
    store_reset: int = 0
    reset_not_kept: int = 0
    unexplained_gaps: int = 0
    seq_reused: int = 0
    failed_to_start: int = 0
    by_variant: dict[str, Counter[str]] = field(default_factory=dict)
    lost_types: Counter[str] = field(default_factory=Counter)
    lost_ids: set[str] = field(default_factory=set)  # distinct events lost at some cut
    examples: list[dict[str, Any]] = field(default_factory=list)


def check_cut(
    story: Story, cut: int, variant: str, files: dict[str, bytes], got: Restart, figures: Figures
) -> None:
    figures.cuts += 1
    tally = figures.by_variant.setdefault(variant, Counter())
    tally["cuts"] += 1
    if got.error is not None:
        figures.failed_to_start += 1
        tally["failed_to_start"] += 1
        figures.examples.append({"cut": cut, "variant": variant, "error": got.error})
        return
    if got.reset is not None:
        figures.store_reset += 1
        tally["store_reset"] += 1
        moved = Path(got.reset["moved_to"])
        kept = moved.exists() and moved.read_bytes() == files.get("", b"")
        if not kept or got.outbox.get(1, ("", ""))[1] != "store.reset":
            figures.reset_not_kept += 1
        return
    acted = story.acted(cut)
    lost = []
    for event_id, why in acted.items():
        kind, seq, _at = story.events[event_id]
        known = seq <= got.last_seq and got.outbox.get(seq, (event_id, kind))[0] == event_id
        if known:
            continue
        if why == "published":
            figures.seq_reused += 1
        if kind in ESSENTIAL_TYPES:
            lost.append((seq, kind, why))
            figures.lost_ids.add(event_id)
    if lost:
        figures.essential_lost += len(lost)
        figures.cuts_losing_essential += 1
        tally["essential_lost"] += len(lost)
        figures.lost_types.update(kind for _s, kind, _w in lost)
        if len(figures.examples) < 8:
            figures.examples.append(
                {"cut": cut, "variant": variant, "last_seq": got.last_seq, "lost": lost[:4]}
            )
    published_seqs = {story.events[e][1] for e, why in acted.items() if why == "published"}
    gaps = [
        s for s in range(1, got.last_seq + 1) if s not in published_seqs and s not in got.outbox
    ]
    figures.unexplained_gaps += len(gaps)
    tally["unexplained_gaps"] += len(gaps)


def run(
    cuts: int,
    days: int,
    seed: int,
    work: Path,
    synchronous: str | None = None,
    log: Any = None,
    real_restarts: int = 3,
) -> dict[str, Any]:
    """Record the story, then cut, restart and check ``cuts`` times; the figures.
    ``synchronous``: the store's setting (None: the configuration's default);
    ``real_restarts``: how many of the rebuilt stores (one reset, one with a loss, one
    torn, where the cuts gave them) also go through a real ``pack-agent run``."""
    started = time.monotonic()
    story = record_story(work / "story", days, seed, synchronous)
    if log:
        log(
            f"story: {len(story.ops)} calls recorded, {len(story.events)} events, "
            f"{len(story.notice_frames)} notice frames, {story.seconds:.1f} s"
        )
    decoder = Decoder(story.config, load_and_check(story.config))
    rng = random.Random(seed)
    points = cut_points(story, cuts, rng)
    figures = Figures()
    checking = time.monotonic()
    chosen: dict[str, tuple[int, str, dict[str, bytes]]] = {}  # for the real restarts
    for cut, variant, files in rebuilt_stores(story, points, seed):
        got = restart_agent(work / "cut", files, story, decoder)
        lost_before = figures.essential_lost
        check_cut(story, cut, variant, files, got, figures)
        if got.reset is not None:
            chosen.setdefault("store_reset", (cut, variant, files))
        elif figures.essential_lost > lost_before:
            chosen.setdefault("essential_lost", (cut, variant, files))
        elif len(got.outbox) > 1 and variant in ("prefix", "subset"):
            chosen.setdefault(variant, (cut, variant, files))
        if log and figures.cuts % 100 == 0:
            log(f"{figures.cuts} cuts: {figures.essential_lost} essential lost")
    check_seconds = time.monotonic() - checking
    real = []
    for why, (cut, variant, files) in list(chosen.items())[:real_restarts]:
        result = real_restart(work / "real", story, files, decoder)
        real.append({"why": why, "cut": cut, "variant": variant, **result})
        if log:
            log(f"real restart ({why}, cut {cut}, {variant}): {result}")
    counts = Counter(op.op for op in story.ops)
    types = Counter(kind for kind, _s, _a in story.events.values())
    return {
        "cuts": figures.cuts,
        "essential_lost": figures.essential_lost,
        "cuts_losing_essential": figures.cuts_losing_essential,
        "essential_events_lost_somewhere": len(figures.lost_ids),
        "essential_events": sum(1 for k, _s, _a in story.events.values() if k in ESSENTIAL_TYPES),
        "store_reset": figures.store_reset,
        "reset_not_kept": figures.reset_not_kept,
        "unexplained_gaps": figures.unexplained_gaps,
        "seq_reused": figures.seq_reused,
        "failed_to_start": figures.failed_to_start,
        "lost_types": dict(figures.lost_types),
        "by_variant": {k: dict(v) for k, v in sorted(figures.by_variant.items())},
        "examples": figures.examples,
        "synchronous": story.config.store.synchronous,
        "story": {
            "days": days,
            "events": dict(types),
            "notice_frames": len(story.notice_frames),
            "calls": len(story.ops),
            "writes": counts[OP_WRITE],
            "syncs": counts[OP_SYNC],
            "seconds": round(story.seconds, 1),
        },
        "real_restarts": real,
        "real_restart_failures": sum(1 for r in real if not r["started"] or r["exit_code"] != 0),
        "check_seconds": round(check_seconds, 1),
        "seconds": round(time.monotonic() - started, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cuts", type=int, default=1000, help="cut points to try")
    p.add_argument("--days", type=int, default=70, help="days of the simulated story")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--synchronous",
        choices=["NORMAL", "FULL"],
        help="store.synchronous for the story (default: the configuration's default)",
    )
    p.add_argument(
        "--real-restarts",
        type=int,
        default=3,
        help="rebuilt stores that also go through a real pack-agent run process",
    )
    p.add_argument("--keep", help="work in this folder and keep it (default: a temporary one)")
    args = p.parse_args()

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    if args.keep:
        work = Path(args.keep)
        work.mkdir(parents=True, exist_ok=True)
        figures = run(
            args.cuts, args.days, args.seed, work, args.synchronous, log, args.real_restarts
        )
    else:
        with tempfile.TemporaryDirectory(prefix="powercut-") as tmp:
            figures = run(
                args.cuts,
                args.days,
                args.seed,
                Path(tmp),
                args.synchronous,
                log,
                args.real_restarts,
            )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
