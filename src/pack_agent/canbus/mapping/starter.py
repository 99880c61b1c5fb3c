"""What the assistant prints and writes: the report, and a starter configuration
that ``pack-agent check-config`` accepts, every choice commented with its reasons."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import cantools.database

from pack_agent.canbus.checks import own_id_moves
from pack_agent.canbus.mapping.metrics import PROFILES
from pack_agent.canbus.mapping.profiles import Candidate, Proposal, words


def ignition_on_values(signal: Any) -> list[int]:
    """The values of an ignition signal's value table that mean "on" (On, Run, KL15, Ready,
    Start); [1] for a signal without a table."""
    if not signal.choices:
        return [1]
    on = []
    for value, label in signal.choices.items():
        w = words(str(label))
        if any(
            x in w for x in ("on", "run", "kl15", "ready", "start", "ignition", "ign")
        ) and not any(x in w for x in ("off", "acc", "accessory")):
            on.append(int(value))
    return on or [max(int(v) for v in signal.choices)]


def starter_toml(
    proposal: Proposal,
    db: cantools.database.Database,
    database_paths: list[str],
    bus_channel: str = "can0",
    strict: bool = True,
) -> str:
    """A configuration that ``check-config`` accepts: the proposed metrics, the pack code
    source, and a capacity rule when an SOH was found; every choice commented."""
    lines = [
        "# pack-agent configuration proposed by `pack-agent map`: check every line against",
        "# the vehicle before use. Confidence is a rough 0-1 score; reasons follow each entry.",
        "",
        'vin = "LPACK2026AGENT001"   # your vehicle\'s VIN',
        "databases = [" + ", ".join(_q(p) for p in database_paths) + "]",
        *(
            []
            if strict
            else [
                "strict_databases = false   # cantools' strict mode rejects these databases",
            ]
        ),
        "",
        "[[buses]]",
        'name = "vehicle"',
        'interface = "socketcan"',
        f"channel = {_q(bus_channel)}",
        "bitrate = 500000",
        "",
        "[metrics]",
    ]
    mapped: dict[str, Candidate] = {}
    for profile in PROFILES:
        best = proposal.best(profile.metric)
        if best is None:
            lines.append(f"# {profile.metric}: no signal found ({profile.what})")
            continue
        mapped[profile.metric] = best
        lines.append(
            f"# {profile.metric} ({profile.what}), confidence {best.score:.2f}: "
            + "; ".join(best.reasons)
        )
        lines.append(
            f"{profile.metric} = {{ message = {_q(best.message)}, signal = {_q(best.signal)} }}"
        )
    lines += ["", "[pack_code]"]
    code = proposal.best_code()
    if code is None:
        lines += [
            "# no text pages found: read the code over UDS (see docs/configuration.md)",
            'source = "none"',
        ]
    else:
        lines += [
            f"# confidence {code.score:.2f}: " + "; ".join(code.reasons),
            'source = "pages"',
            f"message = {_q(code.message)}",
            f"mux_signal = {_q(code.mux_signal)}",
            "pages = [" + ", ".join(_q(p) for p in code.pages) + "]",
        ]
    if "ignition" in mapped:
        sig = db.get_message_by_name(mapped["ignition"].message).get_signal_by_name(
            mapped["ignition"].signal
        )
        values = ignition_on_values(sig)
        lines += ["", "[ignition]", 'metric = "ignition"', f"on_values = {values}"]
    lines += ["", "[policy]"]
    if "ignition" not in mapped:
        lines += ["# no ignition found: every reading is judged, parked or driving"]
    if "soh" in mapped:
        lines += [
            'trend_metric = "soh"',
            "",
            "[[rules]]",
            'id = "capacity-80"',
            'kind = "capacity"',
            'metric = "soh"',
            "threshold = 80.0",
            "window_days = 28",
            "min_readings = 14",
            "min_span_days = 14",
            "persistence_days = 14",
            'severity = "advisory"',
            'description_en = "State of health below 80 % (28-day median), held for 14 days"',
            'description_zh = "健康状态（28天中位数）低于80%，并持续14天"',
        ]
    else:
        lines += ["# no SOH found: no trend and no capacity rule"]
    lines += ["", "[notice]", 'bus = "vehicle"']
    for key, frame_id in own_id_moves(db).items():  # the vehicle uses the default id
        lines.append(f"{key} = 0x{frame_id:X}   # the default id is a message of these databases")
    lines.append("")
    return "\n".join(lines)


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def report(proposal: Proposal, shown: int = 3) -> str:
    """The proposals as text, best candidates of each metric with their reasons."""
    out = []
    if proposal.log_frames is not None:
        out.append(f"log: {proposal.log_frames} frames read")
    for profile in PROFILES:
        found = proposal.candidates.get(profile.metric, [])
        best = proposal.best(profile.metric)
        head = f"{profile.metric}: " + (
            f"{best.message}.{best.signal} ({best.score:.2f})" if best else "none proposed"
        )
        out.append(head)
        for c in found[:shown]:
            mark = "x" if c.contradiction else ("+" if c.proposed else "-")
            why = c.contradiction or "; ".join(c.reasons)
            out.append(f"  {mark} {c.message}.{c.signal} {c.score:.2f}  {why}")
    code = proposal.best_code()
    out.append(
        "pack_code: "
        + (
            f"{code.message} pages {', '.join(code.pages)} ({code.score:.2f})"
            if code
            else 'none proposed (UDS or source = "none")'
        )
    )
    for cc in proposal.code[:shown]:
        mark = "x" if cc.contradiction else ("+" if cc.proposed else "-")
        out.append(
            f"  {mark} {cc.message} {cc.score:.2f}  {cc.contradiction or '; '.join(cc.reasons)}"
        )
    return "\n".join(out)


def load(paths: list[Path], strict: bool = False) -> cantools.database.Database:
    """The databases merged, as the agent would load them (not strict by default: the
    assistant reads databases that strict mode rejects, and says so)."""
    import cantools

    from pack_agent.canbus.dbc import load_file

    db = cantools.database.Database(strict=strict)
    for p in paths:
        db.messages.extend(load_file(p, strict).messages)
    db.refresh()
    return db
