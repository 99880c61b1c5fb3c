"""The deployment pieces stay valid: the systemd unit verifies and keeps its hardening."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
UNIT = DEPLOY / "pack-agent.service"


def unit_settings() -> dict[str, str]:
    out = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def test_the_unit_is_hardened_and_supervised():
    s = unit_settings()
    assert s["Type"] == "notify" and int(s["WatchdogSec"]) > 0
    assert s["Restart"] == "on-failure"
    assert s["User"] == "pack-agent" and s["StateDirectory"] == "pack-agent"
    assert s["ProtectSystem"] == "strict" and s["NoNewPrivileges"] == "yes"
    assert s["CapabilityBoundingSet"] == ""  # reading SocketCAN needs no capability
    assert "AF_CAN" in s["RestrictAddressFamilies"].split()
    assert s["ExecReload"].endswith("-HUP $MAINPID")


def test_systemd_verifies_the_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # the unit points at the installed path; verify it with an executable that exists here
    exe = shutil.which("pack-agent") or shutil.which("true")
    assert exe is not None
    text = UNIT.read_text(encoding="utf-8").replace("/opt/pack-agent/venv/bin/pack-agent", exe)
    unit = tmp_path / "pack-agent.service"
    unit.write_text(text, encoding="utf-8")
    proc = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    if proc.returncode != 0 and "Failed to" in proc.stderr and "bus" in proc.stderr.lower():
        pytest.skip(f"systemd-analyze cannot run here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr


def test_vcan_script_is_executable_and_strict():
    script = DEPLOY / "vcan-setup.sh"
    assert script.stat().st_mode & 0o111
    assert "set -euo pipefail" in script.read_text(encoding="utf-8")


def test_the_broker_acl_lets_only_the_backend_write_commands():
    """Static: no pattern lets a vehicle write under commands/ (the live refusal, with
    the deploy PKI and a real mosquitto: tests/delivery/test_broker_acl.py)."""
    lines = [
        line.split()
        for line in (DEPLOY / "mosquitto" / "acl").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    patterns = [(w[1], w[2]) for w in lines if w[0] == "pattern"]
    assert ("read", "pack-agent/v1/%u/commands/#") in patterns
    for access, topic in patterns:
        if access in ("write", "readwrite"):
            assert "/commands" not in topic and not topic.endswith("%u/#"), topic
    user = lines.index(["user", "backend"])
    assert ["topic", "write", "pack-agent/v1/+/commands/#"] in lines[user:]
