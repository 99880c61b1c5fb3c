"""What the decoder hands the core: readings and code pages, plain values with their time.

Defined here, not in the decoder, so the pure core never imports the CAN stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class Reading(NamedTuple):
    """One value of one metric at one time (seconds since the epoch). A named tuple:
    immutable, and four times cheaper to build than a frozen dataclass (per frame)."""

    metric: str
    value: float
    time: float


@dataclass(frozen=True, slots=True)
class CodePage:
    """One page of the multiplexed pack code: page number and its text."""

    page: int
    text: str
    time: float
