"""`pack-agent run --config FILE`: the daemon. Stops cleanly on SIGTERM or SIGINT."""

from __future__ import annotations

import argparse

HELP = "run the agent (the daemon)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", required=True, help="the TOML configuration file")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument("--log-format", default="text", choices=["text", "json"])


def run(args: argparse.Namespace) -> int:
    import signal

    from pack_agent.config import load_config
    from pack_agent.daemon import Daemon
    from pack_agent.logsetup import setup_logging

    setup_logging(args.log_level, args.log_format)
    daemon = Daemon(load_config(args.config))

    def _stop(signum: int, _frame: object) -> None:
        daemon.stop_event.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    daemon.run()
    return 0
