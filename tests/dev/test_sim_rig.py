"""Configurations derived for a simulated vehicle: what the demo, tests and benchmarks run."""

from __future__ import annotations

from pathlib import Path

from pack_agent.config import load_config, reference_config_path
from pack_agent.dev.sim.rig import rig_config, write_config

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "examples" / "foxbms-2.toml"


def test_rig_points_the_reference_at_a_bus_broker_and_store(tmp_path) -> None:
    base = load_config(reference_config_path())
    cfg = rig_config(
        base,
        {"interface": "virtual", "channel": "rig-1"},
        18830,
        tmp_path,
        health={"bms_timeout_s": 60.0},
        daemon={"clock": "frames"},
    )
    assert [(b.name, b.interface, b.channel) for b in cfg.buses] == [
        (base.buses[0].name, "virtual", "rig-1")
    ]
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.password) == ("127.0.0.1", 18830, None)
    assert cfg.store_path() == tmp_path / "pack-agent.db"
    assert cfg.health.bms_timeout_s == 60.0 and cfg.daemon.clock == "frames"
    assert cfg.health.publish_interval_s == base.health.publish_interval_s  # merged, kept
    assert cfg.rules == base.rules and cfg.metrics == base.metrics


def test_a_written_rig_reads_back_the_same_from_another_folder(tmp_path) -> None:
    """Relative paths (a maker's own DBC next to its file) still resolve once written."""
    base = load_config(EXAMPLE)
    cfg = rig_config(base, {"interface": "virtual", "channel": "rig-2"}, 1883, tmp_path)
    elsewhere = tmp_path / "run" / "agent.toml"
    elsewhere.parent.mkdir()
    again = load_config(write_config(cfg, elsewhere))
    assert again == cfg
    assert again.database_paths() == base.database_paths()
