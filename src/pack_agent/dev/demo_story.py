"""What `pack-agent demo` records and prints: the story of a pack, one line per happening.

Owns the telling, none of the running: :class:`DemoResult` (what the run saw and
what its story lacks), :class:`StoryPrinter` (thread-safe lines in simulated time,
a progress line on a terminal), each received event in words
(:func:`describe`), the closing summary (:func:`summary`), the SOH trend shown
beside the story (:func:`soh_rate_per_year`) and the SVG chart (:func:`write_chart`).
The run itself (broker, virtual vehicle, daemon, backend) is :mod:`pack_agent.dev.demo`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pack_agent.config import AgentConfig
from pack_agent.core.events import parse_time as parse_event_time
from pack_agent.core.events import utc_from_timestamp
from pack_agent.dev.sim.story import Showing, delivery_problems, story_problems

__all__ = [
    "EXPECTED",
    "FAULTS",
    "YEAR",
    "DemoResult",
    "StoryPrinter",
    "bar",
    "describe",
    "parse_time",
    "soh_rate_per_year",
    "summary",
    "write_chart",
]

EXPECTED = (
    "pack.identified",
    "scrap.condition_met",
    "owner.notified",
    "owner.acknowledged",
    "pack.replaced",
)


@dataclass
class DemoResult:
    """What a demo run saw (events received, notices shown, the SOH history), kept to
    tell the story and to judge it (:meth:`problems`)."""

    received: list[dict[str, Any]] = field(default_factory=list)
    emitted: int = 0
    notices_shown: int = 0
    seconds: float = 0.0
    expected: tuple[str, ...] = EXPECTED
    history: list[tuple[float, float]] = field(default_factory=list)  # (time, SOH) broadcast
    packs: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # per pack code
    chart: Path | None = None
    scenario: Any = None  # the Scenario played, whose story is checked
    config: AgentConfig | None = None
    shown: list[Showing] = field(default_factory=list)  # what the head unit showed
    ignition_ons: list[float] = field(default_factory=list)  # the VCU's Off->On times

    def types(self) -> set[str]:
        return {e["type"] for e in self.received}

    def problems(self) -> list[str]:
        """What the story lacks: undelivered events, a missing event type, and what the
        scenario's story needs besides (``sim.story``)."""
        out = delivery_problems(self.received, self.emitted)
        if self.scenario is None or self.config is None:
            return out + [f"no {t} event" for t in self.expected if t not in self.types()]
        return out + story_problems(
            self.scenario, self.config, self.received, self.shown, self.ignition_ons
        )

    @property
    def ok(self) -> bool:
        return not self.problems()


WHEN = "%Y-%m-%d %H:%M"  # the timeline's dates: simulated time, UTC
WHEN_BLANK = "2026-04-01 08:00"


class StoryPrinter:
    """Thread-safe printing of one line per happening, dated in simulated time."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._progress = False
        self._tty = out.isatty()

    def line(self, t: float | None, who: str, text: str) -> None:
        day = utc_from_timestamp(t).strftime(WHEN) if t else " " * len(WHEN_BLANK)
        with self._lock:
            if self._progress:
                self._out.write("\r\033[K" if self._tty else "")
                self._progress = False
            first, *more = text.split("\n")
            self._out.write(f"{day}  {who:<7} {first}\n")
            for extra in more:
                self._out.write(f"{'':<{len(WHEN_BLANK) + 10}}{extra}\n")
            self._out.flush()

    def progress(self, t: float, text: str) -> None:
        if not self._tty:
            return
        with self._lock:
            day = utc_from_timestamp(t).strftime(WHEN)
            self._out.write(f"\r\033[K{day}  {'sim':<7} {text}")
            self._out.flush()
            self._progress = True


FAULTS = {
    "thermal": "THERMAL EVENT alarm (level 4), over-temperature",
    "insulation": "INSULATION failure alarm (level 3), 20 kOhm to chassis",
}
YEAR = 365.25 * 86400.0


def soh_rate_per_year(history: list[tuple[float, float]], window_s: float = YEAR) -> float | None:
    """SOH change per year over the last ``window_s`` (least squares), for the display;
    None until there are 60 days of history. The agent's own trend, where it publishes
    one, is in its ``pack.health`` events."""
    if len(history) < 60:
        return None
    end = history[-1][0]
    pts = [(t, v) for t, v in history if t >= end - window_s]
    n = len(pts)
    mt = sum(t for t, _ in pts) / n
    mv = sum(v for _, v in pts) / n
    var = sum((t - mt) ** 2 for t, _ in pts)
    if var == 0:
        return None
    return sum((t - mt) * (v - mv) for t, v in pts) / var * YEAR


def bar(day: int, days: int, width: int = 20) -> str:
    done = int(width * (day + 1) / max(days, 1))
    return "[" + "#" * done + "." * (width - done) + "]"


def write_chart(path: Path, scenario: Any, cfg: AgentConfig, r: DemoResult) -> Path:
    """The SOH history as an SVG, with the rule's threshold and the decision marked."""
    from pack_agent.dev.chart import Marker, SohChart

    unique = list({e["event_id"]: e for e in r.received}.values())
    samples = [
        (parse_time(e["time"]), e["data"]["metrics"]["soh"])
        for e in unique
        if e["type"] == "pack.health" and "soh" in e["data"].get("metrics", {})
    ]
    markers = []
    for e in sorted(unique, key=lambda e: e["seq"]):
        t = parse_time(e["time"])
        if e["type"] == "scrap.condition_met":
            markers.append(Marker(t, f"decision: {e['data'].get('rule_id')} ({e['time'][:10]})"))
        elif e["type"] == "owner.acknowledged":
            markers.append(Marker(t, f"owner answered ({e['time'][:10]})", "#8e44ad"))
        elif e["type"] == "pack.replaced":
            markers.append(Marker(t, f"pack replaced ({e['time'][:10]})", "#16a085"))
        elif e["type"] == "pack.code_invalid":
            markers.append(Marker(t, f"invalid pack code ({e['time'][:10]})", "#7f8c8d"))
    # the SOH line: a capacity rule's threshold (or a first-form rule's "below")
    rule = next(
        (x for x in cfg.rules if getattr(x, "metric", None) == "soh" and x.kind != "safety"),
        None,
    )
    line = getattr(rule, "threshold", None) or getattr(rule, "below", None)
    chart = SohChart(
        title=f"pack-agent demo: {scenario.name} — state of health of the traction pack",
        subtitle=scenario.description,
        series=r.history,
        threshold=line,
        threshold_label=f"rule {rule.id}: {rule.description_en}" if rule else "",
        samples=samples,
        markers=markers,
        breaks=[hist[0][0] for hist in list(r.packs.values())[1:]],  # one line per pack
    )
    path.write_text(chart.svg(), encoding="utf-8")
    return path


def _rule_lines(rules: dict[str, Any] | None, rule_id: Any) -> list[str]:
    """The rule's own words under a decision, in both languages."""
    rule = (rules or {}).get(rule_id)
    if rule is None:
        return []
    return [f"   rule:     {rule.description_en} / {rule.description_zh}"]


def parse_time(text: str) -> float:
    return parse_event_time(text).timestamp()


def _clock(t: float) -> str:
    return utc_from_timestamp(t).strftime("%H:%M:%S.%f")[:10]


def describe(event: dict[str, Any], rules: dict[str, Any] | None = None) -> str:
    d = event.get("data", {})
    kind = event["type"]
    head = f"<- {kind:<20} seq={event['seq']:<3}"
    if kind == "pack.identified":
        return f"{head} pack {d.get('pack_code')}"
    if kind == "pack.replaced":
        return f"{head} {d.get('previous_code')} -> {d.get('pack_code')}"
    if kind == "pack.health" and not isinstance(d.get("trend"), dict):
        m = d.get("metrics", {})
        return (
            f"{head} SOH {m.get('soh', float('nan')):.1f} %, SOC {m.get('soc', float('nan')):.0f} %"
        )
    if kind == "pack.health" and isinstance(d.get("trend"), dict):
        m = d.get("metrics", {})
        t = d["trend"]
        slope = t.get("slope_per_year", t.get("soh_per_year"))
        slope_text = f", trend {slope:+.1f} %/yr" if isinstance(slope, (int, float)) else ""
        return f"{head} SOH {m.get('soh', float('nan')):.1f} %{slope_text}"
    if kind == "scrap.condition_met" and "confirm_s" in d:  # a confirmed run of readings
        first, last = (
            parse_time(str(d.get(k, ""))) for k in ("first_reading_time", "last_reading_time")
        )
        span = last - first
        lines = [
            f"{head} DECISION rule {d.get('rule_id')} ({d.get('severity', '')}): "
            f"{d.get('metric')} {d.get('comparison', '').replace('_', ' ')} "
            f"{d.get('threshold')} in {d.get('sample_count')} readings in a row over "
            f"{span:.1f} s ({_clock(first)} .. {_clock(last)}; rule: {d.get('confirm_s')} s)",
        ]
        lines += _rule_lines(rules, d.get("rule_id"))
        return "\n".join(lines)
    if kind == "scrap.condition_met":
        st = d.get("statistic", {})
        median = st.get("median")
        median_text = f"{median:.1f}" if isinstance(median, (int, float)) else "?"
        lines = [
            f"{head} DECISION rule {d.get('rule_id')} ({d.get('severity', '')}): "
            f"{d.get('metric')} median {median_text} < {d.get('threshold')} over "
            f"{d.get('sample_count')} samples "
            f"({str(d.get('first_reading_time', ''))[:10]} .. "
            f"{str(d.get('last_reading_time', ''))[:10]})",
        ]
        lines += _rule_lines(rules, d.get("rule_id"))
        values = [s.get("value") for s in d.get("samples", []) if isinstance(s, dict)]
        if values:
            lines.append(f"   samples:  {', '.join(f'{v:.1f}' for v in values)}")
        return "\n".join(lines)
    if kind == "pack.code_invalid":
        return f"{head} code {d.get('raw')!r} rejected: {'; '.join(d.get('errors', [])[:2])}"
    if kind in ("bms.silent", "bms.recovered"):
        return f"{head} pack {d.get('pack_code')}"
    if kind == "owner.notified":
        nid = d.get("notice_id", 0)
        return (
            f"{head} attempt {d.get('attempt')} on {d.get('channel')}, notice 0x{nid:04X} "
            f"({d.get('severity')})"
        )
    if kind == "owner.acknowledged":
        return (
            f"{head} owner answered '{d.get('response')}' after {d.get('attempt')} attempt(s), "
            f"then {d.get('follow_up')}"
        )
    if kind == "owner.notice":
        title = d.get("texts", {}).get("zh", {}).get("title", "")
        return f"{head} for the maker's app: {d.get('name')} attempt {d.get('attempt')} {title}"
    if kind == "owner.notice_failed":
        return f"{head} notice {d.get('seq')} on {d.get('channel')}: {d.get('reason')}"
    return head


def summary(tl: StoryPrinter, r: DemoResult) -> None:
    unique = {e["event_id"]: e for e in r.received}
    counts: dict[str, int] = {}
    for e in unique.values():
        counts[e["type"]] = counts.get(e["type"], 0) + 1
    tl.line(
        None,
        "summary",
        f"{len(unique)} of {r.emitted} stored events delivered to the backend "
        f"(QoS 1, {len(r.received) - len(unique)} duplicate(s)), seq 1..{len(unique)}",
    )
    tl.line(None, "", ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())))
    for e in sorted(unique.values(), key=lambda e: e["seq"]):
        if e["type"] in (
            "scrap.condition_met",
            "owner.acknowledged",
            "pack.replaced",
            "pack.code_invalid",
        ):
            tl.line(parse_time(e["time"]), "", f"{e['type']} (seq {e['seq']})")
    attempts: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for e in sorted(unique.values(), key=lambda e: e["seq"]):
        if e["type"] == "owner.notified" and e["data"].get("channel") == "can":
            attempts.setdefault((e["data"]["seq"], e["data"]["notice_id"]), []).append(e)
    for (_, nid), shown in attempts.items():
        times = ", ".join(e["time"][5:16].replace("T", " ") for e in shown)
        tl.line(
            parse_time(shown[0]["time"]),
            "",
            f"notice 0x{nid:04X} ({shown[0]['data']['severity']}, rule "
            f"{shown[0]['data']['rule_id']}) on the head unit at {times}",
        )
    for code, hist in r.packs.items():
        trend = soh_rate_per_year(hist)
        trend_text = f", last year's trend {trend:+.1f} %/yr" if trend is not None else ""
        years = (hist[-1][0] - hist[0][0]) / YEAR
        tl.line(
            None,
            "",
            f"pack {code}: SOH {hist[0][1]:.1f} % -> {hist[-1][1]:.1f} % "
            f"in {years:.1f} years{trend_text}",
        )
    if r.chart is not None:
        tl.line(None, "", f"chart: {r.chart}")
    problems = r.problems()
    tl.line(
        None,
        "",
        f"notices shown on the head unit: {r.notices_shown}; took {r.seconds:.1f} s; "
        + ("OK" if not problems else f"INCOMPLETE: {'; '.join(problems)}"),
    )
