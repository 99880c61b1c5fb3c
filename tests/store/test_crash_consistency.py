"""Crash consistency: a real `pack-agent run` process, SIGKILLed again and again.

A virtual vehicle (an ageing pack that reaches its scrapping line, a head unit that
answers, a pack swap) plays into a `pack-agent run` subprocess over ``localbus``,
with ``[daemon] clock = "frames"`` so months pass in seconds. The agent is killed
with SIGKILL at seeded random moments (while it decodes, writes SQLite, publishes a
backlog) and started again; the broker is restarted several times and is sometimes
down for a while so that a backlog builds up. Frames sent while the agent is dead
are lost, as on a real car, so the test asserts invariants, not a fixed count:

- every ``seq`` from 1 to the store's last one reached the backend, each with one
  ``event_id`` (after de-duplication by ``event_id``): nothing lost, nothing invented;
- no decision taken twice (one ``scrap.condition_met`` per rule and pack);
- no notice attempt reported twice, and no more attempts per notice and period than
  the cadence allows.

25 kills in the test suite (CI's ten minutes: about 45 s, a decision and 13 kills with a
backlog among them); ``PACK_AGENT_SOAK=1`` runs 500 (``PACK_AGENT_KILLS=n`` sets it).
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import can
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from pack_agent.canbus.checks import load_and_check
from pack_agent.config import AgentConfig, load_config, reference_config_path
from pack_agent.dev.broker import LocalBroker
from pack_agent.dev.sim import VirtualHeadUnit
from pack_agent.dev.sim.rig import rig_config, write_config
from pack_agent.dev.sim.scenario import DAY, Scenario
from pack_agent.dev.sim.vehicle import day_frames

SRC = Path(__file__).resolve().parents[2] / "src"
SEED = 8
KILLS = int(
    os.environ.get("PACK_AGENT_KILLS") or (500 if os.environ.get("PACK_AGENT_SOAK") else 25)
)
# about 0.3 s of life per kill, 0.047 s per simulated day: a run sees about 6 days, so
# the rules' windows are saved (hourly, by frame time) before most kills; a soak run
# plays a longer scenario at the same pace
DAY_PAUSE_S = 0.047
SCENARIO = Scenario(
    name="crash",
    description="a pack that reaches 80 % in about half a year, then is replaced",
    days=max(320, round(KILLS * 0.3 / DAY_PAUSE_S)),
    soh_start=92.0,
    soh_per_year=15.0,
    swap_day=280,
    seed=SEED,
)


def agent_config(channel: Path, port: int, tmp: Path) -> AgentConfig:
    """The reference configuration on localbus, a private broker, a temporary store,
    and the frames as the clock."""
    return rig_config(
        load_config(reference_config_path()),
        {"interface": "localbus", "channel": str(channel)},
        port,
        tmp,
        mqtt={"keepalive_s": 5},
        health={"publish_interval_s": 6 * 3600.0, "bms_timeout_s": 3 * DAY},
        daemon={
            "clock": "frames",
            "shutdown_timeout_s": 2,
            "status_interval_s": 0.5,
            "status_file": str(tmp / "status.json"),
        },
    )


class Backend:
    """The maker's backend: a persistent MQTT session at QoS 1, so what the broker
    accepted while it was away (or restarting with persistence) still reaches it."""

    def __init__(self, broker: LocalBroker) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id="crash-backend",
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        self._client.reconnect_delay_set(0.05, 0.2)
        self._client.on_connect = lambda c, *_: c.subscribe("pack-agent/v1/+/events/#", qos=1)
        self._client.on_message = self._on_message
        self._client.connect_async(broker.host, broker.port, keepalive=5)
        self._client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.events.append(json.loads(msg.payload))

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.events)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class AgentProcess:
    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pack_agent", "run", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.starts += 1

    def kill(self) -> None:
        assert self.proc is not None
        assert self.proc.poll() is None, f"the agent died by itself; log:\n{self.tail()}"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def wait_running(self, status: Path) -> None:
        """Until the daemon's main loop runs (its status file names its pid)."""
        assert self.proc is not None
        deadline = time.monotonic() + 20
        while True:
            try:
                if json.loads(status.read_text())["pid"] == self.proc.pid:
                    return
            except (OSError, ValueError, KeyError):
                pass
            assert time.monotonic() < deadline, self.tail()
            assert self.proc.poll() is None, f"the agent exited; log:\n{self.tail()}"
            time.sleep(0.01)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])


def store_view(path: Path) -> tuple[int, int]:
    """(last seq, pending events) read from the store, as `pack-agent status` would."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        conn.execute("PRAGMA busy_timeout = 2000")
        last = conn.execute("SELECT max(last) FROM seq").fetchone()[0] or 0
        pending = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
    finally:
        conn.close()
    return last, pending


def live_pending(status: Path, since: float) -> int | None:
    """Pending events by the daemon's status file, if written after ``since``."""
    try:
        live = json.loads(status.read_text())
        fresh = datetime.fromisoformat(live["time"]).timestamp() > since
        return live["queue"]["pending"] if fresh else None
    except (OSError, ValueError, KeyError):
        return None


def test_sigkill_at_random_moments_loses_nothing_and_repeats_nothing(tmp_path, mosquitto_binary):
    started = time.monotonic()
    rng = random.Random(SEED)
    channel = tmp_path / "bus"
    store = tmp_path / "state" / "pack-agent.db"
    status = tmp_path / "state" / "status.json"
    broker = LocalBroker(
        binary=mosquitto_binary,
        extra_conf=f"persistence true\npersistence_location {tmp_path}/\nautosave_interval 1",
    ).start()
    config = tmp_path / "agent.toml"
    write_config(agent_config(channel, broker.port, tmp_path / "state"), config)
    db = load_and_check_from(config)
    backend = Backend(broker)
    vehicle_bus = can.Bus(interface="localbus", channel=str(channel), preserve_timestamps=True)
    LISTENERS[id(vehicle_bus)] = listener = Listener(vehicle_bus)
    head_unit = VirtualHeadUnit(db, response=["dismissed", "seen"], delay_s=1.5 * DAY)
    agent = AgentProcess(config, tmp_path / "agent.log")
    days = iter(SCENARIO.states())
    day = next(days)
    kills = backlog_kills = broker_restarts = broker_outages = 0
    try:
        for n in range(KILLS):
            outage = n % 10 == 4  # the broker is down while the agent lives and dies
            if outage:
                broker.stop()
                broker_outages += 1
            agent.start()
            agent.wait_running(status)
            alive = time.monotonic() + rng.uniform(0.02, 0.6)
            while time.monotonic() < alive and day is not None:
                play_day(vehicle_bus, db, head_unit, day)
                day = next(days, None)
            if outage:
                broker.start()
                time.sleep(rng.uniform(0.0, 0.4))  # the backlog drains: kill in the middle
            agent.kill()
            kills += 1
            if store.exists() and store_view(store)[1] and broker.running:
                backlog_kills += 1  # (or delivered events whose delete was deferred)
            if n % 10 == 7:
                broker.restart()
                broker_restarts += 1
        # the rest of the scenario, then a clean stop once everything is delivered
        agent.start()
        agent.wait_running(status)
        while day is not None:
            play_day(vehicle_bus, db, head_unit, day)
            day = next(days, None)
        # the live status counts what is pending; the file keeps delivered events until the
        # agent's next write (deferred deletes), so it is read only after the clean stop
        played_at = time.time()
        deadline = time.monotonic() + 30
        while live_pending(status, played_at) != 0:
            assert time.monotonic() < deadline, f"outbox not drained; log:\n{agent.tail()}"
            time.sleep(0.05)
        assert agent.stop() == 0, agent.tail()
        last_seq, pending = store_view(store)
        assert pending == 0  # deleted at the clean stop
        deadline = time.monotonic() + 15
        while len({e["event_id"] for e in backend.snapshot()}) < last_seq:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        events = backend.snapshot()
    finally:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.wait()
        backend.close()
        listener.close()
        vehicle_bus.shutdown()
        broker.close()

    by_id: dict[str, dict[str, Any]] = {}
    for e in events:
        if e["event_id"] in by_id:
            assert by_id[e["event_id"]] == e, "a duplicate differs from the first copy"
        by_id[e["event_id"]] = e
    unique = list(by_id.values())
    seqs = Counter(e["seq"] for e in unique)
    assert sorted(seqs) == list(range(1, last_seq + 1)), (
        f"missing seq: {sorted(set(range(1, last_seq + 1)) - set(seqs))[:20]}"
    )
    assert max(seqs.values()) == 1, "a seq carried two event ids"
    types = Counter(e["type"] for e in unique)

    decisions = Counter(
        (e["data"]["rule_id"], e["data"]["pack_code"])
        for e in unique
        if e["type"] == "scrap.condition_met"
    )
    assert decisions, f"the scenario took no decision: {types}"
    assert max(decisions.values()) == 1, f"a decision taken twice: {decisions}"
    assert types["pack.identified"] == 1 and types["pack.replaced"] == 1, types

    notified = [e for e in unique if e["type"] == "owner.notified"]
    assert notified and types["owner.acknowledged"], types
    attempts = Counter(
        (e["data"]["seq"], e["data"]["attempt"], e["data"]["channel"]) for e in notified
    )
    assert max(attempts.values()) == 1, "a notice attempt reported twice"
    per_notice: dict[tuple[int, str], list[float]] = defaultdict(list)
    for e in notified:
        per_notice[(e["data"]["seq"], e["data"]["channel"])].append(_t(e["time"]))
    for times in per_notice.values():
        times.sort()
        for i, t in enumerate(times):  # the cadence: at most 3 attempts a day per notice
            assert sum(1 for u in times[i:] if u - t < DAY) <= 3

    elapsed = time.monotonic() - started
    figures = {
        "kills": kills,
        "kills_with_backlog": backlog_kills,
        "broker_restarts": broker_restarts,
        "broker_outages": broker_outages,
        "events_checked": len(unique),
        "messages_received": len(events),
        "duplicates": len(events) - len(unique),
        "decisions": sum(decisions.values()),
        "owner_notified": len(notified),
        "seconds": round(elapsed, 1),
    }
    print("crash-consistency:", json.dumps(figures))
    assert backlog_kills > 0, "no kill fell while a backlog was being published"


def play_day(bus: can.BusABC, db: Any, head_unit: VirtualHeadUnit, day: Any) -> None:
    """One simulated day: the BMS and VCU frames, then the head unit's answers."""
    for frame in day_frames(db, day):
        bus.send(frame)
    serve(bus, head_unit, day.time + 3.0)
    time.sleep(DAY_PAUSE_S)
    serve(bus, head_unit, day.time + 4.0)


class Listener:
    """The head unit's receiver: always reading, as a real ECU's CAN controller does
    (a localbus node that does not read within 50 ms loses frames)."""

    def __init__(self, bus: can.BusABC) -> None:
        self.frames: queue.SimpleQueue[can.Message] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._bus = bus
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            frame = self._bus.recv(0.05)
            if frame is not None:
                self.frames.put(frame)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


LISTENERS: dict[int, Listener] = {}


def serve(bus: can.BusABC, head_unit: VirtualHeadUnit, now: float) -> None:
    frames = LISTENERS[id(bus)].frames
    while not frames.empty():
        head_unit.on_frame(frames.get(), now)
    for answer in head_unit.answers_due(now):
        bus.send(answer)


def load_and_check_from(path: Path) -> Any:
    from pack_agent.config import load_config

    return load_and_check(load_config(path))


def _t(text: str) -> float:
    from pack_agent.core.events import parse_time

    return parse_time(text).timestamp()
