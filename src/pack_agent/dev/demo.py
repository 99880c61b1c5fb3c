"""`pack-agent demo`: the whole story of a pack in under a minute, on real parts.

A private mosquitto on a free loopback port, the virtual vehicle on a python-can
``virtual`` bus, the real daemon (store, decoder, policy, owner channel, MQTT
uplink) in simulated time, and a backend subscriber whose view is the timeline.

Split along one seam: this module runs the story (the parts, their threads, the
waiting until every event is delivered); :mod:`pack_agent.dev.demo_story` records
and tells it (:class:`DemoResult` and its verdict, the printed lines, the summary,
the chart). Their names stay importable from here.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from pack_agent.config import AgentConfig, load_config, reference_config_path
from pack_agent.core.events import utc_from_timestamp
from pack_agent.dev.demo_story import (
    EXPECTED,
    FAULTS,
    DemoResult,
    StoryPrinter,
    bar,
    describe,
    parse_time,
    soh_rate_per_year,
    summary,
    write_chart,
)
from pack_agent.dev.sim.story import Showing

__all__ = ["EXPECTED", "DemoResult", "demo_config", "run_demo", "soh_rate_per_year"]


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

    from pack_agent.canbus.checks import load_all
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
        dbs = load_all(cfg)
        db = dbs.vehicle
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
            tl.line(parse_time(event["time"]), "backend", describe(event, rules))

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
            dbs.notice or db,  # the head unit speaks the agent's own frames
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
                f"{bar(state.day, scenario.days)} day {state.day:4d}  "
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
    summary(tl, result)
    if on_result is not None:
        on_result(result)
    return result
