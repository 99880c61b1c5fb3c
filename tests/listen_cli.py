"""Driving `pack-agent listen` from a test: start it in a child, wait for its subscription,
publish events to the broker as a vehicle would, and make numbered events. Shared by the
listener's tests (tests/api/test_subscriber.py, tests/api/test_postgres_sink.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from pack_agent.core.events import Event, EventDraft, utc_from_timestamp
from pack_agent.dev.broker import LocalBroker

SRC = Path(__file__).resolve().parents[1] / "src"


def listen(*args: str) -> subprocess.Popen[str]:
    """`pack-agent listen ARGS` in a child, stdout and stderr piped."""
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen(
        [sys.executable, "-m", "pack_agent", "listen", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_ready(proc: subprocess.Popen[str]) -> None:
    """Read the child's reports until it says it subscribed."""
    assert proc.stderr is not None
    for _ in range(20):
        if "subscribed to" in proc.stderr.readline():
            return
    raise AssertionError("listen did not subscribe")


def publish(
    broker: LocalBroker, events: list[Event], extra: Sequence[tuple[str, str]] = ()
) -> None:
    """Publish ``events`` on their topics (and ``extra`` (topic, body) pairs) at QoS 1,
    returning once the broker acknowledged each."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, "test-vehicle", protocol=mqtt.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    infos = [
        client.publish(f"pack-agent/v1/{e.vin}/events/{e.type}", e.to_json(), qos=1) for e in events
    ]
    infos += [client.publish(topic, body, qos=1) for topic, body in extra]
    for info in infos:
        info.wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


def events_for(vin: str, seqs: list[int]) -> list[Event]:
    """``pack.health`` events of ``vin`` numbered ``seqs``."""
    return [
        Event.from_draft(
            EventDraft(type="pack.health", vin=vin, time=utc_from_timestamp(s), data={"s": s}), s
        )
        for s in seqs
    ]
