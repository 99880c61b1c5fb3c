"""`pack-agent demo`: the story of a pack, on a virtual vehicle and a private broker."""

from __future__ import annotations

import argparse

HELP = "run the end-to-end demo (virtual vehicle, private mosquitto, real agent)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenario",
        default="ageing",
        help="ageing (default), healthy, safety-fault, insulation-fault, pack-swap, forged-code",
    )
    parser.add_argument(
        "--chart",
        default="pack-agent-demo.svg",
        help="write the SOH chart here (SVG; default pack-agent-demo.svg; '' for none)",
    )
    parser.add_argument(
        "--pace", type=float, default=0.012, help="wall seconds per simulated day (default 0.012)"
    )
    parser.add_argument("--config", help="start from this configuration instead of the reference")


def run(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from pack_agent.dev.demo import run_demo
    from pack_agent.dev.sim import SCENARIOS
    from pack_agent.errors import PackAgentError

    if args.scenario not in SCENARIOS:
        raise PackAgentError(
            f"--scenario: unknown scenario {args.scenario!r} (choose from {', '.join(SCENARIOS)})"
        )
    logging.basicConfig(level=logging.ERROR)
    # paho logs a benign "Client is not connected" at ERROR when its thread races a
    # disconnect; the demo's screen is for the story
    logging.getLogger("pack_agent.delivery.mqtt.paho").setLevel(logging.CRITICAL)
    result = run_demo(
        args.scenario,
        pace_s=args.pace,
        config_path=Path(args.config) if args.config else None,
        chart_path=Path(args.chart) if args.chart else None,
    )
    return 0 if result.ok else 1
