"""The daemon recovers by itself: a bus that goes away and comes back, a broker that goes
away and comes back; and it keeps what `pack-agent status` needs."""

from __future__ import annotations

import time

from test_daemon import FAST, AgentThread, make_config, run_vehicle

from conftest import Subscriber
from pack_agent.config import AgentConfig
from pack_agent.runtime.status import LAST_EVENT_KEY, read_status
from pack_agent.runtime.statusview import gather, render
from pack_agent.store import read_only_view


def quick_status(cfg: AgentConfig, tmp_path) -> None:
    cfg.daemon.status_file = str(tmp_path / "run" / "status.json")
    cfg.daemon.status_interval_s = 0.1
    cfg.mqtt.reconnect_min_s = 0.1
    cfg.mqtt.reconnect_max_s = 0.5


def test_bus_goes_away_and_comes_back(broker, tmp_path):
    cfg, channel = make_config(tmp_path, broker.port)
    quick_status(cfg, tmp_path)
    with Subscriber(broker) as backend:
        agent = AgentThread(cfg)
        try:
            guard = agent.daemon.guards["powertrain"]
            guard.inner.shutdown()  # ip link set can0 down, under the running agent
            deadline = time.monotonic() + 5
            while guard.reopens < 1:  # frames sent while it is down are lost, as on a real bus
                assert time.monotonic() < deadline, guard.status()
                time.sleep(0.02)
            run_vehicle(cfg, channel, FAST, response="seen", agent=agent)
            backend.wait_for(lambda s: "owner.acknowledged" in {e["type"] for e in s.events}, 15)
            assert guard.failures == 1 and guard.reopens == 1 and guard.state == "up"
            live = read_status(agent.daemon.status_file)
            assert live["buses"]["powertrain"]["reopens"] == 1
        finally:
            agent.stop()
    types = {e["type"] for e in backend.events}
    assert {"pack.identified", "scrap.condition_met", "owner.acknowledged"} <= types


def test_broker_goes_away_mid_run_and_nothing_is_lost(broker, tmp_path):
    cfg, channel = make_config(tmp_path, broker.port)
    quick_status(cfg, tmp_path)
    agent = AgentThread(cfg)
    try:
        with Subscriber(broker) as backend:
            backend.wait_for(lambda s: any(x.get("state") == "online" for x in s.statuses), 10)
        broker.stop()
        run_vehicle(
            cfg, channel, FAST, response="seen", agent=agent
        )  # events pile up in the outbox
        assert len(agent.emitted) >= 5
        view = read_only_view(cfg.store_path())  # read-only, while the daemon writes
        assert view["pending"] == len(agent.emitted)
        broker.start()
        with Subscriber(broker) as backend:
            backend.wait_for(
                lambda s: {e["event_id"] for e in s.events} == {e.event_id for e in agent.emitted},
                20,
            )
        assert agent.daemon.uplink.status()["reconnects"] >= 1
    finally:
        agent.stop()


def test_status_shows_what_happened(broker, tmp_path):
    cfg, channel = make_config(tmp_path, broker.port)
    quick_status(cfg, tmp_path)
    cfg.health.publish_interval_s = 5 * 86400.0
    with Subscriber(broker) as backend:
        agent = AgentThread(cfg)
        try:
            run_vehicle(cfg, channel, FAST, response="service_booked", agent=agent)
            backend.wait_for(
                lambda s: len({e["event_id"] for e in s.events}) >= len(agent.emitted), 15
            )
            report = gather(cfg)  # while the daemon runs
        finally:
            agent.stop()
    assert report["pack"]["code"] == FAST.code and report["pack"]["valid"]
    assert report["health"]["metrics"]["soh"] < 82
    assert report["decisions"]["latched_rules"] == ["capacity-80"]
    assert report["decisions"]["last"]["persistence_days"] == 14
    assert report["decisions"]["last"]["statistic"]["median"] < 80
    [notice] = report["notices"]
    assert notice["answer"] == "service_booked" and notice["notice_id"] == 0x0101
    assert report["live"]["daemon"] == "running"
    assert report["live"]["buses"]["powertrain"]["state"] == "up"
    text = render(report)
    assert "scrapping condition met: capacity-80" in text
    assert "answered 'service_booked'" in text
    assert f"pack           {FAST.code}" in text
    # what status needs outlives delivery: the last events are kept in the state
    state = read_only_view(cfg.store_path())["state"]
    assert {
        LAST_EVENT_KEY + t for t in ("pack.health", "scrap.condition_met", "owner.acknowledged")
    } <= set(state)
    assert gather(cfg)["live"]["daemon"] == "stopped"
