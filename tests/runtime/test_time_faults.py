"""Time faults: a gateway clock at 1970, a clock that jumps back or forward by a year.

``seq`` stays the order of truth (gap-free whatever the clock says); events say
``time_unsure`` when the clock was before 2026 or behind a time already seen; a jump
forward is not an old pack, and rules keep deciding on the new time line.
"""

from __future__ import annotations

import json

from test_agent_notices import CODE, DAY, NEW_CODE, Rig

from pack_agent.core.events import PLAUSIBLE_SINCE

YEAR = 365 * DAY
T = 1_800_000_000.0  # 2027


def published(rig: Rig) -> list[dict]:
    return [json.loads(body) for *_, body in rig.store.pending_rows(0, 10_000)]


def test_a_gateway_at_1970_then_a_year_forward_then_back(tmp_path):
    rig = Rig(tmp_path, pack_code={"replaced_after_trips": 1})  # each code a swap at once
    try:
        rig.identify(1000.0)  # booted at 1970, no NTP yet
        rig.soh(90.0, 1010.0)
        rig.agent.tick(1020.0)
        rig.identify(T, code=NEW_CODE)  # NTP: 2027 (a pack swap seen meanwhile)
        rig.decide(T + DAY)  # the rules work on the new time line
        rig.identify(T + YEAR + 10 * DAY, code=CODE)  # a year forward
        rig.agent.tick(T + YEAR + 10 * DAY)
        rig.identify(T + 20 * DAY, code=NEW_CODE)  # and back: a swap still reported
        events = published(rig)
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        by_type = [(e["type"], e.get("time_unsure", False)) for e in events]
        assert by_type[0] == ("pack.identified", True)
        first_sure = next(i for i, e in enumerate(events) if e["type"] == "pack.replaced")
        assert all(e.get("time_unsure") for e in events[:first_sure])
        decided = [e for e in events if e["type"] == "scrap.condition_met"]
        assert len(decided) == 1 and "time_unsure" not in decided[0]
        replaced = [e for e in events if e["type"] == "pack.replaced"]
        # the year ahead came as one instant (a stray): never adopted, so the swap back
        # at T + 20 days is on the time line, not unsure
        assert [e.get("time_unsure", False) for e in replaced] == [False, False, False]
        assert rig.agent.clock_rebased is None
        assert all(e["time"] for e in events)  # the clock's time is kept, flagged
        assert PLAUSIBLE_SINCE < T
        assert rig.agent.frame_errors == 0
    finally:
        rig.close()
