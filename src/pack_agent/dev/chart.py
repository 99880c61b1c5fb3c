"""An SOH history as a self-contained SVG: the line, the threshold, the decision, the swap.

Written by hand (no plotting library): the demo uses it; the daemon never imports
it (tests/dev/test_chart.py checks), so a gateway carries no plotting code at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 900, 420
LEFT, RIGHT, TOP, BOTTOM = 64, 24, 56, 52


@dataclass
class Marker:
    """A vertical line at ``time`` with a label (a decision, a pack swap...)."""

    time: float
    label: str
    color: str = "#c0392b"


@dataclass
class SohChart:
    title: str
    series: list[tuple[float, float]]  # (unix time, SOH %) as the BMS broadcast it
    threshold: float | None = None
    threshold_label: str = ""
    samples: list[tuple[float, float]] = field(default_factory=list)  # published pack.health
    markers: list[Marker] = field(default_factory=list)
    subtitle: str = ""
    breaks: list[float] = field(default_factory=list)  # the line is not drawn across these

    def svg(self) -> str:
        if not self.series:
            raise ValueError("an SOH chart needs at least one point")
        times = [t for t, _ in self.series] + [m.time for m in self.markers]
        t0, t1 = min(times), max(times)
        t1 = t1 if t1 > t0 else t0 + 1
        values = [v for _, v in self.series] + [v for _, v in self.samples]
        if self.threshold is not None:
            values.append(self.threshold)
        lo = max(0.0, (min(values) // 5) * 5 - 5)
        hi = min(100.0, (max(values) // 5) * 5 + 5)
        hi = hi if hi > lo else lo + 5
        pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

        def x(t: float) -> float:
            return LEFT + (t - t0) / (t1 - t0) * pw

        def y(v: float) -> float:
            return TOP + (hi - v) / (hi - lo) * ph

        out = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="DejaVu Sans, Arial, sans-serif" '
            'font-size="12">',
            f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
            f'<text x="{LEFT}" y="24" font-size="16" font-weight="bold">'
            f"{escape(self.title)}</text>",
        ]
        if self.subtitle:
            out.append(f'<text x="{LEFT}" y="42" fill="#555">{escape(self.subtitle)}</text>')
        # grid and axes
        step = 5 if hi - lo <= 40 else 10
        v = lo
        while v <= hi + 1e-9:
            out.append(
                f'<line x1="{LEFT}" y1="{y(v):.1f}" x2="{LEFT + pw}" y2="{y(v):.1f}" '
                'stroke="#e5e5e5"/>'
            )
            out.append(f'<text x="{LEFT - 8}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g} %</text>')
            v += step
        for year in range(_year(t0), _year(t1) + 2):
            ty = datetime(year, 1, 1, tzinfo=timezone.utc).timestamp()
            if t0 <= ty <= t1:
                out.append(
                    f'<line x1="{x(ty):.1f}" y1="{TOP}" x2="{x(ty):.1f}" y2="{TOP + ph}" '
                    'stroke="#e5e5e5"/>'
                )
                out.append(
                    f'<text x="{x(ty):.1f}" y="{TOP + ph + 18}" text-anchor="middle">{year}</text>'
                )
        out.append(
            f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>'
        )
        out.append(
            f'<text x="16" y="{TOP + ph / 2:.1f}" transform="rotate(-90 16 {TOP + ph / 2:.1f})" '
            'text-anchor="middle">state of health</text>'
        )
        if self.threshold is not None:
            ty = y(self.threshold)
            out.append(
                f'<line x1="{LEFT}" y1="{ty:.1f}" x2="{LEFT + pw}" y2="{ty:.1f}" '
                'stroke="#e67e22" stroke-width="1.5" stroke-dasharray="6 4"/>'
            )
            label = self.threshold_label or f"threshold {self.threshold:g} %"
            out.append(
                f'<text x="{LEFT + 8}" y="{ty + 16:.1f}" fill="#e67e22">{escape(label)}</text>'
            )
        for segment in self._segments():
            points = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in segment)
            out.append(
                f'<polyline class="soh" points="{points}" fill="none" stroke="#2471a3" '
                'stroke-width="1.2"/>'
            )
        for t, v in self.samples:
            out.append(
                f'<circle class="sample" cx="{x(t):.1f}" cy="{y(v):.1f}" r="3.5" fill="#1e8449"/>'
            )
        for i, m in enumerate(self.markers):
            mx = x(m.time)
            out.append(
                f'<line class="marker" x1="{mx:.1f}" y1="{TOP}" x2="{mx:.1f}" y2="{TOP + ph}" '
                f'stroke="{m.color}" stroke-width="1.5"/>'
            )
            anchor = "end" if mx > LEFT + pw * 0.6 else "start"
            dx = -5 if anchor == "end" else 5
            out.append(
                f'<text x="{mx + dx:.1f}" y="{TOP + 16 + 16 * i}" text-anchor="{anchor}" '
                f'fill="{m.color}">{escape(m.label)}</text>'
            )
        # legend
        ly = HEIGHT - 14
        out.append(
            f'<line x1="{LEFT}" y1="{ly - 4}" x2="{LEFT + 24}" y2="{ly - 4}" stroke="#2471a3" '
            'stroke-width="2"/>'
        )
        out.append(f'<text x="{LEFT + 30}" y="{ly}">SOH broadcast by the BMS (daily)</text>')
        if self.samples:
            lx = LEFT + 260
            out.append(f'<circle cx="{lx + 10}" cy="{ly - 4}" r="3.5" fill="#1e8449"/>')
            out.append(
                f'<text x="{lx + 20}" y="{ly}">pack.health events received by the backend</text>'
            )
        out.append("</svg>")
        return "\n".join(out) + "\n"

    def _segments(self) -> list[list[tuple[float, float]]]:
        out: list[list[tuple[float, float]]] = [[]]
        cuts = sorted(self.breaks)
        for t, v in sorted(self.series):
            while cuts and t >= cuts[0]:
                cuts.pop(0)
                if out[-1]:
                    out.append([])
            out[-1].append((t, v))
        return [seg for seg in out if seg]


def _year(t: float) -> int:
    return datetime.fromtimestamp(t, tz=timezone.utc).year
