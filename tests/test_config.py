from pathlib import Path

import pytest

from pack_agent.cli import main
from pack_agent.config import load_config, reference_config_path
from pack_agent.database import load_and_check
from pack_agent.errors import ConfigError

REFERENCE = reference_config_path().read_text(encoding="utf-8")


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "agent.toml"
    p.write_text(text, encoding="utf-8")
    return p


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_and_check(load_config(path))
    return info.value.problems


def test_reference_config_is_valid_against_its_database():
    cfg = load_config(reference_config_path())
    db = load_and_check(cfg)
    assert cfg.vin == "LPACK2026AGENT001"
    assert {"soh", "soc", "odometer"} <= set(cfg.metrics)
    assert db.get_message_by_name("BMS_Health").frame_id == 0x3A1


def test_repo_config_file_is_the_shipped_reference():
    repo_copy = Path(__file__).parents[1] / "config" / "reference.toml"
    assert repo_copy.read_text(encoding="utf-8") == REFERENCE


def test_every_schema_problem_is_reported_with_its_key(tmp_path):
    text = REFERENCE.replace('vin = "LPACK2026AGENT001"', 'vin = "SHORT"')
    text = text.replace("port = 1883", "port = 70000")
    text = text.replace("consecutive = 14", "consecutive = 1")
    text = text.replace("[store]", "[store]\ncolour = 'blue'")
    found = problems(write(tmp_path, text))
    assert any(p.startswith("vin:") and "17 characters" in p for p in found)
    assert any(p.startswith("mqtt.port:") for p in found)
    assert any(p.startswith("rules[0].consecutive:") for p in found)
    assert "store.colour: unknown key" in found
    assert len(found) == 4


def test_unknown_signal_and_message_are_named(tmp_path):
    text = REFERENCE.replace('signal = "BMS_SOH"', 'signal = "BMS_SOHX"')
    text = text.replace(
        'message = "VCU_Vehicle", signal = "VCU_Odometer"',
        'message = "VCU_Nope", signal = "VCU_Odometer"',
    )
    found = problems(write(tmp_path, text))
    assert "metrics.soh.signal: signal 'BMS_SOHX' is not in message 'BMS_Health'" in found
    assert "metrics.odometer.message: message 'VCU_Nope' is not in the database(s)" in found


def test_missing_database_file_is_named(tmp_path):
    text = REFERENCE.replace('"builtin:pack_agent_reference.dbc"', '"nowhere.dbc"')
    found = problems(write(tmp_path, text))
    assert found == [f"databases[0]: file not found: {tmp_path / 'nowhere.dbc'}"]


def test_broken_database_file_is_named(tmp_path):
    (tmp_path / "bad.dbc").write_text("BO_ this is not a dbc\n")
    text = REFERENCE.replace('"builtin:pack_agent_reference.dbc"', '"bad.dbc"')
    found = problems(write(tmp_path, text))
    assert len(found) == 1 and found[0].startswith("databases[0]: cannot load bad.dbc")


def test_rule_on_unmapped_metric_and_unknown_bus(tmp_path):
    text = REFERENCE.replace('metric = "soh"', 'metric = "colour"')
    text = text.replace(
        'soc = { message = "BMS_Status", signal = "BMS_SOC" }',
        'soc = { message = "BMS_Status", signal = "BMS_SOC", bus = "body" }',
    )
    found = problems(write(tmp_path, text))
    assert "rules[0].metric: 'colour' is not a mapped metric" in found
    assert any(p.startswith("metrics.soc.bus: no bus named 'body'") for p in found)


def test_toml_syntax_error_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "vin = \n"))
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "absent.toml")


def test_check_config_command(tmp_path, capsys):
    assert main(["check-config", str(reference_config_path())]) == 0
    assert "ok" in capsys.readouterr().out
    bad = write(tmp_path, REFERENCE.replace('signal = "BMS_SOH"', 'signal = "Nope"'))
    assert main(["check-config", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "metrics.soh.signal: signal 'Nope' is not in message 'BMS_Health'" in out
    assert "Traceback" not in out


def test_tls_paths_are_taken_from_the_config_folder_and_synchronous_is_checked(tmp_path):
    text = REFERENCE.replace(
        "[store]",
        '[mqtt.tls]\nca_file = "certs/ca.pem"\ncert_file = "/abs/v.pem"\nkey_file = "certs/v.key"'
        "\n\n[store]",
    ).replace('synchronous = "NORMAL"', 'synchronous = "FULL"')
    cfg = load_config(write(tmp_path, text))
    tls = cfg.mqtt_settings().tls
    assert tls is not None
    assert (tls.ca_file, tls.cert_file, tls.key_file) == (
        str(tmp_path / "certs" / "ca.pem"),
        "/abs/v.pem",
        str(tmp_path / "certs" / "v.key"),
    )
    assert cfg.mqtt.tls is not None and cfg.mqtt.tls.ca_file == "certs/ca.pem"  # as written
    assert cfg.store.synchronous == "FULL"
    bad = write(tmp_path, text.replace('synchronous = "FULL"', 'synchronous = "OFF"'))
    assert [p for p in problems(bad) if p.startswith("store.synchronous")]
