"""What a backend must do with events delivered at least once: de-duplicate, order.

Owns :class:`SeqTracker` (per-vehicle ``seq`` bookkeeping: gaps opened when events
arrive out of order, closed when the missing ones arrive) and :class:`Deduplicator`
(by ``event_id``), and :class:`SeqIds` (a ``seq`` that arrives with a second, different
``event_id``: the vehicle numbered two events alike). Pure: no I/O, time passed in.
The paho adapter that feeds them is :class:`pack_agent.api.subscriber.EventSubscriber`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["Deduplicator", "Gap", "SeqConflict", "SeqIds", "SeqTracker"]


@dataclass(frozen=True)
class Gap:
    """Events ``first``..``last`` of ``vin`` not received (yet)."""

    vin: str
    first: int
    last: int
    opened_at: float

    def __str__(self) -> str:
        span = f"seq {self.first}" if self.first == self.last else f"seq {self.first}-{self.last}"
        return f"{self.vin}: {span}"


@dataclass
class _Vehicle:
    contiguous: int  # every seq up to this one was received
    ahead: set[int] = field(default_factory=set)  # received beyond a gap
    gaps: list[Gap] = field(default_factory=list)


class SeqTracker:
    """Per-vehicle ``seq`` bookkeeping. ``observe`` returns the gaps it opened and
    the gaps it closed. A vehicle first seen at seq N (a backend that starts late)
    starts its count at N unless ``baseline`` says what came before."""

    def __init__(self, baseline: dict[str, int] | None = None) -> None:
        self._vehicles: dict[str, _Vehicle] = {
            vin: _Vehicle(contiguous=last) for vin, last in (baseline or {}).items()
        }

    def observe(self, vin: str, seq: int, now: float) -> tuple[list[Gap], list[Gap]]:
        v = self._vehicles.get(vin)
        if v is None:
            self._vehicles[vin] = _Vehicle(contiguous=seq)
            return [], []
        if seq <= v.contiguous or seq in v.ahead:
            return [], []  # a repeat
        opened: list[Gap] = []
        highest = max(v.ahead, default=v.contiguous)
        if seq > highest + 1:
            opened.append(Gap(vin, highest + 1, seq - 1, now))
            v.gaps.extend(opened)
        v.ahead.add(seq)
        while v.contiguous + 1 in v.ahead:
            v.contiguous += 1
            v.ahead.discard(v.contiguous)
        closed = [g for g in v.gaps if self._filled(v, g)]
        v.gaps = [g for g in v.gaps if g not in closed]
        return opened, closed

    @staticmethod
    def _filled(v: _Vehicle, gap: Gap) -> bool:
        return all(s <= v.contiguous or s in v.ahead for s in range(gap.first, gap.last + 1))

    def open_gaps(self) -> list[Gap]:
        return [g for v in self._vehicles.values() for g in v.gaps]

    def contiguous(self) -> dict[str, int]:
        """Per vehicle, the seq up to which nothing is missing."""
        return {vin: v.contiguous for vin, v in self._vehicles.items()}


@dataclass(frozen=True)
class SeqConflict:
    """``seq`` of ``vin`` arrived as ``first_event_id`` and again as ``second_event_id``."""

    vin: str
    seq: int
    first_event_id: str
    second_event_id: str

    def __str__(self) -> str:
        return (
            f"{self.vin}: seq {self.seq} arrived with a second event_id "
            f"{self.second_event_id} (first {self.first_event_id})"
        )


class SeqIds:
    """The ``event_id`` each vehicle's ``seq`` first arrived with (seeded from what a sink
    holds). At least once delivery repeats an event with its own id: not a conflict. A
    second id means the vehicle numbered two events alike (a store that lost its last
    commits in a power cut, or a store copied to another gateway)."""

    def __init__(self, seen: Iterable[tuple[str, str, int]] = ()) -> None:
        self._ids: dict[tuple[str, int], str] = {}
        for event_id, vin, seq in seen:
            self._ids.setdefault((vin, seq), event_id)

    def observe(self, vin: str, seq: int, event_id: str) -> SeqConflict | None:
        first = self._ids.setdefault((vin, seq), event_id)
        return None if first == event_id else SeqConflict(vin, seq, first, event_id)


class Deduplicator:
    """Remembers every ``event_id`` seen (seeded from what a sink already holds)."""

    def __init__(self, seen: Iterable[str] = ()) -> None:
        self._seen = set(seen)

    def first_time(self, event_id: str) -> bool:
        if event_id in self._seen:
            return False
        self._seen.add(event_id)
        return True

    def __len__(self) -> int:
        return len(self._seen)
