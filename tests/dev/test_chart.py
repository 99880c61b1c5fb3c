"""The SOH chart: valid SVG with the threshold and markers; never imported by the daemon."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pack_agent.dev.chart import Marker, SohChart

SVG = "{http://www.w3.org/2000/svg}"
SRC = Path(__file__).resolve().parents[2] / "src"
DAY = 86400.0


def test_chart_has_line_threshold_samples_and_markers():
    t0 = 1_775_000_000.0
    series = [(t0 + i * DAY, 96 - i * 0.02) for i in range(800)]
    chart = SohChart(
        title="pack <A> & co",
        series=series,
        threshold=80.0,
        samples=[(t0 + 60 * DAY, 94.8), (t0 + 120 * DAY, 93.6)],
        markers=[Marker(t0 + 700 * DAY, "decision"), Marker(t0 + 760 * DAY, "swap")],
        breaks=[t0 + 400 * DAY],
    )
    root = ET.fromstring(chart.svg())  # well-formed, the title escaped
    lines = root.findall(f"{SVG}polyline")
    assert [len(p.get("points").split()) for p in lines] == [400, 400]  # broken at the swap
    assert len(root.findall(f"{SVG}circle[@class='sample']")) == 2
    assert len(root.findall(f"{SVG}line[@class='marker']")) == 2
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "pack <A> & co" in texts and "threshold 80 %" in texts
    # the threshold line sits at 80 % on the value axis: between the 75 % and 85 % labels
    ys = {t.text: float(t.get("y")) for t in root.iter(f"{SVG}text") if t.text}
    dashed = next(x for x in root.iter(f"{SVG}line") if x.get("stroke-dasharray"))
    assert ys["85 %"] < float(dashed.get("y1")) + 4 < ys["75 %"]


def test_an_empty_history_is_an_error():
    with pytest.raises(ValueError):
        SohChart(title="x", series=[]).svg()


def test_the_daemon_never_imports_plotting_or_the_demo():
    code = (
        "import sys, pack_agent.runtime.daemon, pack_agent.cli.run, pack_agent.cli.status;"
        "import pack_agent.runtime.statusview;"
        "bad = [m for m in sys.modules if m in ('pack_agent.dev.chart', 'pack_agent.dev.demo',"
        " 'pack_agent.dev.demo_story', 'matplotlib', 'pack_agent.dev.broker')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stdout + out.stderr
