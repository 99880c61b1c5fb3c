"""`pack-agent map DBC... [--log LOG] [--out FILE]`: propose a mapping for an unknown BMS.

Thin on purpose: every heuristic lives in :mod:`pack_agent.canbus.mapping`; this module
reads the files, prints the report and writes the starter configuration, which it
checks the way ``check-config`` does before saying it is written.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

HELP = "Propose which signals of a CAN database (and a log) carry SOH, SOC, ignition, the code..."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "databases",
        nargs="+",
        type=Path,
        metavar="DBC",
        help="the vehicle's CAN databases (.dbc, .kcd, .sym, .arxml)",
    )
    parser.add_argument(
        "--log",
        type=Path,
        default=None,
        help="a recorded log to check each proposal against (any replay format)",
    )
    parser.add_argument("--format", default=None, help="the log's format (default: by extension)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write a starter configuration here (checked like check-config)",
    )
    parser.add_argument("--channel", default="can0", help="the SocketCAN channel to put in it")
    parser.add_argument("--all", action="store_true", help="show every candidate, not the best 3")


def run(args: argparse.Namespace) -> int:
    from pack_agent.canbus import mapping
    from pack_agent.canbus.logs import read_log
    from pack_agent.errors import ConfigError

    for p in args.databases:
        if not p.is_file():
            raise ConfigError([f"{p}: no such file"], "pack-agent map")
    try:
        db = mapping.load(args.databases)
    except Exception as exc:
        raise ConfigError([f"cannot read the databases: {exc}"], "pack-agent map") from None
    if not db.messages:
        raise ConfigError(["the databases hold no CAN message"], "pack-agent map")
    proposal = mapping.propose(db)
    if args.log is not None:
        mapping.check_against_log(proposal, db, read_log(args.log, args.format))
    print(mapping.report(proposal, shown=1000 if args.all else 3))
    if args.out is None:
        return 0
    base = args.out.resolve().parent
    paths = [os.path.relpath(p.resolve(), base) for p in args.databases]
    try:
        mapping.load(args.databases, strict=True)
        strict = True
    except Exception:
        strict = False
    text = mapping.starter_toml(proposal, db, paths, args.channel, strict)
    args.out.write_text(text, encoding="utf-8")
    from pack_agent.canbus.checks import load_and_check
    from pack_agent.config import load_config

    try:  # what check-config would refuse, refused here
        load_and_check(load_config(args.out))
    except ConfigError as exc:
        print(exc.render())
        return 1
    print(f"wrote {args.out}: `pack-agent check-config {args.out}` accepts it")
    return 0
