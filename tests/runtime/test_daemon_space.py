"""The daemon on a volume under ``store.reserve_bytes`` free: ``store.space_low`` reaches the
backend once, the status file says so, samples are refused and the decision still goes out."""

from __future__ import annotations

import shutil
from collections import Counter

from test_daemon import FAST, AgentThread, make_config, run_vehicle
from test_daemon_lifecycle import quick_status

from conftest import Subscriber
from pack_agent.runtime.status import read_status
from pack_agent.runtime.statusview import gather, render


def test_space_short_is_reported_samples_refused_essentials_delivered(broker, tmp_path):
    cfg, channel = make_config(tmp_path, broker.port)
    quick_status(cfg, tmp_path)
    # a reserve larger than the volume's free space: short from the first commit on
    cfg.store.reserve_bytes = shutil.disk_usage(tmp_path).free + 2**40
    with Subscriber(broker) as backend:
        agent = AgentThread(cfg)
        try:
            run_vehicle(cfg, channel, FAST, response="seen", agent=agent)
            backend.wait_for(
                lambda s: (
                    {"scrap.condition_met", "store.space_low"} <= {e["type"] for e in s.events}
                ),
                15,
            )
            live = read_status(agent.daemon.status_file)
            text = render(gather(cfg))  # pack-agent status, while the daemon runs
        finally:
            agent.stop()
    events = list({e["event_id"]: e for e in backend.events}.values())
    kinds = Counter(e["type"] for e in events)
    assert kinds["store.space_low"] == 1  # once per episode
    assert kinds["pack.health"] == 0  # refused before numbering ...
    assert sorted(e["seq"] for e in events) == list(range(1, len(events) + 1))  # ... no gap
    assert kinds["pack.identified"] == 1 and kinds["scrap.condition_met"] == 1
    low = next(e for e in events if e["type"] == "store.space_low")["data"]
    assert low["reserve_bytes"] == cfg.store.reserve_bytes and low["free_bytes"] > 0
    queue = live["queue"]
    assert queue["space_short_since"] is not None and queue["refused_total"] >= 1
    assert queue["reserve_bytes"] == cfg.store.reserve_bytes
    assert f"under store.reserve_bytes since {queue['space_short_since']}" in text
    assert "essential events still stored" in text
