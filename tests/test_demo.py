"""The demo tells the whole story, exits OK only when it completes, and draws the chart."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

from pack_agent.demo import run_demo, soh_trend
from pack_agent.sim.scenario import FORGED_CODE


def test_ageing_story_end_to_end(mosquitto_binary, tmp_path):
    out = io.StringIO()
    chart = tmp_path / "soh.svg"
    r = run_demo("ageing", pace_s=0.001, out=out, chart_path=chart)
    text = out.getvalue()
    assert r.ok, text
    for needle in (
        "pack.identified",
        "DECISION rule capacity-80",
        "动力电池已达到推荐报废条件",  # the notice as the owner reads it
        "Traction battery: recommended scrapping conditions reached",
        "owner answered 'service_booked'",
        "pack.replaced",
        "year 2 in service",
        "OK",
    ):
        assert needle in text, needle
    root = ET.parse(chart).getroot()
    labels = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert any(x.startswith("decision: capacity-80") for x in labels)
    assert any(x.startswith("pack replaced") for x in labels)
    assert any("below 80 %" in x for x in labels)


def test_forged_code_story(mosquitto_binary):
    out = io.StringIO()
    r = run_demo("forged-code", pace_s=0.001, out=out)
    assert r.ok, out.getvalue()
    assert "pack.code_invalid" in r.types()
    assert f"broadcasts pack code {FORGED_CODE} (NOT a valid GB/T 34014 code" in out.getvalue()


def test_trend_is_per_year():
    day = 86400.0
    hist = [(i * day, 95 - 5 * i / 365.25) for i in range(400)]
    assert abs(soh_trend(hist) + 5.0) < 1e-6
    assert soh_trend(hist[:10]) is None
