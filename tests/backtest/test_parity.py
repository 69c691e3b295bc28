"""Parity: one scripted price path through the backtester and through the full running system on the sim.

The system is every program as a real process (bus, sim with its paper broker and Alpaca stream, executor,
statekeeper, feed, strategy; tests/services/strategy/system.py starts them on free loopback ports). Prices go to the
sim one at a time and the system settles after each. The backtester plays the same prices in-process. Both must
make the very same fills (order, side, shares, price, commission), the same P&L, and end with the same lots and live
orders.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from sim.market.timefmt import parse_start
from tests.backtest.helpers import prints, run_prints
from tests.services.strategy.system import SIM_START, System

pytestmark = pytest.mark.slow
D = Decimal

# Level 0 at 100.00; L1 (99.00) at 98.90, L2 (98.01) at 98.00, L3 (97.03) gapped through to 96.50; their SELLs
# (97.47, 98.98, 99.89) on the way up; L0's (101.00) at 101.20 closes cycle 1; the next print starts cycle 2 at
# 101.10, whose L1 (round(101.10 x 0.99) = 100.09) fills at 100.00 and sells (101.00) at 101.50.
PATH = [
    "100.00", "99.20", "98.90", "98.00", "96.50", "97.60", "98.99", "99.89", "100.40", "101.20",
    "101.10", "100.00", "101.50",
]


def _system_fills(orders: list[dict[str, Any]]) -> list[tuple[str, str, int, Decimal, Decimal]]:
    fills = [
        (f["exec_id"], o["order_ref"], o["action"], f["shares"], Decimal(f["price"]), Decimal(f["commission"]))
        for o in orders
        for f in o["fills"]
    ]
    # execIds start with the broker's execution counter in hex: their order is the order of the fills.
    return [fill[1:] for fill in sorted(fills)]


async def _through_the_system(tmp_path: Path) -> tuple[list[Any], Any, set[str]]:
    async with System(tmp_path) as system:
        # The first print may reach the strategy before its own start-up is complete; the same price again
        # changes nothing else (no order rests at 100.00), so repeat it until Level 0 is in.
        deadline = time.monotonic() + 20
        await system.price(PATH[0])
        while not (system.state and system.state.lots):
            assert time.monotonic() < deadline, f"no Level 0 within 20 s:\n{system.logs_text()}"
            await asyncio.sleep(0.5)
            if not (system.state and system.state.lots):
                await system.price(PATH[0])
        await system.settle("Level 0 and its queue")
        for price in PATH[1:]:
            await system.price(price)
            await system.settle(f"the system to settle after {price}")
        live = {o["order_ref"] for o in await system.live_orders()}
        return await system.orders(), system.state, live


def test_the_backtester_and_the_running_system_make_the_same_fills_and_pnl(tmp_path: Path) -> None:
    orders, state, live = asyncio.run(asyncio.wait_for(_through_the_system(tmp_path), 120))

    backtest = run_prints(prints(PATH, start_ns=parse_start(SIM_START)))

    ours = [
        (ex.order_ref, {"BOT": "BUY", "SLD": "SELL"}[ex.side], ex.shares, ex.price, ex.commission)
        for ex in backtest.broker.engine.executions
    ]
    assert _system_fills(orders) == ours
    assert len(ours) == 11 and backtest.state.cycle == 2
    assert state is not None
    assert state.realized_pnl == backtest.state.realized_pnl
    # By hand, each less two 1.00 commissions: L3 77 x 1.10, L2 82 x 0.99, L1 88 x 0.99, L0 94 x 1.20, c2 L1 88 x 1.50.
    assert backtest.state.realized_pnl == D("82.70") + D("79.18") + D("85.12") + D("110.80") + D("130.00")
    assert [(lot.cycle, lot.level, lot.quantity, lot.purchase_price, lot.fees) for lot in state.lots] == [
        (lot.cycle, lot.level, lot.quantity, lot.purchase_price, lot.fees) for lot in backtest.state.lots
    ]
    assert live == {o.order_ref for o in backtest.broker.engine.live.values()}
