"""The backtest's broker: the paper broker's engine behind the executor's own rules (services/executor/rules.py),
reporting the executor's events."""

from __future__ import annotations

from decimal import Decimal

from gridbot.backtest.broker import IMMEDIATE_TIMEOUT_REASON, Limits, SimulatedBroker, _ticket
from proto.messages import (
    CancelOrder,
    CommissionReported,
    Message,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderStatusChanged,
    PlaceOrder,
    PriceCondition,
)
from sim.market.timefmt import parse_start
from tests.backtest.helpers import MONDAY_10_ET, NS

D = Decimal
LEVEL0 = PlaceOrder(key="tqgrid1 c1 L0 BUY", symbol="TQQQ", side="BUY", quantity=94, limit=D("100.25"), tif="DAY",
                    immediate=True)
LEVEL1 = PlaceOrder(key="tqgrid1 c1 L1 BUY", symbol="TQQQ", side="BUY", quantity=88, limit=D("99.00"), tif="GTC",
                    condition=PriceCondition(price=D("99.00")), conditions_ignore_rth=True)


def kinds(events: list[Message]) -> list[str]:
    return [type(e).__name__ for e in events]


def test_a_marketable_order_is_accepted_filled_and_charged_in_the_executors_order() -> None:
    broker = SimulatedBroker(Limits())
    broker.on_print(D("100.00"), 100, MONDAY_10_ET)

    events = broker.execute(LEVEL0, MONDAY_10_ET)

    assert kinds(events) == ["OrderAccepted", "OrderFilled", "OrderStatusChanged", "CommissionReported"]
    accepted, filled, status, commission = events
    assert isinstance(accepted, OrderAccepted) and accepted.status == "Submitted" and accepted.key == LEVEL0.key
    assert isinstance(filled, OrderFilled)
    assert (filled.shares, filled.price, filled.cum_qty, filled.order_quantity) == (94, D("100.00"), 94, 94)
    assert filled.commission is None  # it comes in its own report, after the execution, as from IB
    assert isinstance(status, OrderStatusChanged) and (status.status, status.filled) == ("Filled", 94)
    assert isinstance(commission, CommissionReported)
    assert (commission.exec_id, commission.commission) == (filled.exec_id, D("1.00"))


def test_a_conditional_buy_waits_presubmitted_then_triggers_and_fills_at_the_print() -> None:
    broker = SimulatedBroker(Limits())
    broker.on_print(D("100.00"), 100, MONDAY_10_ET)
    placed = broker.execute(LEVEL1, MONDAY_10_ET)
    assert kinds(placed) == ["OrderAccepted"]
    assert isinstance(placed[0], OrderAccepted) and placed[0].status == "PreSubmitted"
    assert broker.watch(MONDAY_10_ET).buy_at == D("99.00")

    assert broker.on_print(D("99.01"), 100, MONDAY_10_ET + NS) == []
    events = broker.on_print(D("98.50"), 100, MONDAY_10_ET + 2 * NS)

    assert kinds(events) == [
        "OrderStatusChanged", "OrderFilled", "OrderStatusChanged", "CommissionReported",
    ]
    assert isinstance(events[0], OrderStatusChanged) and events[0].status == "Submitted"  # the condition held
    assert isinstance(events[1], OrderFilled) and events[1].price == D("98.50")  # a gap fills at the print
    assert broker.watch(MONDAY_10_ET).buy_at is None


def test_a_cancel_carries_the_strategys_reason_and_frees_the_key() -> None:
    broker = SimulatedBroker(Limits())
    broker.on_print(D("100.00"), 100, MONDAY_10_ET)
    broker.execute(LEVEL1, MONDAY_10_ET)

    events = broker.execute(CancelOrder(key=LEVEL1.key, reason="BUY no longer in the queue"), MONDAY_10_ET + NS)

    assert kinds(events) == ["OrderCancelled"]
    assert isinstance(events[0], OrderCancelled) and events[0].reason == "BUY no longer in the queue"
    assert kinds(broker.execute(LEVEL1, MONDAY_10_ET + 2 * NS)) == ["OrderAccepted"]  # unfilled: may go again


def test_the_executors_rules_refuse_duplicates_a_taken_slot_and_a_full_side() -> None:
    broker = SimulatedBroker(Limits(max_live_buys=2))
    broker.on_print(D("100.00"), 100, MONDAY_10_ET)
    broker.execute(LEVEL1, MONDAY_10_ET)

    assert broker.execute(LEVEL1, MONDAY_10_ET) == []  # live: a duplicate
    second_attempt = PlaceOrder(key="tqgrid1 c1 L1 BUY a2", symbol="TQQQ", side="BUY", quantity=88,
                                limit=D("99.00"), tif="GTC")
    assert broker.execute(second_attempt, MONDAY_10_ET) == []  # slot (c1, L1, BUY) is taken
    level2 = PlaceOrder(key="tqgrid1 c1 L2 BUY", symbol="TQQQ", side="BUY", quantity=82, limit=D("98.01"), tif="GTC")
    level3 = PlaceOrder(key="tqgrid1 c1 L3 BUY", symbol="TQQQ", side="BUY", quantity=77, limit=D("97.03"), tif="GTC")
    assert kinds(broker.execute(level2, MONDAY_10_ET)) == ["OrderAccepted"]
    assert broker.execute(level3, MONDAY_10_ET) == []  # two live BUYs: the cap

    assert (broker.counters.duplicates, broker.counters.refused, broker.counters.placed) == (1, 2, 2)
    # The executor's own reasons (services/executor/rules.py).
    slot_taken, cap = broker.counters.refusals
    assert "slot (cycle 1, level 1, BUY) already has a live order 'tqgrid1 c1 L1 BUY'" in slot_taken
    assert "order cap: 2 live grid BUYs already, at most 2 (broker.max_live_buys)" in cap


def test_an_immediate_order_not_final_in_time_is_cancelled_at_its_deadline() -> None:
    closed = parse_start("2025-06-06T20:30:00-04:00")  # Friday after the after-hours session
    broker = SimulatedBroker(Limits(immediate_timeout_ns=120 * NS))
    broker.on_print(D("100.00"), 100, closed)
    assert kinds(broker.execute(LEVEL0, closed)) == ["OrderAccepted"]
    assert broker.watch(closed).due_ns == closed + 120 * NS

    assert broker.advance(closed + 119 * NS) == []
    events = broker.advance(closed + 300 * NS)

    assert kinds(events) == ["OrderCancelled"]
    assert isinstance(events[0], OrderCancelled) and events[0].reason == IMMEDIATE_TIMEOUT_REASON
    assert events[0].ts_ns == closed + 120 * NS
    assert broker.counters.timed_out == 1


def test_a_rejected_order_is_the_executors_order_rejected_and_may_go_again() -> None:
    # IB's error about a new order is noted in the intent table, then the client library's Cancelled status makes
    # the table publish OrderRejected with IB's code and text (services/executor/events.py, rules.py).
    broker = SimulatedBroker(Limits())
    broker.on_print(D("100.00"), 100, MONDAY_10_ET)
    broker.engine.reject_next = 201

    events = broker.execute(LEVEL1, MONDAY_10_ET)

    assert kinds(events) == ["OrderRejected"]
    rejected = events[0]
    assert isinstance(rejected, OrderRejected)
    assert (rejected.key, rejected.order_id, rejected.code) == (LEVEL1.key, 1, 201)
    assert rejected.text == "Order rejected - reason:rejected by the paper broker's reject-next control"
    record = broker.table.get(LEVEL1.key)
    assert record is not None and (record.status, record.error_code) == ("Cancelled", 201)
    assert kinds(broker.execute(LEVEL1, MONDAY_10_ET + NS)) == ["OrderAccepted"]  # unfilled: not a duplicate


def test_a_filled_key_is_answered_as_a_duplicate() -> None:
    broker = SimulatedBroker(Limits())
    broker.on_print(D("100.00"), 100, MONDAY_10_ET)
    assert "OrderFilled" in kinds(broker.execute(LEVEL0, MONDAY_10_ET))

    assert broker.execute(LEVEL0, MONDAY_10_ET + NS) == []

    assert (broker.counters.placed, broker.counters.duplicates) == (1, 1)
    assert len(broker.engine.executions) == 1


def test_an_order_ib_ends_itself_is_cancelled_with_ibs_status_as_the_reason() -> None:
    # A DAY order without outsideRth expires at 16:00. The paper broker sends the Cancelled status before its
    # 202 ("Order Canceled - reason:"), so the executor publishes the end with the status it has, as it does live.
    broker = SimulatedBroker(Limits())
    broker.on_print(D("100.00"), 100, MONDAY_10_ET)
    day_buy = PlaceOrder(key="tqgrid1 c1 L2 BUY", symbol="TQQQ", side="BUY", quantity=82, limit=D("98.01"),
                         tif="DAY", outside_rth=False)
    assert kinds(broker.execute(day_buy, MONDAY_10_ET)) == ["OrderAccepted"]
    close = parse_start("2025-06-02T16:00:00-04:00")
    assert broker.watch(MONDAY_10_ET).due_ns == close

    events = broker.advance(close)

    assert kinds(events) == ["OrderCancelled"]
    cancelled = events[0]
    assert isinstance(cancelled, OrderCancelled)
    assert (cancelled.key, cancelled.reason, cancelled.ts_ns) == (day_buy.key, "IB status Cancelled", close)
    assert broker.table.live_grid() == [] and broker.engine.live == {}


def test_the_executors_table_holds_what_the_engine_holds() -> None:
    broker = SimulatedBroker(Limits())
    broker.on_print(D("100.00"), 100, MONDAY_10_ET)
    level2 = PlaceOrder(key="tqgrid1 c1 L2 BUY", symbol="TQQQ", side="BUY", quantity=82, limit=D("98.01"),
                        tif="GTC", condition=PriceCondition(price=D("98.01")))
    for cmd in (LEVEL0, LEVEL1, level2):
        broker.execute(cmd, MONDAY_10_ET)
    sell = PlaceOrder(key="tqgrid1 c1 L0 SELL 100.00", symbol="TQQQ", side="SELL", quantity=94, limit=D("101.00"),
                      tif="GTC")
    broker.execute(sell, MONDAY_10_ET)
    broker.on_print(D("98.90"), 100, MONDAY_10_ET + NS)  # L1 triggers and fills
    broker.execute(CancelOrder(key=level2.key, reason="BUY no longer in the queue"), MONDAY_10_ET + 2 * NS)

    live = {r.key: (r.order_id, r.perm_id, r.status) for r in broker.table.live_grid()}
    assert live == {o.order_ref: (o.order_id, o.perm_id, o.status) for o in broker.engine.live.values()}
    assert set(live) == {sell.key}
    filled = {key for key in (LEVEL0.key, LEVEL1.key) if (r := broker.table.get(key)) and r.status == "Filled"}
    assert filled == {LEVEL0.key, LEVEL1.key}


def test_the_ticket_is_the_order_the_executors_ib_api_builds() -> None:
    # services/executor/ib_api.py: a LMT order with the key in orderRef, the PriceCondition on TQQQ's conId at SMART.
    ticket = _ticket(7, LEVEL1)
    assert (ticket.order_id, ticket.action, ticket.total_quantity, ticket.order_type) == (7, "BUY", D(88), "LMT")
    assert (ticket.lmt_price, ticket.aux_price, ticket.tif, ticket.order_ref) == (D("99.00"), None, "GTC", LEVEL1.key)
    assert (ticket.outside_rth, ticket.conditions_ignore_rth, ticket.conditions_cancel_order) == (True, True, False)
    assert (ticket.transmit, ticket.parent_id, ticket.hidden, ticket.what_if, ticket.origin) == (True, 0, False, False, 0)
    assert (ticket.oca_group, ticket.account, ticket.open_close, ticket.algo_strategy) == ("", "", "", "")
    assert (ticket.good_after_time, ticket.good_till_date, ticket.sec_type_is_bag) == ("", "", False)
    assert (ticket.contract.symbol, ticket.contract.sec_type, ticket.contract.exchange) == ("TQQQ", "STK", "SMART")
    (condition,) = ticket.conditions
    assert (condition.cond_type, condition.conjunction, condition.is_more, condition.price) == (1, "a", False, D("99.00"))
    assert (condition.con_id, condition.exchange) == (ticket.contract.con_id, "SMART")
    assert LEVEL1.condition is not None and condition.trigger_method == LEVEL1.condition.trigger_method
    assert _ticket(8, LEVEL0).conditions == () and _ticket(8, LEVEL0).tif == "DAY"
