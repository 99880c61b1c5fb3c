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
from pack_agent.events import utc_from_timestamp

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

    def types(self) -> set[str]:
        return {e["type"] for e in self.received}

    @property
    def ok(self) -> bool:
        ids = [e["event_id"] for e in self.received]
        seqs = sorted(e["seq"] for e in {e["event_id"]: e for e in self.received}.values())
        return (
            set(EXPECTED) <= self.types()
            and len(set(ids)) == self.emitted
            and seqs == list(range(1, self.emitted + 1))
        )


class Timeline:
    """Thread-safe printing of one line per happening, dated in simulated time."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._progress = False
        self._tty = out.isatty()

    def line(self, t: float | None, who: str, text: str) -> None:
        day = utc_from_timestamp(t).strftime("%Y-%m-%d") if t else " " * 10
        with self._lock:
            if self._progress:
                self._out.write("\r\033[K" if self._tty else "")
                self._progress = False
            self._out.write(f"{day}  {who:<7} {text}\n")
            self._out.flush()

    def progress(self, t: float, text: str) -> None:
        if not self._tty:
            return
        with self._lock:
            day = utc_from_timestamp(t).strftime("%Y-%m-%d")
            self._out.write(f"\r\033[K{day}  {'sim':<7} {text}")
            self._out.flush()
            self._progress = True


def demo_config(base: AgentConfig, channel: str, broker_port: int, state_dir: Path) -> AgentConfig:
    """The reference configuration on a virtual bus, a private broker and a temporary store."""
    data = base.model_dump(mode="python", exclude={"base_dir", "source"})
    data["buses"] = [{"name": "powertrain", "interface": "virtual", "channel": channel}]
    data["mqtt"]["port"] = broker_port
    data["mqtt"]["host"] = "127.0.0.1"
    data["mqtt"]["password"] = None
    data["store"]["path"] = str(state_dir / "pack-agent.db")
    data["health"]["publish_interval_s"] = 60 * 86400.0  # a health sample every 60 simulated days
    data["health"]["bms_timeout_s"] = 3 * 86400.0
    cfg = AgentConfig.model_validate(data)
    cfg.base_dir = base.base_dir
    cfg.source = base.source
    return cfg


def run_demo(
    scenario_name: str = "ageing",
    pace_s: float = 0.012,
    out: TextIO = sys.stdout,
    config_path: Path | None = None,
    on_result: Callable[[DemoResult], None] | None = None,
) -> DemoResult:
    import can
    import paho.mqtt.client as mqtt

    from pack_agent.codes import check_code
    from pack_agent.daemon import Daemon
    from pack_agent.database import load_and_check
    from pack_agent.devbroker import LocalBroker
    from pack_agent.sim import SCENARIOS, VirtualHeadUnit, VirtualVehicle

    started = time.monotonic()
    scenario = SCENARIOS[scenario_name]
    tl = Timeline(out)
    result = DemoResult()
    lock = threading.Lock()
    base = load_config(config_path or reference_config_path())

    with tempfile.TemporaryDirectory(prefix="pack-agent-demo-") as tmp, LocalBroker() as broker:
        channel = f"pack-agent-demo-{uuid.uuid4().hex[:8]}"
        cfg = demo_config(base, channel, broker.port, Path(tmp))
        db = load_and_check(cfg)
        prefix = cfg.mqtt.topic_prefix
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
            tl.line(_parse_time(event["time"]), "backend", _describe(event))

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
            response=["seen", "service_booked"],  # informed; booked at the weekly reminder
            delay_s=0.5 * 86400,
            on_show=on_show,
        )
        last_code: list[str] = []

        def on_day(state: Any) -> None:
            if not last_code or last_code[-1] != state.code:
                report = check_code(state.code)
                f = report.fields
                what = f"{f.product_type.name.lower()}, made {f.production_date}" if f else "?"
                tl.line(state.time, "bms", f"broadcasts pack code {state.code} ({what})")
                last_code.append(state.code)
            tl.progress(
                state.time,
                f"day {state.day:4d}  SOH {state.soh:5.1f} %  odometer {state.odometer_km:9.0f} km",
            )

        bus = can.Bus(interface="virtual", channel=channel, preserve_timestamps=True)
        try:
            vehicle = VirtualVehicle(bus, db, scenario, head_unit, pace_s=pace_s, on_day=on_day)
            vehicle.run()
            # let the agent and the uplink finish: every stored event reaches the backend
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                vehicle.serve_head_unit(scenario.start + scenario.days * 86400.0)
                with lock:
                    done = (
                        result.emitted
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
    _summary(tl, result)
    if on_result is not None:
        on_result(result)
    return result


def _parse_time(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


def _describe(event: dict[str, Any]) -> str:
    d = event.get("data", {})
    kind = event["type"]
    head = f"<- {kind:<20} seq={event['seq']:<3}"
    if kind == "pack.identified":
        return f"{head} pack {d.get('pack_code')}"
    if kind == "pack.replaced":
        return f"{head} {d.get('previous_code')} -> {d.get('pack_code')}"
    if kind == "pack.health":
        m = d.get("metrics", {})
        return (
            f"{head} SOH {m.get('soh', float('nan')):.1f} %, SOC {m.get('soc', float('nan')):.0f} %"
        )
    if kind == "scrap.condition_met":
        st = d.get("statistic", {})
        return (
            f"{head} rule {d.get('rule_id')}: {d.get('metric')} median {st.get('median'):.1f} "
            f"< {d.get('threshold')} over {d.get('sample_count')} samples "
            f"({d.get('first_reading_time', '')[:10]} .. {d.get('last_reading_time', '')[:10]})"
        )
    if kind == "owner.notified":
        nid = d.get("notice_id", 0)
        return f"{head} attempt {d.get('attempt')} on {d.get('channel')}, notice 0x{nid:04X}"
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


def _summary(tl: Timeline, r: DemoResult) -> None:
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
    tl.line(
        None,
        "",
        f"notices shown on the head unit: {r.notices_shown}; took {r.seconds:.1f} s; "
        f"{'OK' if r.ok else 'INCOMPLETE'}",
    )
