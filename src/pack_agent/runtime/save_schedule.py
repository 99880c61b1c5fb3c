"""When the policy state (and what is saved with it) goes to the store.

``SaveSchedule`` owns the save schedule of the rules' windows and SOH history
(``policy.state``): hourly (``policy.persist_interval_s``) while something changed,
so a parked car writes nothing; when the policy asks (ignition Off, a new day, a
clock rebase); and at shutdown. Not on every reading: flash wears. Other owners of
lazily saved values (the notice dispatcher: ignition, head unit last heard) join the
same commit through the small ``Lazy`` protocol. It decides *when*; the agent puts
the save in one commit with a due ``pack.health`` sample. Time is always an argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from pack_agent.config import AgentConfig
from pack_agent.core.policy import ScrapPolicy
from pack_agent.core.tracker import PackTracker
from pack_agent.store.state import POLICY_STATE

if TYPE_CHECKING:
    from pack_agent.store.database import Store


class Lazy(Protocol):
    """Values kept in memory and written with the next state save."""

    def unsaved(self) -> bool: ...

    def save(self) -> None: ...


class SaveSchedule:
    def __init__(
        self,
        config: AgentConfig,
        store: Store,
        policy: ScrapPolicy,
        tracker: PackTracker,
        lazy: Sequence[Lazy] = (),
    ) -> None:
        self.config = config
        self.store = store
        self.policy = policy
        self.tracker = tracker
        self.lazy = list(lazy)
        self.scheduled_at: float | None = None  # the hourly schedule's start
        self.saved_at: float | None = None  # the last save of any kind in this life
        self._saved_frame_at: float | None = None  # the newest frame at the last save

    def due(self, now: float, waiting: bool) -> tuple[bool, bool]:
        """``(hourly, asked)``: whether the hourly save is due and whether the policy asked
        for one. The hourly save is skipped while nothing changed (a parked car writes
        nothing), and held while a health sample ``waiting`` after a wake-up (bounded),
        so that the two share one commit on a trip's first tick too. The policy's
        request is taken on every call: an hourly save answers it too."""
        if self.scheduled_at is None:
            self.scheduled_at = now
        hourly = (
            now - self.scheduled_at >= self.config.policy.persist_interval_s
            and not waiting
            and self.unsaved_changes()
        )
        return hourly, self._asked(now)

    def unsaved_changes(self) -> bool:
        """Whether a save would write anything new: the rules' state changes only with
        readings (every reading passes the tracker), the rest with its own values."""
        return self.tracker.last_frame != self._saved_frame_at or any(
            o.unsaved() for o in self.lazy
        )

    def _asked(self, now: float) -> bool:
        """The policy asks for a save at ignition Off and on a new day (docs/policy.md, "The
        latch and what survives a restart"). A new day is not saved when this life saved
        less than ``persist_interval_s`` ago: the hourly save already bounds the loss, so a
        steady day costs no extra write; it matters to a life too short for an hourly save."""
        asked = self.policy.take_save_request()
        if asked == "new_day" and self.saved_at is not None:
            return now - self.saved_at >= self.config.policy.persist_interval_s
        return asked is not None

    def save(self, now: float, restart: bool) -> None:
        """A scheduled or asked-for save (in the caller's commit); ``restart``: the hourly
        schedule starts again at ``now`` (an hourly save, or one with a health sample)."""
        self.flush(now if restart else None)
        self.saved_at = now

    def flush(self, now: float | None = None) -> None:
        """Persist the rules' windows, the SOH history and the lazy owners' values.
        ``now`` restarts the hourly schedule."""
        with self.store.transaction():
            self.store.put_state(POLICY_STATE, self.policy.to_state())
            self._saved_frame_at = self.tracker.last_frame
            for owner in self.lazy:
                owner.save()
        if now is not None:
            self.scheduled_at = now

    def rebase(self, now: float) -> None:
        """The clock stepped back: the hourly schedule starts again on the new time."""
        self.scheduled_at = None
