"""Deferred deletes after PUBACK, end to end: a real mosquitto, a real SQLite store and
the real uplink. The store notes delivered events in memory and deletes them with its
next write (or every ``DELETE_BATCH`` events, or every ``DELETE_EVERY_S`` while a
backlog drains, or at close); a crash in between only sends them again."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pack_agent.core.events import EventDraft, utc_from_timestamp
from pack_agent.delivery import mqtt as uplink_module
from pack_agent.delivery.mqtt import MqttUplink
from pack_agent.dev.broker import LocalBroker
from pack_agent.store import DELETE_BATCH, Store

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import Subscriber

    Subscribe = Callable[..., Subscriber]

from test_mqtt import CountingClient, drained, drive, settings_for

VIN = "LSVAX4AB1PN000001"
SRC = Path(__file__).resolve().parents[2] / "src"


def draft(i: int, type_: str = "pack.health") -> EventDraft:
    return EventDraft(
        type=type_, vin=VIN, time=utc_from_timestamp(1_700_000_000 + i), data={"i": i}
    )


def rows_in_file(path: Path) -> int:
    """Outbox rows as another process sees the file (read-only)."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
    finally:
        conn.close()


# appends three events; the first two are delivered and deleted, the third is delivered
# and its delete deferred; then the process waits to be killed
DELIVER_THEN_WAIT = textwrap.dedent(
    """
    import sys, time
    from pack_agent.config import MqttSettings
    from pack_agent.core.events import EventDraft, utc_from_timestamp
    from pack_agent.store import Store
    from pack_agent.delivery.mqtt import MqttUplink

    store = Store(sys.argv[1])
    up = MqttUplink(MqttSettings(host="127.0.0.1", port=int(sys.argv[2])), store,
                    "LSVAX4AB1PN000001", agent_version="crash")
    up.start()

    def deliver(i):
        store.append(EventDraft(type="pack.health", vin="LSVAX4AB1PN000001",
                                time=utc_from_timestamp(1_700_000_000 + i), data={"i": i}))
        deadline = time.monotonic() + 10
        while store.pending_count() or up.status()["inflight"]:
            assert time.monotonic() < deadline, up.status()
            up.poll(0.01)

    deliver(1)
    deliver(2)
    assert store.flush_delivered()  # those two are gone from the file
    deliver(3)  # PUBACK noted, the delete deferred
    print(store.delivered_waiting, store.stats()["delivered_total"], flush=True)
    time.sleep(60)
    """
)


def test_killed_after_puback_before_the_delete_sends_that_event_once_more(
    subscribe: Subscribe, broker: LocalBroker, tmp_path: Path
) -> None:
    db = tmp_path / "outbox.db"
    with subscribe(broker) as sub:
        proc = subprocess.Popen(
            [sys.executable, "-c", DELIVER_THEN_WAIT, str(db), str(broker.port)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(SRC)},
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.split() == ["1", "3"], line  # one delete waiting, three delivered
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        sub.wait_for(lambda s: len(s.events) == 3)
        first = {e["seq"]: e["event_id"] for e in sub.events}
        assert rows_in_file(db) == 1  # the delivered third event is still in the file

        # restart: the third event goes out again, unchanged; nothing else does
        with Store(db) as store:
            assert store.pending_count() == 1
            assert store.stats()["delivered_total"] == 2  # what the file knows
            up = MqttUplink(settings_for(broker), store, VIN, agent_version="restart")
            try:
                up.start()
                drive(up, drained(store, up))
                store.append(draft(4))
                drive(up, drained(store, up))
            finally:
                up.stop(timeout=1)
        sub.wait_for(lambda s: len(s.events) == 5)
        time.sleep(0.2)  # nothing else may come
        again = sub.events[3:]
        assert [(e["seq"], e["event_id"]) for e in again] == [
            (3, first[3]),
            (4, again[1]["event_id"]),
        ]
        assert sub.events[2] == again[0]  # the same event, byte for byte
        counts = Counter(e["event_id"] for e in sub.events)
        assert sorted(counts.values()) == [1, 1, 1, 2]
    assert rows_in_file(db) == 0  # deleted at close
    with Store(db) as store:
        assert store.stats()["delivered_total"] == 4


def test_a_backlog_drains_and_the_file_is_freed_as_it_goes(
    subscribe: Subscribe, broker: LocalBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(uplink_module, "DELETE_EVERY_S", 1e9)  # the count alone (slow CI)
    n = 5000
    db = tmp_path / "outbox.db"
    with Store(db, max_events=n) as store:
        with store.transaction():
            for i in range(n):
                store.append(draft(i))
        before = store.commits
        up = MqttUplink(
            settings_for(broker), store, VIN, agent_version="t", client_factory=CountingClient
        )
        with subscribe(broker) as sub:
            try:
                up.start()
                drive(up, drained(store, up), timeout=30)
                commits = store.commits - before
                waiting = store.delivered_waiting
                in_file = rows_in_file(db)
            finally:
                up.stop(timeout=1)
            sub.wait_for(lambda s: len(s.events) == n, 10)
        client = up._client
        assert isinstance(client, CountingClient)
        assert set(client.event_publishes.values()) == {1}  # none published twice
        assert len(client.event_publishes) == n
        assert [e["seq"] for e in sub.events] == list(range(1, n + 1))
        # freed as it went: a commit each time DELETE_BATCH (or a few more: the PUBACKs come
        # in groups, at most the 220 in flight) had gathered; fewer wait for the next write
        assert n // (DELETE_BATCH + 220) <= commits <= n // DELETE_BATCH
        assert waiting == in_file < DELETE_BATCH
        assert store.pending_count() == 0 and store.stats()["delivered_total"] == n
    assert rows_in_file(db) == 0


def test_a_slow_drain_deletes_on_a_timer(
    broker: LocalBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A link too slow to gather DELETE_BATCH events soon still frees the disk, every
    DELETE_EVERY_S (shortened here) while the backlog lasts."""
    monkeypatch.setattr(uplink_module, "DELETE_EVERY_S", 0.05)
    monkeypatch.setattr(uplink_module, "QUEUED_IN_PAHO", 0)  # with max_inflight 1: a slow link
    db = tmp_path / "outbox.db"
    with Store(db) as store:
        with store.transaction():
            for i in range(60):
                store.append(draft(i))
        before = store.commits
        up = MqttUplink(settings_for(broker, max_inflight=1), store, VIN, agent_version="t")
        try:
            up.start()
            seen = []
            deadline = time.monotonic() + 20
            while store.pending_count() or up.status()["inflight"]:
                assert time.monotonic() < deadline
                up.poll()  # one event per poll
                time.sleep(0.01)  # at most 100 events/s
                seen.append(rows_in_file(db) - store.pending_count())
        finally:
            up.stop(timeout=1)
        assert max(seen) < 20  # never far behind ...
        assert store.commits - before >= 3  # ... because the timer deleted them in batches


def test_a_clean_stop_deletes_what_was_delivered_and_says_queue_depth_0(
    subscribe: Subscribe, broker: LocalBroker, tmp_path: Path
) -> None:
    db = tmp_path / "outbox.db"
    store = Store(db)
    try:
        up = MqttUplink(settings_for(broker), store, VIN, agent_version="t")
        with subscribe(broker) as sub:
            up.start()
            for i in range(3):
                store.append(draft(i, "bms.silent" if i == 1 else "pack.health"))
            before = store.commits
            drive(up, drained(store, up))
            assert store.commits == before  # the PUBACKs cost no commit ...
            assert rows_in_file(db) == 3 and store.delivered_waiting == 3  # ... yet
            assert store.pending(10) == [] and store.pending_rows(0, 10) == []
            up.stop(timeout=2)
            sub.wait_for(lambda s: any(x["state"] == "offline" for x in s.statuses))
        offline = next(x for x in sub.statuses if x["state"] == "offline")
        assert offline["queue_depth"] == 0  # delivered events awaiting the delete do not count
        assert rows_in_file(db) == 3
    finally:
        store.close()
    assert rows_in_file(db) == 0  # close deleted them, in one commit
    assert store.commits == before + 1
    with Store(db) as again:
        stats = again.stats()
        assert stats["delivered_total"] == 3 and stats["last_delivered_at"] is not None
