"""The strategy core: the desired set of grid orders and the diff to commands (DESIGN section 4, the user's examples)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import pytest

from core.intent import IntentKey, parse
from core.lotmap import LotMap, load_lot_map
from core.prices import sell_target, trigger
from core.strategy import (
    NS_PER_SECOND,
    Market,
    StrategyConfig,
    decide,
    desired_orders,
    diff,
    sell_budget,
)
from gridbot.config import PROJECT_ROOT
from proto.messages import CancelOrder, GridState, Lot, PlaceOrder, PriceCondition, Tick, WorkingOrder

D = Decimal
NOW = 1_750_000_000 * NS_PER_SECOND
USER_MAP = load_lot_map(PROJECT_ROOT / "config" / "lots.csv")
CONFIG = StrategyConfig(lot_map=USER_MAP)


# --------------------------------------------------------------------------------------------- builders


def tick(price: str, age_s: float = 0.5, seq: int = 1, symbol: str = "TQQQ") -> Tick:
    received = NOW - int(age_s * NS_PER_SECOND)
    return Tick(
        symbol=symbol, price=D(price), size=100, exchange_ts_ns=received, receive_ts_ns=received, seq=seq
    )


def market(price: str | None = "100.00", age_s: float = 0.5, **kw: object) -> Market:
    t = tick(price, age_s) if price is not None else None
    args: dict[str, object] = {"now_ns": NOW, "tick": t, "broker_connected": True}
    args.update(kw)
    return Market(**args)  # type: ignore[arg-type]


def lot(
    level: int,
    price: str,
    cycle: int = 1,
    quantity: int | None = None,
    sold: int = 0,
    sell: str = "parked",
    attempt: int | None = None,
) -> Lot:
    purchase = D(price)
    return Lot(
        cycle=cycle,
        level=level,
        quantity=USER_MAP[level] if quantity is None else quantity,
        purchase_price=purchase,
        sell_target_price=sell_target(purchase),
        buy_key=IntentKey.buy(cycle, level, attempt).encode(),
        sell_key=IntentKey.sell(cycle, level, purchase, attempt).encode(),
        sell=sell,  # type: ignore[arg-type]
        sold=sold,
    )


def working(key: str, quantity: int, limit: str, filled: int = 0, status: str = "Submitted") -> WorkingOrder:
    k = parse(key)
    return WorkingOrder(
        key=key,
        side=k.side.value,
        level=k.level,
        quantity=quantity,
        limit=D(limit),
        status=status,
        filled=filled,
    )


def live_buy(
    level: int, cycle: int = 1, attempt: int | None = None, anchor: str = "100.00", **kw: object
) -> WorkingOrder:
    key = IntentKey.buy(cycle, level, attempt).encode()
    return working(key, USER_MAP[level], str(trigger(D(anchor), level)), **kw)  # type: ignore[arg-type]


def live_sell(held: Lot, **kw: object) -> WorkingOrder:
    return working(held.sell_key, held.quantity - held.sold, str(held.sell_target_price), **kw)  # type: ignore[arg-type]


def state(
    lots: Sequence[Lot] = (), orders: Sequence[WorkingOrder] = (), anchor: str | None = None, **kw: object
) -> GridState:
    args: dict[str, object] = {
        "symbol": "TQQQ",
        "lots": list(lots),
        "orders": list(orders),
        "anchor_price": D(anchor) if anchor is not None else (lots[0].purchase_price if lots else None),
        "in_sync": True,
    }
    args.update(kw)
    return GridState(**args)  # type: ignore[arg-type]


def places(commands: tuple[object, ...]) -> list[PlaceOrder]:
    return [c for c in commands if isinstance(c, PlaceOrder)]


def cancels(commands: tuple[object, ...]) -> list[str]:
    return [c.key for c in commands if isinstance(c, CancelOrder)]


def ladder(levels: int, anchor: str = "100.00") -> list[Lot]:
    """Lots 0..levels-1, each bought exactly at its trigger (Level 0 at the anchor)."""
    return [lot(n, str(trigger(D(anchor), n))) for n in range(levels)]


# --------------------------------------------------------------------------------------------- Level 0


def test_a_fresh_tick_with_nothing_held_places_one_level0_buy() -> None:
    decision = decide(state(), market("100.00"), CONFIG)

    assert decision.commands == (
        PlaceOrder(
            ts_ns=NOW,
            key="tqgrid1 c1 L0 BUY",
            symbol="TQQQ",
            side="BUY",
            quantity=94,
            limit=D("100.25"),
            tif="DAY",
            outside_rth=True,
            immediate=True,
        ),
    )


def test_level0_limit_rounds_half_up_to_the_cent() -> None:
    # 120.69 x 1.0025 = 120.991725 -> 120.99; 99.98 x 1.0025 = 100.22995 -> 100.23
    assert places(decide(state(), market("120.69"), CONFIG).commands)[0].limit == D("120.99")
    assert places(decide(state(), market("99.98"), CONFIG).commands)[0].limit == D("100.23")


def test_ten_ticks_at_once_name_one_order() -> None:
    empty = state()
    keys = {
        cmd.key
        for n in range(10)
        for cmd in decide(
            empty, Market(now_ns=NOW, tick=tick(f"100.0{n}", seq=n + 1), broker_connected=True), CONFIG
        ).commands
    }
    assert keys == {"tqgrid1 c1 L0 BUY"}


def test_a_live_level0_order_is_kept_and_no_second_one_is_placed() -> None:
    s = state(orders=[working("tqgrid1 c1 L0 BUY", 94, "100.25")])

    for price in ("100.00", "101.50", "98.00"):
        decision = decide(s, market(price), CONFIG)
        assert decision.commands == ()
        assert set(decision.desired) == {"tqgrid1 c1 L0 BUY"}


def test_a_live_level0_order_is_kept_when_the_feed_goes_stale() -> None:
    s = state(orders=[working("tqgrid1 c1 L0 BUY", 94, "100.25")])

    assert decide(s, market("100.00", age_s=60), CONFIG).commands == ()
    assert decide(s, market(None), CONFIG).commands == ()


def test_after_an_unfilled_level0_ends_the_next_fresh_tick_tries_again_under_a_new_key() -> None:
    ended_at = NOW - 1 * NS_PER_SECOND
    s = state(level0_attempt=1)

    before = decide(
        s,
        Market(
            now_ns=NOW, tick=tick("100.00", age_s=2), broker_connected=True, level0_not_before_ns=ended_at
        ),
        CONFIG,
    )
    after = decide(
        s,
        Market(
            now_ns=NOW, tick=tick("100.10", age_s=0.2), broker_connected=True, level0_not_before_ns=ended_at
        ),
        CONFIG,
    )

    assert before.commands == ()
    assert (
        before.level0_blocked is not None
        and "older than the end of the last Level-0" in before.level0_blocked
    )
    assert [c.key for c in places(after.commands)] == ["tqgrid1 c1 L0 BUY a2"]
    assert places(after.commands)[0].limit == D("100.35")


@pytest.mark.parametrize(
    ("mkt", "why"),
    [
        (market("100.00", age_s=5.5), "stale"),
        (market("100.00", age_s=-30), "stale"),
        (market(None), "no tick"),
        (market("100.00", feed_stale=True), "feed stale"),
        (market("100.00", reference_price=D("90.00")), "more than 0.05 away"),
        (Market(now_ns=NOW, tick=tick("100.00", symbol="QQQ"), broker_connected=True), "QQQ"),
        (market("0"), "not a positive price"),
    ],
)
def test_no_level0_on_a_stale_missing_or_implausible_tick(mkt: Market, why: str) -> None:
    decision = decide(state(), mkt, CONFIG)

    assert decision.commands == ()
    assert decision.level0_blocked is not None and why in decision.level0_blocked


def test_a_tick_within_the_band_and_the_age_starts_level0() -> None:
    decision = decide(state(), market("100.00", age_s=4.9, reference_price=D("96.00")), CONFIG)

    assert [c.key for c in decision.commands] == ["tqgrid1 c1 L0 BUY"]


def test_a_partly_filled_level0_stays_and_nothing_else_is_placed() -> None:
    s = state(orders=[working("tqgrid1 c1 L0 BUY", 94, "100.25", filled=50)])

    decision = decide(s, market("100.20"), CONFIG)

    assert decision.commands == ()
    assert set(decision.desired) == {"tqgrid1 c1 L0 BUY"}


def test_a_level0_cancelled_after_a_partial_fill_is_a_lot_with_its_sell_and_the_queue() -> None:
    level0 = lot(0, "100.12", quantity=50)
    s = state([level0])

    decision = decide(s, market("100.20"), CONFIG)

    assert [(c.key, c.quantity, c.limit) for c in places(decision.commands)] == [
        ("tqgrid1 c1 L1 BUY", 88, D("99.12")),
        ("tqgrid1 c1 L2 BUY", 82, D("98.13")),
        ("tqgrid1 c1 L3 BUY", 77, D("97.15")),
        ("tqgrid1 c1 L0 SELL 100.12", 50, D("101.12")),
    ]


# --------------------------------------------------------------------------------------------- the user's examples


def test_anchor_100_queues_99_98_01_97_03_and_sells_level0_at_101() -> None:
    s = state([lot(0, "100.00")])

    decision = decide(s, market("100.00", age_s=600), CONFIG)  # the queue and SELLs need no fresh feed

    buys = [c for c in places(decision.commands) if c.side == "BUY"]
    assert [(c.key, c.quantity, c.limit, c.condition) for c in buys] == [
        ("tqgrid1 c1 L1 BUY", 88, D("99.00"), PriceCondition(price=D("99.00"), is_more=False)),
        ("tqgrid1 c1 L2 BUY", 82, D("98.01"), PriceCondition(price=D("98.01"), is_more=False)),
        ("tqgrid1 c1 L3 BUY", 77, D("97.03"), PriceCondition(price=D("97.03"), is_more=False)),
    ]
    assert all(c.tif == "GTC" and c.outside_rth and c.conditions_ignore_rth and not c.immediate for c in buys)
    sells = [c for c in places(decision.commands) if c.side == "SELL"]
    assert [(c.key, c.quantity, c.limit, c.tif, c.outside_rth, c.condition) for c in sells] == [
        ("tqgrid1 c1 L0 SELL 100.00", 94, D("101.00"), "GTC", True, None),
    ]


def test_the_level1_fill_queues_level4_and_sells_level1_at_plus_one_percent() -> None:
    l0, l1 = lot(0, "100.00", sell="live"), lot(1, "99.00")
    s = state([l0, l1], [live_buy(2), live_buy(3), live_sell(l0)])

    decision = decide(s, market(None), CONFIG)

    assert [(c.key, c.quantity, c.limit) for c in places(decision.commands)] == [
        ("tqgrid1 c1 L4 BUY", 72, D("96.06")),
        ("tqgrid1 c1 L1 SELL 99.00", 88, D("99.99")),
    ]
    assert cancels(decision.commands) == []


def test_a_sell_target_rounds_the_average_fill_half_up() -> None:
    l0, l1 = lot(0, "100.00", sell="live"), lot(1, "98.995")  # 98.995 x 1.01 = 99.98495 -> 99.98
    s = state([l0, l1], [live_buy(2), live_buy(3), live_buy(4), live_sell(l0)])

    decision = decide(s, market(None), CONFIG)

    assert [(c.key, c.limit) for c in places(decision.commands)] == [
        ("tqgrid1 c1 L1 SELL 98.995", D("99.98"))
    ]


def test_a_gap_down_through_three_triggers_moves_the_queue_three_levels() -> None:
    lots = ladder(4)
    s = state(lots, [live_sell(lots[0])])

    decision = decide(s, market(None), CONFIG)

    assert [c.key for c in places(decision.commands)] == [
        "tqgrid1 c1 L4 BUY",
        "tqgrid1 c1 L5 BUY",
        "tqgrid1 c1 L6 BUY",
        "tqgrid1 c1 L3 SELL 97.03",
        "tqgrid1 c1 L2 SELL 98.01",
        "tqgrid1 c1 L1 SELL 99.00",
    ]


def test_the_queue_stops_at_the_end_of_the_lot_map() -> None:
    small = StrategyConfig(lot_map=LotMap((10, 9, 8, 7)))
    s = state([lot(0, "100.00", quantity=10), lot(1, "99.00", quantity=9), lot(2, "98.01", quantity=8)])

    decision = decide(s, market(None), small)

    assert [c.key for c in places(decision.commands) if c.side == "BUY"] == ["tqgrid1 c1 L3 BUY"]


def test_a_buy_that_left_the_queue_is_cancelled() -> None:
    # Lot 3 was sold: the queue moves back up to 3, 4, 5; the live BUY for 6 is no longer wanted.
    lots = ladder(3)
    s = state(lots, [live_buy(4), live_buy(5), live_buy(6)] + [live_sell(x) for x in lots])

    decision = decide(s, market(None), CONFIG)

    assert cancels(decision.commands) == ["tqgrid1 c1 L6 BUY"]
    assert [c.key for c in places(decision.commands)] == ["tqgrid1 c1 L3 BUY"]


def test_a_level_freed_by_a_sell_is_armed_again_under_its_next_attempt() -> None:
    # Levels 1-3 were bought once each; level 3's lot was sold: level 3 is next_level again, on its second attempt.
    lots = ladder(3)
    s = state(
        lots,
        [live_buy(4), live_buy(5), live_buy(6)] + [live_sell(x) for x in lots],
        buy_attempts={1: 1, 2: 1, 3: 1},
    )

    decision = decide(s, market(None), CONFIG)

    assert cancels(decision.commands) == ["tqgrid1 c1 L6 BUY"]
    assert [(c.key, c.limit) for c in places(decision.commands)] == [("tqgrid1 c1 L3 BUY a2", D("97.03"))]


def test_level0_after_a_filled_first_attempt_uses_the_next_one() -> None:
    s = state(cycle=2, level0_attempt=3)

    assert [c.key for c in decide(s, market("100.00"), CONFIG).commands] == ["tqgrid1 c2 L0 BUY a4"]


def test_a_partly_filled_buy_that_left_the_queue_is_not_cancelled() -> None:
    lots = ladder(3)
    s = state(lots, [live_buy(4), live_buy(5), live_buy(6, filled=20)] + [live_sell(x) for x in lots])

    decision = decide(s, market(None), CONFIG)

    assert cancels(decision.commands) == []
    assert [c.key for c in places(decision.commands)] == ["tqgrid1 c1 L3 BUY"]


def test_a_queued_buy_cancelled_unfilled_is_placed_again_under_the_same_key() -> None:
    lots = ladder(3)
    s = state(lots, [live_buy(4), live_buy(5)] + [live_sell(x) for x in lots])

    decision = decide(s, market(None), CONFIG)

    assert [c.key for c in places(decision.commands)] == ["tqgrid1 c1 L3 BUY"]


def test_level0_waits_while_the_old_cycles_buys_are_cancelled() -> None:
    # The last lot closed: the cycle moved on, the old queue is cancelled, and a fresh tick starts Level 0.
    old = [live_buy(1, cycle=3), live_buy(2, cycle=3), live_buy(3, cycle=3)]
    s = state([], old, cycle=4)

    decision = decide(s, market("101.00"), CONFIG)

    assert cancels(decision.commands) == ["tqgrid1 c3 L1 BUY", "tqgrid1 c3 L2 BUY", "tqgrid1 c3 L3 BUY"]
    assert [c.key for c in places(decision.commands)] == ["tqgrid1 c4 L0 BUY"]


# --------------------------------------------------------------------------------------------- the sell budget


def test_25_lots_keep_18_sells_live_with_the_lowest_targets_and_park_7() -> None:
    lots = ladder(25)
    s = state(lots, [live_buy(25), live_buy(26), live_buy(27)])

    decision = decide(s, market(None), CONFIG)

    sells = [c for c in places(decision.commands) if c.side == "SELL"]
    assert len(sells) == 18
    assert sorted(parse(c.key).level for c in sells) == list(range(7, 25))
    assert [c.limit for c in sells] == sorted(c.limit for c in sells)
    parked = {lot.level for lot in lots} - {parse(c.key).level for c in sells}
    assert parked == set(range(7))
    assert max(c.limit for c in sells) < min(lot.sell_target_price for lot in lots if lot.level in parked)


def test_sell_budget_picks_the_lowest_targets() -> None:
    lots = ladder(25)

    chosen = sell_budget(lots, {}, 18)

    assert [x.level for x in chosen] == list(range(24, 6, -1))


def test_25_lots_all_live_cancel_the_7_highest_targets() -> None:
    lots = ladder(25)
    s = state(lots, [live_buy(25), live_buy(26), live_buy(27)] + [live_sell(x) for x in lots])

    decision = decide(s, market(None), CONFIG)

    assert sorted(parse(k).level for k in cancels(decision.commands)) == list(range(7))
    assert places(decision.commands) == []


def test_a_parked_sell_is_placed_when_a_slot_frees_up() -> None:
    # 24 lots after level 24's SELL filled: 17 live, and the lowest parked target (level 6) takes the free slot.
    lots = ladder(24)
    live = [live_sell(x) for x in lots if x.level >= 7]
    s = state(lots, [live_buy(24), live_buy(25), live_buy(26)] + live)

    decision = decide(s, market(None), CONFIG)

    assert [c.key for c in decision.commands] == [lots[6].sell_key]


def test_a_deeper_lot_evicts_the_highest_live_sell_and_waits_for_the_slot() -> None:
    # 18 SELLs live for levels 7..24; level 25 fills: its target is lower, so level 7's SELL is parked. IB's cap
    # must hold at every instant, so level 25's SELL waits until level 7's cancel is confirmed.
    lots = ladder(26)
    live = [live_sell(x) for x in lots if 7 <= x.level <= 24]
    s = state(lots, [live_buy(26), live_buy(27), live_buy(28)] + live)

    decision = decide(s, market(None), CONFIG)

    assert [c.key for c in decision.commands] == [lots[7].sell_key]
    assert isinstance(decision.commands[0], CancelOrder)
    assert decision.held_back == (lots[25].sell_key,)

    confirmed = state(lots, [live_buy(26), live_buy(27), live_buy(28)] + live[1:])
    assert [c.key for c in decide(confirmed, market(None), CONFIG).commands] == [lots[25].sell_key]


def test_a_partly_filled_sell_is_never_cancelled_and_takes_a_slot() -> None:
    lots = ladder(26)
    partly = live_sell(lots[3], filled=10)
    live = [live_sell(x) for x in lots if 9 <= x.level <= 25]
    s = state(lots, [live_buy(26), live_buy(27), live_buy(28), partly] + live)

    decision = decide(s, market(None), CONFIG)

    assert decision.commands == ()
    sells = [k for k, o in decision.desired.items() if o.side == "SELL"]
    assert len(sells) == 18 and lots[3].sell_key in sells


def test_a_sell_of_a_partly_sold_lot_is_for_what_remains() -> None:
    l0 = lot(0, "100.00", sold=40)
    s = state([l0], [live_buy(1), live_buy(2), live_buy(3)])

    decision = decide(s, market(None), CONFIG)

    assert [(c.key, c.quantity) for c in decision.commands] == [("tqgrid1 c1 L0 SELL 100.00", 54)]


def test_a_live_sell_of_no_lot_is_left_for_reconciliation() -> None:
    l0 = lot(0, "100.00")
    orphan = working("tqgrid1 c1 L5 SELL 95.33", 67, "96.28")
    s = state([l0], [live_buy(1), live_buy(2), live_buy(3), live_sell(l0), orphan])

    assert decide(s, market(None), CONFIG).commands == ()


def test_a_foreign_order_is_ignored() -> None:
    foreign = WorkingOrder(key="", side="SELL", level=0, quantity=94, limit=D("121.90"), status="Submitted")
    s = state(orders=[foreign])

    assert [c.key for c in decide(s, market("100.00"), CONFIG).commands] == ["tqgrid1 c1 L0 BUY"]


def test_final_orders_listed_in_the_state_are_not_live() -> None:
    s = state(orders=[working("tqgrid1 c1 L0 BUY", 94, "100.25", status="Cancelled")], level0_attempt=1)

    assert [c.key for c in decide(s, market("100.00"), CONFIG).commands] == ["tqgrid1 c1 L0 BUY a2"]


def test_an_order_already_being_cancelled_gets_no_second_cancel() -> None:
    lots = ladder(3)
    s = state(
        lots,
        [live_buy(3), live_buy(4), live_buy(5), live_buy(6, status="PendingCancel")]
        + [live_sell(x) for x in lots],
    )

    assert decide(s, market(None), CONFIG).commands == ()


# --------------------------------------------------------------------------------------------- blocked


@pytest.mark.parametrize(
    ("s", "mkt", "why"),
    [
        (state([lot(0, "100.00")], halted=True, halt_reason="operator"), market(None), "halted: operator"),
        (state([lot(0, "100.00")], in_sync=False), market(None), "not in sync"),
        (state([lot(0, "100.00")]), market(None, broker_connected=False), "broker disconnected"),
        (state(), market("100.00", broker_connected=False), "broker disconnected"),
        (state(halted=True), market("100.00"), "halted"),
    ],
)
def test_nothing_new_while_halted_out_of_sync_or_disconnected(s: GridState, mkt: Market, why: str) -> None:
    decision = decide(s, mkt, CONFIG)

    assert decision.commands == ()
    assert decision.blocked is not None and why in decision.blocked


def test_while_halted_live_orders_stay_and_nothing_is_cancelled() -> None:
    lots = ladder(3)
    live = [live_buy(4), live_buy(5), live_buy(6)] + [live_sell(x) for x in lots]
    s = state(lots, live, halted=True)

    decision = decide(s, market(None), CONFIG)

    assert decision.commands == ()
    assert set(desired_orders(s, market(None), CONFIG)) == {o.key for o in live}


def test_a_stale_feed_blocks_level0_only() -> None:
    s = state([lot(0, "100.00")])

    decision = decide(s, market("100.00", age_s=3600, feed_stale=True), CONFIG)

    assert len(places(decision.commands)) == 4


# --------------------------------------------------------------------------------------------- the diff


def test_the_diff_sends_nothing_when_the_live_set_is_the_desired_set() -> None:
    lots = ladder(4)
    s = state(lots, [live_buy(4), live_buy(5), live_buy(6)] + [live_sell(x) for x in lots])

    desired = desired_orders(s, market(None), CONFIG)

    assert set(desired) == {o.key for o in s.orders}
    assert diff(desired, s, CONFIG) == ((), ())


def test_a_place_waits_while_another_order_holds_its_slot() -> None:
    # A BUY for level 3 under another attempt is still live: the wanted one waits for the cancel to be confirmed
    # (the executor allows one live order per (cycle, level, side)).
    lots = ladder(3)
    other = live_buy(3, attempt=2)
    s = state(lots, [other, live_buy(4), live_buy(5)] + [live_sell(x) for x in lots])

    decision = decide(s, market(None), CONFIG)

    assert cancels(decision.commands) == ["tqgrid1 c1 L3 BUY a2"]
    assert places(decision.commands) == []
    assert decision.held_back == ("tqgrid1 c1 L3 BUY",)


def test_the_buy_side_never_exceeds_its_cap_while_cancels_are_pending() -> None:
    capped = StrategyConfig(lot_map=USER_MAP, max_live_buys=3)
    lots = ladder(3)
    s = state(lots, [live_buy(4), live_buy(5), live_buy(6)] + [live_sell(x) for x in lots])

    decision = decide(s, market(None), capped)

    assert cancels(decision.commands) == ["tqgrid1 c1 L6 BUY"]
    assert places(decision.commands) == []
    assert decision.held_back == ("tqgrid1 c1 L3 BUY",)


def test_the_same_inputs_give_the_same_commands() -> None:
    s = state(ladder(30))
    m = market("70.00")

    assert decide(s, m, CONFIG) == decide(s, m, CONFIG)


def test_bad_parameters_are_refused_with_the_config_key() -> None:
    with pytest.raises(ValueError, match="strategy.max_live_sells"):
        StrategyConfig(lot_map=USER_MAP, max_live_sells=21)
    with pytest.raises(ValueError, match="strategy.queued_levels"):
        StrategyConfig(lot_map=USER_MAP, queued_levels=5)
