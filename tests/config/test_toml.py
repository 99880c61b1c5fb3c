"""Writing configuration TOML (tomli-w): what it writes, tomllib reads back unchanged."""

from __future__ import annotations

import math
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from pack_agent.cli import main
from pack_agent.config import as_data, load_config, parse_config, reference_config_path
from pack_agent.config.load import dump_toml, tomllib

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "config" / "examples").glob("*.toml"))


def test_tricky_values_round_trip() -> None:
    data = {
        "text": 'quote " backslash \\ newline \n tab \t 中文 \x01 del \x7f',
        "del\x7fkey": 1,
        "when": {"day": date(2026, 4, 1), "at": datetime(2026, 4, 1, 8, 0, tzinfo=timezone.utc)},
        "numbers": [1, -2, 0.1, 1e-9, 1.5e300],
        "flags": [True, False],
        "odd key.with dots": {"a b": 1},
        "empty": {},
        "sections": [{"name": "a", "sub": {"x": 1}}, {"name": "b", "items": [{"k": 2}]}],
        "deep": {"er": {"est": {"v": "x"}}},
    }
    assert tomllib.loads(dump_toml(data)) == data


def test_none_is_left_out_and_special_floats_survive() -> None:
    back = tomllib.loads(dump_toml({"a": None, "b": [1, None], "c": math.inf, "d": {}}))
    assert back == {"b": [1], "c": math.inf, "d": {}}
    assert math.isnan(tomllib.loads(dump_toml({"n": math.nan}))["n"])


def test_what_it_cannot_write_is_named() -> None:
    with pytest.raises(TypeError, match="bytes"):
        dump_toml({"x": b"raw"})


@pytest.mark.parametrize("path", [reference_config_path(), *EXAMPLES], ids=lambda p: p.name)
def test_every_shipped_configuration_round_trips(path: Path) -> None:
    cfg = load_config(path)
    again = parse_config(tomllib.loads(dump_toml(as_data(cfg))), cfg.base_dir, "again")
    assert again == cfg


def test_check_config_effective_prints_the_full_configuration(tmp_path, capsys) -> None:
    src = tmp_path / "small.toml"
    src.write_text(
        reference_config_path().read_text(encoding="utf-8").replace("port = 1883\n", ""),
        encoding="utf-8",
    )
    assert main(["check-config", str(src), "--effective"]) == 0
    text = capsys.readouterr().out
    assert "port = 1883" in text  # the default, filled in
    effective = tmp_path / "effective.toml"
    effective.write_text(text, encoding="utf-8")
    assert load_config(effective) == load_config(src)


def test_effective_configuration_never_shows_the_password(tmp_path, capsys) -> None:
    src = tmp_path / "pw.toml"
    text = reference_config_path().read_text(encoding="utf-8")
    src.write_text(text.replace("[mqtt]\n", '[mqtt]\npassword = "hunter2-s3cret"\n'), "utf-8")
    assert load_config(src).mqtt.password is not None
    assert main(["check-config", str(src), "--effective"]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and 'password = "**********"' in out
