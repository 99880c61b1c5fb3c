"""Bad input from issue 17: each gets an error naming its key (or a problem `run` would hit),
never a traceback, and `check-config` refuses everything `run` refuses."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pack_agent.cli import main
from pack_agent.config import as_data, load_config, parse_config, reference_config_path
from pack_agent.config.load import dump_toml
from pack_agent.errors import ConfigError
from pack_agent.runtime.preflight import preflight_problems


def reference(tmp_path: Path) -> dict[str, Any]:
    data = as_data(load_config(reference_config_path()))
    data["databases"] = [str(reference_config_path().parent / "pack_agent_reference.dbc")]
    data["notice"]["catalogue"] = str(reference_config_path().parent / "notices.toml")
    data["store"]["path"] = str(tmp_path / "store" / "agent.db")
    return data


def problems_of(data: dict[str, Any], tmp_path: Path) -> list[str]:
    try:
        parse_config(data, tmp_path, "test")
    except ConfigError as exc:
        return exc.problems
    return []


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("health", "publish_interval_s", float("inf"), "health.publish_interval_s: "),
        ("health", "bms_timeout_s", float("nan"), "health.bms_timeout_s: "),
        ("notice", "repeat_interval_s", float("inf"), "notice.repeat_interval_s: "),
        ("mqtt", "keepalive_s", 2**40, "mqtt.keepalive_s: Input should be less than or equal"),
        ("store", "path", "/var/lib/pack\0agent.db", "store.path: must not contain a NUL"),
        ("notice", "key_file", "/etc/k\0ey", "notice.key_file: must not contain a NUL"),
    ],
)
def test_unbounded_or_unusable_values_are_refused_with_their_key(
    tmp_path: Path, section: str, key: str, value: Any, expected: str
) -> None:
    data = reference(tmp_path)
    data[section][key] = value
    found = problems_of(data, tmp_path)
    assert any(p.startswith(expected) for p in found), found
    if isinstance(value, float):
        assert any("finite" in p for p in found), found


def test_nan_and_infinite_rule_thresholds_are_refused(tmp_path: Path) -> None:
    data = reference(tmp_path)
    data["rules"][0]["threshold"] = float("nan")
    data["rules"][-1]["confirm_s"] = float("inf")
    found = problems_of(data, tmp_path)
    assert any(p.startswith("rules[0].threshold:") for p in found), found
    assert any(p.startswith(f"rules[{len(data['rules']) - 1}].confirm_s:") for p in found), found


def test_a_deeply_nested_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.toml"
    path.write_text("a = " + "[" * 100_000 + "]" * 100_000 + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "notice.key_file: cannot read"),
        (b"short", "must hold a 16-byte AES key"),
        (b"zz" * 16, "must hold a 16-byte AES key"),
    ],
)
def test_key_file_problems(tmp_path: Path, content: bytes | None, expected: str) -> None:
    key = tmp_path / "hu.key"
    if content is not None:
        key.write_bytes(content)
    data = reference(tmp_path)
    data["notice"]["key_file"] = str(key)
    found = problems_of(data, tmp_path)
    assert any(expected in p for p in found), found


def test_a_key_of_32_hex_digits_or_16_bytes_loads(tmp_path: Path) -> None:
    for content in (b"00112233445566778899aabbccddeeff\n", bytes(range(16))):
        key = tmp_path / "hu.key"
        key.write_bytes(content)
        data = reference(tmp_path)
        data["notice"]["key_file"] = str(key)
        assert problems_of(data, tmp_path) == []


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(dump_toml(data), encoding="utf-8")
    return path


def _check_config(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(["check-config", str(path)])
    return rc, capsys.readouterr().out


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"mqtt": {"host": "broker.example.com"}}, "mqtt.host is 'broker.example.com'"),
        ({"mqtt": {"host": "evil.localhost"}}, "mqtt.host is 'evil.localhost'"),
        (
            {"mqtt": {"host": "broker.example.com", "tls": {"ca_file": "/nonexistent/ca.crt"}}},
            "mqtt.tls.ca_file: file not found: /nonexistent/ca.crt",
        ),
        (
            {"store": {"path": "/etc/hostname/agent.db"}},
            "store.path: /etc/hostname is not a folder",
        ),
        ({"store": {"path": "/"}}, "store.path: / is a folder, not a file"),
    ],
)
def test_check_config_refuses_what_run_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, Any], expected: str
) -> None:
    data = reference(tmp_path)
    for section, values in change.items():
        data[section].update(values)
    path = _write(tmp_path, data)
    rc, out = _check_config(path, capsys)
    assert rc == 1 and expected in out, out
    cfg = load_config(path)
    assert any(expected in p for p in preflight_problems(cfg))  # what the daemon calls first
    from pack_agent.runtime.daemon import Daemon

    with pytest.raises(ConfigError, match=expected.split(":")[0]):
        Daemon(cfg)


def test_a_store_folder_that_cannot_be_written_is_found_before_ready(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o500)
    elif not os.access("/proc/sys", os.W_OK):
        folder = Path("/proc/sys")  # root writes anywhere but on a read-only mount
    else:
        pytest.skip("no folder here that this user cannot write")
    data = reference(tmp_path)
    data["store"]["path"] = str(folder / "agent.db")
    cfg = parse_config(data, tmp_path, "test")
    assert preflight_problems(cfg) == [
        f"store.path: folder {folder} is not writable (the store and its journal live there)"
    ]
