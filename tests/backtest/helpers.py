"""Shared pieces of the backtest tests: the user's strategy settings and scripted prints."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from gridbot.backtest.broker import Limits
from gridbot.backtest.engine import Backtest, Settings
from gridbot.backtest.paths import PrintSegment
from gridbot.config import PROJECT_ROOT, load
from services.strategy.settings import strategy_config
from sim.market.prints import Print
from sim.market.timefmt import parse_start

# A Monday morning in regular hours.
MONDAY_10_ET = parse_start("2025-06-02T10:00:00-04:00")
NS = 1_000_000_000
LOTS = PROJECT_ROOT / "config" / "lots.csv"


def settings(every_print: bool = False, partial_fills: bool = False) -> Settings:
    """The user's strategy (config defaults, the shipped 88-level lot map) and the executor's defaults."""
    cfg = load(overrides={"general": {"lot_map": str(LOTS)}})
    return Settings(strategy=strategy_config(cfg), limits=Limits(), every_print=every_print,
                    partial_fills=partial_fills)


def prints(prices: Sequence[str], start_ns: int = MONDAY_10_ET, step_s: float = 1.0, size: int = 100) -> list[Print]:
    """One print per price, ``step_s`` seconds apart from ``start_ns``."""
    return [Print(start_ns + int(i * step_s * NS), Decimal(p), size) for i, p in enumerate(prices)]


def run_prints(ps: Sequence[Print], every_print: bool = False, keep_events: bool = True) -> Backtest:
    backtest = Backtest(settings(every_print), keep_events=keep_events)
    backtest.play(PrintSegment(ps))
    return backtest
