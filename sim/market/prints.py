"""The unit of market data in the sim: one trade print, and the price arithmetic shared by the sources."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")
NS_PER_SECOND = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Print:
    """One trade: when (UTC nanoseconds), at what price, how many shares."""

    ts_ns: int
    price: Decimal
    size: int


def to_cent(value: Decimal) -> Decimal:
    """Round to TQQQ's tick, half-up (the project's one rounding rule for prices)."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)
