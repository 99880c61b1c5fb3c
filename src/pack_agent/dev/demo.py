"""`pack-agent demo`: the whole story of a pack in under a minute, on real parts.

A private mosquitto on a free loopback port, the virtual vehicle on a python-can
``virtual`` bus, the real daemon (store, decoder, policy, owner channel, MQTT
uplink) in simulated time, and a backend subscriber whose view is the timeline.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pack_agent.config import AgentConfig, load_config, reference_config_path
from pack_agent.core.events import parse_time, utc_from_timestamp
from pack_agent.dev.sim.story import Showing, delivery_problems, story_problems

EXPECTED = (
    "pack.identified",
    "scrap.condition_met",
    "owner.notified",
    "owner.acknowledged",
    "pack.replaced",
)


@dataclass
class DemoResult:
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


def _bar(day: int, days: int, width: int = 20) -> str:
    done = int(width * (day + 1) / max(days, 1))
    return "[" + "#" * done + "." * (width - done) + "]"


def write_chart(path: Path, scenario: Any, cfg: AgentConfig, r: DemoResult) -> Path:
    """The SOH history as an SVG, with the rule's threshold and the decision marked."""
    from pack_agent.dev.chart import Marker, SohChart

    unique = list({e["event_id"]: e for e in r.received}.values())
    samples = [
        (_parse_time(e["time"]), e["data"]["metrics"]["soh"])
        for e in unique
        if e["type"] == "pack.health" and "soh" in e["data"].get("metrics", {})
    ]
    markers = []
    for e in sorted(unique, key=lambda e: e["seq"]):
        t = _parse_time(e["time"])
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


def demo_config(base: AgentConfig, channel: str, broker_port: int, state_dir: Path) -> AgentConfig:
    """The reference configuration on a virtual bus, a private broker and a temporary store;
    a health sample every 60 simulated days, and the BMS silent only after 3 days."""
    from pack_agent.dev.sim.rig import rig_config

    return rig_config(
        base,
        {"interface": "virtual", "channel": channel},
        broker_port,
        state_dir,
        health={"publish_interval_s": 60 * 86400.0, "bms_timeout_s": 3 * 86400.0},
    )


def run_demo(
    scenario_name: str = "ageing",
    pace_s: float = 0.012,
    out: TextIO = sys.stdout,
    config_path: Path | None = None,
    on_result: Callable[[DemoResult], None] | None = None,
    chart_path: Path | None = None,
) -> DemoResult:
    import can
    import paho.mqtt.client as mqtt

    from pack_agent.canbus.dbc import load_and_check
    from pack_agent.core.codes import check_code
    from pack_agent.dev.broker import LocalBroker
    from pack_agent.dev.sim import SCENARIOS, VirtualHeadUnit, VirtualVehicle
    from pack_agent.runtime.daemon import Daemon

    started = time.monotonic()
    scenario = SCENARIOS[scenario_name]
    tl = StoryPrinter(out)
    result = DemoResult(expected=scenario.expect, scenario=scenario)
    lock = threading.Lock()
    base = load_config(config_path or reference_config_path())

    with tempfile.TemporaryDirectory(prefix="pack-agent-demo-") as tmp, LocalBroker() as broker:
        channel = f"pack-agent-demo-{uuid.uuid4().hex[:8]}"
        cfg = demo_config(base, channel, broker.port, Path(tmp))
        result.config = cfg
        db = load_and_check(cfg)
        prefix = cfg.mqtt.topic_prefix
        rules = {r.id: r for r in cfg.rules}
        tl.line(None, "demo", f"scenario '{scenario.name}': {scenario.description}")
        tl.line(None, "demo", f"mosquitto on 127.0.0.1:{broker.port}, virtual CAN bus '{channel}'")

        # the backend: a plain MQTT subscriber
        received = threading.Event()
        backend = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="demo-backend")

        def on_message(_c: Any, _u: Any, msg: Any) -> None:
            if "/events/" not in msg.topic:
                return
            event = json.loads(msg.payload)
            with lock:
                result.received.append(event)
            received.set()
            tl.line(_parse_time(event["time"]), "backend", _describe(event, rules))

        backend.on_message = on_message
        backend.connect("127.0.0.1", broker.port)
        backend.subscribe(f"{prefix}/+/events/#", qos=1)
        backend.loop_start()

        def on_event(_event: Any) -> None:
            with lock:
                result.emitted += 1

        # the store belongs to the thread that opens it: build the daemon in the agent's thread
        holder: list[Daemon] = []
        failed: list[BaseException] = []
        ready = threading.Event()

        def agent_main() -> None:
            try:
                holder.append(Daemon(cfg, clock=None, on_event=on_event))
            except BaseException as exc:
                failed.append(exc)
                return
            finally:
                ready.set()
            holder[0].run()

        agent_thread = threading.Thread(target=agent_main, name="agent", daemon=True)
        agent_thread.start()
        ready.wait(30)
        if failed:
            raise failed[0]

        def on_show(shown: Any) -> None:
            result.notices_shown += 1
            text = shown.text
            result.shown.append(Showing(shown.time, shown.notice_id, text is not None))
            tl.line(shown.time, "head-u", f"notice #{shown.attempt} (id 0x{shown.notice_id:04X}):")
            if text is not None:
                tl.line(None, "", f"  {text.title_zh}")
                tl.line(None, "", f"  {text.title_en}")
                if shown.attempt == 1:
                    for para in (text.body_zh, text.body_en):
                        tl.line(None, "", f"  {para}")
                    if shown.outlet:
                        outlet = shown.outlet.replace("\n", " | ")
                        tl.line(None, "", f"  (outlet received over CAN: {outlet})")

        head_unit = VirtualHeadUnit(
            db,
            response=list(scenario.answers),  # e.g. not now; seen; booked at the reminder
            delay_s=scenario.answer_delay_s,
            on_show=on_show,
        )
        last_code: list[str] = []
        last_fault: list[str | None] = [None]

        def on_day(state: Any) -> None:
            result.ignition_ons.extend(on for on, _ in state.trips)
            result.history.append((state.time, state.soh))
            result.packs.setdefault(state.code, []).append((state.time, state.soh))
            if not last_code or last_code[-1] != state.code:
                report = check_code(state.code)
                f = report.fields
                what = (
                    f"{f.product_type.name.lower()}, made {f.production_date}"
                    if f and report.valid
                    else "NOT a valid GB/T 34014 code: " + "; ".join(report.errors[:2])
                )
                tl.line(state.time, "bms", f"broadcasts pack code {state.code} ({what})")
                last_code.append(state.code)
            if state.glitch is not None:
                at, kind = state.glitch
                tl.line(
                    at,
                    "bms",
                    f"one stray BMS_Alarms frame: {FAULTS.get(kind, kind)}; clean 0.5 s later "
                    "(a single reading: no decision)",
                )
            if state.fault != last_fault[0]:
                last_fault[0] = state.fault
                if state.fault:
                    tl.line(
                        state.fault_from or state.time,
                        "bms",
                        f"BMS_Alarms: {FAULTS.get(state.fault, state.fault)}, every 500 ms",
                    )
                if state.fault_from is not None and state.trips:
                    off = utc_from_timestamp(state.trips[-1][1]).strftime("%H:%M")
                    tl.line(
                        None,
                        "vcu",
                        f"the driver stops {state.stop_after_fault_s:.0f} s later (ignition "
                        f"Acc); the alarm stays on; ignition Off at {off}: the car is towed",
                    )
            trend = soh_rate_per_year(result.packs[state.code])
            trend_text = f"  trend {trend:+5.1f} %/yr" if trend is not None else ""
            if state.day and state.day % 365 == 0:
                tl.line(
                    state.time,
                    "sim",
                    f"year {state.day // 365} in service: SOH {state.soh:.1f} %{trend_text}, "
                    f"{state.odometer_km:,.0f} km",
                )
            tl.progress(
                state.time,
                f"{_bar(state.day, scenario.days)} day {state.day:4d}  "
                f"SOH {state.soh:5.1f} %{trend_text}  {state.odometer_km:9,.0f} km",
            )

        def agent_read(t: float) -> None:
            """Waits (briefly) until the agent has read the frames up to ``t``, so the head
            unit shows each notice at the simulated time it was sent."""
            give_up = time.monotonic() + 2.0
            while holder[0].agent.latest_time < t and time.monotonic() < give_up:
                time.sleep(0.0002)

        bus = can.Bus(interface="virtual", channel=channel, preserve_timestamps=True)
        try:
            vehicle = VirtualVehicle(
                bus, db, scenario, head_unit, pace_s=pace_s, on_day=on_day, sync=agent_read
            )
            vehicle.run()
            # let the agent and the uplink finish: every stored event reaches the backend
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                vehicle.serve_head_unit(scenario.start + scenario.days * 86400.0)
                # the agent has read the last simulated day, and the backend has every event
                last_day = vehicle.day.time if vehicle.day is not None else 0.0
                if vehicle.day is not None and vehicle.day.trips:
                    last_day = vehicle.day.trips[-1][1]  # the last ignition Off
                caught_up = bool(holder) and holder[0].agent.latest_time >= last_day
                with lock:
                    done = (
                        caught_up
                        and result.emitted
                        and len({e["event_id"] for e in result.received}) >= result.emitted
                    )
                if done:
                    break
                time.sleep(0.05)
        finally:
            if holder:
                holder[0].stop_event.set()
            agent_thread.join(10)
            bus.shutdown()
            backend.loop_stop()
            backend.disconnect()

    result.seconds = time.monotonic() - started
    if chart_path is not None and result.history:
        result.chart = write_chart(chart_path, scenario, cfg, result)
    _summary(tl, result)
    if on_result is not None:
        on_result(result)
    return result


def _rule_lines(rules: dict[str, Any] | None, rule_id: Any) -> list[str]:
    """The rule's own words under a decision, in both languages."""
    rule = (rules or {}).get(rule_id)
    if rule is None:
        return []
    return [f"   rule:     {rule.description_en} / {rule.description_zh}"]


def _parse_time(text: str) -> float:
    return parse_time(text).timestamp()


def _clock(t: float) -> str:
    return utc_from_timestamp(t).strftime("%H:%M:%S.%f")[:10]


def _describe(event: dict[str, Any], rules: dict[str, Any] | None = None) -> str:
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
            _parse_time(str(d.get(k, ""))) for k in ("first_reading_time", "last_reading_time")
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


def _summary(tl: StoryPrinter, r: DemoResult) -> None:
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
            tl.line(_parse_time(e["time"]), "", f"{e['type']} (seq {e['seq']})")
    attempts: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for e in sorted(unique.values(), key=lambda e: e["seq"]):
        if e["type"] == "owner.notified" and e["data"].get("channel") == "can":
            attempts.setdefault((e["data"]["seq"], e["data"]["notice_id"]), []).append(e)
    for (_, nid), shown in attempts.items():
        times = ", ".join(e["time"][5:16].replace("T", " ") for e in shown)
        tl.line(
            _parse_time(shown[0]["time"]),
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
