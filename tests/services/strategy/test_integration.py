"""The strategy with the real bus, sim (broker and stream), feed, executor and statekeeper, as processes.

Prices are printed one by one through the sim's control endpoint; after each print the test waits until the
system has settled (the strategy has nothing left to do, and the broker's live orders are the state's working
orders), then checks the broker's own record of every order and fill.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from core.intent import parse
from core.prices import sell_target, trigger_chain
from sim.control import call
from tests.services.strategy.system import System

D = Decimal
pytestmark = pytest.mark.slow


def run(coro: Coroutine[Any, Any, None], timeout: float = 90.0) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout))


def grid(orders: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in orders if str(o.get("order_ref", "")).startswith("tqgrid1")]


def max_live_per_side(orders: list[dict[str, Any]]) -> dict[str, int]:
    """The most orders live at once on each side, from the broker's status histories."""
    edges: list[tuple[int, int, str]] = []
    for o in orders:
        times = [h["ts_ns"] for h in o["history"]]
        live = [h["ts_ns"] for h in o["history"] if h["status"] in ("PreSubmitted", "Submitted")]
        if not live:
            continue
        final = [h["ts_ns"] for h in o["history"] if h["status"] in ("Filled", "Cancelled", "ApiCancelled")]
        edges.append((min(live), 1, o["action"]))
        if final:
            edges.append((max(final) if final else max(times), -1, o["action"]))
    count = {"BUY": 0, "SELL": 0}
    peak = {"BUY": 0, "SELL": 0}
    # At one instant, ends before starts: an order cancelled and its successor placed in one step do not overlap.
    for _, delta, side in sorted(edges, key=lambda e: (e[0], e[1])):
        count[side] += delta
        peak[side] = max(peak[side], count[side])
    return peak


def test_a_drop_of_5_percent_and_a_rise_of_6_percent_closes_every_round_trip(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with System(tmp_path) as system:
            await system.price("100.00")
            await system.settle("Level 0")
            await system.walk("99.75", "95.00", "0.25")
            assert system.state is not None
            assert sorted(lot.level for lot in system.state.lots) == [0, 1, 2, 3, 4, 5]

            await system.walk("95.25", "101.00", "0.25")
            await system.price("101.00")  # the tick after the cycle closed starts the new Level 0
            await system.settle("the new cycle's Level 0")

            orders = grid(await system.orders())
            triggers = trigger_chain(D("100.00"), 6)
            buys = [o for o in orders if o["action"] == "BUY" and o["filled"] and parse(o["order_ref"]).cycle == 1]
            assert [parse(o["order_ref"]).level for o in buys] == [0, 1, 2, 3, 4, 5]
            for o in buys[1:]:
                level = parse(o["order_ref"]).level
                assert o["limit"] == str(triggers[level])
                assert o["conditions"][0]["price"] == str(triggers[level]) and not o["conditions"][0]["is_more"]
                assert triggers[level] - D("0.25") < D(o["avg_fill_price"]) <= triggers[level]
                assert o["tif"] == "GTC" and o["outside_rth"] and o["conditions_ignore_rth"]
            sells = [o for o in orders if o["action"] == "SELL" and parse(o["order_ref"]).cycle == 1]
            assert sorted(parse(o["order_ref"]).level for o in sells) == [0, 1, 2, 3, 4, 5]
            for o in sells:
                purchase = parse(o["order_ref"]).purchase_price
                assert purchase is not None and o["status"] == "Filled"
                assert o["limit"] == str(sell_target(purchase))
                assert sell_target(purchase) <= D(o["avg_fill_price"]) < sell_target(purchase) + D("0.25")
            assert system.state is not None and system.state.cycle == 2
            assert [o["order_ref"] for o in orders if parse(o["order_ref"]).cycle == 2][:1] == ["tqgrid1 c2 L0 BUY"]
            assert all(parse(o["order_ref"]).cycle == 2 for o in await system.live_orders())

    run(scenario())


def test_ten_ticks_at_once_at_start_make_one_level0_order(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with System(tmp_path) as system:
            await asyncio.gather(*(system.price(f"100.0{n}") for n in range(10)))
            await system.settle("Level 0 and the queue")
            await asyncio.sleep(0.5)

            level0 = [o for o in grid(await system.orders()) if parse(o["order_ref"]).level == 0]
            assert [(o["order_ref"], o["action"]) for o in level0 if o["action"] == "BUY"] == [
                ("tqgrid1 c1 L0 BUY", "BUY")
            ]

    run(scenario())


def test_a_drop_of_30_percent_parks_sells_and_a_recovery_sells_every_lot(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with System(tmp_path) as system:
            await system.price("100.00")
            await system.settle("Level 0")
            await system.walk("99.50", "70.00", "0.50")

            state = system.state
            assert state is not None
            held = [lot.level for lot in state.lots]
            assert sorted(held) == list(range(36))  # trigger(35) = 70.35, trigger(36) = 69.65
            live = await system.live_orders()
            live_sells = {o["order_ref"] for o in live if o["action"] == "SELL"}
            assert len(live_sells) == 18
            lowest = sorted(state.lots, key=lambda lot: lot.sell_target_price)[:18]
            assert live_sells == {lot.sell_key for lot in lowest}
            assert sum(lot.sell == "parked" for lot in state.lots) == 18
            assert sorted(parse(o["order_ref"]).level for o in live if o["action"] == "BUY") == [36, 37, 38]

            await system.walk("70.50", "101.00", "0.50")

            assert system.state is not None and system.state.cycle == 2
            orders = grid(await system.orders())
            sold = {parse(o["order_ref"]).level for o in orders if o["action"] == "SELL" and o["status"] == "Filled"}
            assert sold == set(range(36))
            peak = max_live_per_side(orders)
            assert peak["SELL"] <= 18 and peak["BUY"] <= 4, peak

    run(scenario(), timeout=150)


def test_a_buy_filled_in_three_pieces_makes_one_lot(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with System(tmp_path, sim={"partial_fills": True}) as system:
            await system.price("100.00", size=200)
            await system.settle("Level 0")
            for size in (30, 30, 28):
                await system.price("99.00", size=size)
            await system.settle("the level-1 lot")

            orders = {o["order_ref"]: o for o in grid(await system.orders())}
            level1 = orders["tqgrid1 c1 L1 BUY"]
            assert [f["shares"] for f in level1["fills"]] == [30, 30, 28]
            assert system.state is not None
            lot1 = next(lot for lot in system.state.lots if lot.level == 1)
            assert (lot1.quantity, lot1.purchase_price) == (88, D("99.00"))
            sell = orders["tqgrid1 c1 L1 SELL 99.00"]
            assert (sell["quantity"], sell["limit"], sell["status"]) == (88, "99.99", "Submitted")

    run(scenario())


def test_a_gap_down_through_three_triggers_buys_three_lots_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with System(tmp_path) as system:
            await system.price("100.00")
            await system.settle("Level 0")
            await system.price("99.50")
            # One print below the triggers of levels 1, 2 and 3 (99.00, 98.01, 97.03), above level 4's (96.06).
            await system.price("96.50")
            await system.settle("the three lots")

            orders = {o["order_ref"]: o for o in grid(await system.orders())}
            for level in (1, 2, 3):
                assert orders[f"tqgrid1 c1 L{level} BUY"]["avg_fill_price"] == "96.5000"
            live = await system.live_orders()
            assert sorted(parse(o["order_ref"]).level for o in live if o["action"] == "BUY") == [4, 5, 6]
            assert sorted((o["order_ref"], o["limit"]) for o in live if o["action"] == "SELL") == [
                ("tqgrid1 c1 L0 SELL 100.00", "101.00"),
                ("tqgrid1 c1 L1 SELL 96.50", "97.47"),
                ("tqgrid1 c1 L2 SELL 96.50", "97.47"),
                ("tqgrid1 c1 L3 SELL 96.50", "97.47"),
            ]

    run(scenario())


def test_a_level0_that_ends_unfilled_is_tried_again_on_the_next_tick_under_a_new_key(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with System(tmp_path) as system:
            await asyncio.to_thread(call, system.control, "reject-next", 201)
            await system.price("100.00")
            await system.until(lambda: system.state is not None and system.state.level0_attempt == 1,
                               "the rejected first attempt in the state")
            await system.settle("nothing more on the tick before the rejection")
            assert [o["order_ref"] for o in grid(await system.orders())] == ["tqgrid1 c1 L0 BUY"]

            await system.price("100.10")
            await system.settle("the second attempt")

            level0 = [o for o in grid(await system.orders()) if o["action"] == "BUY" and
                      parse(o["order_ref"]).level == 0]
            assert [(o["order_ref"], o["filled"]) for o in level0] == [
                ("tqgrid1 c1 L0 BUY", 0), ("tqgrid1 c1 L0 BUY a2", 94)
            ]
            assert level0[1]["limit"] == "100.35"

    run(scenario())


def test_a_strategy_killed_and_restarted_places_nothing_twice(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with System(tmp_path) as system:
            await system.price("100.00")
            await system.settle("Level 0 and the queue")
            await system.price("99.00")  # level 1 fills; the strategy is killed while it reacts
            await system.restart("strategy")
            await system.price("99.00")
            await system.settle("the restarted strategy")

            refs = [o["order_ref"] for o in grid(await system.orders())]
            assert len(refs) == len(set(refs)), refs
            live = sorted(o["order_ref"] for o in await system.live_orders())
            assert live == ["tqgrid1 c1 L0 SELL 100.00", "tqgrid1 c1 L1 SELL 99.00", "tqgrid1 c1 L2 BUY",
                            "tqgrid1 c1 L3 BUY", "tqgrid1 c1 L4 BUY"]

    run(scenario())
