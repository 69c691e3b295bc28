"""The paper broker's engine on its own: the order in which it reports and fills when orders start working, wait for
conditions again, or come back from the state file out of placement order (its per-print indexes must keep IB's
time priority: placement order)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from decimal import Decimal

from core import sessions
from sim.broker.account import Account
from sim.broker.engine import Engine
from sim.broker.orders import (
    CANCELLED,
    PRE_SUBMITTED,
    SUBMITTED,
    Event,
    OrderAcknowledged,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    PortfolioChanged,
)
from sim.broker.requests import ConditionSpec, ContractRef, OrderTicket
from sim.broker.store import restore, snapshot

D = Decimal
TQQQ = ContractRef(72539702, "TQQQ", "STK", "", "0", "", "", "SMART", "NASDAQ", "USD", "", "")


def et(*args: int) -> int:
    return int(datetime(*args, tzinfo=sessions.EASTERN).timestamp()) * 1_000_000_000


MONDAY_10 = et(2025, 6, 2, 10, 0)


def ticket(
    order_id: int, action: str, limit: str, qty: int = 10, *, below: str | None = None, tif: str = "GTC",
    outside_rth: bool = True,
) -> OrderTicket:
    """A LMT ticket; ``below`` adds IB's PriceCondition 'last <= below'."""
    conditions = () if below is None else (
        ConditionSpec(cond_type=1, conjunction="a", is_more=False, price=D(below), con_id=TQQQ.con_id,
                      exchange="SMART"),
    )
    return OrderTicket(
        order_id=order_id, contract=TQQQ, action=action, total_quantity=D(qty), order_type="LMT",
        lmt_price=D(limit), aux_price=None, tif=tif, oca_group="", account="", open_close="O", origin=0,
        order_ref=f"ref{order_id}", transmit=True, parent_id=0, outside_rth=outside_rth, hidden=False,
        good_after_time="", good_till_date="", what_if=False, algo_strategy="", conditions=conditions,
    )


def engine(partial_fills: bool = False) -> Engine:
    return Engine(Account("DU1234567", D(1_000_000)), epoch_s=1_761_714_642, partial_fills=partial_fills)


def fills(events: list[Event]) -> list[tuple[int, int]]:
    """(orderId, shares) of each execution, in report order."""
    return [(e.order.order_id, e.execution.shares) for e in events if isinstance(e, OrderFilled)]


def test_a_print_that_reaches_no_order_reports_nothing() -> None:
    eng = engine()
    eng.on_print(D("50.00"), 100, MONDAY_10)
    eng.place(17, ticket(1, "BUY", "49.00"), MONDAY_10)
    eng.place(17, ticket(2, "SELL", "51.00"), MONDAY_10)
    eng.place(17, ticket(3, "BUY", "48.00", below="48.50"), MONDAY_10)
    assert eng.on_print(D("50.50"), 100, MONDAY_10 + 1) == []
    assert [o.order_id for o in eng.open_orders()] == [1, 2, 3]


def test_an_order_whose_condition_is_met_later_still_fills_after_older_orders_and_before_newer() -> None:
    eng = engine(partial_fills=True)
    eng.on_print(D("50.00"), 100, MONDAY_10)
    eng.place(17, ticket(1, "BUY", "49.00", qty=30), MONDAY_10)
    eng.place(17, ticket(2, "BUY", "49.00", qty=30, below="49.50"), MONDAY_10)  # waits for its condition
    eng.place(17, ticket(3, "BUY", "49.00", qty=30), MONDAY_10)
    triggered = eng.on_print(D("49.40"), 1, MONDAY_10 + 1)  # meets order 2's condition, reaches no limit
    assert [(type(e), e.order.order_id, e.order.status) for e in triggered if isinstance(e, OrderAcknowledged)] == [
        (OrderAcknowledged, 2, SUBMITTED)
    ]
    # 70 shares at 49.00: time priority is placement order, not the order in which they started working.
    assert fills(eng.on_print(D("49.00"), 70, MONDAY_10 + 2)) == [(1, 30), (2, 30), (3, 10)]
    assert fills(eng.on_print(D("48.90"), 100, MONDAY_10 + 3)) == [(3, 20)]
    assert eng.open_orders() == []


def test_a_working_order_given_a_condition_waits_again_and_reports_in_placement_order() -> None:
    eng = engine()
    eng.on_print(D("50.00"), 100, MONDAY_10)
    eng.place(17, ticket(1, "BUY", "40.00"), MONDAY_10)
    eng.place(17, ticket(2, "BUY", "40.00", below="49.00"), MONDAY_10)
    eng.place(17, ticket(1, "BUY", "40.00", below="49.50"), MONDAY_10)  # modified: now waits too
    assert [o.status for o in eng.open_orders()] == [PRE_SUBMITTED, PRE_SUBMITTED]
    events = eng.on_print(D("48.00"), 100, MONDAY_10 + 1)
    assert [e.order.order_id for e in events if isinstance(e, OrderAcknowledged)] == [1, 2]
    assert fills(eng.on_print(D("40.00"), 100, MONDAY_10 + 2)) == [(1, 10), (2, 10)]


def test_a_modified_limit_and_quantity_are_what_the_next_print_matches() -> None:
    eng = engine()
    eng.on_print(D("50.00"), 100, MONDAY_10)
    eng.place(17, ticket(1, "BUY", "45.00", qty=10), MONDAY_10)
    eng.place(17, ticket(1, "BUY", "48.00", qty=25), MONDAY_10)
    assert fills(eng.on_print(D("47.50"), 100, MONDAY_10 + 1)) == [(1, 25)]


def test_orders_read_back_out_of_placement_order_work_in_placement_order() -> None:
    eng = engine()
    eng.on_print(D("50.00"), 100, MONDAY_10)
    for order_id in (1, 2, 3):
        eng.place(17, ticket(order_id, "SELL", "51.00"), MONDAY_10)
    state = snapshot(eng)
    again = restore(replace(state, orders=list(reversed(state.orders))))
    assert [o.order_id for o in again.open_orders()] == [1, 2, 3]
    events = again.on_print(D("51.00"), 100, MONDAY_10 + 1)
    assert fills(events) == [(1, 10), (2, 10), (3, 10)]
    assert isinstance(events[-1], PortfolioChanged)


def test_day_expiries_and_session_opens_report_in_placement_order() -> None:
    eng = engine()
    pre_market = et(2025, 6, 2, 8, 0)
    eng.on_print(D("50.00"), 100, pre_market)
    eng.place(17, ticket(1, "BUY", "40.00", tif="DAY", outside_rth=True), pre_market)
    eng.place(17, ticket(2, "BUY", "40.00", outside_rth=False), pre_market)  # held until the open
    eng.place(17, ticket(3, "BUY", "40.00", tif="DAY", outside_rth=False), pre_market)  # held, then expires
    eng.place(17, ticket(4, "BUY", "40.00", outside_rth=False), pre_market)  # held until the open
    assert [o.status for o in eng.open_orders()] == [SUBMITTED, PRE_SUBMITTED, PRE_SUBMITTED, PRE_SUBMITTED]
    opened = eng.advance(et(2025, 6, 2, 9, 30))
    assert [(type(e), e.order.order_id) for e in opened] == [
        (OrderAcknowledged, 2), (OrderAcknowledged, 3), (OrderAcknowledged, 4)
    ]
    assert eng.advance(et(2025, 6, 2, 12, 0)) == []
    closed = eng.advance(et(2025, 6, 2, 16, 0))
    assert [(type(e), e.order.order_id) for e in closed] == [(OrderCancelled, 3)]
    expired = eng.advance(et(2025, 6, 2, 20, 0))
    assert [(type(e), e.order.order_id, e.order.status) for e in expired] == [(OrderCancelled, 1, CANCELLED)]
    assert [o.order_id for o in eng.open_orders()] == [2, 4]


def test_the_cap_per_side_counts_live_orders_only() -> None:
    eng = engine()
    eng.on_print(D("50.00"), 100, MONDAY_10)
    for order_id in range(1, 21):
        eng.place(17, ticket(order_id, "BUY", "40.00"), MONDAY_10)
    [refused] = eng.place(17, ticket(21, "BUY", "40.00"), MONDAY_10)
    assert isinstance(refused, OrderRejected) and "already has 20 active BUY orders" in refused.text
    assert isinstance(eng.place(17, ticket(22, "SELL", "60.00"), MONDAY_10)[0], OrderAcknowledged)
    eng.cancel(17, 1, MONDAY_10)
    assert isinstance(eng.place(17, ticket(23, "BUY", "40.00"), MONDAY_10)[0], OrderAcknowledged)


def test_the_records_of_an_order_and_its_execution_carry_every_field() -> None:
    """The engine builds both records by position (for speed): every field by name here."""
    eng = Engine(Account("DU1234567", D(1_000_000)), epoch_s=0x1234)
    eng.on_print(D("50.00"), 100, MONDAY_10)
    t = replace(
        ticket(7, "SELL", "50.00", qty=12, below="49.00", tif="DAY", outside_rth=False),
        conditions_ignore_rth=True, conditions_cancel_order=False,
    )
    eng.place(18, t, MONDAY_10)
    [order] = eng.open_orders()
    assert (
        order.perm_id, order.client_id, order.order_id, order.account, order.con_id, order.action, order.quantity,
        order.order_type, order.limit, order.tif, order.outside_rth, order.order_ref, order.placed_ns, order.seq,
    ) == (
        eng.next_perm_id - 1, 18, 7, "DU1234567", TQQQ.con_id, "SELL", 12, "LMT", D("50.00"), "DAY", False, "ref7",
        MONDAY_10, eng.next_seq - 1,
    )
    assert [(c.is_more, c.price, c.con_id, c.exchange, c.conjunction) for c in order.conditions] == [
        (False, D("49.00"), TQQQ.con_id, "SMART", "a")
    ]
    assert (order.conditions_ignore_rth, order.conditions_cancel_order, order.triggered) == (True, False, False)
    assert order.expires_ns == et(2025, 6, 2, 16, 0)
    eng.on_print(D("48.90"), 100, MONDAY_10 + 4)  # meets the condition
    [filled] = [e for e in eng.on_print(D("50.01"), 100, MONDAY_10 + 5) if isinstance(e, OrderFilled)]
    ex = filled.execution
    assert (
        ex.exec_id, ex.perm_id, ex.client_id, ex.order_id, ex.account, ex.con_id, ex.side, ex.shares, ex.price,
        ex.cum_qty, ex.avg_price, ex.ts_ns, ex.order_ref, ex.commission, ex.realized_pnl, ex.exchange, ex.liquidity,
    ) == (
        "00000001.00001234.01.01", order.perm_id, 18, 7, "DU1234567", TQQQ.con_id, "SLD", 12, D("50.01"), 12,
        D("50.01"), MONDAY_10 + 5, "ref7", D("1.00"), None, "ISLAND", 1,
    )
    eng.place(18, ticket(8, "BUY", "50.02", qty=2), MONDAY_10 + 6)  # marketable: takes liquidity on arrival
    assert eng.executions[-1].liquidity == 2 and eng.executions[-1].side == "BOT"
