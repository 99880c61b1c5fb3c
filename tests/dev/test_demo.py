"""The demo tells the whole story, exits OK only when it completes, and draws the chart."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from itertools import pairwise

import pytest

from pack_agent.core.events import parse_time
from pack_agent.dev.demo import run_demo, soh_rate_per_year
from pack_agent.dev.sim import SCENARIOS
from pack_agent.dev.sim.scenario import DAY, FORGED_CODE


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
    # the trips: an unanswered notice came back at the next ignition-on, the same day
    notified = [
        e for e in r.received if e["type"] == "owner.notified" and e["data"]["channel"] == "can"
    ]
    times = {(e["data"]["seq"], e["data"]["attempt"]): e["time"] for e in notified}
    assert times[(1, 2)][:10] == times[(1, 1)][:10]
    assert times[(1, 2)][11:16] == "17:30"  # the evening trip's ignition On
    root = ET.parse(chart).getroot()
    labels = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert any(x.startswith("decision: capacity-80") for x in labels)
    assert any(x.startswith("pack replaced") for x in labels)
    assert any("below 80 %" in x for x in labels)


@pytest.mark.parametrize(
    ("scenario", "rule_id", "notice_id", "title"),
    [
        ("safety-fault", "thermal-event", 0x0202, "动力电池热事件警告：请立即停车离开车辆"),
        ("insulation-fault", "insulation-fault", 0x0203, "高压系统绝缘故障：请安全停车"),
    ],
    ids=["thermal", "insulation"],
)
def test_safety_fault_story_end_to_end(mosquitto_binary, scenario, rule_id, notice_id, title):
    """Alarm frames, a confirmed critical decision (not the stray frame 30 days before), the
    rule's own critical notice with its catalogue text, hourly repeats until the answer."""
    out = io.StringIO()
    r = run_demo(scenario, pace_s=0.001, out=out)
    text = out.getvalue()
    assert r.ok, text
    sc = SCENARIOS[scenario]
    fault_at = sc.start + sc.fault_day * DAY + sc.fault_at_s
    events = sorted({e["event_id"]: e for e in r.received}.values(), key=lambda e: e["seq"])
    (decision,) = [e for e in events if e["type"] == "scrap.condition_met"]
    d = decision["data"]
    assert (d["rule_id"], d["severity"]) == (rule_id, "critical")
    rule = next(x for x in r.config.rules if x.id == rule_id)
    first, last = (
        parse_time(d[k]).timestamp() for k in ("first_reading_time", "last_reading_time")
    )
    assert first == fault_at  # the stray frame on day 60 decided nothing
    assert d["sample_count"] == rule.confirm_readings and last - first >= rule.confirm_s
    assert _t(decision) - fault_at < rule.confirm_s + 1  # decided in seconds, not days
    can = [e for e in events if e["type"] == "owner.notified" and e["data"]["channel"] == "can"]
    assert {e["data"]["notice_id"] for e in can} == {notice_id}
    gaps = [_t(b) - _t(a) for a, b in pairwise(can)]
    assert len(gaps) == 2 and all(3600 <= g <= 3600 + 600 for g in gaps), gaps
    answers = [e["data"]["response"] for e in events if e["type"] == "owner.acknowledged"]
    assert answers == ["seen", "service_booked"]
    assert [s.notice_id for s in r.shown] == [notice_id] * 3 and all(s.has_text for s in r.shown)
    for needle in (
        "one stray BMS_Alarms frame",
        f"DECISION rule {rule_id} (critical)",
        f"notice #1 (id 0x{notice_id:04X})",
        title,
        "owner answered 'service_booked'",
        "OK",
    ):
        assert needle in text, needle


def _t(event: dict) -> float:
    return parse_time(event["time"]).timestamp()


def test_forged_code_story(mosquitto_binary):
    out = io.StringIO()
    r = run_demo("forged-code", pace_s=0.001, out=out)
    assert r.ok, out.getvalue()
    assert "pack.code_invalid" in r.types()
    assert f"broadcasts pack code {FORGED_CODE} (NOT a valid GB/T 34014 code" in out.getvalue()
    # issue 16: the invalid code that lasts is a replacement, with its errors; nothing of
    # the forged pack's is reported under the old code
    events = {e["event_id"]: e for e in r.received}.values()
    (replaced,) = [e["data"] for e in events if e["type"] == "pack.replaced"]
    assert replaced["pack_code"] == FORGED_CODE and replaced["valid"] is False
    assert replaced["errors"] and replaced["fields"] is None
    swapped_at = min(_t(e) for e in events if e["type"] == "pack.code_invalid")
    old_pack = {soh for t, soh in r.history if t < swapped_at - 3600}  # broadcast before
    for e in events:
        if e["type"] == "pack.health" and e["data"]["pack_code"] == r.scenario.code:
            assert e["data"]["metrics"].get("soh", 0.0) in old_pack | {0.0}, e


def test_trend_is_per_year():
    day = 86400.0
    hist = [(i * day, 95 - 5 * i / 365.25) for i in range(400)]
    assert abs(soh_rate_per_year(hist) + 5.0) < 1e-6
    assert soh_rate_per_year(hist[:10]) is None
