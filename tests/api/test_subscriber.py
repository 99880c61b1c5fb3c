"""pack_agent.api.subscriber and `pack-agent listen`: de-duplication, seq gaps per vehicle,
sinks, and the command against a real mosquitto."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from listen_cli import events_for, listen, publish, wait_ready
from pack_agent.api.subscriber import (
    Deduplicator,
    Gap,
    JsonlSink,
    SeqConflict,
    SeqIds,
    SeqTracker,
)
from pack_agent.core.events import Event, EventDraft, utc_from_timestamp
from pack_agent.dev.broker import LocalBroker
from pack_agent.errors import PackAgentError

VIN_A, VIN_B = "LPACK2026AGENT001", "LPACK2026AGENT002"


def test_seq_tracker_opens_and_closes_gaps_per_vehicle() -> None:
    t = SeqTracker()
    assert t.observe(VIN_A, 1, 0.0) == ([], [])
    assert t.observe(VIN_B, 7, 0.0) == ([], [])  # a vehicle first seen later starts there
    opened, closed = t.observe(VIN_A, 4, 1.0)
    assert opened == [Gap(VIN_A, 2, 3, 1.0)] and closed == []
    assert str(opened[0]) == f"{VIN_A}: seq 2-3"
    assert t.observe(VIN_A, 6, 2.0)[0] == [Gap(VIN_A, 5, 5, 2.0)]
    assert t.observe(VIN_A, 3, 3.0) == ([], [])  # half of the first gap
    assert t.observe(VIN_A, 2, 4.0) == ([], [Gap(VIN_A, 2, 3, 1.0)])
    assert t.observe(VIN_A, 2, 4.0) == ([], [])  # a repeat changes nothing
    assert t.open_gaps() == [Gap(VIN_A, 5, 5, 2.0)]
    assert t.observe(VIN_A, 5, 5.0) == ([], [Gap(VIN_A, 5, 5, 2.0)])
    assert t.contiguous() == {VIN_A: 6, VIN_B: 7} and t.open_gaps() == []
    resumed = SeqTracker({VIN_A: 6})
    assert resumed.observe(VIN_A, 8, 0.0)[0] == [Gap(VIN_A, 7, 7, 0.0)]


def test_deduplicator_and_jsonl_sink_remember_across_restarts(tmp_path: Path) -> None:
    d = Deduplicator(["a"])
    assert not d.first_time("a") and d.first_time("b") and not d.first_time("b")
    path = tmp_path / "events.jsonl"
    event = Event.from_draft(
        EventDraft(type="bms.silent", vin=VIN_A, time=utc_from_timestamp(0)), 3
    )
    sink = JsonlSink(path)
    sink.keep(event, event.to_json())
    sink.close()
    assert list(JsonlSink(path).seen()) == [(event.event_id, VIN_A, 3)]
    path.write_text("not json\n")
    with pytest.raises(PackAgentError, match=r"events\.jsonl:1: not an event line"):
        list(JsonlSink(path).seen())


def test_listen_deduplicates_reports_gaps_and_stores(broker: LocalBroker, tmp_path: Path) -> None:
    db = tmp_path / "backend.sqlite"
    a = events_for(VIN_A, [1, 2, 3, 4, 5])
    b = events_for(VIN_B, [1, 2])
    proc = listen("--broker", f"127.0.0.1:{broker.port}", "--store", str(db), "--count", "7",
                  "--timeout", "20")  # fmt: skip
    wait_ready(proc)
    # A's 3 and 4 come late and one event twice; B in order; one payload is not an event
    publish(broker, [a[0], a[1], a[4], b[0], a[1], b[1]], [("pack-agent/v1/X/events/y", "{}")])
    time.sleep(0.3)
    publish(broker, [a[2], a[3]])
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert f"gap {VIN_A}: seq 3-4 missing (received seq 5)" in err
    assert f"gap {VIN_A}: seq 3-4 closed after" in err
    assert "invalid event on pack-agent/v1/X/events/y: event_id: Field required" in err
    summary = json.loads(err.strip().splitlines()[-1])
    assert summary["unique"] == 7 and summary["duplicates"] == 1 and summary["invalid"] == 1
    assert summary["gaps_open"] == []
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT vin, seq FROM events ORDER BY vin, seq").fetchall()
    assert rows == [(VIN_A, s) for s in range(1, 6)] + [(VIN_B, 1), (VIN_B, 2)]

    # a restarted listener remembers: a repeat is a duplicate, a jump is a gap
    proc = listen("--broker", f"127.0.0.1:{broker.port}", "--store", str(db), "--timeout", "1.5")
    wait_ready(proc)
    publish(broker, [a[4], *events_for(VIN_A, [7])])
    _, err = proc.communicate(timeout=20)
    summary = json.loads(err.strip().splitlines()[-1])
    assert summary["unique"] == 1 and summary["duplicates"] == 1
    assert summary["gaps_open"] == [f"{VIN_A}: seq 6"]


def test_seq_ids_tell_a_reused_seq_from_a_redelivery(tmp_path: Path) -> None:
    ids = SeqIds([("e1", VIN_A, 1)])  # what a sink already holds
    assert ids.observe(VIN_A, 1, "e1") is None  # the same event again: at least once
    assert ids.observe(VIN_B, 1, "e9") is None  # another vehicle's seq 1
    conflict = ids.observe(VIN_A, 1, "e2")
    assert conflict == SeqConflict(VIN_A, 1, "e1", "e2")
    assert str(conflict) == f"{VIN_A}: seq 1 arrived with a second event_id e2 (first e1)"
    assert ids.observe(VIN_A, 1, "e3") == SeqConflict(VIN_A, 1, "e1", "e3")  # the first wins
    sink = JsonlSink(tmp_path / "events.jsonl")
    sink.conflict(conflict)
    sink.close()
    kept = json.loads((tmp_path / "events.jsonl.conflicts").read_text())
    assert kept["seq"] == 1 and (kept["first_event_id"], kept["second_event_id"]) == ("e1", "e2")
    assert list(JsonlSink(tmp_path / "events.jsonl").seen()) == []  # events file: events only


def test_listen_reports_and_stores_a_seq_that_arrives_with_a_second_event_id(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """What a vehicle whose store lost its last commits in a power cut would send (before
    the store synced essential events): seq 2 twice, as two different events."""
    db = tmp_path / "backend.sqlite"
    first = events_for(VIN_A, [1, 2])
    again = events_for(VIN_A, [2, 3])  # numbered again after the cut: new event_ids
    proc = listen("--broker", f"127.0.0.1:{broker.port}", "--store", str(db), "--count", "4",
                  "--timeout", "20")  # fmt: skip
    wait_ready(proc)
    publish(broker, [*first, first[1], *again])  # first[1] again: a redelivery, no conflict
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    line = f"seq conflict {VIN_A}: seq 2 arrived with a second event_id {again[0].event_id}"
    assert line in err
    summary = json.loads(err.strip().splitlines()[-1])
    assert summary["unique"] == 4 and summary["duplicates"] == 1
    assert summary["seq_conflicts"] == [
        str(SeqConflict(VIN_A, 2, first[1].event_id, again[0].event_id))
    ]
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT vin, seq, first_event_id, second_event_id FROM seq_conflicts")
        assert stored.fetchall() == [(VIN_A, 2, first[1].event_id, again[0].event_id)]
        both = conn.execute("SELECT count(*) FROM events WHERE seq = 2").fetchone()[0]
    assert both == 2  # both events kept: the backend decides

    # a restarted listener knows the seqs it holds: a third id for seq 3 is a conflict too
    proc = listen("--broker", f"127.0.0.1:{broker.port}", "--store", str(db), "--count", "1",
                  "--timeout", "20")  # fmt: skip
    wait_ready(proc)
    third = events_for(VIN_A, [3])
    publish(broker, third)
    _, err = proc.communicate(timeout=20)
    assert f"seq 3 arrived with a second event_id {third[0].event_id}" in err


def test_listen_prints_jsonl_and_fails_when_count_is_not_reached(broker: LocalBroker) -> None:
    proc = listen("--broker", f"127.0.0.1:{broker.port}", "--count", "2", "--timeout", "2")
    wait_ready(proc)
    publish(broker, events_for(VIN_A, [1]))
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 1
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [1]


def test_listen_refuses_plaintext_to_a_remote_broker() -> None:
    proc = listen("--broker", "broker.example.com:1883", "--timeout", "1")
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 2 and "--allow-insecure" in err and "broker.example.com" in err


def test_a_slow_listener_holds_a_bounded_inbox_loses_nothing_and_stops(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """mosquitto 2.0.11 sends past a listener's Receive Maximum once PUBACKs flow; the
    listener's inbox is bounded all the same (paho's thread waits for room, so the
    socket backs up instead of this process's memory), nothing is lost, and stop()
    returns with the inbox full."""
    from pack_agent.api.subscriber import EventSubscriber, SqliteSink, SubscriberSettings

    settings = SubscriberSettings(port=broker.port, receive_maximum=20)
    listener = EventSubscriber(settings, SqliteSink(str(tmp_path / "e.sqlite")), lambda _: None)
    assert listener.inbox_limit == 120
    listener.start()
    assert listener.wait_subscribed(10)
    publish(broker, events_for(VIN_A, list(range(1, 301))))  # acknowledged as they are kept
    assert listener.run(count=10, timeout=10)  # PUBACKs flow: the broker sends past 20
    deadline = time.monotonic() + 10
    while listener._inbox.qsize() < listener.inbox_limit and time.monotonic() < deadline:
        time.sleep(0.05)  # nobody handles the inbox meanwhile
    assert listener._inbox.qsize() == listener.inbox_limit  # full, and no further
    time.sleep(0.5)
    assert listener._inbox.qsize() == listener.inbox_limit
    assert listener.run(count=300, timeout=30)
    summary = listener.stop()
    assert summary.unique == 300 and summary.gaps_open == []
    with sqlite3.connect(tmp_path / "e.sqlite") as db:
        assert db.execute("SELECT count(*) FROM events").fetchone() == (300,)


def test_stop_returns_while_paho_waits_for_room_in_the_inbox(broker: LocalBroker) -> None:
    from pack_agent.api.subscriber import EventSubscriber, PrintSink, SubscriberSettings

    out = open(os.devnull, "w")  # noqa: SIM115 (closed below)
    settings = SubscriberSettings(port=broker.port, receive_maximum=20)
    listener = EventSubscriber(settings, PrintSink(out), lambda _: None)
    listener.start()
    assert listener.wait_subscribed(10)
    publish(broker, events_for(VIN_A, list(range(1, 301))))
    assert listener.run(count=10, timeout=10)
    deadline = time.monotonic() + 10
    while listener._inbox.qsize() < listener.inbox_limit and time.monotonic() < deadline:
        time.sleep(0.05)
    assert listener._inbox.qsize() == listener.inbox_limit  # paho's thread waits for room
    started = time.monotonic()
    summary = listener.stop()  # it must not hang, and what it holds is handled
    out.close()
    assert time.monotonic() - started < 10
    assert summary.unique >= 10 + listener.inbox_limit
