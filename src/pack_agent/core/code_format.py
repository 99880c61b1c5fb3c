"""The GB/T 34014-2017 code format as data: lengths, letters, date alphabets, layouts.

Owns what the standard (and the Tractus-X cascade form) fixes: the product and
battery-type letters, the year/month/day alphabets and their date coding, and the
two layouts (which positions hold which field). The checks that apply these tables
to a code are in :mod:`pack_agent.core.code_checks`; the public API (parse, check,
make) is :mod:`pack_agent.core.codes`, which re-exports the names tests and
callers use (lengths, letters, date tables, ``encode_date``). Pure: no I/O, no clock.

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
  That is what :func:`pack_agent.core.codes.parse_code` accepts as the cascade form.

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
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

__all__ = [
    "ALPHABET",
    "BATTERY_TYPES",
    "CASCADE_LAYOUT",
    "CASCADE_LENGTH",
    "CODE_LENGTH",
    "DAY_CODES",
    "DIGITS",
    "MAX_DATE",
    "MIN_DATE",
    "MONTH_CODES",
    "REGULAR_LAYOUT",
    "YEAR_CODES",
    "BatteryType",
    "BatteryTypeInfo",
    "ProductType",
    "encode_date",
]

CODE_LENGTH = 24
CASCADE_LENGTH = 19  # Tractus-X cascade form; see the module docstring

ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
DIGITS = "0123456789"
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

# field name -> 1-based inclusive span, for the two accepted lengths
REGULAR_LAYOUT: dict[str, tuple[int, int]] = {
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
CASCADE_LAYOUT: dict[str, tuple[int, int]] = {
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


def encode_date(day: dt.date) -> str:
    """The 3-character year/month/day code for a production date (2011-2041)."""
    if not MIN_DATE <= day <= MAX_DATE:
        raise ValueError(
            f"production date {day.isoformat()} cannot be encoded: "
            f"year codes cover {MIN_DATE.year}-{MAX_DATE.year}"
        )
    return _YEAR_CHARS[day.year] + _MONTH_CHARS[day.month] + _DAY_CHARS[day.day]
