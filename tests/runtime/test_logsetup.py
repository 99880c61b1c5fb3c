"""Logs: secrets never written, repeated warnings rate-limited, JSON lines parse."""

from __future__ import annotations

import json
import logging

import pytest

from pack_agent.runtime import logsetup
from pack_agent.runtime.logsetup import RateLimitFilter, RedactFilter, setup_logging


class Captured:
    def __init__(self, capsys):
        self._capsys = capsys

    def getvalue(self) -> str:
        return self._capsys.readouterr().err


@pytest.fixture
def captured(capsys):
    old = logging.getLogger().handlers[:], logging.getLogger().level
    yield Captured(capsys)
    logging.getLogger().handlers[:], _ = old
    logging.getLogger().setLevel(old[1])
    logsetup._redactor.set_secrets([])


def test_secret_never_reaches_the_log(captured):
    setup_logging("debug", "text", secrets=["s3cr3t-pass"])
    log = logging.getLogger("pack_agent.test")
    log.info("connecting with password %s", "s3cr3t-pass")
    log.warning("url mqtt://car:s3cr3t-pass@host")
    try:
        raise ValueError("auth failed for s3cr3t-pass")
    except ValueError:
        log.exception("boom")
    text = captured.getvalue()
    assert "s3cr3t-pass" not in text
    assert text.count("***") == 4  # message, message, exception message, traceback line


def test_secret_redacted_in_json_lines_too(captured):
    setup_logging("info", "json", secrets=["hunter2hunter2"])
    log = logging.getLogger("pack_agent.test")
    try:
        raise RuntimeError("hunter2hunter2")
    except RuntimeError:
        log.exception("failed with %s", "hunter2hunter2")
    lines = [json.loads(x) for x in captured.getvalue().splitlines()]
    assert lines[0]["message"] == "failed with ***"
    assert "hunter2hunter2" not in lines[0]["exception"]
    assert lines[0]["level"] == "error" and lines[0]["logger"] == "pack_agent.test"


def test_short_strings_are_not_treated_as_secrets():
    assert RedactFilter(["abc", ""]).secrets == []


def test_rate_limit_lets_a_burst_through_then_counts():
    clock = [0.0]
    f = RateLimitFilter(window_s=60, burst=3, clock=lambda: clock[0])
    rec = lambda: logging.LogRecord("x", logging.WARNING, "", 0, "frame %s bad", ("0x3A1",), None)  # noqa: E731
    passed = [f.filter(rec()) for _ in range(100)]  # 100 Hz for a second
    assert passed.count(True) == 3 and f.suppressed_total == 97
    clock[0] = 61.0
    r = rec()
    assert f.filter(r)
    assert r.getMessage() == "frame 0x3A1 bad (97 similar messages suppressed)"
    info = logging.LogRecord("x", logging.INFO, "", 0, "fine", None, None)
    assert all(f.filter(info) for _ in range(10))  # below WARNING: untouched


def test_a_flood_of_warnings_stays_small(captured):
    setup_logging("info", "text")
    log = logging.getLogger("pack_agent.test")
    for i in range(10_000):
        log.warning("frame 0x%X on powertrain not handled", 0x3A1 + i % 3)
    assert len(captured.getvalue().splitlines()) == 3
