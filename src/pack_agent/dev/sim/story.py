"""What a scenario's story must show, checked on what the backend and the head unit saw.

Pure: the events (as the backend received them, JSON objects), the notices the head
unit showed and the ignition-on times go in; the list of what is missing comes out.
The demo fails when it is not empty, so a story that stops half-way is never "OK".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from pack_agent.core.events import parse_time
from pack_agent.core.notices import default_notice_id
from pack_agent.dev.sim.scenario import DAY, Scenario

# the agent metric each simulated fault sets (reference configuration, [metrics])
FAULT_METRICS = {"thermal": "thermal_event", "insulation": "insulation_alarm"}
IGNITION_SLACK_S = 10.0  # a repeat this soon after an ignition-on was caused by it


@dataclass(frozen=True)
class Showing:
    """A notice as the head unit showed it: when, which id, and whether the catalogue
    text was found (the live view prints it)."""

    time: float
    notice_id: int
    has_text: bool


def event_time(event: dict[str, Any]) -> float:
    return parse_time(event["time"]).timestamp()


def delivery_problems(events: Sequence[dict[str, Any]], emitted: int) -> list[str]:
    """Every stored event reached the backend once or more, numbered 1..emitted."""
    unique = {e["event_id"]: e for e in events}
    seqs = sorted(e["seq"] for e in unique.values())
    out = []
    if len(unique) != emitted:
        out.append(f"{len(unique)} of {emitted} stored events delivered")
    if seqs != list(range(1, len(unique) + 1)):
        out.append("event seq numbers are not 1..n without gaps")
    return out


def story_problems(
    scenario: Scenario,
    config: Any,
    events: Sequence[dict[str, Any]],
    shown: Sequence[Showing] = (),
    ignition_ons: Iterable[float] = (),
) -> list[str]:
    """What the scenario's story lacks: an expected event type, and for a safety fault
    the confirmed decision, the critical notice, its text on the head unit, the answer
    and the repeat cadence; for a story with trips, a repeat at an ignition-on."""
    unique = sorted({e["event_id"]: e for e in events}.values(), key=lambda e: e["seq"])
    types = {e["type"] for e in unique}
    out = [f"no {t} event" for t in scenario.expect if t not in types]
    if scenario.fault is not None and scenario.fault_day is not None:
        out += _safety_problems(scenario, config, unique, shown)
    if scenario.expect_ignition_repeat:
        out += _ignition_problems(config, unique, sorted(ignition_ons))
    out += notice_cause_problems(config, unique)
    return out


def expected_notice(config: Any, rule: Any) -> int:
    """The notice a rule shows: the one the configuration check resolved (its
    ``notice_id`` or the catalogue entry of its cause)."""
    resolved = getattr(config, "notice_ids", {}).get(rule.id)
    return resolved or rule.notice_id or default_notice_id(rule.severity)


def notice_cause_problems(config: Any, events: Sequence[dict[str, Any]]) -> list[str]:
    """Every notice shown for a decision is the one of its rule's cause (issue 16: no
    capacity text for a resistance, cycle, age or BMS-verdict rule)."""
    rules = {r.id: r for r in getattr(config, "rules", [])}
    out = []
    for e in events:
        if e["type"] != "owner.notified" or e["data"].get("rule_id") not in rules:
            continue
        rule = rules[e["data"]["rule_id"]]
        want, got = expected_notice(config, rule), e["data"]["notice_id"]
        if got != want:
            msg = f"rule {rule.id} ({rule.kind}) showed notice 0x{got:04X}, expected 0x{want:04X}"
            if msg not in out:
                out.append(msg)
    return out


def _safety_problems(
    scenario: Scenario, config: Any, events: list[dict[str, Any]], shown: Sequence[Showing]
) -> list[str]:
    metric = FAULT_METRICS.get(scenario.fault or "")
    rule = next(
        (r for r in config.rules if r.kind == "safety" and getattr(r, "metric", None) == metric),
        None,
    )
    if rule is None:
        return [f"no safety rule on metric {metric!r} in the configuration"]
    fault_at = scenario.start + scenario.fault_day * DAY + scenario.fault_at_s  # type: ignore[operator]
    out: list[str] = []
    decisions = [
        e for e in events if e["type"] == "scrap.condition_met" and e["data"]["rule_id"] == rule.id
    ]
    if len(decisions) != 1:
        return [f"{len(decisions)} scrap.condition_met for rule {rule.id}, expected 1"]
    d = decisions[0]["data"]
    first, last = (
        parse_time(d[k]).timestamp() for k in ("first_reading_time", "last_reading_time")
    )
    if d.get("severity") != rule.severity:
        out.append(f"decision severity {d.get('severity')!r}, rule says {rule.severity!r}")
    if d.get("sample_count", 0) < rule.confirm_readings or len(d.get("samples", [])) < 2:
        out.append(f"decision on {d.get('sample_count')} reading(s), rule {rule.id} confirms on "
                   f"{rule.confirm_readings}")  # fmt: skip
    if last - first < rule.confirm_s:
        out.append(f"decision evidence spans {last - first:.1f} s < confirm_s {rule.confirm_s}")
    if first < fault_at:
        out.append("decision evidence starts before the fault (a stray frame decided)")
    notice_id = expected_notice(config, rule)
    notified = [
        e
        for e in events
        if e["type"] == "owner.notified"
        and e["data"]["rule_id"] == rule.id
        and e["data"]["channel"] == "can"
    ]
    if not notified:
        return [*out, f"no owner.notified on the head unit for rule {rule.id}"]
    if {e["data"]["notice_id"] for e in notified} != {notice_id}:
        out.append(f"head-unit notice ids {sorted({e['data']['notice_id'] for e in notified})}, "
                   f"expected 0x{notice_id:04X}")  # fmt: skip
    if not any(s.notice_id == notice_id and s.has_text for s in shown):
        out.append(f"the head unit never showed notice 0x{notice_id:04X} with its catalogue text")
    acks = [
        e for e in events if e["type"] == "owner.acknowledged" and e["data"]["rule_id"] == rule.id
    ]
    if not acks:
        out.append(f"no owner.acknowledged for rule {rule.id}")
    out += _cadence_problems(rule.severity, config.notice, [event_time(e) for e in notified])
    return out


def _cadence_problems(severity: str, notice: Any, attempts: list[float]) -> list[str]:
    """A notice waiting for an answer is shown again every interval (``critical_`` for a
    critical one), never sooner, and not much later while the vehicle reports."""
    critical = severity == "critical"
    interval = notice.critical_repeat_interval_s if critical else notice.repeat_interval_s
    if len(attempts) < 2:
        return [f"the {severity} notice was never repeated (1 attempt)"]
    gaps = [b - a for a, b in pairwise(attempts)]
    # an answer moves the next repeat to an interval after the answer: the script's
    # delay and the simulator's one-minute steps are the slack
    late = interval + 15 * 60
    bad = [g for g in gaps if not interval - 1.0 <= g <= late]
    if bad:
        return [f"{severity} repeats {', '.join(f'{g:.0f} s' for g in bad)} apart, "
                f"configured every {interval:.0f} s"]  # fmt: skip
    return []


def _ignition_problems(
    config: Any, events: list[dict[str, Any]], ignition_ons: list[float]
) -> list[str]:
    """At least one repeat that an ignition Off->On brought forward: shown within a few
    seconds of an ignition-on, sooner than the notice's repeat interval."""
    if not config.notice.repeat_on_ignition:
        return []
    last: dict[int, float] = {}
    for e in events:
        if e["type"] != "owner.notified" or e["data"]["channel"] != "can":
            continue
        t, seq = event_time(e), e["data"]["seq"]
        n = config.notice
        interval = (
            n.critical_repeat_interval_s
            if e["data"]["severity"] == "critical"
            else n.repeat_interval_s
        )
        early = seq in last and t - last[seq] < interval
        if early and any(0 <= t - on <= IGNITION_SLACK_S for on in ignition_ons):
            return []
        last[seq] = t
    return ["no notice repeated at an ignition Off->On (notice.repeat_on_ignition)"]
