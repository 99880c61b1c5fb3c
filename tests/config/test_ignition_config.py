"""``[ignition]``: one definition, the renamed keys, and errors that say what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from pack_agent.canbus.checks import load_and_check
from pack_agent.cli import main
from pack_agent.config import load_config, reference_config_path
from pack_agent.errors import ConfigError

REFERENCE = reference_config_path().read_text(encoding="utf-8")
NEW = """[ignition]
metric = "ignition"            # capacity and resistance judge only readings with ignition On
on_values = [2]                # VCU_Ignition: 0 Off, 1 Acc, 2 On, 3 Start (labels work too)
stale_cycles = 3               # the state holds till its frame is 3 cycles late (GenMsgCycleTime)
window_s = 5                   # a reading before the first ignition frame waits this long for it
"""
DBC = str(reference_config_path().parent / "pack_agent_reference.dbc")


def write(tmp_path: Path, text: str, name: str = "agent.toml") -> Path:
    p = tmp_path / name
    p.write_text(text.replace('"builtin:pack_agent_reference.dbc"', repr(DBC)), encoding="utf-8")
    return p


def legacy(on_min: str = "ignition_on_min = 1\n", on_values: str = "") -> str:
    """The reference as files were written before ``[ignition]``."""
    assert NEW in REFERENCE
    old = f'ignition_metric = "ignition"\n{on_values}ignition_window_s = 7\n'
    text = REFERENCE.replace(NEW, "").replace("[policy]\n", "[policy]\n" + old)
    return text.replace("[notice]\n", "[notice]\n" + on_min)


def test_the_old_keys_still_load_with_a_warning_naming_the_new_key(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, legacy()))
    assert cfg.ignition.metric == "ignition" and cfg.ignition.window_s == 7
    assert cfg.ignition.on_min == 1 and cfg.ignition.on_values is None  # Acc counts as On
    assert cfg.warnings == [
        "policy.ignition_metric: deprecated, read as ignition.metric; write ignition.metric",
        "policy.ignition_window_s: deprecated, read as ignition.window_s; write ignition.window_s",
        "notice.ignition_on_min: deprecated, read as ignition.on_min (the policy's gate uses it "
        "too); write ignition.on_min or ignition.on_values",
    ]
    load_and_check(cfg)


def test_the_old_on_values_win_over_the_old_notice_threshold(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, legacy(on_values="ignition_on_values = [2, 3]\n")))
    assert cfg.ignition.on_values == [2, 3] and cfg.ignition.on_min is None
    assert any(
        w.startswith("notice.ignition_on_min: deprecated and ignored: ignition.on_values")
        for w in cfg.warnings
    )
    assert any(w.startswith("policy.ignition_on_values: deprecated") for w in cfg.warnings)


def test_check_config_shows_the_warnings_and_passes(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, legacy())
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}: warning: policy.ignition_metric: deprecated" in out
    assert f"{path}: ok" in out


def test_a_named_ignition_metric_must_be_mapped(tmp_path: Path) -> None:
    text = REFERENCE.replace('metric = "ignition"  ', 'metric = "key"  ')
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert info.value.problems[0].startswith("ignition.metric: 'key' is not a mapped metric")
    # left at its default in a file that maps no ignition: a warning, the file loads
    text = REFERENCE.replace(NEW, "").replace(
        'ignition = { message = "VCU_Vehicle", signal = "VCU_Ignition" }\n', ""
    )
    cfg = load_config(write(tmp_path, text))
    assert cfg.warnings[0].startswith("ignition.metric: 'ignition' is not a mapped metric")


def test_a_named_trend_metric_must_be_mapped(tmp_path: Path) -> None:
    text = REFERENCE.replace('trend_metric = "soh"', 'trend_metric = "health"')
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    found = info.value.problems
    assert any(p.startswith("policy.trend_metric: 'health' is not a mapped") for p in found)


def test_on_values_or_on_min_not_both(tmp_path: Path) -> None:
    text = REFERENCE.replace("on_values = [2] ", "on_values = [2]\non_min = 2 ")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert info.value.problems == [
        "ignition.on_min: give ignition.on_values or ignition.on_min, not both"
    ]


def test_labels_and_impossible_values_are_checked_against_the_signal(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, REFERENCE.replace("on_values = [2]", 'on_values = ["On"]')))
    load_and_check(cfg)
    cfg = load_config(write(tmp_path, REFERENCE.replace("on_values = [2]", "on_values = [4]")))
    with pytest.raises(ConfigError) as info:
        load_and_check(cfg)
    assert info.value.problems == [
        "ignition.on_values[0]: 4 is not a value of VCU_Vehicle.VCU_Ignition (0..3; values "
        '0 "Off", 1 "Acc", 2 "On", 3 "Start"): the ignition would never be On; set '
        "ignition.on_values to its On value(s)"
    ]


def test_a_dbc_only_strict_mode_rejects_names_the_switch(tmp_path: Path) -> None:
    dbc = Path(DBC).read_text(encoding="cp1252")
    # a signal that overlaps another: cantools' strict mode refuses the file
    bad = dbc.replace(" SG_ VCU_Ignition : 24|2@1+", " SG_ VCU_Ignition : 20|2@1+", 1)
    assert bad != dbc
    (tmp_path / "overlap.dbc").write_text(bad, encoding="cp1252")
    text = REFERENCE.replace('"builtin:pack_agent_reference.dbc"', '"overlap.dbc"')
    cfg = load_config(write(tmp_path, text))
    with pytest.raises(ConfigError) as info:
        load_and_check(cfg)
    (problem,) = info.value.problems
    assert problem.startswith("databases[0]: cannot load overlap.dbc: ")
    assert "set strict_databases = false to load it" in problem
    cfg.strict_databases = False
    load_and_check(cfg)


def test_a_dbc_syntax_error_shows_its_line(tmp_path: Path) -> None:
    dbc = Path(DBC).read_text(encoding="cp1252")
    bad = dbc.replace(" SG_ VCU_Ignition : 24|2@1+", " SG_ VCU_Ignition 24|2@1+", 1)
    (tmp_path / "typo.dbc").write_text(bad, encoding="cp1252")
    text = REFERENCE.replace('"builtin:pack_agent_reference.dbc"', '"typo.dbc"')
    with pytest.raises(ConfigError) as info:
        load_and_check(load_config(write(tmp_path, text)))
    (problem,) = info.value.problems
    lines = bad.splitlines()
    line = next(i for i, s in enumerate(lines, 1) if s.startswith(" SG_ VCU_Ignition 24|2@1+"))
    assert f"line {line}" in problem and "VCU_Ignition" in problem
    assert "strict_databases" not in problem  # not a strict-mode problem


def test_an_unknown_message_suggests_the_closest_names(tmp_path: Path) -> None:
    text = REFERENCE.replace('message = "BMS_Health", signal = "BMS_SOH"',
                             'message = "BMS_Heath", signal = "BMS_SOH"')  # fmt: skip
    with pytest.raises(ConfigError) as info:
        load_and_check(load_config(write(tmp_path, text)))
    assert (
        "metrics.soh.message: message 'BMS_Heath' is not in the database(s) "
        "(did you mean 'BMS_Health' or 'BMS_Status'?)"
    ) in info.value.problems


def test_a_uds_metric_takes_its_own_minimum_and_maximum(tmp_path: Path) -> None:
    """``minimum``/``maximum`` guard every metric: for a UDS value the tighter of them and
    ``uds.minimum``/``uds.maximum`` is what the poller checks."""
    example = Path(__file__).parents[2] / "config" / "examples" / "hyundai-kia-uds.toml"
    text = example.read_text(encoding="utf-8").replace(
        "[metrics.soh.uds]", "[metrics.soh]\nminimum = 5\nmaximum = 100\n\n[metrics.soh.uds]"
    )
    text = text.replace('"builtin:pack_agent_reference.dbc"', repr(DBC))
    cfg = load_config(write(tmp_path, text))
    uds = cfg.metrics["soh"].uds
    assert uds is not None and uds.minimum == 5 and uds.maximum == 100
