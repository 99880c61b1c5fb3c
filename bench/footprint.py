"""Footprint benchmark: a real ``pack-agent run`` process, fed by the simulator over localbus.

    PYTHONPATH=src python bench/footprint.py [--sim-minutes 10] [--realtime-s 10] [--busy-fps 2000]

One private mosquitto (``LocalBroker``), one store in a temporary directory, the reference
configuration (every metric and rule) on a ``localbus`` bus, ``[daemon] clock = "frames"``
so that simulated time runs as fast as the agent reads. The simulator in this process
sends the BMS/VCU messages at their DBC cycle times (``GenMsgCycleTime``, about 34
frames/s) and, on the "busy" phases, ``--busy-fps`` frames/s of ids the mapping does not
use. Measured from /proc/PID of the agent:

- exec to ``READY=1`` on our own ``$NOTIFY_SOCKET``;
- resident memory: ``VmRSS`` during the run (at a third and at the end of the long phase:
  growth) and the peak ``VmHWM``;
- CPU (``utime + stime``) per second of bus time, real-time phases and simulated ones;
- writes over a simulated steady day (healthy pack, broker connected): ``/proc/PID/io``
  (``syscw``, ``wchar``, ``write_bytes``) and, when strace is installed, the write and
  sync system calls on the SQLite files; the same over a decision day that follows it
  (the pack passes 3,000 full cycles: a decision, the owner's notice, its events);
  each day is fed at the agent's pace and counted until its status file says the day's
  last frame is read and the outbox is empty. ``--day-step-s`` longer than half the
  reference BMS timeout (CI's 120 s) raises the timeout to twice the step: otherwise
  every frame is a wake-up, no reading is ever taken and the day writes nothing
  (``quiet_day_timeout``);
- a long life (``--life-days``): a second, fresh agent process lives the ``ageing``
  scenario (about three years: the SOH trend and forecast, the decision, the owner's
  notices and answers, the pack swap) with the simulator's head unit answering;
  ``VmRSS`` at ten marks (each once the agent has read every frame sent before it), so
  growth with the rules' windows, the SOH history and the notices' state shows.

The agent and the baseline run as installed: with pack-agent's bytecode compiled first
(``compileall``, as pip does), whatever ``PYTHONDONTWRITEBYTECODE`` says here.

Baseline in the same run: ``python -c "import can, cantools, paho.mqtt.client"``
(its exit time and peak RSS), so the figures also print as ratios.

localbus filters in software, in the receiving process (python-can applies
``can_filters`` after the datagram is read); SocketCAN filters in the kernel, so on a
vehicle the busy-bus figures are an upper bound. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import can

from pack_agent.canbus.checks import load_and_check
from pack_agent.config import load_config, reference_config_path
from pack_agent.dev.broker import LocalBroker
from pack_agent.dev.sim import SCENARIOS, VirtualHeadUnit, VirtualVehicle
from pack_agent.dev.sim.rig import rig_config
from pack_agent.dev.sim.rig import write_config as rig_write
from pack_agent.dev.sim.scenario import DayState
from pack_agent.dev.sim.vehicle import code_pages, cyclic_values, encode

SRC = Path(__file__).resolve().parents[1] / "src"
CLK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024
BASELINE = "import can, cantools, paho.mqtt.client"
CHECK_LINE = re.compile(
    r"configuration checked in a child process in (?P<s>[0-9.]+) s"
    r"(?:, child peak (?P<mib>[0-9.]+) MiB)?"
)
UNMAPPED_IDS = range(0x100, 0x180)  # 128 ids the reference mapping does not use
EVENT_LINE = re.compile(r"event (\S+) seq=\d+")  # the agent's log line for each event
LIFE_LEAD_DAYS = 15  # how far the simulator may run ahead of the agent in the long life


# -- the agent process ---------------------------------------------------------


def write_config(
    path: Path, bus_dir: Path, port: int, tmp: Path, bms_timeout_s: float | None = None
) -> None:
    """The reference configuration, on localbus, a private broker and a temporary store
    (``bms_timeout_s``: the reference's unless given, see ``quiet_day_timeout``)."""
    health = {} if bms_timeout_s is None else {"bms_timeout_s": bms_timeout_s}
    cfg = rig_config(
        load_config(reference_config_path()),
        {"interface": "localbus", "channel": str(bus_dir)},
        port,
        tmp,
        health=health,
        daemon={
            "clock": "frames",
            "status_interval_s": 0.1,
            "status_file": str(tmp / "run" / "status.json"),
        },
    )
    rig_write(cfg, path)


def proc_status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK  # utime, stime


def proc_io(pid: int) -> dict[str, int]:
    text = Path(f"/proc/{pid}/io").read_text()
    return {k: int(v) for k, v in (line.split(": ") for line in text.splitlines())}


class Agent:
    """``pack-agent run`` in a subprocess with our own notify socket."""

    def __init__(self, config: Path, tmp: Path) -> None:
        self.notify_path = tmp / "notify.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.log_path = tmp / "agent.log"
        self.log = self.log_path.open("wb")
        env = {**installed_env(), "NOTIFY_SOCKET": str(self.notify_path)}
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pack_agent", "run", "--config", str(config)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.pid = self.proc.pid
        self.status_file = tmp / "run" / "status.json"
        try:
            self.ready_s = self._wait_ready(started)
        except BaseException:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
            self.log.close()
            self.notify.close()
            raise

    def _wait_ready(self, started: float) -> float:
        self.notify.settimeout(20)
        while True:
            data = self.notify.recv(4096).decode()
            if "READY=1" in data.split("\n"):
                return time.monotonic() - started

    def status(self) -> dict[str, Any]:
        """The agent's live status file, or {} while it is missing or half written."""
        try:
            return json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return {}

    def frame_time(self) -> float:
        """The newest time the agent has read (its clock, in frames mode): readings may
        wait for the pack code after a wake-up, so the newest reading lags behind it."""
        agent = self.status().get("agent", {})
        if agent.get("frame_time") is not None:
            return float(agent["frame_time"])
        latest = agent.get("latest", {})
        return max((r["time"] for r in latest.values()), default=0.0)

    def wait_drained(self, timeout: float) -> dict[str, Any]:
        """The status file once the outbox is empty (or as it is after ``timeout``)."""
        deadline = time.monotonic() + timeout
        status = self.status()
        while status.get("queue", {}).get("pending") != 0 and time.monotonic() < deadline:
            time.sleep(0.05)
            status = self.status()
        return status

    def wait_read(self, t: float, timeout: float) -> dict[str, Any]:
        """The status file once the agent has read up to bus time ``t`` and its outbox is
        empty (or as it is after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            read = self.frame_time() >= t
            if read and status.get("queue", {}).get("pending") == 0:
                return status
            time.sleep(0.05)
        return self.status()

    def log_size(self) -> int:
        self.log.flush()
        return self.log_path.stat().st_size

    def events_since(self, offset: int) -> dict[str, int]:
        """The events the agent logged after ``offset`` of its log, by type."""
        with self.log_path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        return dict(sorted(Counter(EVENT_LINE.findall(text)).items()))

    def broker_connected(self) -> bool:
        return bool(self.status().get("broker", {}).get("connected"))

    def stop(self) -> float:
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        self.log.close()
        self.notify.close()
        return time.monotonic() - started


# -- the simulator ---------------------------------------------------------------


class Traffic:
    """Frames of simulated time: mapped BMS/VCU at their cycle times, optional busy ids."""

    def __init__(self, config_path: Path, busy_fps: int, full_cycles: int | None = None) -> None:
        cfg = load_config(config_path)
        self.db = load_and_check(cfg)
        state = SCENARIOS["healthy"].states()[0]
        if full_cycles is not None:  # past the reference rule cycles-3000: a decision day
            state = dataclasses.replace(state, full_cycles=full_cycles)
        values = cyclic_values(state)
        self.cycles: list[tuple[float, list[can.Message]]] = []
        for m in self.db.messages:
            if not (m.cycle_time and m.senders and set(m.senders) & {"BMS", "VCU"}):
                continue
            if m.name == "BMS_PackCode":
                self.cycles.append((m.cycle_time / 1000, code_pages(self.db, state.code, 0.0)))
            elif m.name in values:
                self.cycles.append(
                    (m.cycle_time / 1000, [encode(self.db, m.name, values[m.name], 0)])
                )
        self.mapped_fps = sum(1 / c for c, _ in self.cycles)
        self.busy_fps = busy_fps

    def frames(
        self, start: float, seconds: float, busy: bool, step: float = 0.0
    ) -> Iterator[can.Message]:
        """``seconds`` of bus time from ``start``, in time order. ``step`` > 0: every mapped
        message once per ``step`` instead of at its cycle time (a quiet day, fewer frames)."""
        events: list[tuple[float, int, int]] = []  # time, cycle index, page
        for i, (cycle, _) in enumerate(self.cycles):
            period = step or cycle
            n = int(seconds / period)
            events += [(start + k * period + i * 0.0007, i, k) for k in range(n)]
        if busy and self.busy_fps:
            gap = 1.0 / self.busy_fps
            ids = list(UNMAPPED_IDS)
            events += [
                (start + k * gap, -1, ids[k % len(ids)])
                for k in range(int(seconds * self.busy_fps))
            ]
        events.sort()
        payload = bytes(8)
        for t, i, k in events:
            if i < 0:
                yield can.Message(arbitration_id=k, data=payload, is_extended_id=False, timestamp=t)
            else:
                tpls = self.cycles[i][1]
                tpl = tpls[k % len(tpls)]
                yield can.Message(
                    arbitration_id=tpl.arbitration_id,
                    data=tpl.data,
                    is_extended_id=tpl.is_extended_id,
                    timestamp=t,
                )


def feed_simulated(
    bus: can.BusABC | SentBus, agent: Agent, frames: Iterator[can.Message], lead_s: float
) -> int:
    """As fast as the agent reads: never more than ``lead_s`` of bus time ahead of what
    the agent reports having handled (its status file), so nothing piles up in queues."""
    n = 0
    done = 0.0
    for frame in frames:
        while frame.timestamp - done > lead_s:
            done = agent.frame_time()
            if frame.timestamp - done > lead_s:
                time.sleep(0.02)
        bus.send(frame)
        n += 1
    return n


def feed_realtime(bus: can.BusABC, traffic: Traffic, seconds: float, busy: bool) -> int:
    """Wall-clock pacing: the frames of each 10 ms go out together, stamped with now."""
    start = time.time()
    n = 0
    batch: list[can.Message] = []
    for frame in traffic.frames(start, seconds, busy):
        if frame.timestamp > time.time():
            for f in batch:
                bus.send(f)
            n += len(batch)
            batch = []
            time.sleep(max(0.0, frame.timestamp - time.time()))
        batch.append(frame)
    for f in batch:
        bus.send(f)
    return n + len(batch)


class SentBus:
    """The simulator's bus, remembering the newest time stamp it sent."""

    def __init__(self, bus: can.BusABC) -> None:
        self.bus = bus
        self.last = 0.0

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        self.last = max(self.last, msg.timestamp)
        self.bus.send(msg, timeout)

    def recv(self, timeout: float | None = None) -> can.Message | None:
        return self.bus.recv(timeout)


def life(broker: LocalBroker, days: int) -> dict[str, Any]:
    """A fresh agent process through ``days`` of the ``ageing`` scenario (its story, with
    the head unit answering as in the demo), at the pace the agent reads: the simulator
    stays at most ``LIFE_LEAD_DAYS`` ahead of the agent's status file. RSS at ten marks,
    each taken once the agent has read every frame sent before it."""
    scenario = dataclasses.replace(SCENARIOS["ageing"], days=days)
    every = max(1, days // 10)
    with tempfile.TemporaryDirectory(prefix="pack-agent-life-") as d:
        tmp = Path(d)
        config = tmp / "agent.toml"
        write_config(config, tmp / "bus", broker.port, tmp)
        db = load_and_check(load_config(config))
        bus = SentBus(
            can.Bus(interface="localbus", channel=str(tmp / "bus"), preserve_timestamps=True)
        )
        try:
            agent = Agent(config, tmp)  # kills its process if it never gets ready
        except BaseException:
            bus.bus.shutdown()
            raise
        try:
            rss: list[tuple[int, float]] = [(0, proc_status(agent.pid)["VmRSS"] / MIB)]
            waits = {"lagged": 0}

            def sync(t: float, lead_s: float = LIFE_LEAD_DAYS * 86400) -> None:
                give_up = time.monotonic() + 10.0
                while agent.frame_time() < t - lead_s:
                    if agent.proc.poll() is not None:
                        raise RuntimeError(f"the agent exited ({agent.proc.returncode})")
                    if time.monotonic() > give_up:
                        waits["lagged"] += 1  # reported: the figures are then suspect
                        return
                    time.sleep(0.01)

            def on_day(state: DayState) -> None:
                if state.day and state.day % every == 0:
                    sync(bus.last, 0.0)  # every frame of the days before read
                    rss.append((state.day, proc_status(agent.pid)["VmRSS"] / MIB))

            head_unit = VirtualHeadUnit(
                db, response=list(scenario.answers), delay_s=scenario.answer_delay_s
            )
            vehicle = VirtualVehicle(bus, db, scenario, head_unit, on_day=on_day, sync=sync)
            cpu0, t0 = cpu_s(agent.pid), time.monotonic()
            vehicle.run()
            sync(bus.last, 0.0)
            end = scenario.start + scenario.days * 86400.0
            for _ in range(20):  # its last notices reach the head unit, the answers go back
                vehicle.serve_head_unit(end)
                time.sleep(0.05)
            cpu1, t1 = cpu_s(agent.pid), time.monotonic()
            rss.append((scenario.days, proc_status(agent.pid)["VmRSS"] / MIB))
            hwm = proc_status(agent.pid)["VmHWM"]
            status = agent.wait_drained(10.0)
        finally:
            agent.stop()
            bus.bus.shutdown()
        log = (tmp / "agent.log").read_text(errors="replace")
    settled = [r for day, r in rss if day >= every]  # the windows and caches have filled
    return {
        "days": scenario.days,
        "wall_s": round(t1 - t0, 2),
        "cpu_s": round(cpu1 - cpu0, 2),
        "rss_by_day_mib": {day: round(r, 2) for day, r in rss},
        "rss_peak_mib": round(hwm / MIB, 2),
        "rss_end_mib": round(rss[-1][1], 2),
        "settled_from_day": every,
        "rss_growth_settled_mib": round(settled[-1] - settled[0], 2),
        "events": dict(sorted(Counter(EVENT_LINE.findall(log)).items())),
        "notices_shown": len(head_unit.shown),
        "outbox_pending": status.get("queue", {}).get("pending"),
        "delivered_total": status.get("queue", {}).get("delivered_total"),
        "sync_gave_up": waits["lagged"],
        "frames_dropped_by_localbus": getattr(bus.bus, "dropped", 0),
    }


# -- phases ------------------------------------------------------------------------


def day_writes(
    agent: Agent, bus: can.BusABC, frames: Iterator[can.Message], trace_path: Path, step_s: float
) -> tuple[dict[str, Any], dict[str, int]]:
    """One simulated day fed at the agent's pace: the phase's figures (with the events the
    agent logged during it) and its writes (``/proc/PID/io`` deltas, and the SQLite files'
    write and sync calls under strace), counted until the agent has read the day's last
    frame and its outbox is empty (its status file says both)."""
    io0 = proc_io(agent.pid)
    log_at = agent.log_size()
    tracer = strace_day(agent.pid, trace_path)
    sent = SentBus(bus)
    # at most 240 steps of each message ahead of the agent (1,200 bus-s at the full form's
    # 5 s step), whatever the step: the same few frames in flight
    lead_s = 240 * step_s
    phase = measure(agent, lambda: feed_simulated(sent, agent, frames, lead_s), 86400.0)
    status = agent.wait_read(sent.last, 30.0)  # the day's events committed and delivered
    io1 = proc_io(agent.pid)
    if tracer is not None:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(10)
    phase["events"] = agent.events_since(log_at)
    phase["outbox_pending"] = status.get("queue", {}).get("pending")
    writes = {k: io1[k] - io0[k] for k in ("syscw", "wchar", "write_bytes")}
    if tracer is not None:
        writes.update(strace_counts(trace_path))
    return phase, writes


def quiet_day_timeout(step_s: float) -> float | None:
    """The BMS timeout for a quiet day whose messages come every ``step_s``: None (the
    reference's 10 s) when they come at least that often. A BMS that sends each message
    only every 120 s (the CI's short form) is silent longer than 10 s between frames, so
    with the reference's timeout every frame is a wake-up: the readings then wait for the
    pack code (one page per step, never all four within the wait), no reading is taken,
    no sample is due and nothing is saved, and the day measures 0 writes. Such a BMS is
    configured with a timeout above its period, as here: twice the step."""
    reference = load_config(reference_config_path()).health.bms_timeout_s
    return None if step_s <= reference / 2 else 2 * step_s


def measure(agent: Agent, run: Any, bus_seconds: float) -> dict[str, Any]:
    cpu0, t0 = cpu_s(agent.pid), time.monotonic()
    frames = run()
    cpu1, t1 = cpu_s(agent.pid), time.monotonic()
    return {
        "bus_s": bus_seconds,
        "frames": frames,
        "wall_s": round(t1 - t0, 2),
        "cpu_s": round(cpu1 - cpu0, 3),
        "cpu_per_bus_s": round((cpu1 - cpu0) / bus_seconds, 5),
        "rss_mib": round(proc_status(agent.pid)["VmRSS"] / MIB, 2),
    }


def installed_env() -> dict[str, str]:
    """As installed on a gateway: bytecode compiled (pip does at install). The development
    environment may set PYTHONDONTWRITEBYTECODE, which would make every start compile
    pack-agent from source (about 2 MiB more RSS and a slower start)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(SRC)
    return env


def compile_bytecode() -> None:
    """``src/pack_agent/**/__pycache__`` (git-ignored), as ``pip install`` would write."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(SRC / "pack_agent")],
        env=installed_env(),
        check=True,
        stdout=subprocess.DEVNULL,
    )


def baseline(rounds: int = 3) -> dict[str, float]:
    """The bare imports the agent cannot do without: exit time (best of) and peak RSS."""
    code = f"{BASELINE}; print(open('/proc/self/status').read())"
    best, hwm = float("inf"), 0
    for _ in range(rounds):
        t = time.monotonic()
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env=installed_env(),
        )
        best = min(best, time.monotonic() - t)
        hwm = int(re.search(r"VmHWM:\s+(\d+)", out.stdout).group(1)) * 1024  # type: ignore[union-attr]
    return {"start_s": best, "rss": hwm}


def strace_day(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    if not shutil.which("strace"):
        return None
    cmd = [
        "strace",
        "-f",
        "-y",
        "-qq",
        "-e",
        "trace=write,pwrite64,fsync,fdatasync,rename",
        "-o",
        str(out),
        "-p",
        str(pid),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # attached
    return proc


def strace_counts(path: Path) -> dict[str, int]:
    counts = {
        "db_writes": 0,
        "db_write_bytes": 0,
        "db_syncs": 0,
        "other_file_writes": 0,
        "renames": 0,
    }
    for line in path.read_text(errors="replace").splitlines():
        db = ".db" in line
        if re.search(r"\b(pwrite64|write)\(\d+<", line):
            if db:
                counts["db_writes"] += 1
                done = re.search(r"= (\d+)$", line)
                counts["db_write_bytes"] += int(done.group(1)) if done else 0
            elif "<socket:" not in line and "<pipe:" not in line and "<UNIX" not in line:
                counts["other_file_writes"] += 1
        elif re.search(r"\bf(data)?sync\(", line):
            counts["db_syncs" if db else "other_file_writes"] += 1
        elif "rename(" in line:
            counts["renames"] += 1
    return counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sim-minutes", type=float, default=10.0, help="busy bus, simulated time")
    ap.add_argument("--realtime-s", type=float, default=10.0, help="each real-time phase")
    ap.add_argument("--busy-fps", type=int, default=2000, help="unmapped frames/s on a busy bus")
    ap.add_argument(
        "--day-step-s", type=float, default=5.0, help="the quiet day: each message every N s"
    )
    ap.add_argument(
        "--life-days",
        type=int,
        default=SCENARIOS["ageing"].days,
        help="the long life: days of the ageing scenario (0: none)",
    )
    args = ap.parse_args()

    compile_bytecode()
    base = baseline()
    with tempfile.TemporaryDirectory(prefix="pack-agent-footprint-") as d, LocalBroker() as broker:
        tmp = Path(d)
        config = tmp / "agent.toml"
        write_config(config, tmp / "bus", broker.port, tmp, quiet_day_timeout(args.day_step_s))
        traffic = Traffic(config, args.busy_fps)
        bus = can.Bus(interface="localbus", channel=str(tmp / "bus"), preserve_timestamps=True)
        agent = Agent(config, tmp)
        ready_rss = proc_status(agent.pid)["VmRSS"]
        deadline = time.monotonic() + 10
        while not agent.broker_connected() and time.monotonic() < deadline:
            time.sleep(0.05)
        phases: dict[str, Any] = {}
        try:
            rt = args.realtime_s
            phases["realtime_mapped"] = measure(
                agent, lambda: feed_realtime(bus, traffic, rt, False), rt
            )
            phases["realtime_busy"] = measure(
                agent, lambda: feed_realtime(bus, traffic, rt, True), rt
            )
            t = time.time() + 1.0
            sim = args.sim_minutes * 60
            phases["sim_mapped"] = measure(
                agent, lambda: feed_simulated(bus, agent, traffic.frames(t, sim, False), 60.0), sim
            )
            t += sim
            third_rss: list[int] = []

            def busy_run() -> int:
                n = 0
                for k in range(3):  # RSS after each third: growth
                    frames = traffic.frames(t + k * sim / 3, sim / 3, True)
                    n += feed_simulated(bus, agent, frames, 5.0)
                    time.sleep(0.3)
                    third_rss.append(proc_status(agent.pid)["VmRSS"])
                return n

            phases["sim_busy"] = measure(agent, busy_run, sim)
            t += sim
            # a steady day: healthy pack, broker connected, every message every few s
            day = 86400.0
            frames = traffic.frames(t, day, False, args.day_step_s)
            phases["sim_day"], writes = day_writes(
                agent, bus, frames, tmp / "strace.txt", args.day_step_s
            )
            t += day
            # then a decision day: the same, past 3,000 full cycles (rule cycles-3000)
            deciding = Traffic(config, 0, full_cycles=3100)
            frames = deciding.frames(t, day, False, args.day_step_s)
            phases["sim_decision_day"], decision_writes = day_writes(
                agent, bus, frames, tmp / "strace-decision.txt", args.day_step_s
            )
            hwm = proc_status(agent.pid)["VmHWM"]
        finally:
            stop_s = agent.stop()
            dropped = getattr(bus, "dropped", 0)
            bus.shutdown()
        log_lines = (tmp / "agent.log").read_text(errors="replace").splitlines()
        long_life = life(broker, args.life_days) if args.life_days > 0 else None

    growth = (third_rss[-1] - third_rss[0]) / MIB
    check = next(
        (m for line in log_lines if (m := CHECK_LINE.search(line))), None
    )  # the configuration check's child (configproc): its time and peak, from the log
    result = {
        "baseline_start_s": round(base["start_s"], 3),
        "baseline_rss_mib": round(base["rss"] / MIB, 2),
        "ready_s": round(agent.ready_s, 3),
        "ready_ratio": round(agent.ready_s / base["start_s"], 2),
        "rss_at_ready_mib": round(ready_rss / MIB, 2),
        "rss_peak_mib": round(hwm / MIB, 2),
        "rss_peak_ratio": round(hwm / base["rss"], 2),
        "rss_busy_thirds_mib": [round(r / MIB, 2) for r in third_rss],
        "rss_growth_mib": round(growth, 2),
        "config_check_s": float(check["s"]) if check else None,
        "config_check_child_peak_mib": float(check["mib"]) if check and check["mib"] else None,
        "mapped_fps": round(traffic.mapped_fps, 1),
        "busy_fps": args.busy_fps,
        "phases": phases,
        "day_writes": writes,
        "decision_day_writes": decision_writes,
        "events": dict(
            sorted(Counter(m for x in log_lines for m in EVENT_LINE.findall(x)).items())
        ),
        "life": long_life,
        "stop_s": round(stop_s, 3),
        "frames_dropped_by_localbus": dropped,
        "agent_log_lines": len(log_lines),
        "targets_met": {
            "rss_le_40_mib": hwm <= 40 * MIB
            and (long_life is None or long_life["rss_peak_mib"] <= 40),
            "ready_le_0_6_s": agent.ready_s <= 0.6,
            "no_growth": growth < 1.0
            and (long_life is None or long_life["rss_growth_settled_mib"] < 1.0),
        },
    }
    print(f"baseline ({BASELINE}):")
    print(f"  start {base['start_s']:.3f} s, peak RSS {base['rss'] / MIB:.1f} MiB")
    print(
        f"agent: ready {agent.ready_s:.3f} s ({result['ready_ratio']}x), "
        f"peak RSS {hwm / MIB:.1f} MiB "
        f"({result['rss_peak_ratio']}x), busy-run RSS by thirds {result['rss_busy_thirds_mib']} MiB"
    )
    if check:
        print(f"  configuration check in a child: {check['s']} s, peak {check['mib']} MiB")
    for name, p in phases.items():
        print(
            f"  {name:16} {p['bus_s']:>8.0f} bus-s {p['frames']:>9} frames "
            f"{p['wall_s']:>7.1f} wall-s "
            f"CPU {p['cpu_per_bus_s'] * 1000:8.2f} ms per bus-s  RSS {p['rss_mib']} MiB"
        )
    print(f"  steady day writes: {writes}")
    print(f"  decision day writes: {decision_writes}")
    print(f"  events of the run: {result['events']}")
    if long_life is not None:
        by_day = ", ".join(f"{d}: {r}" for d, r in long_life["rss_by_day_mib"].items())
        print(
            f"  long life ({long_life['days']} simulated days, {long_life['wall_s']} wall-s, "
            f"{long_life['notices_shown']} notices shown, {long_life['delivered_total']} "
            f"events delivered): peak RSS {long_life['rss_peak_mib']} MiB; RSS by day "
            f"{{{by_day}}} MiB\n    events {long_life['events']}"
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
