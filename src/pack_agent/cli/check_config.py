"""`pack-agent check-config FILE`: every problem in a configuration, each with its key."""

from __future__ import annotations

import argparse
import sys

HELP = "validate a configuration file and the CAN databases it names"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="the TOML configuration file")
    parser.add_argument(
        "--effective",
        action="store_true",
        help="print the configuration the agent would run, every default filled in (TOML)",
    )


def run(args: argparse.Namespace) -> int:
    from pack_agent.canbus.checks import load_all
    from pack_agent.config import as_data, load_config
    from pack_agent.config.load import dump_toml
    from pack_agent.errors import ConfigError
    from pack_agent.runtime.preflight import preflight_problems

    try:
        config = load_config(args.config)
        dbs = load_all(config)
        problems = preflight_problems(config)  # what `run` would refuse besides
        if problems:
            raise ConfigError(problems, config.source)
    except ConfigError as exc:
        print(exc.render())
        return 1
    for warning in config.warnings:  # deprecated keys, findings that do not stop the agent
        # with --effective the TOML alone goes to stdout
        print(f"{args.config}: warning: {warning}", file=sys.stderr if args.effective else None)
    if args.effective:
        print(f"# {args.config}, as pack-agent reads it (defaults filled in)")
        print(dump_toml(as_data(config)), end="")
        return 0
    n = config.notice
    own = f"{n.database} (own frames)" if dbs.notice is not None else "MQTT copy only"
    print(
        f"{args.config}: ok — VIN {config.vin}, {len(dbs.vehicle.messages)} messages in "
        f"{len(config.databases)} database(s), {len(config.metrics)} metrics, "
        f"{len(config.rules)} rule(s), {len(config.buses)} bus(es); owner notice: {own}"
    )
    return 0
