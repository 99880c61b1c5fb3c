"""Nothing lost, nothing invented: the whole agent process (`pack-agent run`) against
a real mosquitto, while the agent is SIGKILLed, the broker is killed, or the broker
hangs (SIGSTOP). In every case the backend ends with exactly the expected event_id
set (after de-duplication) and every vehicle's seq contiguous from 1.

How the events get there: python-can's ``virtual`` bus lives inside one process, so
a `pack-agent run` subprocess cannot be fed CAN frames from this test. Instead the
test fills the agent's store with N events (through ``Store.append``, exactly what
the agent does when frames cause events) and starts the subprocess on a virtual bus
with nothing on it. The subprocess then exercises exactly the delivery path: open
the outbox, connect, drain at QoS 1, delete on PUBACK, and recover after being
killed. With no frames the agent appends nothing itself (no BMS seen, so no
``bms.silent``; no readings, so no ``pack.health``), which the final checks confirm.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pack_agent.config import load_config, reference_config_path
from pack_agent.core.events import EVENT_TYPES, EventDraft, utc_from_timestamp
from pack_agent.delivery import mqtt as uplink
from pack_agent.dev.broker import LocalBroker
from pack_agent.dev.sim.rig import rig_config
from pack_agent.dev.sim.rig import write_config as rig_write
from pack_agent.store import DELETE_BATCH, Store

if TYPE_CHECKING:
    from conftest import Subscriber

VIN = "LPACK2026AGENT001"
SRC = Path(__file__).resolve().parents[2] / "src"


def write_config(tmp_path: Path, port: int, **mqtt: Any) -> Path:
    cfg = rig_config(
        load_config(reference_config_path()),
        {"interface": "virtual", "channel": f"delivery-{uuid.uuid4().hex[:10]}"},
        port,
        tmp_path,
        mqtt={"reconnect_min_s": 0.1, **mqtt},
        daemon={"status_file": str(tmp_path / "status.json"), "status_interval_s": 0.1},
    )
    return rig_write(cfg, tmp_path / "agent.toml")


def prefill(tmp_path: Path, n: int) -> list[str]:
    """N events of every type in the agent's store, as the agent would have appended them."""
    types = list(EVENT_TYPES)
    with Store(tmp_path / "pack-agent.db") as store, store.transaction():
        return [
            store.append(
                EventDraft(
                    type=types[i % len(types)],  # type: ignore[arg-type]
                    vin=VIN,
                    time=utc_from_timestamp(1_780_000_000 + i),
                    data={"i": i},
                )
            ).event_id
            for i in range(n)
        ]


class AgentProcess:
    """`python -m pack_agent run --config FILE` with this worktree's code."""

    def __init__(self, config: Path) -> None:
        env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        self.log = config.with_name(f"agent-{time.monotonic_ns()}.log")
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pack_agent", "run", "--config", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def wait_log(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text(errors="replace"):
            assert self.proc.poll() is None, self.tail()
            assert time.monotonic() < deadline, f"{text!r} not logged: {self.tail()}"
            time.sleep(0.02)

    def terminate(self) -> int:
        self.wait_log("running for")  # its SIGTERM handler is in place
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(15)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture
def agents() -> Iterator[Callable[[Path], AgentProcess]]:
    made: list[AgentProcess] = []

    def start(config: Path) -> AgentProcess:
        made.append(AgentProcess(config))
        return made[-1]

    yield start
    for agent in made:
        if agent.proc.poll() is None:
            agent.kill()


def unique(sub: Subscriber) -> dict[str, dict[str, Any]]:
    return {e["event_id"]: e for e in sub.events}


# deadlines for what takes seconds on an idle machine: a loaded CI machine (the drain
# after a hung broker is one round trip per event) may take many times as long
DRAIN_S = 120.0


def check_exactly(sub: Subscriber, expected: list[str]) -> None:
    sub.wait_for(lambda s: set(expected) <= set(unique(s)), timeout=DRAIN_S)
    time.sleep(0.2)  # nothing else may come
    got = unique(sub)
    assert set(got) == set(expected)
    assert sorted(e["seq"] for e in got.values()) == list(range(1, len(expected) + 1))


def wait_drained(tmp_path: Path, timeout: float = DRAIN_S) -> None:
    """Until the running agent's status says nothing is pending. The backend can hold
    every event before that: a killed agent's delivered-but-not-deleted events are sent
    again by the next one (at least once), after the backend already has them."""
    status = tmp_path / "status.json"
    since = time.time()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            live = json.loads(status.read_text())
            if status.stat().st_mtime > since and live["queue"]["pending"] == 0:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"the agent's outbox did not drain in {timeout} s")


def wait_quiet(sub: Subscriber, quiet_s: float = 1.0, timeout: float = 30.0) -> int:
    """The count of unique events once none has arrived for ``quiet_s``: what the broker
    sent before it hung may still be on its way to a subscriber starved of CPU."""
    deadline = time.monotonic() + timeout
    count, since = len(unique(sub)), time.monotonic()
    while time.monotonic() - since < quiet_s:
        assert time.monotonic() < deadline, f"events kept arriving for {timeout} s"
        time.sleep(0.05)
        now = len(unique(sub))
        if now != count:
            count, since = now, time.monotonic()
    return count


def check_outbox(tmp_path: Path, n: int) -> None:
    """After the agent stopped: its outbox is empty, and it appended nothing of its own."""
    with Store(tmp_path / "pack-agent.db") as store:
        assert store.pending_count() == 0
        event = store.append(EventDraft(type="bms.silent", vin=VIN, time=utc_from_timestamp(0)))
        assert event.seq == n + 1


def test_agent_sigkilled_mid_stream_and_restarted(
    broker: LocalBroker, subscribe: Callable[..., Subscriber], agents: Any, tmp_path: Path
) -> None:
    n = 4000
    expected = prefill(tmp_path, n)
    config = write_config(tmp_path, broker.port)
    rng = random.Random(os.environ.get("PACK_AGENT_SEED", "5"))
    with subscribe(broker) as sub:
        for k in range(1, 4):  # killed three times while draining, at random moments
            agent = agents(config)
            target = rng.randint((k - 1) * n // 4 + 1, k * n // 4)
            try:
                sub.wait_for(lambda s, t=target: len(unique(s)) >= t, timeout=60)
            except AssertionError:
                raise AssertionError(agent.tail()) from None
            agent.kill()
            assert len(unique(sub)) < n, "drained before the kill: make n larger"
        last = agents(config)
        check_exactly(sub, expected)
        wait_drained(tmp_path)
        assert last.terminate() == 0, last.tail()
    check_outbox(tmp_path, n)
    # a kill re-sends at most what was handed to paho and the delivered events not yet deleted
    per_kill = 20 + uplink.QUEUED_IN_PAHO + DELETE_BATCH
    assert 0 <= len(sub.events) - n <= 3 * per_kill


def test_broker_killed_and_restarted_under_the_running_agent(
    broker: LocalBroker, subscribe: Callable[..., Subscriber], agents: Any, tmp_path: Path
) -> None:
    n = 3000
    expected = prefill(tmp_path, n)
    # the agent reconnects after 1 s, the test subscriber within 0.1 s: it is back first
    agent = agents(write_config(tmp_path, broker.port, reconnect_min_s=1.0, reconnect_max_s=1.0))
    with subscribe(broker) as sub:
        sub.wait_for(lambda s: len(unique(s)) >= n // 3, timeout=60)
        broker.pause()  # in-flight events stay unacknowledged ...
        time.sleep(0.1)
        broker.kill()  # ... when the broker dies
        assert len(unique(sub)) < n
        sub.wait_for(lambda s: not s.subscribed, timeout=30)
        broker.start()
        sub.wait_subscribed()
        check_exactly(sub, expected)
    wait_drained(tmp_path)
    assert agent.terminate() == 0, agent.tail()
    check_outbox(tmp_path, n)
    assert "connected to" in agent.tail() and "disconnected from" in agent.tail()


def test_broker_hung_then_resumed(
    broker: LocalBroker, subscribe: Callable[..., Subscriber], agents: Any, tmp_path: Path
) -> None:
    n = 3000
    expected = prefill(tmp_path, n)
    # one PUBACK awaited at a time: the drain takes a round trip per event, so the pause
    # comes while most are still to go (with a window of 20 a fast machine drained all
    # 3000 between the first third arriving and the pause)
    agent = agents(write_config(tmp_path, broker.port, max_inflight=1))
    with subscribe(broker) as sub:
        sub.wait_for(lambda s: len(unique(s)) >= 100, timeout=60)
        broker.pause()  # the network is blocked: nothing answered, nothing closed
        stalled = wait_quiet(sub)  # what it sent before the pause has arrived
        time.sleep(1.5)
        assert len(unique(sub)) == stalled < n
        broker.resume()
        check_exactly(sub, expected)
    wait_drained(tmp_path)
    assert agent.terminate() == 0, agent.tail()
    check_outbox(tmp_path, n)
