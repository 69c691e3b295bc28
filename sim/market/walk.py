"""The `walk` source: an endless, seeded random walk with TQQQ-like volatility, for a demo that never runs out.

Each step is a geometric Brownian motion increment: ``price x exp(sigma x z - sigma^2 / 2)`` with ``sigma`` the
annual volatility scaled to the step (252 sessions of 6.5 hours a year, the usual convention), ``z`` a standard
normal draw from ``random.Random(seed)``. The same seed gives the same walk, print for print. Prices are rounded
half-up to the cent and never go below one cent; sizes are drawn between one share and ``MAX_SIZE``. The walk
prints around the clock (weekends too): it is a demo market, not a calendar.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from sim.market.prints import CENT, NS_PER_SECOND, Print, to_cent

TRADING_SECONDS_PER_YEAR = 252 * 6.5 * 3600
MAX_SIZE = 500  # shares


class WalkSource:
    """Iterate an endless seeded random walk (see the module docstring)."""

    name = "walk"

    def __init__(
        self, start_ns: int, first_price: Decimal, annual_volatility: float, interval_s: float, seed: int
    ) -> None:
        if first_price <= 0:
            raise ValueError(f"sim.walk_price must be positive, was {first_price}")
        if not 0 <= annual_volatility < 10:
            raise ValueError(
                f"sim.walk_volatility must be an annual fraction like 0.65, was {annual_volatility}"
            )
        if interval_s <= 0:
            raise ValueError(f"sim.walk_interval must be a positive number of seconds, was {interval_s}")
        self.start_ns = start_ns
        self.first_price = first_price
        self.interval_ns = int(interval_s * NS_PER_SECOND)
        self.step_sigma = annual_volatility * math.sqrt(interval_s / TRADING_SECONDS_PER_YEAR)
        self.seed = seed
        self.first_step = 0

    def resume_after(self, ts_ns: int) -> None:
        """Continue with the first step later than ``ts_ns`` (same seed, same walk). Call before iterating."""
        if ts_ns >= self.start_ns:
            self.first_step = (ts_ns - self.start_ns) // self.interval_ns + 1

    def __iter__(self) -> Iterator[Print]:
        rng = random.Random(self.seed)
        level = float(self.first_price)
        sigma = self.step_sigma
        i = 0
        while i < self.first_step:  # resuming: draw what the skipped steps drew, so the walk stays the same
            rng.randint(1, MAX_SIZE)
            level *= math.exp(sigma * rng.gauss(0.0, 1.0) - sigma * sigma / 2)
            i += 1
        while True:
            price = max(CENT, to_cent(Decimal(repr(level))))
            p = Print(self.start_ns + i * self.interval_ns, price, rng.randint(1, MAX_SIZE))
            yield p
            level *= math.exp(sigma * rng.gauss(0.0, 1.0) - sigma * sigma / 2)
            i += 1

    def progress(self) -> dict[str, Any]:
        """Describe the walk (the driver's status has the last print)."""
        return {
            "seed": self.seed,
            "first_price": str(self.first_price),
            "step_sigma": round(self.step_sigma, 6),
            "interval_s": self.interval_ns / NS_PER_SECOND,
        }
