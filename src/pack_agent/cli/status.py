"""`pack-agent status`: what the agent knows and how it is doing, also while it runs.

Reads the store read-only (never writes) and the daemon's live status file.
"""

from __future__ import annotations

import argparse

HELP = "show the pack, its health, decisions, notices, the outbox and bus/broker state"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        default="/etc/pack-agent/agent.toml",
        help="the agent's configuration (default /etc/pack-agent/agent.toml)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object, for scripts")


def run(args: argparse.Namespace) -> int:
    import json

    from pack_agent.config import load_config
    from pack_agent.errors import ConfigError
    from pack_agent.runtime.statusview import gather, render

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc.render())
        return 2
    report = gather(config)
    print(json.dumps(report, ensure_ascii=False, indent=1) if args.json else render(report))
    return 1 if "store_error" in report else 0
