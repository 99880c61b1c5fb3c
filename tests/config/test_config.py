from pathlib import Path

import pytest

from pack_agent.canbus.checks import load_and_check
from pack_agent.cli import main
from pack_agent.config import as_data, load_config, parse_config, reference_config_path
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
    repo_copy = Path(__file__).parents[2] / "config" / "reference.toml"
    assert repo_copy.read_text(encoding="utf-8") == REFERENCE


def test_every_schema_problem_is_reported_with_its_key(tmp_path):
    text = REFERENCE.replace('vin = "LPACK2026AGENT001"', 'vin = "SHORT"')
    text = text.replace("port = 1883", "port = 70000")
    text = text.replace("min_readings = 14            # ...of", "min_readings = 1  # ...of")
    text = text.replace("[store]", "[store]\ncolour = 'blue'")
    found = problems(write(tmp_path, text))
    assert any(p.startswith("vin:") and "17 characters" in p for p in found)
    assert any(p.startswith("mqtt.port:") for p in found)
    assert any(p.startswith("rules[0].min_readings:") for p in found)
    assert "store.colour: unknown key" in found
    assert len(found) == 4


def test_unknown_signal_and_message_are_named(tmp_path):
    text = REFERENCE.replace('signal = "BMS_SOH"', 'signal = "BMS_SOHX"')
    text = text.replace(
        'message = "VCU_Vehicle", signal = "VCU_Odometer"',
        'message = "VCU_Nope", signal = "VCU_Odometer"',
    )
    found = problems(write(tmp_path, text))
    # the closest names are suggested
    assert (
        "metrics.soh.signal: signal 'BMS_SOHX' is not in message 'BMS_Health' "
        "(did you mean 'BMS_SOH'?)" in found
    )
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
    text = REFERENCE.replace('metric = "soh"\nthreshold', 'metric = "colour"\nthreshold')
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


def test_notice_settings_problems_are_named(tmp_path):
    text = REFERENCE.replace(
        'severity = "advisory"', 'severity = "advisory"\nnotice_id = 0x0999', 1
    )
    text = text.replace('after_seen = "slow"', 'after_seen = "later"')
    text = text.replace('text_message = "PA_NoticeText"', 'text_message = "PA_NoText"')
    found = problems(write(tmp_path, text))
    assert any(p.startswith("notice.after_seen:") for p in found)
    assert len(found) == 1  # schema problems first, alone
    found = problems(write(tmp_path, text.replace('after_seen = "later"', 'after_seen = "stop"')))
    assert found == [
        "rules[0].notice_id: notice 0x0999 is not in the catalogue builtin:notices.toml"
    ]
    text = text.replace("notice_id = 0x0999", "notice_id = 0x0202")
    found = problems(write(tmp_path, text.replace('after_seen = "later"', 'after_seen = "stop"')))
    assert found == ["rules[0].notice_id: notice 0x0202 is critical, the rule is advisory"]


def test_notice_text_message_must_have_the_page_signals(tmp_path):
    text = REFERENCE.replace('text_message = "PA_NoticeText"', 'text_message = "HU_NoticeAck"')
    found = problems(write(tmp_path, text))
    assert "notice.text_message: signal 'PA_TextSeq' is not in message 'HU_NoticeAck'" in found


def test_outlet_too_long_for_the_text_pages_and_bad_catalogue(tmp_path):
    text = REFERENCE.replace(
        'service_phone = "+86 400 000 0000"', f'service_phone = "{"8" * 1300}"'
    )
    found = problems(write(tmp_path, text))
    assert len(found) == 1 and "at most 1275 fit in the CAN text pages" in found[0]
    assert found[0].startswith("notice.service_outlet: outlet, phone, procedure_url and")
    text = REFERENCE.replace('"builtin:notices.toml"', '"mine.toml"')
    found = problems(write(tmp_path, text))
    assert found == [
        f"notice.catalogue: {tmp_path / 'mine.toml'}: cannot read: No such file or directory"
    ]


def test_outlet_must_be_one_line(tmp_path):
    text = REFERENCE.replace('service_phone = "+86 400 000 0000"', 'service_phone = "1\\n2"')
    found = problems(write(tmp_path, text))
    assert found == ["notice.service_phone: must be one line (no line feed or NUL)"]


def test_bad_expression_and_unknown_operand_are_named_with_their_key(tmp_path):
    text = REFERENCE.replace(
        'soh = { message = "BMS_Health", signal = "BMS_SOH" }',
        'soh = { expression = "100 * BMS_Capacity / NoSuchSignal" }\n'
        'soh2 = { expression = "__import__(1)" }\n'
        'soh3 = { expression = "BMS_Health.BMS_SOH + BMS_Status.Nope" }',
    )
    got = problems(write(tmp_path, text))
    assert "metrics.soh.expression: unknown signal 'NoSuchSignal'" in got
    assert any(p.startswith("metrics.soh2.expression: ") and "not allowed" in p for p in got)
    assert "metrics.soh3.expression: signal 'Nope' is not in message 'BMS_Status'" in got


def test_a_metric_needs_exactly_one_source(tmp_path):
    text = REFERENCE.replace(
        'soh = { message = "BMS_Health", signal = "BMS_SOH" }',
        'soh = { message = "BMS_Health", signal = "BMS_SOH", expression = "BMS_SOH" }\n'
        'empty = { bus = "powertrain" }\n'
        'half = { message = "BMS_Health" }\n'
        'bad_invalid = { message = "BMS_Health", signal = "BMS_SOH", invalid_raw = { x = 1 } }',
    )
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    got = "\n".join(info.value.problems)
    assert "metrics.soh: give exactly one of" in got
    assert "metrics.empty: give exactly one of" in got
    assert "metrics.half.signal: required with message" in got
    assert "metrics.bad_invalid.invalid_raw: a table (operand -> raw values) is only for" in got


def test_uds_pack_code_needs_its_request(tmp_path):
    text = REFERENCE.replace('message = "BMS_PackCode"', 'source = "uds"\nmessage = "BMS_PackCode"')
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert "pack_code.uds: required when pack_code.source is 'uds'" in info.value.problems


def test_two_mapped_messages_with_one_frame_id_on_one_bus(tmp_path):
    dbc = tmp_path / "clash.dbc"
    dbc.write_text(
        'VERSION ""\n\nNS_ :\n\nBO_ 929 Other_Health: 8 X\n'
        ' SG_ Other_SOH : 0|8@1+ (1,0) [0|100] "%" X\n'
    )
    text = REFERENCE.replace(
        'databases = ["builtin:pack_agent_reference.dbc"]',
        'databases = ["builtin:pack_agent_reference.dbc", "clash.dbc"]',
    ).replace(
        'soc = { message = "BMS_Status", signal = "BMS_SOC" }',
        'soc = { message = "Other_Health", signal = "Other_SOH" }',
    )
    got = problems(write(tmp_path, text))
    assert any(
        p.startswith("metrics.soc.message: message 'Other_Health' has frame id 0x3A1") for p in got
    ), got


def test_a_dbc_without_nodes_line_loads(tmp_path):
    # community (opendbc-style) files often have no BU_ line; cantools' grammar needs one
    dbc = tmp_path / "nonodes.dbc"
    dbc.write_text(
        'VERSION ""\n\nNS_ :\n\nBO_ 1200 Extra: 8 X\n SG_ Extra_Soh : 0|8@1+ (1,0) [0|100] "%" X\n'
    )
    text = REFERENCE.replace(
        'databases = ["builtin:pack_agent_reference.dbc"]',
        'databases = ["builtin:pack_agent_reference.dbc", "nonodes.dbc"]',
    ).replace(
        'soc = { message = "BMS_Status", signal = "BMS_SOC" }',
        'soc = { message = "Extra", signal = "Extra_Soh" }',
    )
    db = load_and_check(load_config(write(tmp_path, text)))
    assert db.get_message_by_name("Extra").frame_id == 1200


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


def test_as_data_round_trips_and_keeps_no_location_keys():
    cfg = load_config(reference_config_path())
    data = as_data(cfg)
    assert "base_dir" not in data and "source" not in data
    assert data["rules"][0]["kind"] == cfg.rules[0].kind
    assert parse_config(data, cfg.base_dir, cfg.source) == cfg


def test_invalid_raw_takes_one_integer_or_a_list_of_them(tmp_path):
    def metric(value: str) -> Path:
        old = 'soc = { message = "BMS_Status", signal = "BMS_SOC" }'
        new = f'soc = {{ message = "BMS_Status", signal = "BMS_SOC", invalid_raw = {value} }}'
        assert old in REFERENCE
        return write(tmp_path, REFERENCE.replace(old, new))

    assert load_config(metric("255")).metrics["soc"].invalid_raw == [255]
    assert load_config(metric("[0, 255]")).metrics["soc"].invalid_raw == [0, 255]
    for wrong in ('"255"', "255.5"):
        found = problems(metric(wrong))
        assert found and all(p.startswith("metrics.soc.invalid_raw") for p in found), found


def test_a_notice_that_speaks_of_another_cause_is_refused(tmp_path):
    """Issue 16 item 1: the capacity text on a resistance rule, and a rule no catalogue
    entry speaks of, are configuration errors naming the rule."""
    text = REFERENCE.replace('baseline = "first"', 'baseline = "first"\nnotice_id = 0x0101', 1)
    assert problems(write(tmp_path, text)) == [
        "rules[2].notice_id: notice 0x0101 (CapacityEndOfLifeAdvisory) speaks of capacity, "
        "consecutive:soh, consecutive:capacity, not of a resistance rule on "
        "'internal_resistance'"
    ]
    held = "persistence_days = 14        # ...has stayed below 80 % for 14 days\n"
    text = REFERENCE.replace(held + 'severity = "advisory"', held + 'severity = "critical"')
    assert text != REFERENCE
    assert problems(write(tmp_path, text)) == [
        "rules[0].notice_id: no critical notice in the catalogue builtin:notices.toml speaks "
        "of a capacity rule on 'soh': name one"
    ]


def test_every_reference_rule_gets_the_notice_of_its_cause():
    cfg = load_config(reference_config_path())
    kinds = {r.id: r.kind for r in cfg.rules}
    assert cfg.notice_ids == {
        "capacity-80": 0x0101,
        "capacity-80-forecast": 0x0102,
        "resistance-growth-60": 0x0104,
        "cycles-3000": 0x0106,
        "age-15": 0x0105,
        "thermal-event": 0x0202,
        "insulation-fault": 0x0203,
        "cell-imbalance": 0x0201,
        "bms-end-of-life": 0x0107,
    }
    assert 0x0101 not in {cfg.notice_ids[r] for r, k in kinds.items() if k != "capacity"}
