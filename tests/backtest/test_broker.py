"""The backtest's broker: the paper broker's engine behind the executor's rules, reporting the executor's events."""

from __future__ import annotations

from decimal import Decimal

from gridbot.backtest.broker import IMMEDIATE_TIMEOUT_REASON, Limits, SimulatedBroker
from proto.messages import (
    CancelOrder,
    CommissionReported,
    Message,
    OpenOrderInfo,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderStatusChanged,
    PlaceOrder,
    PriceCondition,
)
from services.executor.rules import Gate, IntentTable, Submit
from services.executor.rules import Limits as ExecutorLimits
from sim.broker.orders import BrokerOrder
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


def _info(order: BrokerOrder) -> OpenOrderInfo:
    return OpenOrderInfo(
        key=order.order_ref, order_id=order.order_id, perm_id=order.perm_id, client_id=order.client_id,
        symbol="TQQQ", side="BUY" if order.action == "BUY" else "SELL", quantity=order.quantity,
        limit=order.limit or D(0), tif=order.tif, outside_rth=order.outside_rth, status=order.status,
        filled=order.filled, remaining=order.quantity - order.filled,
        avg_fill_price=order.avg_fill_price.quantize(D("0.0001")) if order.filled else D(0),
    )


def test_the_status_events_are_the_ones_the_executors_own_table_derives() -> None:
    # The executor turns each IB report of an order into events with services/executor/rules.IntentTable; fed the
    # engine's reports, it must give the same acceptance, status changes and cancellation as the backtest's broker.
    broker = SimulatedBroker(Limits())
    table = IntentTable(ExecutorLimits("TQQQ", 4, 18))
    broker.on_print(D("100.00"), 100, MONDAY_10_ET)
    ours: list[Message] = []
    theirs: list[Message] = []
    engine_events: list[object] = []
    original_convert = broker._convert

    def spy(events: list[object], now_ns: int) -> list[Message]:
        engine_events.extend(events)
        return original_convert(events, now_ns)

    broker._convert = spy  # type: ignore[method-assign]
    for cmd in (LEVEL1, PlaceOrder(key="tqgrid1 c1 L2 BUY", symbol="TQQQ", side="BUY", quantity=82,
                                   limit=D("98.01"), tif="GTC", condition=PriceCondition(price=D("98.01")))):
        decision = table.decide_place(cmd, Gate(connected=True, synced=True), 0)
        assert isinstance(decision, Submit)
        ours += broker.execute(cmd, MONDAY_10_ET)
        table.mark_sent(decision.record, broker._next_order_id - 1, 17, 0)
    ours += broker.on_print(D("98.90"), 100, MONDAY_10_ET + NS)
    table.get("tqgrid1 c1 L2 BUY").cancel_reason = "BUY no longer in the queue"  # type: ignore[union-attr]
    ours += broker.execute(CancelOrder(key="tqgrid1 c1 L2 BUY", reason="BUY no longer in the queue"), MONDAY_10_ET)
    for event in engine_events:
        order = getattr(event, "order", None)
        if isinstance(order, BrokerOrder):
            theirs += table.apply(_info(order), 0, MONDAY_10_ET)

    def status_only(events: list[Message]) -> list[tuple[str, str, str, int]]:
        return [
            (type(e).__name__, e.key, getattr(e, "status", ""), getattr(e, "filled", 0))
            for e in events
            if isinstance(e, OrderAccepted | OrderStatusChanged | OrderCancelled)
        ]

    assert status_only(ours) == status_only(theirs)
    assert [type(e).__name__ for e in theirs] == [
        "OrderAccepted", "OrderAccepted", "OrderStatusChanged", "OrderStatusChanged", "OrderCancelled",
    ]
