"""Checking a code position by position, collecting every problem at once.

Owns :class:`CodeProblem` and the scan behind :func:`pack_agent.core.codes.parse_code`
and :func:`~pack_agent.core.codes.check_code`: which characters are wrong, which
field rule each breaks, and which fields are still readable. The tables it applies
are in :mod:`pack_agent.core.code_format`. Pure: no I/O, no clock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pack_agent.core.code_format import (
    ALPHABET,
    BATTERY_TYPES,
    CASCADE_LAYOUT,
    CASCADE_LENGTH,
    CODE_LENGTH,
    DAY_CODES,
    DIGITS,
    MONTH_CODES,
    REGULAR_LAYOUT,
    YEAR_CODES,
    ProductType,
)

__all__ = ["EMPTY_FIELDS", "CodeProblem", "scan", "scan_any"]


@dataclass(frozen=True)
class CodeProblem:
    """One thing wrong with a code.

    ``position`` is the 1-based inclusive span ``(first, last)`` the problem is
    about - ``(16, 16)`` for one character, ``(15, 17)`` for the date - or
    None when it concerns the whole code (its length). ``rule`` is a stable
    identifier for programs; ``message`` is for people.
    """

    position: tuple[int, int] | None
    rule: str
    message: str

    @property
    def where(self) -> str:
        if self.position is None:
            return "code"
        first, last = self.position
        return f"position {first}" if first == last else f"positions {first}-{last}"

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


EMPTY_FIELDS: dict[str, Any] = {
    "vendor": None,
    "product_type": None,
    "battery_type": None,
    "battery_chemistry": None,
    "battery_type_verified": None,
    "specification": None,
    "traceability": None,
    "production_date": None,
    "serial": None,
    "cascade": None,
    "cascade_product_type": None,
}


def _char_problem(pos: int, ch: str) -> CodeProblem:
    if ch.isascii() and ch.islower():
        return CodeProblem((pos, pos), "character", f"{ch!r} is lowercase; codes are upper case")
    return CodeProblem((pos, pos), "character", f"{ch!r} is not an upper-case letter or digit")


def scan(text: str) -> tuple[dict[str, Any], list[CodeProblem]]:
    """Check everything; return the readable fields and every problem.

    Field values are None where their characters failed a check. Each position
    gets at most one problem: a character outside A-Z/0-9 is reported as such
    and not again by its field's rule.
    """
    problems: list[CodeProblem] = []
    bad_positions: set[int] = set()
    for i, ch in enumerate(text, start=1):
        if ch not in ALPHABET:
            problems.append(_char_problem(i, ch))
            bad_positions.add(i)

    n = len(text)
    if n == CODE_LENGTH:
        layout, cascade = REGULAR_LAYOUT, False
    elif n == CASCADE_LENGTH and text[17] == "R":
        layout, cascade = CASCADE_LAYOUT, True
    else:
        if n == CASCADE_LENGTH:
            message = (
                f"length {n} but position 18 is {text[17]!r}, not 'R': neither a "
                f"{CODE_LENGTH}-character code nor the {CASCADE_LENGTH}-character cascade form"
            )
        else:
            message = (
                f"length {n}, expected {CODE_LENGTH} characters "
                f"(or {CASCADE_LENGTH} for the cascade form ending in 'R' + P/M/C)"
            )
        problems.insert(0, CodeProblem(None, "length", message))
        return dict(EMPTY_FIELDS), problems

    def chars(name: str) -> str:
        first, last = layout[name]
        return text[first - 1 : last]

    def clean(name: str) -> bool:
        first, last = layout[name]
        return not any(p in bad_positions for p in range(first, last + 1))

    def single(name: str, rule: str, allowed: Mapping[str, Any] | str, what: str) -> bool:
        """Check a one-character field; report it under ``rule`` if not allowed."""
        if not clean(name):
            return False
        ch = chars(name)
        if ch in allowed:
            return True
        problems.append(CodeProblem(layout[name], rule, what.format(ch=repr(ch))))
        return False

    fields: dict[str, Any] = dict(EMPTY_FIELDS)
    fields["cascade"] = cascade

    for name in ("vendor", "specification", "traceability"):
        if name in layout and clean(name):
            fields[name] = chars(name)

    if single(
        "product_type",
        "product_type",
        "PMC",
        "product type {ch} is not P (pack), M (module) or C (cell)",
    ):
        fields["product_type"] = ProductType(chars("product_type")).label
    if single("battery_type", "battery_type", BATTERY_TYPES, "battery type {ch} is not A-G or Z"):
        info = BATTERY_TYPES[chars("battery_type")]
        fields["battery_type"] = info.letter
        fields["battery_chemistry"] = info.chemistry
        fields["battery_type_verified"] = info.verified

    letters = "1-9 or a letter A-Y other than I, O, Q"
    year_ok = single("year", "year", YEAR_CODES, "production year {ch} is not " + letters)
    month_ok = single("month", "month", MONTH_CODES, "production month {ch} is not 1-9 or A-C")
    day_ok = single("day", "day", DAY_CODES, "production day {ch} is not " + letters)
    if year_ok and month_ok and day_ok:
        y, m, d = YEAR_CODES[chars("year")], MONTH_CODES[chars("month")], DAY_CODES[chars("day")]
        try:
            fields["production_date"] = dt.date(y, m, d).isoformat()
        except ValueError:
            span = (layout["year"][0], layout["day"][1])
            problems.append(
                CodeProblem(span, "date", f"production date {y}-{m:02d}-{d:02d} does not exist")
            )

    first, _ = layout["serial"]
    serial_ok = True
    for offset, ch in enumerate(chars("serial")):
        pos = first + offset
        if pos not in bad_positions and ch not in DIGITS:
            problems.append(
                CodeProblem((pos, pos), "serial", f"serial number character {ch!r} is not a digit")
            )
        serial_ok = serial_ok and ch in DIGITS
    if serial_ok:
        fields["serial"] = chars("serial")

    if cascade and single(
        "cascade_product_type",
        "cascade_product_type",
        "PMC",
        "cascade product type {ch} is not P, M or C",
    ):
        fields["cascade_product_type"] = ProductType(chars("cascade_product_type")).label

    problems.sort(key=lambda p: p.position or (0, 0))
    return fields, problems


def scan_any(text: object) -> tuple[dict[str, Any], list[CodeProblem]]:
    if not isinstance(text, str):
        problem = CodeProblem(None, "type", f"expected text, got {type(text).__name__}")
        return dict(EMPTY_FIELDS), [problem]
    return scan(text)
