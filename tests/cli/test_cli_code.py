"""Tests for `pack-agent code`: text and JSON output, exit status, a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pack_agent import cli

VALID = "0RJPEA00HAU0AAF131001955"
INVALID = "0RJPHA00HAU0AAFD31001955"  # battery type H, month D
CASCADE = "ABCMB12F130000042RP"

JSON_KEYS = {
    "valid",
    "code",
    "vendor",
    "product_type",
    "battery_type",
    "battery_chemistry",
    "specification",
    "traceability",
    "production_date",
    "serial",
    "cascade",
    "errors",
}


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    rc = cli.main(["code", *argv])
    out, err = capsys.readouterr()
    assert err == ""
    return rc, out


def test_valid_code_prints_aligned_fields(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = run_cli(capsys, VALID)
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split() == ["code", VALID]
    rows = dict(line.split("  ", 1) for line in lines)
    rows = {k.strip(): v.strip() for k, v in rows.items()}
    assert rows["valid"] == "yes"
    assert rows["vendor"] == "0RJ"
    assert rows["product type"] == "pack"
    assert rows["battery type"] == "E = ternary (NCM/NCA)"
    assert rows["specification"] == "A0"
    assert rows["traceability"] == "0HAU0AA"
    assert rows["production date"] == "2025-01-03"
    assert rows["serial"] == "1001955"
    assert rows["cascade"] == "no"
    # aligned: every value starts in the same column
    starts = {len(line) - len(line.split("  ", 1)[1].lstrip()) for line in lines}
    assert len(starts) == 1


def test_unverified_chemistry_is_flagged(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = run_cli(capsys, "X12MCPM27KLPCLX2M2382320")
    assert rc == 0
    assert "C = lithium manganese oxide (meaning unverified)" in out
    assert "2040-02-21" in out


def test_invalid_code_lists_every_problem(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = run_cli(capsys, INVALID)
    assert rc == 1
    assert "valid            no" in out
    assert "2 problem(s):" in out
    assert "  - position 5: battery type 'H' is not A-G or Z" in out
    assert "  - position 16: production month 'D' is not 1-9 or A-C" in out
    assert "vendor           0RJ" in out  # what could be read is still shown


def test_json_valid(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = run_cli(capsys, VALID, "--json")
    assert rc == 0
    assert out.count("\n") == 1  # one JSON object, one line
    data = json.loads(out)
    assert set(data) >= JSON_KEYS
    assert data["valid"] is True
    assert data["code"] == VALID
    assert data["vendor"] == "0RJ"
    assert data["product_type"] == "pack"
    assert data["battery_type"] == "E"
    assert data["battery_chemistry"] == "ternary (NCM/NCA)"
    assert data["specification"] == "A0"
    assert data["traceability"] == "0HAU0AA"
    assert data["production_date"] == "2025-01-03"
    assert data["serial"] == "1001955"
    assert data["cascade"] is False
    assert data["errors"] == []


def test_json_invalid_has_nulls_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = run_cli(capsys, INVALID, "--json")
    assert rc == 1
    data = json.loads(out)
    assert set(data) >= JSON_KEYS
    assert data["valid"] is False
    assert data["code"] == INVALID
    assert data["battery_type"] is None
    assert data["battery_chemistry"] is None
    assert data["production_date"] is None
    assert data["vendor"] == "0RJ"
    assert data["errors"] == [
        "position 5: battery type 'H' is not A-G or Z",
        "position 16: production month 'D' is not 1-9 or A-C",
    ]


def test_json_wrong_length(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = run_cli(capsys, "ABC", "--json")
    assert rc == 1
    data = json.loads(out)
    assert data["vendor"] is None and data["product_type"] is None
    assert data["errors"][0].startswith("code: length 3")


def test_cascade_code(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = run_cli(capsys, CASCADE, "--json")
    assert rc == 0
    data = json.loads(out)
    assert data["cascade"] is True
    assert data["traceability"] is None
    assert data["cascade_product_type"] == "pack"
    rc, out = run_cli(capsys, CASCADE)
    assert rc == 0
    assert "(none: cascade form)" in out


def test_code_argument_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["code"])
    assert info.value.code == 2
    assert "CODE" in capsys.readouterr().err


def test_real_subprocess_json() -> None:
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    for code, expected_rc in ((VALID, 0), (INVALID, 1)):
        proc = subprocess.run(
            [sys.executable, "-m", "pack_agent", "code", code, "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        assert proc.returncode == expected_rc, proc.stderr
        data = json.loads(proc.stdout)
        assert data["valid"] is (expected_rc == 0)
        assert data["code"] == code
        assert set(data) >= JSON_KEYS


def test_json_key_order_is_the_same_for_valid_and_invalid(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, valid_out = run_cli(capsys, VALID, "--json")
    _, invalid_out = run_cli(capsys, INVALID, "--json")
    assert list(json.loads(valid_out)) == list(json.loads(invalid_out))
    assert list(json.loads(valid_out))[:2] == ["valid", "code"]
    assert list(json.loads(valid_out))[-1] == "errors"


def test_a_production_date_after_today_is_said(capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 16: a code made in the future is still a well-formed code (exit 0), but the
    command says so instead of accepting it silently."""
    future = "0RJPEA00HAU0AAJ5K0004242"  # made 2028-05-19
    rc, out = run_cli(capsys, future, "--today", "2026-12-07")
    assert rc == 0
    assert out.splitlines()[-1] == (
        "warning: production date 2028-05-19 is after today's date 2026-12-07"
    )
    rc, out = run_cli(capsys, future, "--today", "2028-05-19", "--json")
    assert json.loads(out)["warnings"] == []
    rc, out = run_cli(capsys, future, "--today", "2028-05-18", "--json")
    assert json.loads(out)["warnings"] == [
        "production date 2028-05-19 is after today's date 2028-05-18"
    ]
