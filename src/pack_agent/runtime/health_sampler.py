"""When a ``pack.health`` sample is due, and what it carries.

``HealthSampler`` owns the health schedule: at most one sample per
``health.publish_interval_s`` after the last one (the last one's time is stored with
it, so the schedule holds across restarts and reloads of the interval), none while
the car is parked, and after a wake-up a bounded wait for the pack's SOH and a
confirmed pack code. It reads the tracker and the policy and writes only its own
schedule key to the store; the agent emits the sample (in the same commit as the
state save). Time is always an argument.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pack_agent.config import AgentConfig
from pack_agent.core.events import PLAUSIBLE_SINCE
from pack_agent.core.policy import ScrapPolicy
from pack_agent.core.tracker import PackTracker
from pack_agent.store.state import HEALTH_SAMPLED_AT

if TYPE_CHECKING:
    from pack_agent.store.database import Store

HEALTH_SAMPLED_KEY = HEALTH_SAMPLED_AT  # the state key, by its old name (tests, bench)
SAMPLE_WAIT_S = 60.0  # after a wake-up, the longest a sample waits for the SOH or the code


class HealthSampler:
    def __init__(
        self, config: AgentConfig, store: Store, tracker: PackTracker, policy: ScrapPolicy
    ) -> None:
        self.config = config  # read live: a SIGHUP may change the interval
        self.store = store
        self.tracker = tracker
        self.policy = policy
        # the last pack.health sample (stored with it when the clock was plausible): the
        # next one is an interval later, across restarts and reloads of the interval
        self.sampled_at: float | None = store.get_state(HEALTH_SAMPLED_KEY)
        self._checked = False  # the stored time, against this life's first plausible time

    def due(self, now: float) -> tuple[dict[str, Any] | None, bool]:
        """The due ``pack.health`` sample, and whether one is due but waits after a wake-up.

        At most one per ``publish_interval_s`` after the last (also across restarts).
        While the car is parked (nothing fresh) a due sample waits for the next trip, so
        a car on short trips reports on each trip, not only when the schedule falls inside
        one. After a wake-up it waits for the pack's SOH (the trend metric, which may come
        on a slower cycle than the first frames) and for the pack code to be confirmed
        again (after a swap the new pack's readings must not go out under the old code),
        each up to ``SAMPLE_WAIT_S`` (the SOH: at most its own freshness limit)."""
        interval = self.config.health.publish_interval_s
        if not self._checked and now >= PLAUSIBLE_SINCE:
            self._checked = True
            if self.sampled_at is not None and self.sampled_at - now > interval:
                self.sampled_at = None  # stored by a clock that was ahead: due at once
        if self.sampled_at is not None and now - self.sampled_at < interval:
            return None, False  # not due; also while the clock is behind the last sample
        tracker = self.tracker
        if not tracker.heard_lately(now):
            return None, False  # parked: checked in O(1), every tick
        awake = tracker.awake_since if tracker.awake_since is not None else now
        key = self.config.policy.trend_metric
        if key in self.config.metrics and tracker.fresh(key, now) is None:
            limit = min(tracker.max_age(key), max(self.config.health.bms_timeout_s, SAMPLE_WAIT_S))
            if now - awake < limit:
                return None, True
        heard = tracker.code_heard_at
        code_awaited = self.config.pack_code.source != "none" and (heard is None or heard < awake)
        if code_awaited and now - awake < SAMPLE_WAIT_S:
            return None, True
        snapshot = tracker.health_snapshot(now)
        if not snapshot["metrics"]:
            return None, False
        snapshot["trend"] = self.policy.trend(now)
        return snapshot, False

    def taken(self, now: float) -> None:
        """The sample went out (in the caller's commit): the next is an interval later."""
        self.sampled_at = now
        if now >= PLAUSIBLE_SINCE:  # a 1970 boot's time is never the schedule
            self.store.put_state(HEALTH_SAMPLED_KEY, now)

    def rebase(self, now: float) -> None:
        """The clock stepped back: a sample on the abandoned line makes one due at once."""
        if self.sampled_at is not None and self.sampled_at > now:
            self.sampled_at = None
