"""The lot ledger, one rule at a time: lots from complete BUYs, SELLs closing exactly their lot, cycles, attempts."""

from __future__ import annotations

from decimal import Decimal

from core.ledger import (
    LedgerRules,
    apply,
    apply_all,
    next_buy_attempt,
    open_lots_shares,
    step,
)
from proto.messages import GridState, Heartbeat, Lot
from tests.core.ledger_events import (
    accepted,
    buy_key,
    cancelled,
    commission,
    fill,
    rejected,
    sell_key,
    status,
)

D = Decimal
EMPTY = GridState(symbol="TQQQ")
L0 = buy_key(1, 0)


def holding_level0(price: str = "100.00", quantity: int = 94) -> GridState:
    return apply_all(
        EMPTY, [accepted(L0, "BUY", quantity, price), fill(L0, "BUY", quantity, price, quantity)]
    )


def only_lot(state: GridState) -> Lot:
    assert len(state.lots) == 1, state.lots
    return state.lots[0]


# --------------------------------------------------------------------------------------------- lots from BUYs


def test_a_buy_filled_in_pieces_becomes_one_lot_at_its_average_price_only_when_complete() -> None:
    first = fill(L0, "BUY", 40, "100.00", 94, ts=5)
    second = fill(L0, "BUY", 54, "100.02", 94, ts=7)

    partly = apply_all(EMPTY, [accepted(L0, "BUY", 94, "100.25"), first])
    done = apply(partly, second)

    assert partly.lots == []
    assert [(o.key, o.filled, o.status) for o in partly.orders] == [(L0, 40, "PartiallyFilled")]
    lot = only_lot(done)
    # (40 x 100.00 + 54 x 100.02) / 94 = 100.011489... -> 100.0115
    assert lot.purchase_price == D("100.0115")
    assert lot.cost == D("9401.08")
    assert lot.sell_target_price == D("101.01")
    assert lot.sell_key == "tqgrid1 c1 L0 SELL 100.0115"
    assert (lot.level, lot.quantity, lot.sell, lot.opened_ts_ns) == (0, 94, "parked", 7)
    assert done.anchor_price == D("100.0115")
    assert done.orders == []
    assert done.level0_attempt == 1


def test_the_same_execution_twice_changes_nothing() -> None:
    event = fill(L0, "BUY", 40, "100.00", 94)
    once = apply_all(EMPTY, [accepted(L0, "BUY", 94, "100.25"), event])

    again = step(once, event)

    assert again.changed is False
    assert again.state == once


def test_a_fill_before_its_acknowledgement_is_not_reset_by_it() -> None:
    state = apply_all(
        EMPTY, [fill(L0, "BUY", 40, "100.00", 94, order_id=3), accepted(L0, "BUY", 94, "100.25", 3)]
    )

    (order,) = state.orders
    assert (order.filled, order.quantity, order.limit, order.order_id) == (40, 94, D("100.25"), 3)


def test_an_acknowledgement_after_the_lot_exists_is_ignored() -> None:
    state = holding_level0()

    assert apply(state, accepted(L0, "BUY", 94, "100.25")) == state


def test_a_buy_cancelled_after_a_partial_fill_becomes_a_lot_of_the_filled_shares() -> None:
    state = apply_all(EMPTY, [accepted(L0, "BUY", 94, "100.25"), fill(L0, "BUY", 30, "100.10", 94)])

    state = apply(state, cancelled(L0, filled=30, avg="100.10"))

    lot = only_lot(state)
    assert (lot.quantity, lot.purchase_price, lot.cost) == (30, D("100.10"), D("3003.00"))
    assert state.anchor_price == D("100.10")
    assert state.orders == []


def test_a_partial_cancel_reported_before_its_fills_makes_the_lot_and_the_late_fills_add_only_their_fee() -> (
    None
):
    state = apply(EMPTY, cancelled(L0, filled=30, avg="100.10"))
    late = fill(L0, "BUY", 30, "100.10", 94, commission="1.00")

    state = apply(state, late)

    lot = only_lot(state)
    assert (lot.quantity, lot.cost, lot.fees) == (30, D("3003.00"), D("1.00"))


def test_a_level0_attempt_that_ends_unfilled_moves_to_the_next_attempt() -> None:
    state = apply_all(EMPTY, [accepted(L0, "BUY", 94, "100.25"), cancelled(L0)])
    assert (state.orders, state.lots, state.level0_attempt) == ([], [], 1)
    assert next_buy_attempt(state, 0) == 2

    second = buy_key(1, 0, 2)
    state = apply_all(state, [accepted(second, "BUY", 94, "99.00", 2), rejected(second, 2)])
    assert next_buy_attempt(state, 0) == 3


def test_a_queued_buy_cancelled_unfilled_keeps_its_attempt_so_its_key_can_be_placed_again() -> None:
    l3 = buy_key(1, 3)
    state = apply_all(holding_level0(), [accepted(l3, "BUY", 77, "97.03", 5), cancelled(l3, order_id=5)])

    assert state.orders == []
    assert next_buy_attempt(state, 3) == 1


def test_a_final_ib_status_ends_the_order_like_a_cancel() -> None:
    l1 = buy_key(1, 1)
    state = apply_all(
        holding_level0(), [accepted(l1, "BUY", 88, "99.00", 5), status(l1, "Inactive", order_id=5)]
    )

    assert state.orders == []


def test_a_status_update_changes_the_working_orders_status() -> None:
    l1 = buy_key(1, 1)
    state = apply_all(
        holding_level0(),
        [accepted(l1, "BUY", 88, "99.00", 5, status="PreSubmitted"), status(l1, "Submitted", 0, 88, 5)],
    )

    assert [o.status for o in state.orders] == ["Submitted"]


# --------------------------------------------------------------------------------------------- SELLs and round trips


def test_an_acknowledged_sell_makes_its_lot_live_with_the_order_id() -> None:
    state = holding_level0()
    lot = only_lot(state)

    state = apply(state, accepted(lot.sell_key, "SELL", 94, "101.00", order_id=7, perm_id=555))

    lot = only_lot(state)
    assert (lot.sell, lot.sell_order_id, lot.sell_perm_id) == ("live", 7, 555)
    assert [(o.key, o.side) for o in state.orders] == [(lot.sell_key, "SELL")]


def test_partial_sell_fills_reduce_the_lot_and_the_last_one_closes_it_with_its_round_trip() -> None:
    state = holding_level0()
    sk = only_lot(state).sell_key
    state = apply(state, accepted(sk, "SELL", 94, "101.00", order_id=7))

    state = apply(state, fill(sk, "SELL", 50, "101.00", 94, order_id=7, ts=20, commission="0.50"))
    lot = only_lot(state)
    assert (lot.sold, lot.quantity - lot.sold, lot.sell) == (50, 44, "live")
    assert open_lots_shares(state) == 44

    closing = step(state, fill(sk, "SELL", 44, "101.02", 94, order_id=7, ts=30, commission="0.50"))

    (trip,) = closing.closed
    assert (trip.cycle, trip.level, trip.quantity) == (1, 0, 94)
    assert (trip.buy_price, trip.sell_price) == (D("100.00"), D("101.0094"))
    # proceeds 50 x 101.00 + 44 x 101.02 = 9494.88; cost 9400.00; fees 1.00
    assert trip.fees == D("1.00")
    assert trip.realized_pnl == D("93.88")
    assert (trip.closed_ts_ns, trip.buy_key, trip.sell_key) == (30, L0, sk)
    assert closing.state.realized_pnl == D("93.88")


def test_closing_the_last_lot_starts_the_next_cycle() -> None:
    state = holding_level0()
    sk = only_lot(state).sell_key
    state = apply_all(state, [accepted(L0, "BUY", 94, "100.25")])  # a stray late ack must not matter

    state = apply(state, fill(sk, "SELL", 94, "101.00", 94, order_id=7))

    assert (state.cycle, state.lots, state.anchor_price, state.level0_attempt) == (2, [], None, 0)
    assert next_buy_attempt(state, 0) == 1


def test_a_sell_fill_closes_exactly_its_own_lot_not_the_oldest() -> None:
    l1 = buy_key(1, 1)
    state = apply_all(holding_level0(), [fill(l1, "BUY", 88, "99.00", 88, order_id=5)])
    assert [lot.level for lot in state.lots] == [0, 1]
    sk1 = sell_key(1, 1, "99.00")

    result = step(state, fill(sk1, "SELL", 88, "99.99", 88, order_id=8))

    assert [lot.level for lot in result.state.lots] == [0]
    assert [trip.level for trip in result.closed] == [1]
    assert result.state.cycle == 1


def test_a_level_freed_by_a_sell_is_bought_again_under_its_next_attempt() -> None:
    l1 = buy_key(1, 1)
    state = apply_all(holding_level0(), [fill(l1, "BUY", 88, "99.00", 88, order_id=5)])
    assert next_buy_attempt(state, 1) == 2
    state = apply(state, fill(sell_key(1, 1, "99.00"), "SELL", 88, "99.99", 88, order_id=8))
    assert next_buy_attempt(state, 1) == 2

    again = buy_key(1, 1, 2)
    state = apply(state, fill(again, "BUY", 88, "98.90", 88, order_id=9))

    lot = state.lots[-1]
    assert (lot.level, lot.buy_key, lot.sell_key) == (1, again, "tqgrid1 c1 L1 SELL a2 98.90")
    assert state.buy_attempts == {1: 2}
    assert next_buy_attempt(state, 1) == 3


def test_a_cancelled_sell_parks_the_lot_and_keeps_what_it_sold() -> None:
    state = holding_level0()
    sk = only_lot(state).sell_key
    state = apply_all(
        state,
        [
            accepted(sk, "SELL", 94, "101.00", 7),
            fill(sk, "SELL", 10, "101.00", 94, 7),
            cancelled(sk, 10, "101", 7),
        ],
    )

    lot = only_lot(state)
    assert (lot.sold, lot.sell, lot.sell_order_id) == (10, "parked", None)
    assert state.orders == []


def test_a_sell_reported_before_its_lot_is_applied_when_the_lot_appears() -> None:
    sk = sell_key(1, 0, "100.00")
    state = apply(EMPTY, fill(sk, "SELL", 94, "101.00", 94, order_id=7))
    assert state.lots == [] and state.orders[0].filled == 94

    result = step(state, fill(L0, "BUY", 94, "100.00", 94, order_id=1))

    assert result.state.lots == []
    assert [trip.realized_pnl for trip in result.closed] == [D("94.00")]
    assert result.state.cycle == 2


# --------------------------------------------------------------------------------------------- commissions


def test_a_commission_reported_before_its_execution_is_booked_when_the_execution_comes() -> None:
    event = fill(L0, "BUY", 94, "100.00", 94)
    state = apply_all(EMPTY, [commission(event.exec_id, L0, "1.00"), event])

    assert only_lot(state).fees == D("1.00")
    assert apply(state, commission(event.exec_id, L0, "1.00")) == state


def test_a_commission_after_the_round_trip_closed_amends_it() -> None:
    state = holding_level0()
    sk = only_lot(state).sell_key
    last = fill(sk, "SELL", 94, "101.00", 94, order_id=7)
    state = apply(state, last)
    assert state.realized_pnl == D("94.00")

    result = step(state, commission(last.exec_id, sk, "1.05"))

    assert [(a.key, a.fee) for a in result.amended] == [(sk, D("1.05"))]
    assert result.state.realized_pnl == D("92.95")
    assert step(result.state, commission(last.exec_id, sk, "1.05")).amended == ()


# --------------------------------------------------------------------------------------------- foreign and stray


def test_events_of_foreign_orders_leave_the_state_alone() -> None:
    state = holding_level0()
    events = [
        accepted("", "BUY", 100, "50.00", 40),
        fill("", "BUY", 100, "50.00", 100, order_id=40),
        fill("manual order", "SELL", 1, "50.00", 1, order_id=41),
        cancelled("", order_id=40),
        Heartbeat(service="executor", pid=1, started_ts_ns=0),
    ]

    assert apply_all(state, events) == state


def test_a_sell_without_an_order_ref_reaches_its_lot_by_perm_id() -> None:
    """An order of the older single-script bot, adopted by reconciliation, carries no orderRef."""
    import msgspec

    state = holding_level0()
    lot = msgspec.structs.replace(only_lot(state), sell="live", sell_order_id=3, sell_perm_id=4242)
    state = msgspec.structs.replace(state, lots=[lot])

    state = apply(state, fill("", "SELL", 94, "101.00", 94, order_id=3, perm_id=4242))

    assert state.lots == [] and state.cycle == 2


def test_a_fill_of_an_older_cycle_makes_a_lot_of_that_cycle_without_touching_the_new_cycles_counters() -> (
    None
):
    state = holding_level0()
    state = apply(state, fill(only_lot(state).sell_key, "SELL", 94, "101.00", 94, order_id=7))
    assert state.cycle == 2

    state = apply(state, fill(buy_key(1, 1), "BUY", 88, "99.00", 88, order_id=5))

    lot = only_lot(state)
    assert (lot.cycle, lot.level, state.cycle, state.buy_attempts) == (1, 1, 2, {})


def test_the_window_of_remembered_executions_is_bounded() -> None:
    rules = LedgerRules(exec_memory=3)
    state = EMPTY
    for n in range(5):
        state = apply(state, fill(L0, "BUY", 1, "100.00", 94, exec_id=f"e{n}"), rules)

    assert [e.exec_id for e in state.executions] == ["e2", "e3", "e4"]
    assert state.orders[0].filled == 5


def test_sell_markup_comes_from_the_rules() -> None:
    state = apply(EMPTY, fill(L0, "BUY", 94, "100.00", 94), LedgerRules(sell_markup=D("0.02")))

    assert only_lot(state).sell_target_price == D("102.00")
