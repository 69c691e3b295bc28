"""Scripted market sessions for the system tests (the sim's ``path`` source) and how to wait for them to settle."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from tests.system import checks
from tests.system.harness import System

# A Monday in regular hours: every order type trades and conditions are watched.
START = "2025-06-02T10:00:00-04:00"
CENT = Decimal("0.01")


@dataclass(frozen=True)
class Session:
    """A price path: ``lead_in`` seconds flat at the first price (one print a second), then each step ``step``
    seconds apart, then ``tail`` seconds flat at the last price."""

    name: str
    prices: tuple[str, ...]
    step: float = 10.0
    lead_in: int = 30
    tail: int = 30
    speed: float = 20.0

    def rows(self) -> list[tuple[float, str]]:
        rows = [(float(t), self.prices[0]) for t in range(self.lead_in)]
        t = float(self.lead_in)
        for price in self.prices[1:]:
            rows.append((t, price))
            t += self.step
        rows += [(t + i, self.prices[-1]) for i in range(self.tail)]
        return rows

    def sim_keys(self, path: Path) -> dict[str, Any]:
        return {"source": "path", "file": str(path), "start": START, "speed": self.speed, "loop": False}


def write_path(directory: Path, session: Session) -> Path:
    path = directory / f"{session.name}.csv"
    path.write_text("seconds,price\n" + "".join(f"{t:g},{p}\n" for t, p in session.rows()))
    return path


# Down through levels 1-3 (triggers 99.00, 98.01, 97.03 from an anchor of 100.00), up through every lot's target
# (98.00, 98.99, 99.99, 101.00): cycle 1 ends, and cycle 2's Level 0 is bought at 101.20.
CYCLE_SESSION = Session(
    "cycle",
    ("100.00", "99.50", "99.00", "98.50", "98.01", "97.50", "97.03", "96.80", "96.80", "97.50", "98.00", "98.50",
     "98.99", "99.50", "99.99", "100.50", "101.00", "101.20"),
)


def zigzag(name: str, start: str, swings: int, down_steps: int = 8, up_steps: int = 10, move: str = "0.005",
           step: float = 8.0) -> Session:
    """Swings of ``down_steps`` falls then ``up_steps`` rises of ``move`` each: every swing buys a few levels and
    sells them again, and rises far enough to end the cycle."""
    price = Decimal(start)
    prices = [price]
    factor_down, factor_up = 1 - Decimal(move), 1 + Decimal(move)
    for _ in range(swings):
        for factor in [factor_down] * down_steps + [factor_up] * up_steps:
            price = (price * factor).quantize(CENT, ROUND_HALF_UP)
            prices.append(price)
    return Session(name, tuple(str(p) for p in prices), step=step)


class Settled:
    """A condition for wait_until: the state agrees with the broker's log, and the log did not change since the
    previous look (so nothing was in flight between reading the state and reading the log)."""

    def __init__(self, system: System, cycle: int | None = None) -> None:
        self.system = system
        self.cycle = cycle
        self._last: tuple[Any, ...] | None = None
        self.problems: list[str] = []

    def __call__(self) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        status = self.system.status()
        orders = self.system.sim("orders")
        signature = tuple((o["perm_id"], o["status"], o["filled"], len(o["fills"])) for o in orders)
        previous, self._last = self._last, signature
        self.problems = checks.disagreements(status, orders) if status.get("lots") is not None else ["no state"]
        if self.cycle is not None and status.get("cycle") != self.cycle:
            self.problems.append(f"cycle {status.get('cycle')}, expected {self.cycle}")
        if not status.get("in_sync") or status.get("halted"):
            self.problems.append(f"in_sync {status.get('in_sync')}, halted {status.get('halted')}")
        if self.problems or signature != previous:
            return None
        return status, orders

    def explain(self) -> str:
        return self.system.explain() + "\nlast problems: " + "; ".join(self.problems)
