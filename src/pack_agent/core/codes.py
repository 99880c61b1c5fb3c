"""GB/T 34014-2017 traction-battery codes: parse, validate, encode.

Pure: no I/O, no clock. The agent reads a pack code from the BMS and must say
precisely *why* a code is wrong (a damaged or forged code has to be reported),
so validation collects every problem at once instead of stopping at the first.

This module is the public face: the results (:class:`PackCode`, :class:`CodeReport`,
:class:`InvalidCode`), :func:`parse_code`, :func:`check_code`, :func:`normalise_raw`
and the code builders for simulators and tests. It is split along two seams:

* :mod:`pack_agent.core.code_format` - the format as data: the 24-character layout
  and the 19-character cascade form (with what is and is not verified about it),
  the letter and date alphabets, date coding;
* :mod:`pack_agent.core.code_checks` - the position-by-position scan and
  :class:`CodeProblem`.

Every public name of both is importable from here, as before the split.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any

from pack_agent.core.code_checks import CodeProblem, scan_any
from pack_agent.core.code_format import (
    BATTERY_TYPES,
    CASCADE_LENGTH,
    CODE_LENGTH,
    DAY_CODES,
    MAX_DATE,
    MIN_DATE,
    MONTH_CODES,
    YEAR_CODES,
    BatteryType,
    BatteryTypeInfo,
    ProductType,
    encode_date,
)

__all__ = [
    "BATTERY_TYPES",
    "CASCADE_LENGTH",
    "CODE_LENGTH",
    "DAY_CODES",
    "MAX_DATE",
    "MIN_DATE",
    "MONTH_CODES",
    "YEAR_CODES",
    "BatteryType",
    "BatteryTypeInfo",
    "CodeProblem",
    "CodeReport",
    "InvalidCode",
    "PackCode",
    "ProductType",
    "check_code",
    "encode_date",
    "make_cascade_code",
    "make_code",
    "normalise_raw",
    "parse_code",
]


@dataclass(frozen=True)
class PackCode:
    """A valid code split into its fields (only :func:`parse_code` makes these)."""

    code: str
    vendor: str
    product_type: ProductType
    battery_type: BatteryType
    specification: str
    traceability: str | None  # None in the cascade form, which has none
    production_date: dt.date
    serial: str  # kept as text: leading zeros are part of the code
    cascade: bool = False
    cascade_product_type: ProductType | None = None  # meaning unverified

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (enums as text, the date as ISO 8601)."""
        return {
            "code": self.code,
            "vendor": self.vendor,
            "product_type": self.product_type.label,
            "battery_type": self.battery_type.value,
            "battery_chemistry": self.battery_type.chemistry,
            "battery_type_verified": self.battery_type.verified,
            "specification": self.specification,
            "traceability": self.traceability,
            "production_date": self.production_date.isoformat(),
            "serial": self.serial,
            "cascade": self.cascade,
            "cascade_product_type": (
                self.cascade_product_type.label if self.cascade_product_type else None
            ),
        }


class InvalidCode(ValueError):
    """A code that breaks the rules; carries every problem found, not just the first."""

    def __init__(self, problems: list[CodeProblem], raw: str) -> None:
        self.problems = list(problems)
        self.raw = raw
        summary = "; ".join(str(p) for p in self.problems)
        super().__init__(f"invalid battery code {raw!r}: {summary}")


@dataclass(frozen=True)
class CodeReport:
    """The verdict on a code, for callers that must not raise (CLI, tracker).

    ``readable`` holds the fields that passed their own checks (None for the
    rest) even when the code as a whole is invalid, so a report can still say
    which vendor an invalid code claims to come from.
    """

    valid: bool
    code: str
    fields: PackCode | None
    errors: list[str]
    problems: tuple[CodeProblem, ...] = ()
    readable: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()  # true of a valid code, but worth saying (a future date)

    def to_dict(self) -> dict[str, Any]:
        """One JSON-ready object: valid, code, each field (None if unreadable), errors."""
        data = self.fields.to_dict() if self.fields is not None else dict(self.readable)
        data.pop("code", None)
        return {"valid": self.valid, "code": self.code, **data, "errors": list(self.errors)}


# --- public API ------------------------------------------------------------


def _build(text: str, fields: Mapping[str, Any]) -> PackCode:
    """Make the PackCode for a code the scan (``code_checks.scan``) found no problem with."""
    return PackCode(
        code=text,
        vendor=fields["vendor"],
        product_type=ProductType(text[3]),
        battery_type=BatteryType(text[4]),
        specification=fields["specification"],
        traceability=fields["traceability"],
        production_date=dt.date.fromisoformat(fields["production_date"]),
        serial=fields["serial"],
        cascade=fields["cascade"],
        cascade_product_type=ProductType(text[-1]) if fields["cascade"] else None,
    )


def parse_code(text: str) -> PackCode:
    """Parse a code strictly (no trimming, no case folding).

    Raises :class:`InvalidCode` listing every problem. Strict because a code
    that needs repair is itself something to report; use :func:`normalise_raw`
    first for text read off a CAN bus.
    """
    fields, problems = scan_any(text)
    if problems:
        raise InvalidCode(problems, text if isinstance(text, str) else repr(text))
    return _build(text, fields)


def check_code(text: str) -> CodeReport:
    """Validate without raising: what the CLI and the tracker use."""
    fields, problems = scan_any(text)
    raw = text if isinstance(text, str) else repr(text)
    if problems:
        return CodeReport(
            valid=False,
            code=raw,
            fields=None,
            errors=[str(p) for p in problems],
            problems=tuple(problems),
            readable=MappingProxyType(fields),
        )
    return CodeReport(
        valid=True,
        code=raw,
        fields=_build(raw, fields),
        errors=[],
        readable=MappingProxyType(fields),
    )


PRODUCT_NAMES = {"P": "pack", "M": "module", "C": "cell"}


MAX_SERIAL_CHARS = 64


def check_serial(text: str) -> CodeReport:
    """A maker's pack serial (``[pack_code] format = "serial"``), not a GB/T 34014 code:
    identity and swap detection need only that it is printable ASCII text of 1-64
    characters, the same every time; it has no fields to parse."""
    problems = []
    if not text:
        problems.append(CodeProblem(None, "empty", "no characters: not a serial"))
    elif len(text) > MAX_SERIAL_CHARS:
        problems.append(
            CodeProblem(None, "too_long", f"{len(text)} characters, at most {MAX_SERIAL_CHARS}")
        )
    for i, ch in enumerate(text[:MAX_SERIAL_CHARS], start=1):
        if not (ch.isascii() and ch.isprintable()):
            problems.append(CodeProblem((i, i), "not_printable", f"{ch!r} is not printable ASCII"))
            break
    return CodeReport(not problems, text, None, [str(p) for p in problems], tuple(problems))


def check_pack_code(text: str, today: dt.date | None = None) -> CodeReport:
    """A code the BMS presents as its *pack's*: everything ``check_code`` checks, and
    position 4 must say P (a module or cell code is not the pack's identity). With
    ``today`` (the vehicle's trusted date), a production date after it is a warning: the
    code stays valid (a clock can be wrong too), but it is reported, not silently taken."""
    report = check_code(text)
    problems = list(report.problems)
    # position 4 is the product type only in a code of a code's length (24, cascade 19)
    product = text[3] if isinstance(text, str) and len(text) in (19, 24) else None
    if product in ("M", "C"):
        problems.append(
            CodeProblem(
                (4, 4),
                "not_a_pack_code",
                f"product type {product} ({PRODUCT_NAMES[product]}) is not P (pack): "
                f"the BMS presented a {PRODUCT_NAMES[product]} code, not the pack's",
            )
        )
    warnings = list(report.warnings)
    if today is not None:
        warnings += future_date_warnings(report, today, "the vehicle's date")
    if len(problems) == len(report.problems):
        return CodeReport(
            report.valid,
            report.code,
            report.fields,
            report.errors,
            report.problems,
            report.readable,
            tuple(warnings),
        )
    return CodeReport(
        valid=False,
        code=report.code,
        fields=None,
        errors=[str(p) for p in problems],
        problems=tuple(problems),
        readable=report.readable,
        warnings=tuple(warnings),
    )


def future_date_warnings(
    report: CodeReport, today: dt.date, whose: str = "today's date"
) -> list[str]:
    """A valid code whose production date is after ``today``: the warning to show."""
    if report.fields is None or report.fields.production_date <= today:
        return []
    made = report.fields.production_date.isoformat()
    return [f"production date {made} is after {whose} {today.isoformat()}"]


def normalise_raw(raw: str | bytes) -> str:
    """Strip trailing NUL and space padding from a code read off the bus.

    BMSs send the code in fixed-size CAN pages and pad the last page with NULs
    (sometimes spaces). Only trailing padding goes: anything else wrong stays
    for :func:`parse_code` to report. Bytes are decoded as ASCII; a non-ASCII
    byte becomes U+FFFD so that it is reported, not silently dropped.
    """
    text = raw.decode("ascii", errors="replace") if isinstance(raw, bytes) else raw
    return text.rstrip("\x00 ")


def _letter(value: ProductType | BatteryType | str) -> str:
    return value.value if isinstance(value, Enum) else value


def _check_part(name: str, value: str, length: int) -> None:
    if len(value) != length:
        raise ValueError(f"{name} must be {length} characters, got {value!r}")


def _serial_text(serial: int) -> str:
    if not 0 <= serial <= 9_999_999:
        raise ValueError(f"serial must be 0-9999999, got {serial}")
    return f"{serial:07d}"


def make_code(
    vendor: str,
    product_type: ProductType | str,
    battery_type: BatteryType | str,
    spec: str,
    trace: str,
    date: dt.date,
    serial: int,
) -> str:
    """Assemble a regular 24-character code (for simulators and tests).

    Raises ValueError for a part of the wrong size or a date out of range, and
    :class:`InvalidCode` if the assembled code does not parse.
    """
    _check_part("vendor", vendor, 3)
    _check_part("product_type", _letter(product_type), 1)
    _check_part("battery_type", _letter(battery_type), 1)
    _check_part("spec", spec, 2)
    _check_part("trace", trace, 7)
    parts = [vendor, _letter(product_type), _letter(battery_type), spec, trace]
    code = "".join([*parts, encode_date(date), _serial_text(serial)])
    parse_code(code)
    return code


def make_cascade_code(
    vendor: str,
    product_type: ProductType | str,
    battery_type: BatteryType | str,
    spec: str,
    date: dt.date,
    serial: int,
    cascade_product_type: ProductType | str,
) -> str:
    """Assemble a 19-character cascade-form code (Tractus-X layout; see ``code_format``)."""
    _check_part("vendor", vendor, 3)
    _check_part("product_type", _letter(product_type), 1)
    _check_part("battery_type", _letter(battery_type), 1)
    _check_part("spec", spec, 2)
    _check_part("cascade_product_type", _letter(cascade_product_type), 1)
    parts = [vendor, _letter(product_type), _letter(battery_type), spec]
    tail = ["R", _letter(cascade_product_type)]
    code = "".join([*parts, encode_date(date), _serial_text(serial), *tail])
    parse_code(code)
    return code
