"""Rule configuration: every kind parses, and every mistake is named with its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pack_agent.config import as_data, load_config, parse_config, reference_config_path
from pack_agent.config.rules import CapacityRule, ConsecutiveRule, ForecastRule, SafetyRule
from pack_agent.errors import ConfigError

REFERENCE = reference_config_path().read_text(encoding="utf-8")
HEAD = REFERENCE[: REFERENCE.index("[[rules]]")]
TAIL = REFERENCE[REFERENCE.index("[notice]") :]


def with_rules(tmp_path: Path, rules: str) -> Path:
    p = tmp_path / "agent.toml"
    p.write_text(HEAD + rules + "\n" + TAIL, encoding="utf-8")
    return p


def problems(tmp_path: Path, rules: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(with_rules(tmp_path, rules))
    return info.value.problems


D = 'description_en = "e"\ndescription_zh = "z"\n'


def test_reference_rules_cover_every_family():
    cfg = load_config(reference_config_path())
    kinds = {r.kind for r in cfg.rules}
    assert {"capacity", "forecast", "resistance", "usage", "age", "safety"} <= kinds
    thermal = next(r for r in cfg.rules if r.id == "thermal-event")
    assert isinstance(thermal, SafetyRule) and thermal.severity == "critical"


def test_the_original_form_still_works(tmp_path):
    cfg = load_config(
        with_rules(tmp_path, f'[[rules]]\nid = "c"\nbelow = 80\nconsecutive = 3\n{D}')
    )
    assert isinstance(cfg.rules[0], ConsecutiveRule) and cfg.rules[0].consecutive == 3


def test_a_rule_survives_a_dump_and_reload(tmp_path):
    cfg = load_config(reference_config_path())
    again = parse_config(as_data(cfg), cfg.base_dir, cfg.source)
    assert again.rules == cfg.rules
    assert isinstance(again.rules[0], CapacityRule)
    assert isinstance(next(r for r in again.rules if r.kind == "forecast"), ForecastRule)


def test_unknown_kind_and_bad_values_name_their_key(tmp_path):
    found = problems(
        tmp_path,
        f'[[rules]]\nid = "a"\nkind = "colour"\n{D}'
        f'[[rules]]\nid = "b"\nkind = "capacity"\nthreshold = 80\nwindow_days = 0\n{D}'
        f'[[rules]]\nid = "c"\nkind = "safety"\nmetric = "thermal_event"\n'
        f'comparison = "sideways"\nthreshold = 1\n{D}'
        f'[[rules]]\nid = "d"\nkind = "capacity"\nthreshold = 80\ncolour = 1\n{D}',
    )
    assert any(p.startswith("rules[0].kind: unknown rule kind 'colour'") for p in found)
    assert any(p.startswith("rules[1].window_days:") for p in found)
    assert any(p.startswith("rules[2].comparison:") for p in found)
    assert "rules[3].colour: unknown key" in found


def test_unmapped_metric_unknown_reference_self_reference_and_cycle(tmp_path):
    found = problems(
        tmp_path,
        f'[[rules]]\nid = "x"\nkind = "usage"\nmetric = "colour"\nthreshold = 1\n{D}'
        f'[[rules]]\nid = "a"\nkind = "any"\nrules = ["b", "nowhere"]\n{D}'
        f'[[rules]]\nid = "b"\nkind = "all"\nrules = ["a", "b"]\n{D}',
    )
    assert "rules[0].metric: 'colour' is not a mapped metric" in found
    assert "rules[1].rules[1]: no rule with id 'nowhere'" in found
    assert "rules[2].rules[1]: a rule cannot refer to itself" in found
    assert "rules[1].rules: combinations form a cycle: a -> b -> a" in found


def test_forecast_must_point_at_a_capacity_rule_on_the_trend_metric(tmp_path):
    found = problems(
        tmp_path,
        f'[[rules]]\nid = "cap"\nkind = "capacity"\nmetric = "capacity"\nthreshold = 80\n'
        f"rated_capacity = 150\n{D}"
        f'[[rules]]\nid = "f1"\nkind = "forecast"\nrule = "cap"\n{D}'
        f'[[rules]]\nid = "f2"\nkind = "forecast"\nrule = "f1"\n{D}',
    )
    assert any(p.startswith("rules[1].rule: 'cap' must judge the trend metric") for p in found)
    assert "rules[2].rule: 'f1' is not a capacity rule" in found


def test_window_span_longer_than_the_window(tmp_path):
    found = problems(
        tmp_path,
        f'[[rules]]\nid = "c"\nkind = "capacity"\nthreshold = 80\nwindow_days = 10\n'
        f"min_span_days = 14\n{D}",
    )
    assert found == ["rules[0].min_span_days: must be <= window_days"]
