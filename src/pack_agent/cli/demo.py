"""`pack-agent demo`: the story of a pack, on a virtual vehicle and a private broker."""

from __future__ import annotations

import argparse

HELP = "run the end-to-end demo (virtual vehicle, private mosquitto, real agent)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", default="ageing", help="ageing (default) or healthy")
    parser.add_argument(
        "--pace", type=float, default=0.012, help="wall seconds per simulated day (default 0.012)"
    )
    parser.add_argument("--config", help="start from this configuration instead of the reference")


def run(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from pack_agent.demo import run_demo
    from pack_agent.errors import PackAgentError
    from pack_agent.sim import SCENARIOS

    if args.scenario not in SCENARIOS:
        raise PackAgentError(
            f"--scenario: unknown scenario {args.scenario!r} (choose from {', '.join(SCENARIOS)})"
        )
    logging.basicConfig(level=logging.ERROR)
    result = run_demo(
        args.scenario, pace_s=args.pace, config_path=Path(args.config) if args.config else None
    )
    if args.scenario == "ageing":
        return 0 if result.ok else 1
    return (
        0
        if result.emitted and len({e["event_id"] for e in result.received}) == result.emitted
        else 1
    )
