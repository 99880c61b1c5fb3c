"""What `pack-agent status` shows: the store (read-only) plus the daemon's live status file.

The store says what the agent knows and has decided (pack identity, the latest
health event, decisions, notices and answers, the outbox); the status file on
tmpfs says how it is doing right now (buses, broker). Either may be missing:
the report says so instead of failing.
"""

from __future__ import annotations

import time
from typing import Any

from pack_agent.config import AgentConfig
from pack_agent.core.events import iso_time, parse_time
from pack_agent.runtime.status import LAST_EVENT_KEY, read_status, status_path


def gather(config: AgentConfig, now: float | None = None) -> dict[str, Any]:
    """One JSON-ready report; never writes anything."""
    from pack_agent.core.codes import check_code
    from pack_agent.errors import StoreError
    from pack_agent.store import read_only_view
    from pack_agent.store.state import (
        DELIVERED_TOTAL,
        DROPPED_TOTAL,
        LAST_DELIVERED_AT,
        NOTICES,
        PACK_CODE,
        POLICY_LATCHED,
    )

    now = time.time() if now is None else now
    report: dict[str, Any] = {"vin": config.vin, "store": str(config.store_path())}
    try:
        view = read_only_view(config.store_path())
    except StoreError as exc:
        view = None
        report["store_error"] = str(exc)
    state = view["state"] if view else {}
    code = state.get(PACK_CODE)
    report["pack"] = {"code": code, "fields": None}
    if code:
        parsed = check_code(code)
        report["pack"]["valid"] = parsed.valid
        report["pack"]["fields"] = parsed.fields.to_dict() if parsed.fields else None
    last = {k[len(LAST_EVENT_KEY) :]: v for k, v in state.items() if k.startswith(LAST_EVENT_KEY)}
    health = last.get("pack.health")
    report["health"] = (
        {
            "time": health["time"],
            "metrics": health["data"].get("metrics", {}),
            "trend": health["data"].get("trend"),
        }
        if health
        else None
    )
    decision = last.get("scrap.condition_met")
    report["decisions"] = {
        "latched_rules": state.get(POLICY_LATCHED, []),
        "last": {"time": decision["time"], **decision["data"]} if decision else None,
    }
    notices = (state.get(NOTICES) or {}).get("notices", [])
    report["notices"] = [
        {
            "rule_id": n.get("rule_id"),
            "notice_id": n.get("notice_id"),
            "severity": n.get("severity"),
            "seq": n.get("seq"),
            "attempts": n.get("attempts"),
            "opened_at": iso_time(n.get("opened_at")),
            "last_attempt": iso_time(n.get("last_attempt")),
            "answer": n.get("response"),
            "answered_at": iso_time(n.get("acknowledged_at")),
        }
        for n in notices
    ]
    report["queue"] = {
        "pending": view["pending"] if view else None,
        "pending_by_type": view["pending_by_type"] if view else {},
        "pending_seq": view["pending_seq"] if view else None,
        "delivered_total": state.get(DELIVERED_TOTAL, 0),
        "dropped_total": state.get(DROPPED_TOTAL, 0),
        "last_delivered_at": state.get(LAST_DELIVERED_AT),
    }
    report["last_events"] = {k: {"seq": v["seq"], "time": v["time"]} for k, v in last.items()}
    path = status_path(config.daemon.status_file)
    live = read_status(path)
    report["live"] = _live(live, path, now)
    _queue_from_live(report["queue"], live if report["live"]["daemon"] == "running" else None)
    return report


def _queue_from_live(queue: dict[str, Any], live: dict[str, Any] | None) -> None:
    """The running daemon's own counts win over the file's: the file still holds the
    events delivered since the agent's last write (their delete is deferred to it)."""
    counts = (live or {}).get("queue")
    if not isinstance(counts, dict) or not isinstance(counts.get("pending"), int):
        return
    queue["pending"] = counts["pending"]
    queue["delivered_total"] = counts.get("delivered_total", queue["delivered_total"])
    queue["last_delivered_at"] = counts.get("last_delivered_at") or queue["last_delivered_at"]
    queue["awaiting_delete"] = counts.get("delivered_not_deleted", 0)
    for key in ("space_short_since", "free_bytes", "reserve_bytes", "refused_total"):
        queue[key] = counts.get(key)  # the volume, as the running store last measured it


def _live(live: dict[str, Any] | None, path: Any, now: float) -> dict[str, Any]:
    if live is None:
        return {"file": str(path), "daemon": "unknown (no status file: not running, or not here)"}
    try:
        age = now - parse_time(live["time"]).timestamp()
    except (KeyError, ValueError):
        age = None
    interval = float(live.get("status_interval_s") or 5.0)
    if live.get("state") == "stopped":
        daemon = "stopped"
    elif age is None or age > 3 * interval + 2:
        daemon = "not responding (status file is stale)"
    else:
        daemon = live.get("state", "running")
    return {
        "file": str(path),
        "daemon": daemon,
        "age_s": None if age is None else round(age, 1),
        "pid": live.get("pid"),
        "agent_version": live.get("agent_version"),
        "started_at": live.get("started_at"),
        "buses": live.get("buses", {}),
        "broker": live.get("broker", {}),
        "agent": live.get("agent", {}),
    }


def render(r: dict[str, Any]) -> str:
    """The report as text for a person at a terminal."""
    out: list[str] = []

    def row(label: str, value: Any) -> None:
        out.append(f"{label:<14} {value}")

    live = r["live"]
    row("vehicle", r["vin"])
    row("daemon", f"{live['daemon']}" + (f" (pid {live['pid']})" if live.get("pid") else ""))
    if "store_error" in r:
        row("store", r["store_error"])
    pack = r["pack"]
    if pack["code"]:
        f = pack.get("fields") or {}
        what = ", ".join(
            str(x)
            for x in (f.get("product_type"), f.get("battery_chemistry"), f.get("production_date"))
            if x
        )
        valid = "" if pack.get("valid", True) else " (INVALID)"
        row("pack", f"{pack['code']}{valid}" + (f"  {what}" if what else ""))
    else:
        row("pack", "not identified yet")
    h = r["health"]
    if h:
        m = h["metrics"]
        parts = [f"{k} {v:g}" for k, v in m.items() if isinstance(v, (int, float))]
        row("health", f"{', '.join(parts) or '-'}  (event of {h['time'][:19]})")
        if h.get("trend"):
            t = h["trend"]
            row("trend", ", ".join(f"{k} {v}" for k, v in t.items()) if isinstance(t, dict) else t)
    else:
        row("health", "no pack.health event yet")
    latest = live.get("agent", {}).get("latest") or {}
    if latest:
        row("live values", ", ".join(f"{k} {v['value']:g}" for k, v in latest.items()))
    d = r["decisions"]
    if d["latched_rules"]:
        row("decision", f"scrapping condition met: {', '.join(d['latched_rules'])}")
        last = d["last"]
        if last:
            st = last.get("statistic", {})
            row(
                "  evidence",
                f"{last.get('metric')} median {st.get('median')} < {last.get('threshold')} "
                f"over {last.get('sample_count')} samples "
                f"({str(last.get('first_reading_time', ''))[:10]} .. "
                f"{str(last.get('last_reading_time', ''))[:10]})",
            )
    else:
        row("decision", "none (no scrapping condition met)")
    if not r["notices"]:
        row("notices", "none")
    for n in r["notices"]:
        answer = (
            f"answered '{n['answer']}' at {n['answered_at'][:19]}" if n["answer"] else "no answer"
        )
        row(
            "notice",
            f"0x{n['notice_id']:04X} {n['severity']} for {n['rule_id']}: "
            f"{n['attempts']} attempt(s), {answer}",
        )
    q = r["queue"]
    by_type = ", ".join(f"{k} {v}" for k, v in sorted(q["pending_by_type"].items()))
    waiting = q.get("awaiting_delete") or 0
    if waiting:  # the file's figures by type include the delivered ones
        by_type = f"in the file, with {waiting} delivered awaiting their delete: {by_type}"
    row("queue", f"{q['pending']} event(s) to deliver" + (f" ({by_type})" if by_type else ""))
    row(
        "delivered",
        f"{q['delivered_total']} in total, last at {q['last_delivered_at'] or 'never'}"
        + (f"; {q['dropped_total']} health event(s) dropped" if q["dropped_total"] else ""),
    )
    if q.get("space_short_since"):
        row(
            "space",
            f"under store.reserve_bytes since {q['space_short_since']}: {q['free_bytes']} "
            f"bytes free of {q['reserve_bytes']} kept; {q['refused_total']} health "
            "sample(s) refused, essential events still stored",
        )
    for name, b in live.get("buses", {}).items():
        extra = f", last error: {b['last_error']}" if b.get("last_error") else ""
        row(
            f"bus {name}",
            f"{b.get('state')} ({b.get('interface')}:{b.get('channel')}), "
            f"{b.get('frames', 0)} frames, {b.get('reopens', 0)} reopen(s){extra}",
        )
    broker = live.get("broker")
    if broker:
        state = "connected" if broker.get("connected") else "not connected"
        extra = f", last error: {broker['last_error']}" if broker.get("last_error") else ""
        row(
            "broker",
            f"{state} ({broker.get('host')}:{broker.get('port')}), "
            f"{broker.get('inflight', 0)} in flight, {broker.get('reconnects', 0)} "
            f"reconnect(s){extra}",
        )
    if live.get("age_s") is not None:
        row("live status", f"{live['file']}, {live['age_s']} s old")
    else:
        row("live status", live["file"] + " (none)")
    return "\n".join(out)
