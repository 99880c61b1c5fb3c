"""`pack-agent replay LOG --config FILE`: the whole pipeline over a recorded CAN log."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pack_agent.core.events import Event

HELP = "run the whole pipeline over a recorded CAN log and print the events"


# pack_agent.canbus.logs's FORMATS, spelled out: building the parser (every subcommand, also
# for `run`) must not import the replay machinery (tests/cli/test_cli_imports.py checks both)
FORMATS = ("gvret", "asc", "blf", "candump", "trc", "csv", "mf4")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("log", help="the log: .asc .blf .log (candump) .trc .csv .mf4, GVRET CSV")
    parser.add_argument("--config", "-c", required=True, help="the TOML configuration file")
    parser.add_argument("--json", action="store_true", help="one event a line, as on MQTT")
    parser.add_argument(
        "--format", choices=FORMATS, default=None, help="the log's format (default: by extension)"
    )
    parser.add_argument(
        "--state",
        default=None,
        help="keep the agent's state in this SQLite file (default: a temporary one), "
        "so a second replay continues where the first ended",
    )
    parser.add_argument(
        "--deterministic-ids",
        action="store_true",
        help="event ids derived from the log's hash and seq, equal on every run",
    )


def human(event: Event) -> str:
    data = json.dumps(event.data, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return f"{event.time.isoformat()}  #{event.seq:<4} {event.type:<20} {data}"


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pack_agent.config import load_config
    from pack_agent.runtime.replay import replay

    config = load_config(args.config)

    def show(event: Event) -> None:
        print(event.to_json() if args.json else human(event), flush=True)

    result = replay(
        config,
        Path(args.log),
        args.format,
        on_event=show,
        state_path=Path(args.state) if args.state else None,
        deterministic_ids=args.deterministic_ids,
    )
    dropped = sum(result.decoder["dropped"].values())
    buses = ", ".join(f"{k} {v}" for k, v in sorted(result.per_bus.items())) or "none"
    summary = (
        f"replayed {result.frames} frames ({buses}); {result.decoder['mapped_frames']} mapped, "
        f"{result.decoder['readings']} readings, {dropped} values dropped; "
        f"{len(result.events)} events"
    )
    if result.unmapped_channels:
        summary += f"; frames on unconfigured log channels: {result.unmapped_channels}"
    print(summary, file=sys.stderr)
    return 0
