"""The `pack-agent` command line: a thin layer, one module per subcommand.

Each subcommand module defines ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int`` and keeps its heavy imports inside ``run`` so that
``pack-agent code`` does not pay for python-can or paho.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from pack_agent.errors import PackAgentError


class _Version(argparse.Action):
    """``--version``: the version is looked up only when asked (``pack_agent.__version__``)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(
            option_strings,
            dest=argparse.SUPPRESS,
            nargs=0,
            help="show program's version number and exit",
        )

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        import pack_agent

        sys.stdout.write(f"pack-agent {pack_agent.__version__}\n")
        parser.exit()


def subcommands() -> dict[str, str]:
    """Subcommand name -> module: every module in this package (``check_config`` is
    ``check-config``), so adding a subcommand is adding a file."""
    return {
        info.name.replace("_", "-"): info.name
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name)
        if not info.name.startswith("_")
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pack-agent",
        description="Traction-battery traceability agent for vehicle gateways.",
    )
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in subcommands().items():
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
