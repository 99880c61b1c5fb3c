"""The `pack-agent` command line: a thin layer, one module per subcommand.

Each subcommand module defines ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int`` and keeps its heavy imports inside ``run`` so that
``pack-agent code`` does not pay for python-can or paho.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pack_agent import __version__
from pack_agent.errors import PackAgentError

# subcommand name -> module under pack_agent.cli
SUBCOMMANDS: dict[str, str] = {
    "code": "code",
    "check-config": "check_config",
    "run": "run",
    "demo": "demo",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pack-agent",
        description="Traction-battery traceability agent for vehicle gateways.",
    )
    parser.add_argument("--version", action="version", version=f"pack-agent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(f"pack_agent.cli.{module_name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args))
    except PackAgentError as exc:
        print(f"pack-agent: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
