"""Tests for pack_agent.store.database: numbering, atomicity, the outbox, the size bound,
bad files, state, and a process killed in the middle of appending."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pack_agent.core.events import ESSENTIAL_TYPES, EventDraft, utc_from_timestamp
from pack_agent.errors import StoreError
from pack_agent.store import DELETE_BATCH, Store

VIN_A = "LSVAX4AB1PN000001"
VIN_B = "LSVAX4AB1PN000002"


def draft(
    type_: str = "pack.health", vin: str = VIN_A, t: float = 0.0, **data: object
) -> EventDraft:
    return EventDraft(type=type_, vin=vin, time=utc_from_timestamp(1_700_000_000 + t), data=data)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "pack-agent.db"


def seqs(store: Store, vin: str = VIN_A) -> list[int]:
    return [e.seq for e in store.pending(10_000) if e.vin == vin]


def test_seq_is_per_vin_gap_free_and_survives_reopen(db: Path) -> None:
    with Store(db) as s:
        for i in range(5):
            s.append(draft(vin=VIN_A, t=i))
            if i % 2:
                s.append(draft(vin=VIN_B, t=i))
        assert seqs(s, VIN_A) == [1, 2, 3, 4, 5]
        assert seqs(s, VIN_B) == [1, 2]
        s.mark_delivered(e.event_id for e in s.pending(100))  # seq must not restart when empty
    with Store(db) as s:
        assert s.append(draft(vin=VIN_A)).seq == 6
        assert s.append(draft(vin=VIN_B)).seq == 3


def test_append_returns_the_stored_event(db: Path) -> None:
    with Store(db) as s:
        d = draft("scrap.condition_met", rule="soh_below_70")
        e = s.append(d)
        assert (e.event_id, e.type, e.vin, e.time, e.data) == (
            d.event_id,
            d.type,
            d.vin,
            d.time,
            d.data,
        )
        assert s.pending(1) == [e]
        assert s.pending(1)[0].to_json() == e.to_json()


def test_transaction_is_all_or_nothing(db: Path) -> None:
    with Store(db) as s:
        with pytest.raises(RuntimeError), s.transaction():
            s.append(draft())
            s.put_state("k", 1)
            with s.transaction():  # nested: joins the outer one
                s.append(draft())
            raise RuntimeError("boom")
        assert s.pending_count() == 0
        assert s.get_state("k") is None
        with s.transaction():
            s.append(draft())
            s.append(draft())
            s.put_state("k", 2)
        assert seqs(s) == [1, 2]  # the rolled-back appends did not consume seq numbers
    with Store(db) as s:
        assert seqs(s) == [1, 2] and s.get_state("k") == 2


def test_pending_exclude_and_mark_delivered(db: Path) -> None:
    with Store(db) as s:
        events = [s.append(draft(t=i)) for i in range(10)]
        ids = [e.event_id for e in events]
        assert [e.event_id for e in s.pending(3)] == ids[:3]
        assert [e.event_id for e in s.pending(3, exclude=ids[:2])] == ids[2:5]
        assert s.pending(100, exclude=ids) == []
        assert s.mark_delivered([ids[0], ids[2], ids[2], "no-such-id"], now=1_700_000_100) == 2
        assert s.mark_delivered([ids[0]]) == 0
        assert s.mark_delivered([]) == 0
        assert s.pending_count() == 8
        assert [e.seq for e in s.pending(100)] == [2, 4, 5, 6, 7, 8, 9, 10]
        stats = s.stats()
        assert stats["delivered_total"] == 2
        assert stats["last_delivered_at"] == "2023-11-14T22:15:00+00:00"
        assert stats["pending"] == 8 and stats["dropped_total"] == 0 and stats["file_bytes"] > 0
    with Store(db) as s:
        assert s.pending_count() == 8 and s.stats()["delivered_total"] == 2


def test_size_bound_drops_oldest_health_only(db: Path) -> None:
    with Store(db, max_events=5) as s:
        h1, h2 = s.append(draft(t=1)), s.append(draft(t=2))
        ident = s.append(draft("pack.identified"))
        h3 = s.append(draft(t=3))
        scrap = s.append(draft("scrap.condition_met"))
        assert s.pending_count() == 5 and s.dropped_total == 0
        notified = s.append(draft("owner.notified"))
        assert [e.event_id for e in s.pending(100)] == [
            e.event_id for e in (h2, ident, h3, scrap, notified)
        ]
        assert s.dropped_total == 1
        for t in ("owner.acknowledged", "bms.silent"):
            s.append(draft(t))
        assert s.dropped_total == 3
        assert {e.type for e in s.pending(100)} <= ESSENTIAL_TYPES
        # full of essential events: nothing is dropped, the outbox grows past the bound
        for _ in range(3):
            s.append(draft("bms.recovered"))
        assert s.pending_count() == 8 and s.dropped_total == 3
        assert h1.event_id not in {e.event_id for e in s.pending(100)}
    with Store(db, max_events=5) as s:
        assert s.pending_count() == 8 and s.stats()["dropped_total"] == 3


def test_garbage_file_is_an_error_naming_the_path(db: Path) -> None:
    db.parent.mkdir(parents=True)
    garbage = bytes(range(256)) * 16
    db.write_bytes(garbage)
    with pytest.raises(StoreError, match="not a usable SQLite database") as info:
        Store(db)
    assert str(db) in str(info.value)
    assert db.read_bytes() == garbage  # never silently replaced


def test_damaged_pages_are_a_store_error_when_read(db: Path) -> None:
    with Store(db) as s:
        for i in range(2000):
            s.append(draft(t=i, padding="x" * 100))
    size = db.stat().st_size
    with db.open("r+b") as f:  # the header is intact, pages in the middle are not
        f.seek(size // 2)
        f.write(b"\xa5" * 30_000)
    with pytest.raises(StoreError, match="malformed") as info, Store(db) as s:
        s.pending(10_000)
    assert str(db) in str(info.value)


def test_other_database_and_newer_schema_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(StoreError, match="not a pack-agent store"):
        Store(other)
    newer = tmp_path / "newer.db"
    Store(newer).close()
    with sqlite3.connect(newer) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="newer pack-agent"):
        Store(newer)


def test_unusable_location_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot create"):
        Store(tmp_path / "file" / "pack-agent.db")
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreError, match=r"dir\.db"):
        Store(tmp_path / "dir.db")


def test_options_are_checked(db: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        Store(db, synchronous="OFF")
    with Store(db, synchronous="full") as s:
        assert s._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert s._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.stat().st_mode & 0o077 == 0  # owner only: it holds the VIN and pack codes


def test_state_survives_reopen(db: Path) -> None:
    with Store(db) as s:
        assert s.get_state("missing") is None
        assert s.get_state("missing", 7) == 7
        s.put_state("pack.code", "ABC")
        s.put_state("notices", {"attempts": 2, "rules": ["a", "b"]})
        s.put_state("nothing", None)
        s.put_state("pack.code", "DEF")
    with Store(db) as s:
        assert s.get_state("pack.code") == "DEF"
        assert s.get_state("notices") == {"attempts": 2, "rules": ["a", "b"]}
        assert s.get_state("nothing", "default") is None  # a stored null is a value


CRASH_SCRIPT = textwrap.dedent(
    """
    import sys
    from pack_agent.core.events import EventDraft, utc_from_timestamp
    from pack_agent.store import Store
    store = Store(sys.argv[1])
    for i in range(100_000):
        with store.transaction():  # what the agent does: event and state together
            e = store.append(EventDraft(type="pack.health", vin="LSVAX4AB1PN000001",
                                        time=utc_from_timestamp(i), data={"i": i}))
            store.put_state("last", i)
        print(e.seq, e.event_id, flush=True)
    """
)


def test_kill_during_appends_loses_nothing_that_was_confirmed(db: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASH_SCRIPT, str(db)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    confirmed = [proc.stdout.readline().split() for _ in range(300)]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert all(len(c) == 2 for c in confirmed), confirmed[-3:]
    with Store(db) as s:
        events = s.pending(1_000_000)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))  # gap-free
        assert len(events) >= len(confirmed)
        assert {eid for _, eid in confirmed} <= {e.event_id for e in events}
        assert s.get_state("last") == len(events) - 1  # state committed with its event
        assert s.append(draft()).seq == len(events) + 1


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("append"), st.sampled_from([VIN_A, VIN_B])),
            st.tuples(st.just("deliver"), st.integers(0, 5)),
            st.tuples(st.just("abort"), st.sampled_from([VIN_A, VIN_B])),
            st.tuples(st.just("reopen"), st.none()),
        ),
        max_size=30,
    )
)
def test_outbox_model(ops: list[tuple[str, object]]) -> None:
    """Whatever the order of appends, deliveries, aborted transactions and reopens:
    seq counts successful appends per VIN, and the outbox is appended - delivered."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.db"
        s = Store(path)
        count = {VIN_A: 0, VIN_B: 0}
        outbox: list[str] = []
        try:
            for op, arg in ops:
                if op == "append":
                    e = s.append(draft(vin=str(arg)))
                    count[e.vin] += 1
                    assert e.seq == count[e.vin]
                    outbox.append(e.event_id)
                elif op == "deliver":
                    n = int(str(arg))
                    assert s.mark_delivered(outbox[:n]) == len(outbox[:n])
                    del outbox[:n]
                elif op == "abort":
                    with pytest.raises(KeyError), s.transaction():
                        s.append(draft(vin=str(arg)))
                        raise KeyError
                else:
                    s.close()
                    s = Store(path)
                assert [e.event_id for e in s.pending(100)] == outbox
                assert s.pending_count() == len(outbox)
        finally:
            s.close()


def test_full_outbox_is_logged_once_per_episode(db: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="pack_agent.store.database")
    with Store(db, max_events=3) as s:
        for i in range(6):
            s.append(draft(t=i))
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 1 and "dropping the oldest pack.health" in warnings[0]
        assert "store.max_events = 3" in warnings[0] and str(db) in warnings[0]
        s.mark_delivered([e.event_id for e in s.pending(10)])
        assert "under store.max_events again" in caplog.text
        caplog.clear()
        for t in ("pack.identified", "bms.silent", "bms.recovered", "bms.silent", "bms.silent"):
            s.append(draft(t))
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 1 and "nothing left to drop" in warnings[0]
        assert "4 events, bound 3" in warnings[0]
        assert s.pending_count() == 5


def test_outbox_rows_only_grow_and_schema_1_is_upgraded(db: Path) -> None:
    with Store(db) as s:
        first = s.append(draft())
        s.mark_delivered([first.event_id])  # the outbox is empty ...
        second = s.append(draft())  # ... and the next row still gets a new number
        rows = s.pending_rows(0, 10)
        assert [r[1] for r in rows] == [second.event_id] and rows[0][0] == 2
        assert s.pending_rows(2, 10) == []
        assert rows[0][4] == second.to_json()
    # a store written by schema 1 (no AUTOINCREMENT) is converted in place
    old = db.with_name("v1.db")
    with sqlite3.connect(old) as conn:
        conn.executescript(
            "CREATE TABLE outbox (id INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE,"
            " vin TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL, body TEXT NOT NULL);"
            "CREATE TABLE seq (vin TEXT PRIMARY KEY, last INTEGER NOT NULL) WITHOUT ROWID;"
            "CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;"
            "PRAGMA user_version = 1;"
        )
        conn.execute(
            "INSERT INTO outbox VALUES (7, 'abc', ?, 3, 'pack.health', ?)",
            (VIN_A, '{"schema_version":1,"event_id":"abc","seq":3,"type":"pack.health",'
             f'"vin":"{VIN_A}","time":"2026-01-01T00:00:00Z","data":{{}}}}'),
        )  # fmt: skip
        conn.execute("INSERT INTO seq VALUES (?, 3)", (VIN_A,))
    with Store(old) as s:
        assert [ev.event_id for ev in s.pending(10)] == ["abc"]
        s.mark_delivered(["abc"])
        assert s.append(draft()).seq == 4 and s.pending_rows(0, 10)[0][0] == 8
        assert s._conn.execute("PRAGMA user_version").fetchone()[0] == 2


def file_rows(path: Path) -> int:
    """Outbox rows in the file, as another connection sees them."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
    finally:
        conn.close()


def test_delivered_events_are_deleted_with_the_next_write(db: Path) -> None:
    with Store(db) as s:
        events = [s.append(draft(t=i)) for i in range(3)]
        commits = s.commits
        rows = [r[0] for r in s.pending_rows(0, 10)]
        assert s.mark_delivered(rows=rows[:2], now=1_700_000_100) == 2
        assert s.mark_delivered(rows=rows[:1]) == 0  # already noted
        assert s.mark_delivered([events[0].event_id]) == 0  # by id too
        assert s.commits == commits and file_rows(db) == 3  # nothing written yet ...
        assert s.pending_count() == 1 and s.delivered_waiting == 2  # ... but not pending
        assert [e.event_id for e in s.pending(10)] == [events[2].event_id]
        assert [r[0] for r in s.pending_rows(0, 10)] == rows[2:]
        stats = s.stats()
        assert stats["delivered_total"] == 2 and stats["delivered_not_deleted"] == 2
        assert stats["last_delivered_at"] == "2023-11-14T22:15:00+00:00"
        s.put_state("policy.state", {"x": 1})  # the next write takes the deletes along
        assert s.commits == commits + 1 and file_rows(db) == 1 and s.delivered_waiting == 0
        assert s.pending_count() == 1
    with Store(db) as s:
        assert s.stats()["delivered_total"] == 2
        assert s.stats()["last_delivered_at"] == "2023-11-14T22:15:00+00:00"


def test_deletes_get_a_commit_of_their_own_every_batch(db: Path) -> None:
    n = DELETE_BATCH * 2 + 10
    with Store(db) as s:
        with s.transaction():
            for i in range(n):
                s.append(draft(t=i))
        commits = s.commits
        for row, *_ in s.pending_rows(0, n):
            s.mark_delivered(rows=[row])
        assert s.commits == commits + 2
        assert file_rows(db) == 10 and s.pending_count() == 0
        assert not s.flush_delivered(older_than=60.0)  # not that old yet
        assert s.flush_delivered() and file_rows(db) == 0
        assert not s.flush_delivered()  # nothing left: no commit
        assert s.commits == commits + 3


def test_a_failed_transaction_keeps_the_deletes_for_the_next(db: Path) -> None:
    with Store(db) as s:
        for i in range(4):
            s.append(draft(t=i))
        s.mark_delivered(rows=[1, 2])
        with pytest.raises(RuntimeError), s.transaction():
            s.append(draft())
            raise RuntimeError("boom")
        assert file_rows(db) == 4 and s.pending_count() == 2 and s.delivered_waiting == 2
        s.append(draft())
        assert file_rows(db) == 3 and s.pending_count() == 3 and s.delivered_waiting == 0
        assert [e.seq for e in s.pending(10)] == [3, 4, 5]


def test_close_deletes_what_was_delivered(db: Path) -> None:
    s = Store(db)
    for i in range(3):
        s.append(draft(t=i))
    s.mark_delivered(rows=[1, 3])
    assert file_rows(db) == 3
    s.close()
    assert file_rows(db) == 1
    with Store(db) as s:
        assert [e.seq for e in s.pending(10)] == [2] and s.stats()["delivered_total"] == 2


def test_the_size_bound_counts_undelivered_events_only(db: Path) -> None:
    with Store(db, max_events=3) as s:
        for i in range(3):
            s.append(draft(t=i))
        s.mark_delivered(rows=[1, 2])  # delivered, still in the file
        s.append(draft(t=3))
        s.append(draft(t=4))
        assert s.dropped_total == 0 and s.pending_count() == 3 and file_rows(db) == 3
        # an event dropped by the bound while in flight, then acknowledged: not counted twice
        s.append(draft(t=5))
        assert s.dropped_total == 1 and 3 not in {r[0] for r in s.pending_rows(0, 10)}
        assert s.mark_delivered(rows=[3]) == 0
        assert s.pending_count() == 3 and s.stats()["delivered_total"] == 2
