"""Durable where it matters (pack_agent.store.durable): essential events and the state
that latches them are synced before ``transaction`` returns, cheap ones wait for a sync,
and the uplink only sees rows on the medium; the volume's reserve and the WAL on a
nearly full volume (a real 4 MiB tmpfs when this runs as root)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pack_agent.core.events import ESSENTIAL_TYPES, EventDraft, utc_from_timestamp
from pack_agent.store import Store, StoreSpaceShort
from pack_agent.store import durable as durable_module
from pack_agent.store.durable import SYNC_DELAY_S
from pack_agent.store.state import NOTICES, POLICY_STATE

VIN = "LSVAX4AB1PN000001"


def draft(event_type: str = "pack.health", pad: int = 0) -> EventDraft:
    return EventDraft(
        type=event_type,  # type: ignore[arg-type]
        vin=VIN,
        time=utc_from_timestamp(1_800_000_000),
        data={"pad": "x" * pad},
    )


def published(s: Store) -> list[int]:
    """The seqs the uplink may publish now."""
    return [json.loads(body)["seq"] for *_, body in s.publishable_rows(0, 10**6)]


def test_essential_events_and_latching_state_are_synced_cheap_ones_wait(tmp_path: Path) -> None:
    assert "pack.health" not in ESSENTIAL_TYPES and "scrap.condition_met" in ESSENTIAL_TYPES
    with Store(tmp_path / "s.db") as s:
        opened = s.syncs  # one at open (what a crashed process left in the WAL)
        s.append(draft())
        assert s.syncs == opened and published(s) == [] and s.publishable_count() == 0
        assert s.pending_count() == 1 and s.stats()["not_durable"] == 1
        with s.transaction():  # the agent's decision: state and event in one commit
            s.put_state(POLICY_STATE, {"w": 1})
            s.append(draft("scrap.condition_met"))
        # synced before the block returned; the cheap event before it rides along
        assert s.syncs == opened + 1 and published(s) == [1, 2] and s.publishable_count() == 2
        s.append(draft())
        assert published(s) == [1, 2]
        s.put_state(NOTICES, {"answered": True})  # the owner's answer latches: synced alone
        assert s.syncs == opened + 2 and published(s) == [1, 2, 3]
        s.put_state(POLICY_STATE, {"w": 2})  # windows: the cheap path
        s.append(draft())
        assert s.syncs == opened + 2 and published(s) == [1, 2, 3]
        assert not s.sync_if_due(delay=3600.0)  # not due yet: nothing synced
        time.sleep(SYNC_DELAY_S)
        assert s.sync_if_due() and published(s) == [1, 2, 3, 4] and s.syncs == opened + 3
        assert not s.sync_if_due()  # nothing left to sync
        with s.transaction(durable=True):  # a caller may ask
            s.put_state(POLICY_STATE, {"w": 3})
        assert s.syncs == opened + 4


def test_full_synchronous_needs_no_sync_of_its_own(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db", synchronous="FULL") as s:
        opened = s.syncs
        s.append(draft())
        assert published(s) == [1] and s.syncs == opened  # SQLite synced the commit


@contextlib.contextmanager
def wal_syncs_recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """The -wal file's bytes at each sync the store makes: what a power cut right after
    that sync leaves on the medium at worst (nothing written since is assumed to have
    reached it: the kernel may have written more, never less)."""
    seen: list[bytes] = []
    real = os.fdatasync

    def recording(fd: int) -> None:
        real(fd)
        target = os.readlink(f"/proc/self/fd/{fd}")
        seen.append(Path(target).read_bytes() if target.endswith("-wal") else b"")

    monkeypatch.setattr(durable_module.os, "fdatasync", recording)
    yield seen


def test_a_power_cut_takes_back_nothing_that_left_or_was_acted_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's file as a power cut after the last sync leaves it (the main file as it
    is: no checkpoint ran; the WAL as it was at that sync): every event the uplink could
    publish, and the decision's latch, are there; seq continues after them."""
    path = tmp_path / "s.db"
    left: list[int] = []
    with wal_syncs_recorded(monkeypatch) as synced, Store(path) as s:
        for _ in range(5):
            s.append(draft())  # hourly samples, never synced alone
        time.sleep(SYNC_DELAY_S)
        assert s.sync_if_due()  # the uplink wanted them
        left += published(s)
        s.append(draft())
        with s.transaction():
            s.put_state(NOTICES, {"latched": "capacity-80"})
            s.append(draft("scrap.condition_met"))
        left = published(s)  # the decision may leave now
        s.append(draft())  # one more sample, never synced: the cut takes it
        s.put_state(POLICY_STATE, {"w": 9})
        assert published(s) == left == [1, 2, 3, 4, 5, 6, 7]
        cut = tmp_path / "cut"
        cut.mkdir()
        shutil.copy(path, cut / "s.db")  # the main file: unchanged since the schema
        (cut / "s.db-wal").write_bytes(synced[-1])
    with Store(cut / "s.db") as after:
        seqs = sorted(e.seq for e in after.pending(100))
        assert seqs == left  # all that could leave, nothing more
        assert after.get_state(NOTICES) == {"latched": "capacity-80"}
        assert after.get_state(POLICY_STATE) is None  # the cheap save was taken back
        assert after.append(draft()).seq == 8  # never a seq the backend has seen


def test_under_the_reserve_cheap_events_are_refused_essentials_kept(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    with Store(tmp_path / "s.db", reserve_bytes=free + 2**40) as s:  # a reserve never met
        assert s.space_short_since is not None
        with pytest.raises(StoreSpaceShort, match=r"under store\.reserve_bytes.*pack\.health"):
            s.append(draft())
        event = s.append(draft("scrap.condition_met"))
        assert event.seq == 1  # the refused sample took no number
        stats = s.stats()
        assert stats["refused_total"] == 1 and stats["space_short_since"] is not None
        assert stats["reserve_bytes"] == free + 2**40 and stats["free_bytes"] > 0
        s._space.reserve = 0  # room again (the reserve lowered): measured at the next sample
        assert s.append(draft()).seq == 2 and s.space_short_since is None


# -- a nearly full volume: a real tmpfs of 4 MiB ---------------------------------------


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "vol"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.decode()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.subprocess  # mount and umount
def test_a_nearly_full_volume_loses_nothing_that_was_stored(small_volume: Path) -> None:
    """About 3 MB free, no broker: samples, hourly saves and decisions through three
    restarts. The WAL never grows into the last megabytes (checkpointed and truncated
    while the volume is tight), samples are refused under the reserve, every essential
    event is stored, and everything stored is there after each restart."""
    (small_volume / "filler").write_bytes(b"\0" * (1024 * 1024))  # ~3 MB left
    path = small_volume / "s.db"
    reserve = 1024 * 1024
    stored: dict[int, str] = {}  # seq -> type, of every append that returned
    essentials = 0
    most_wal = 0
    for life in range(3):
        with Store(path, reserve_bytes=reserve) as s:
            assert sorted(e.seq for e in s.pending(10**6)) == sorted(stored)  # nothing lost
            for i in range(400):
                try:
                    e = s.append(draft(pad=1500))
                    stored[e.seq] = e.type
                except StoreSpaceShort:
                    pass
                if i % 10 == 0:
                    with s.transaction():
                        s.put_state(POLICY_STATE, {"life": life, "i": i, "pad": "w" * 3000})
                        e = s.append(draft("scrap.forecast", pad=200))
                        stored[e.seq] = e.type
                        essentials += 1
                most_wal = max(most_wal, s.wal_bytes)
            stats = s.stats()
            assert stats["held_in_memory"] == 0  # never came to holding in memory
            free_at_end = shutil.disk_usage(small_volume).free
    assert essentials == 120
    assert stats["space_short_since"] is not None and stats["refused_total"] > 0
    assert free_at_end > 0
    assert most_wal < 512 * 1024  # bounded (it grew to 3.1 MB and filled the volume before)
    with Store(path, reserve_bytes=reserve) as s:
        kept = {e.seq: e.type for e in s.pending(10**6)}
        assert kept == stored  # every event that was stored, through three restarts
        assert sorted(kept) == list(range(1, len(kept) + 1))  # and seq has no hole
        assert sum(t == "scrap.forecast" for t in kept.values()) == 120
        assert s.get_state(POLICY_STATE)["life"] == 2
