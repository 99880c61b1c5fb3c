"""GB/T 34014-2017 traction-battery codes: parse, validate, encode.

Pure: no I/O, no clock. The agent reads a pack code from the BMS and must say
precisely *why* a code is wrong (a damaged or forged code has to be reported),
so validation collects every problem at once instead of stopping at the first.

The regular code (24 characters, upper-case ASCII letters and digits, no check
digit)::

    positions  1-3   vendor code          assigned by the national filing system
               4     product type         P pack, M module, C cell
               5     battery type         A-G or Z
               6-7   specification code   maker-defined, filed
               8-14  traceability code    maker-defined, filed
               15    production year      1-9 = 2011-2019, A = 2020 ... Y = 2041
               16    production month     1-9, A = 10, B = 11, C = 12
               17    production day       1-9, A = 10 ... Y = 31
               18-24 serial number        7 digits, the day's sequence

Letters used for year and day skip I, O, Q and Z, so the year code runs out
at Y = 2041; what comes after 2041 is not known (no wrap-around is assumed).

Cascade use (second life)
-------------------------
Verified:

* GB/T 34014-2017 section 4.2 (Chinese text as published on chinaautoregs.com,
  item 4357): the code structure also applies to cascade-use packs, modules and
  cells; they are re-coded under the same rules, the original code is kept,
  and the re-coded form carries no traceability code.
* Eclipse Tractus-X semantic model ``io.catenax.traction_battery_code``
  (1.0.0 and 2.0.0, repository eclipse-tractusx/sldt-semantic-models, file
  ``TractionBatteryCode.ttl``) has a second alternative in its regular
  expression::

      ^[A-Z0-9]{3}[PMC][A-GZ][A-Z0-9]{2}[1-9A-GH-NPR-Y][1-9A-C][0-9A-GH-NPR-Y][0-9]{7}R[PMC]$

  i.e. vendor, product type, battery type, specification, date, serial - no
  traceability code - then ``R`` and a product-type letter: 19 characters.
  That is what :func:`parse_code` accepts as the cascade form.

Not verified:

* The model's prose says "24 or 18 characters"; its regex gives 19. We follow
  the regex (an independent cell-scanner app also accepts 24 or 19).
* What the trailing product-type letter means (the type of the product before
  or after re-coding). It is exposed as ``cascade_product_type`` without
  interpretation.
* That GB/T 34014 itself puts ``R`` + product type at the end (we have not
  seen the standard's tables). A 24-character code followed by ``R`` + product
  type is *not* accepted: nothing we found supports that form.

Battery types A, C, D, F, G are as listed in secondary sources only; they are
marked ``verified=False`` (see :data:`BATTERY_TYPES`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any

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

CODE_LENGTH = 24
CASCADE_LENGTH = 19  # Tractus-X cascade form; see the module docstring

_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_DIGITS = "0123456789"
# Letters allowed in year and day codes: A-Y without I, O, Q (Z never used).
_DATE_LETTERS = "ABCDEFGHJKLMNPRSTUVWXY"


class ProductType(str, Enum):
    """Position 4: what kind of product the code names."""

    PACK = "P"
    MODULE = "M"
    CELL = "C"

    @property
    def label(self) -> str:
        """Lowercase name ("pack", "module", "cell"), as Tractus-X spells it."""
        return self.name.lower()


@dataclass(frozen=True)
class BatteryTypeInfo:
    """What a battery-type letter means and whether a primary source backs it."""

    letter: str
    chemistry: str
    verified: bool


BATTERY_TYPES: Mapping[str, BatteryTypeInfo] = MappingProxyType(
    {
        info.letter: info
        for info in (
            BatteryTypeInfo("A", "nickel-metal hydride", verified=False),
            BatteryTypeInfo("B", "lithium iron phosphate", verified=True),
            BatteryTypeInfo("C", "lithium manganese oxide", verified=False),
            BatteryTypeInfo("D", "lithium cobalt oxide", verified=False),
            BatteryTypeInfo("E", "ternary (NCM/NCA)", verified=True),
            BatteryTypeInfo("F", "supercapacitor", verified=False),
            BatteryTypeInfo("G", "lithium titanate", verified=False),
            BatteryTypeInfo("Z", "other", verified=True),
        )
    }
)


class BatteryType(str, Enum):
    """Position 5: the cell chemistry; descriptions live in :data:`BATTERY_TYPES`."""

    A = "A"
    B = "B"
    C = "C"
    D = "D"
    E = "E"
    F = "F"
    G = "G"
    Z = "Z"

    @property
    def chemistry(self) -> str:
        return BATTERY_TYPES[self.value].chemistry

    @property
    def verified(self) -> bool:
        """False where only secondary sources give the meaning of the letter."""
        return BATTERY_TYPES[self.value].verified


def _letters_from(start: int, digits: str, letters: str) -> dict[str, int]:
    chars = digits + letters
    return {ch: start + i for i, ch in enumerate(chars)}


YEAR_CODES: Mapping[str, int] = MappingProxyType(_letters_from(2011, "123456789", _DATE_LETTERS))
MONTH_CODES: Mapping[str, int] = MappingProxyType(_letters_from(1, "123456789", "ABC"))
DAY_CODES: Mapping[str, int] = MappingProxyType(_letters_from(1, "123456789", _DATE_LETTERS))
_YEAR_CHARS = {v: k for k, v in YEAR_CODES.items()}
_MONTH_CHARS = {v: k for k, v in MONTH_CODES.items()}
_DAY_CHARS = {v: k for k, v in DAY_CODES.items()}

MIN_DATE = dt.date(min(YEAR_CODES.values()), 1, 1)
MAX_DATE = dt.date(max(YEAR_CODES.values()), 12, 31)


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


# --- layouts ---------------------------------------------------------------

# field name -> 1-based inclusive span, for the two accepted lengths
_REGULAR: dict[str, tuple[int, int]] = {
    "vendor": (1, 3),
    "product_type": (4, 4),
    "battery_type": (5, 5),
    "specification": (6, 7),
    "traceability": (8, 14),
    "year": (15, 15),
    "month": (16, 16),
    "day": (17, 17),
    "serial": (18, 24),
}
_CASCADE: dict[str, tuple[int, int]] = {
    "vendor": (1, 3),
    "product_type": (4, 4),
    "battery_type": (5, 5),
    "specification": (6, 7),
    "year": (8, 8),
    "month": (9, 9),
    "day": (10, 10),
    "serial": (11, 17),
    "cascade_marker": (18, 18),
    "cascade_product_type": (19, 19),
}

_EMPTY_FIELDS: dict[str, Any] = {
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


def _scan(text: str) -> tuple[dict[str, Any], list[CodeProblem]]:
    """Check everything; return the readable fields and every problem.

    Field values are None where their characters failed a check. Each position
    gets at most one problem: a character outside A-Z/0-9 is reported as such
    and not again by its field's rule.
    """
    problems: list[CodeProblem] = []
    bad_positions: set[int] = set()
    for i, ch in enumerate(text, start=1):
        if ch not in _ALPHABET:
            problems.append(_char_problem(i, ch))
            bad_positions.add(i)

    n = len(text)
    if n == CODE_LENGTH:
        layout, cascade = _REGULAR, False
    elif n == CASCADE_LENGTH and text[17] == "R":
        layout, cascade = _CASCADE, True
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
        return dict(_EMPTY_FIELDS), problems

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

    fields: dict[str, Any] = dict(_EMPTY_FIELDS)
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
        if pos not in bad_positions and ch not in _DIGITS:
            problems.append(
                CodeProblem((pos, pos), "serial", f"serial number character {ch!r} is not a digit")
            )
        serial_ok = serial_ok and ch in _DIGITS
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


# --- public API ------------------------------------------------------------


def _build(text: str, fields: Mapping[str, Any]) -> PackCode:
    """Make the PackCode for a code that :func:`_scan` found no problem with."""
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


def _scan_any(text: object) -> tuple[dict[str, Any], list[CodeProblem]]:
    if not isinstance(text, str):
        problem = CodeProblem(None, "type", f"expected text, got {type(text).__name__}")
        return dict(_EMPTY_FIELDS), [problem]
    return _scan(text)


def parse_code(text: str) -> PackCode:
    """Parse a code strictly (no trimming, no case folding).

    Raises :class:`InvalidCode` listing every problem. Strict because a code
    that needs repair is itself something to report; use :func:`normalise_raw`
    first for text read off a CAN bus.
    """
    fields, problems = _scan_any(text)
    if problems:
        raise InvalidCode(problems, text if isinstance(text, str) else repr(text))
    return _build(text, fields)


def check_code(text: str) -> CodeReport:
    """Validate without raising: what the CLI and the tracker use."""
    fields, problems = _scan_any(text)
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


def check_pack_code(text: str, today: dt.date | None = None) -> CodeReport:
    """A code the BMS presents as its *pack's*: everything ``check_code`` checks, and
    position 4 must say P (a module or cell code is not the pack's identity). With
    ``today`` (the vehicle's trusted date), a production date after it is a warning: the
    code stays valid (a clock can be wrong too), but it is reported, not silently taken."""
    report = check_code(text)
    problems = list(report.problems)
    product = text[3] if isinstance(text, str) and len(text) >= 4 else None
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


def encode_date(day: dt.date) -> str:
    """The 3-character year/month/day code for a production date (2011-2041)."""
    if not MIN_DATE <= day <= MAX_DATE:
        raise ValueError(
            f"production date {day.isoformat()} cannot be encoded: "
            f"year codes cover {MIN_DATE.year}-{MAX_DATE.year}"
        )
    return _YEAR_CHARS[day.year] + _MONTH_CHARS[day.month] + _DAY_CHARS[day.day]


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
    """Assemble a 19-character cascade-form code (Tractus-X layout; see module docs)."""
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
