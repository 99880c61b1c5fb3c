"""`pack-agent code CODE`: check a GB/T 34014 battery code and show its fields.

Thin on purpose: every rule lives in :mod:`pack_agent.core.codes`; this module only
formats a :class:`~pack_agent.core.codes.CodeReport`. Exit status 0 for a valid
code, 1 for an invalid one, so scripts can use it as a check.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

HELP = "Check a GB/T 34014 battery code (pack, module or cell) and show its fields."

# (label, key in CodeReport.to_dict()) in the order people read a code
_ROWS: tuple[tuple[str, str], ...] = (
    ("vendor", "vendor"),
    ("product type", "product_type"),
    ("battery type", "battery_type"),
    ("specification", "specification"),
    ("traceability", "traceability"),
    ("production date", "production_date"),
    ("serial", "serial"),
    ("cascade", "cascade"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("code", metavar="CODE", help="the code, exactly as printed or read")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument(
        "--today",
        metavar="YYYY-MM-DD",
        type=_date,
        default=None,
        help="the date a production date is checked against (default: today, UTC)",
    )


def _date(text: str) -> Any:
    import datetime as dt

    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _value(data: dict[str, Any], key: str) -> str:
    """One field as text; chemistry and cascade detail are folded in where useful."""
    value = data.get(key)
    if value is None:
        return "-" if key != "traceability" or not data.get("cascade") else "(none: cascade form)"
    if key == "battery_type":
        note = "" if data.get("battery_type_verified") else " (meaning unverified)"
        return f"{value} = {data.get('battery_chemistry')}{note}"
    if key == "cascade":
        if not value:
            return "no"
        after = data.get("cascade_product_type") or "?"
        return f"yes (second-life form, ends in R + {after})"
    return str(value)


def render_text(data: dict[str, Any]) -> str:
    """The report as aligned 'label  value' lines, then the problems if any."""
    rows = [("code", data["code"]), ("valid", "yes" if data["valid"] else "no")]
    rows += [(label, _value(data, key)) for label, key in _ROWS]
    width = max(len(label) for label, _ in rows)
    lines = [f"{label:<{width}}  {value}" for label, value in rows]
    errors = data["errors"]
    if errors:
        lines.append(f"{len(errors)} problem(s):")
        lines += [f"  - {error}" for error in errors]
    lines += [f"warning: {w}" for w in data.get("warnings", [])]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import datetime as dt

    from pack_agent.core.codes import check_code, future_date_warnings

    report = check_code(args.code)
    today = args.today or dt.datetime.now(dt.timezone.utc).date()
    data = report.to_dict()
    errors = data.pop("errors")  # errors stay last (the key order is the same for all codes)
    data["warnings"] = future_date_warnings(report, today)
    data["errors"] = errors
    print(json.dumps(data, ensure_ascii=False) if args.json else render_text(data))
    return 0 if report.valid else 1
