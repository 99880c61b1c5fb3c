"""Storage faults at start: a missing, truncated, corrupt or foreign store file.

Promise (docs/reliability.md): an unreadable store never stops the agent and never
disappears silently. It is moved aside as ``<name>.corrupt-<time>`` and a fresh
store begins with a ``store.reset`` event (seq 1) that the backend receives. A
store from a newer pack-agent or an SQLite file that is not a pack-agent store is
left alone and named in a clear error.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest
from test_daemon import AgentThread

from conftest import Subscriber
from pack_agent.config import load_config, reference_config_path
from pack_agent.core.events import EventDraft, utc_from_timestamp
from pack_agent.dev.demo import demo_config
from pack_agent.errors import StoreError
from pack_agent.store import Store, open_store

VIN = "LPACK2026AGENT001"


def filled_store(path: Path, n: int) -> None:
    with Store(path) as store:
        for i in range(n):
            store.append(
                EventDraft(
                    type="pack.health",
                    vin=VIN,
                    time=utc_from_timestamp(1_800_000_000 + i),
                    data={"metrics": {"soh": {"value": 90.0 - i / 1000}}, "padding": "x" * 200},
                )
            )


def aside(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + ".corrupt-*"))


def test_a_missing_file_is_a_fresh_store_without_a_reset(tmp_path):
    store, reset = open_store(tmp_path / "new" / "pack-agent.db")
    with store:
        assert reset is None and store.pending_count() == 0


@pytest.mark.parametrize(
    "damage",
    ["garbage", "zeros", "truncated", "header-only"],
)
def test_an_unreadable_file_is_moved_aside_and_a_fresh_store_begun(tmp_path, damage):
    path = tmp_path / "pack-agent.db"
    filled_store(path, 3000)
    raw = path.read_bytes()
    assert len(raw) > 100_000
    damaged = {
        "garbage": bytes((i * 7919) % 251 for i in range(len(raw))),
        "zeros": b"\0" * len(raw),
        "truncated": raw[: len(raw) // 2],
        "header-only": raw[:100],
    }[damage]
    path.write_bytes(damaged)
    store, reset = open_store(path)
    with store:
        assert reset is not None
        assert str(path) in reset["error"] and "not a usable SQLite database" in reset["error"]
        moved = aside(path)
        assert [str(p) for p in moved] == [reset["moved_to"]]
        assert moved[0].read_bytes() == damaged  # kept as it was, for a post-mortem
        assert store.pending_count() == 0
        event = store.append(
            EventDraft(type="store.reset", vin=VIN, time=utc_from_timestamp(0), data=reset)
        )
        assert event.seq == 1


def test_a_foreign_or_newer_file_is_an_error_and_is_left_alone(tmp_path):
    foreign = tmp_path / "other.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=r"other\.db: an SQLite database, but not a pack-agent"):
        open_store(foreign)
    newer = tmp_path / "newer.db"
    filled_store(newer, 1)
    conn = sqlite3.connect(newer)
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=r"newer\.db: written by a newer pack-agent"):
        open_store(newer)
    assert not aside(foreign) and not aside(newer)


def test_the_daemon_publishes_store_reset_and_carries_on(broker, tmp_path):
    """Through the daemon: a corrupt file at start, the agent runs, the backend hears."""
    channel = f"test-{uuid.uuid4().hex[:10]}"
    cfg = demo_config(load_config(reference_config_path()), channel, broker.port, tmp_path)
    path = cfg.store_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not SQLite " * 500)
    with Subscriber(broker) as sub:
        agent = AgentThread(cfg)
        try:
            sub.wait_for(lambda s: any(e["type"] == "store.reset" for e in s.events), 10)
        finally:
            agent.stop()
    (event,) = [e for e in sub.events if e["type"] == "store.reset"]
    assert event["seq"] == 1 and event["data"]["moved_to"] == str(aside(path)[0])
    assert "file is not a database" in event["data"]["error"]
    with Store(path) as store:  # the fresh store is a working store
        assert store.pending_count() == 0 and store.delivered_total == 1


def limit_pages(store: Store, extra: int = 0) -> None:
    """SQLite's page-count limit: the file cannot grow beyond its size now (a full disk)."""
    conn = store._conn
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + extra}")


def unlimit_pages(store: Store) -> None:
    store._conn.execute("PRAGMA max_page_count = 1073741823")


def test_a_full_disk_holds_events_in_memory_and_writes_them_in_order(tmp_path, caplog):
    path = tmp_path / "pack-agent.db"
    with Store(path) as store:
        store.append(
            EventDraft(type="pack.identified", vin=VIN, time=utc_from_timestamp(0), data={})
        )
        limit_pages(store)
        for i in range(400):  # far more than one page: the limit bites
            with store.transaction():  # an event with the state change that caused it
                store.put_state("policy.state", {"i": i, "pad": "y" * 300})
                store.append(
                    EventDraft(
                        type="scrap.condition_met" if i == 200 else "pack.health",
                        vin=VIN,
                        time=utc_from_timestamp(i),
                        data={"i": i, "pad": "x" * 300},
                    )
                )
        assert store.held_events > 300
        stats = store.stats()
        assert stats["held_in_memory"] == store.held_events and stats["disk_full_since"]
        assert "disk full" in caplog.text
        assert not store.write_held(force=True)  # still full
        unlimit_pages(store)
        assert store.write_held(force=True)
        assert store.held_events == 0 and store.stats()["disk_full_since"] is None
        rows = store.pending_rows(0, 10_000)
        seqs = [json_seq(body) for *_, body in rows]
        assert seqs == list(range(1, 402))  # gap-free, in order, nothing twice
        assert [t for _, _, _, t, _ in rows].count("scrap.condition_met") == 1
        assert store.get_state("policy.state")["i"] == 399  # the state went with its event
    with Store(path) as store:  # and it is all on disk
        assert store.pending_count() == 401


def test_a_transaction_that_fails_while_full_is_not_held(tmp_path):
    with Store(tmp_path / "pack-agent.db") as store:
        limit_pages(store)
        for i in range(200):
            store.append(
                EventDraft(
                    type="pack.health", vin=VIN, time=utc_from_timestamp(i), data={"p": "x" * 300}
                )
            )
        held = store.held_events
        with pytest.raises(RuntimeError), store.transaction():
            store.append(
                EventDraft(type="pack.health", vin=VIN, time=utc_from_timestamp(0), data={})
            )
            raise RuntimeError("the caller's change failed")
        assert store.held_events == held
        unlimit_pages(store)
        store.append(EventDraft(type="bms.silent", vin=VIN, time=utc_from_timestamp(0), data={}))
        assert store.held_events == held + 1  # behind the others: retried once a second
        assert store.write_held(force=True)
        seqs = [json_seq(body) for *_, body in store.pending_rows(0, 10_000)]
        assert seqs == list(range(1, 202))


def test_what_is_held_in_memory_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr("pack_agent.store.diskfull.MAX_HELD", 5)
    with Store(tmp_path / "pack-agent.db") as store:
        limit_pages(store)

        def draft(pad: int = 0) -> EventDraft:
            t = utc_from_timestamp(0)
            return EventDraft(type="pack.health", vin=VIN, time=t, data={"p": "x" * pad})

        while store.held_events == 0:
            store.append(draft(3000))
        for _ in range(4):
            store.append(draft())
        assert store.held_events == 5
        with pytest.raises(StoreError, match="5 transactions already held in memory"):
            store.append(draft())
        assert store.held_events == 5
        unlimit_pages(store)
        assert store.write_held(force=True)
        seqs = [json_seq(body) for *_, body in store.pending_rows(0, 10_000)]
        assert seqs == list(range(1, len(seqs) + 1))


def test_the_agent_keeps_deciding_while_the_disk_is_full(tmp_path):
    """Through the agent: a decision and its notice while nothing can be written; no frame
    error, the decision is not lost, and it reaches the file once there is room."""
    from test_agent_notices import DAY, Rig

    rig = Rig(tmp_path)
    try:
        rig.identify(1_800_000_000.0)
        limit_pages(rig.store)
        t = 1_800_000_000.0 + DAY
        for day in range(30):
            rig.soh(90.0, t + day * DAY)  # health readings, each day
            rig.agent.tick(t + day * DAY)
        rig.decide(t + 31 * DAY)
        rig.run(t + 31 * DAY, t + 33 * DAY)
        assert rig.agent.frame_errors == 0
        assert rig.store.held_events > 0
        types = [e.type for e in rig.events]
        assert "scrap.condition_met" in types and "owner.notified" in types
        unlimit_pages(rig.store)
        assert rig.store.write_held(force=True)
        rows = rig.store.pending_rows(0, 10_000)
        assert [json_seq(b) for *_, b in rows] == list(range(1, len(rig.events) + 1))
        assert [r[3] for r in rows] == types
    finally:
        rig.close()


def json_seq(body: str) -> int:
    import json

    return json.loads(body)["seq"]


def test_deletes_of_delivered_events_are_held_with_the_rest(tmp_path):
    """Delivered events whose delete is held in memory (disk full) stay out of what is
    pending, and leave the file with the held transactions, in order."""
    path = tmp_path / "pack-agent.db"
    with Store(path) as store:
        for i in range(3):
            store.append(EventDraft(type="bms.silent", vin=VIN, time=utc_from_timestamp(i)))
        limit_pages(store)
        i = 0
        while store.held_events == 0:  # fill the disk: appends are held from here on
            i += 1
            store.append(
                EventDraft(
                    type="pack.health", vin=VIN, time=utc_from_timestamp(i), data={"p": "x" * 3000}
                )
            )
        on_disk = [r[0] for r in store.pending_rows(0, 10_000)]
        assert store.mark_delivered(rows=on_disk[:2]) == 2
        store.append(EventDraft(type="bms.recovered", vin=VIN, time=utc_from_timestamp(0)))
        assert store.held_events == 2 and store.delivered_waiting == 2  # the deletes are held
        expected = len(on_disk) - 2 + 2
        assert store.pending_count() == expected
        assert [r[0] for r in store.pending_rows(0, 10_000)] == on_disk[2:]
        unlimit_pages(store)
        assert store.write_held(force=True)
        assert store.delivered_waiting == 0 and store.pending_count() == expected
        seqs = [json_seq(body) for *_, body in store.pending_rows(0, 10_000)]
        assert seqs == list(range(3, 3 + expected))
    with Store(path) as store:
        assert store.pending_count() == expected and store.stats()["delivered_total"] == 2
