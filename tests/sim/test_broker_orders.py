"""Order life cycles against the paper broker over TCP, driven by the real ib_insync and ib_async.

Each scenario runs once per client library. The broker runs in a thread with a driven clock (Monday 2 June 2025,
10:00 ET unless a test moves it); prices come from ``broker.price``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.sim.broker_harness import (
    WAIT,
    BrokerThread,
    ErrorLog,
    client_module,
    connect,
    grid_buy,
    run,
    settle,
    tqqq,
    until,
)


async def session(lib: str, broker: BrokerThread) -> tuple[Any, Any, Any, ErrorLog]:
    """Connect, qualify TQQQ; return (module, ib, contract, error log)."""
    mod = client_module(lib)
    ib = await connect(lib, broker.port)
    errors = ErrorLog(ib)
    [contract] = await ib.qualifyContractsAsync(tqqq(mod))
    return mod, ib, contract, errors


def test_connect_sync_and_contract_details(broker: BrokerThread, lib: str) -> None:
    async def scenario() -> None:
        mod = client_module(lib)
        ib = mod.IB()
        farm = ErrorLog(ib)
        await ib.connectAsync("127.0.0.1", broker.port, clientId=17, timeout=WAIT)
        assert farm.codes(-1) == [2104, 2106, 2158]
        assert ib.managedAccounts() == ["DU1234567"]
        assert ib.positions() == [] and ib.openTrades() == []
        assert any(v.tag == "NetLiquidation" and v.value == "1000000.00" for v in ib.accountValues())
        [contract] = await ib.qualifyContractsAsync(tqqq(mod))
        assert (contract.conId, contract.primaryExchange, contract.tradingClass) == (72539702, "NASDAQ", "NMS")
        [details] = await ib.reqContractDetailsAsync(tqqq(mod))
        assert details.minTick == 0.01 and details.longName == "PROSHARES ULTRAPRO QQQ"
        errors = ErrorLog(ib)
        assert await ib.reqContractDetailsAsync(mod.Stock("NOPE", "SMART", "USD")) in ([], [None])
        assert 200 in errors.codes()
        server_time = await ib.reqCurrentTimeAsync()
        assert server_time.isoformat() == "2025-06-02T14:00:00+00:00"
        ib.disconnect()

    run(scenario())
    requests = [r["request"] for r in broker.call(broker.broker.requests_report)]
    assert requests[:1] == ["startApi"]
    for name in ("reqPositions", "reqOpenOrders", "reqCompletedOrders", "reqAccountUpdates",
                 "reqAccountUpdatesMulti", "reqExecutions"):
        assert name in requests


def test_limit_buy_rests_then_fills_with_the_real_sequence(broker: BrokerThread, lib: str) -> None:
    async def scenario() -> None:
        mod, ib, contract, errors = await session(lib, broker)
        broker.price("50.00")
        trade = ib.placeOrder(contract, mod.LimitOrder("BUY", 30, 49.0, tif="GTC", orderRef="ref-buy"))
        await until(lambda: trade.orderStatus.status == "Submitted", "Submitted")
        broker.price("49.10")
        await settle()
        assert trade.orderStatus.status == "Submitted" and not trade.fills
        broker.price("48.50")  # a gap through the limit fills at the print
        await until(lambda: trade.orderStatus.status == "Filled", "Filled")
        await until(lambda: trade.fills and trade.fills[0].commissionReport.commission > 0, "commission report")
        [fill] = trade.fills
        assert (fill.execution.shares, fill.execution.price, fill.execution.orderRef) == (30.0, 48.5, "ref-buy")
        assert fill.commissionReport.commission == 1.0
        assert trade.orderStatus.avgFillPrice == 48.5 and trade.orderStatus.remaining == 0
        await until(lambda: bool(ib.positions()), "position")
        [pos] = ib.positions()
        assert pos.position == 30 and pos.avgCost == pytest.approx(48.5 + 1 / 30)
        assert errors.codes() == []
        ib.disconnect()

    run(scenario())
    [order] = broker.orders()
    assert [h["status"] for h in order["history"]] == ["Submitted", "Filled"]
    assert order["order_ref"] == "ref-buy" and order["fills"][0]["price"] == "48.50"


def test_marketable_limit_fills_on_arrival_and_sell_realizes_pnl(broker: BrokerThread, lib: str) -> None:
    async def scenario() -> None:
        mod, ib, contract, errors = await session(lib, broker)
        broker.price("100.00")
        buy = ib.placeOrder(contract, mod.LimitOrder("BUY", 94, 100.25, outsideRth=True))
        await until(lambda: buy.orderStatus.status == "Filled", "Level-0 style BUY filled")
        assert buy.orderStatus.avgFillPrice == 100.0  # the better of the limit and the last print
        sell = ib.placeOrder(contract, mod.LimitOrder("SELL", 94, 101.0, tif="GTC", outsideRth=True))
        await until(lambda: sell.orderStatus.status == "Submitted", "SELL working")
        broker.price("101.02")
        await until(lambda: sell.orderStatus.status == "Filled", "SELL filled")
        await until(lambda: len(sell.fills) == 1 and sell.fills[0].commissionReport.realizedPNL != 0, "pnl")
        # (101.02 - 100 - 1/94) * 94 - 1.00 = 93.88
        assert sell.fills[0].commissionReport.realizedPNL == pytest.approx(93.88)
        await until(lambda: not ib.positions(), "flat")
        ib.disconnect()

    run(scenario())


def test_partial_fills_sized_by_print(tmp_path: Path, lib: str) -> None:
    broker = BrokerThread(tmp_path / "state", partial_fills=True)
    try:
        async def scenario() -> None:
            mod, ib, contract, _ = await session(lib, broker)
            trade = ib.placeOrder(contract, mod.LimitOrder("BUY", 250, 40.0, tif="GTC"))
            await until(lambda: trade.orderStatus.status == "Submitted", "Submitted")
            broker.price("39.99", 100)
            await until(lambda: trade.orderStatus.filled == 100, "first slice")
            assert trade.orderStatus.status == "Submitted" and trade.orderStatus.remaining == 150
            broker.price("40.00", 200)
            await until(lambda: trade.orderStatus.status == "Filled", "rest")
            await until(lambda: len(trade.fills) == 2 and all(f.commissionReport.execId for f in trade.fills),
                        "two executions with commission reports")
            assert [f.execution.shares for f in trade.fills] == [100.0, 150.0]
            assert [f.execution.cumQty for f in trade.fills] == [100.0, 250.0]
            assert sum(f.commissionReport.commission for f in trade.fills) == pytest.approx(1.25)
            ib.disconnect()

        run(scenario())
    finally:
        broker.stop()


def test_modify_and_cancel(broker: BrokerThread, lib: str) -> None:
    async def scenario() -> None:
        mod, ib, contract, errors = await session(lib, broker)
        broker.price("50.00")
        order = mod.LimitOrder("SELL", 10, 55.0, tif="GTC", orderRef="r1")
        trade = ib.placeOrder(contract, order)
        await until(lambda: trade.orderStatus.status == "Submitted", "Submitted")
        order.lmtPrice = 52.0
        order.totalQuantity = 12
        ib.placeOrder(contract, order)
        await until(lambda: broker.orders()[0]["limit"] == "52.00", "modified at the broker")
        assert broker.orders()[0]["quantity"] == 12
        ib.cancelOrder(order)
        await until(lambda: trade.orderStatus.status == "Cancelled", "Cancelled")
        await until(lambda: 202 in errors.codes(order.orderId), "error 202")
        ib.cancelOrder(order)  # again: the order is no longer cancellable
        await until(lambda: 10148 in errors.codes(order.orderId), "error 10148")
        ib.disconnect()

    run(scenario())
    [order] = broker.orders()
    assert [h["status"] for h in order["history"]] == ["Submitted", "Submitted", "Cancelled"]


def test_cancel_of_filled_and_unknown_orders(broker: BrokerThread, lib: str) -> None:
    async def scenario() -> None:
        mod, ib, contract, errors = await session(lib, broker)
        broker.price("50.00")
        order = mod.LimitOrder("BUY", 5, 51.0)
        trade = ib.placeOrder(contract, order)
        await until(lambda: trade.orderStatus.status == "Filled", "Filled")
        ib.cancelOrder(order)
        await until(lambda: 10148 in errors.codes(order.orderId), "10148 for a filled order")
        assert any("state: Filled" in m for _, c, m in errors.errors if c == 10148)
        ghost = mod.LimitOrder("BUY", 5, 40.0)
        ghost.orderId = 999
        ib.client.cancelOrder(999)
        await until(lambda: 10147 in errors.codes(999), "10147 for an unknown id")
        ib.disconnect()

    run(scenario())


def test_duplicate_order_id_is_refused(broker: BrokerThread, lib: str) -> None:
    async def scenario() -> None:
        mod, ib, contract, errors = await session(lib, broker)
        first = ib.placeOrder(contract, mod.LimitOrder("BUY", 5, 40.0))
        await until(lambda: first.orderStatus.status == "Submitted", "first order")
        low_id = first.order.orderId - 1  # below the highest id this client used, never an order
        ib.client.placeOrder(low_id, contract, mod.LimitOrder("BUY", 5, 41.0))
        await until(lambda: 103 in errors.codes(low_id), "103 Duplicate order id")
        assert len(broker.orders()) == 1
        ib.disconnect()

    run(scenario())


def test_reject_next_and_invalid_orders(broker: BrokerThread, lib: str) -> None:
    async def scenario() -> None:
        mod, ib, contract, errors = await session(lib, broker)
        broker.call(broker.broker.reject_next, 201)
        rejected = ib.placeOrder(contract, mod.LimitOrder("BUY", 5, 40.0))
        await until(lambda: rejected.orderStatus.status == "Cancelled", "rejected order cancelled")
        assert any(c == 201 and "reject-next" in m for _, c, m in errors.errors)
        fine = ib.placeOrder(contract, mod.LimitOrder("BUY", 5, 40.0))
        await until(lambda: fine.orderStatus.status == "Submitted", "the next order is accepted")
        sub_penny = ib.placeOrder(contract, mod.LimitOrder("BUY", 5, 40.005))
        await until(lambda: 110 in errors.codes(sub_penny.order.orderId), "110 minimum price variation")
        stop = ib.placeOrder(contract, mod.StopOrder("SELL", 5, 30.0))
        await until(lambda: stop.orderStatus.status == "Cancelled", "unsupported type rejected")
        assert any(c == 201 and "'STP' is not supported" in m for _, c, m in errors.errors)
        ib.disconnect()

    run(scenario())
    statuses = [o["status"] for o in broker.orders()]
    assert statuses == ["Cancelled", "Submitted", "Cancelled", "Cancelled"]


def test_market_order_is_rejected_outside_regular_hours(broker: BrokerThread, lib: str) -> None:
    broker.set_time(2025, 6, 2, 8, 0)

    async def scenario() -> None:
        mod, ib, contract, errors = await session(lib, broker)
        trade = ib.placeOrder(contract, mod.MarketOrder("BUY", 5))
        await until(lambda: trade.orderStatus.status == "Cancelled", "MKT rejected pre-market")
        assert any(c == 201 and "regular trading hours" in m for _, c, m in errors.errors)
        ib.disconnect()

    run(scenario())


def test_limit_without_outside_rth_waits_for_the_open(broker: BrokerThread, lib: str) -> None:
    broker.set_time(2025, 6, 2, 7, 0)

    async def scenario() -> None:
        mod, ib, contract, errors = await session(lib, broker)
        broker.price("50.00")
        trade = ib.placeOrder(contract, mod.LimitOrder("BUY", 5, 50.5, tif="GTC"))
        await until(lambda: 399 in errors.codes(trade.order.orderId), "warning 399")
        assert any("09:30:00 US/Eastern" in m for _, c, m in errors.errors if c == 399)
        broker.price("49.00")
        await settle()
        assert not trade.fills
        broker.set_time(2025, 6, 2, 9, 30)
        await until(lambda: trade.orderStatus.status == "Submitted", "Submitted at the open")
        broker.price("49.50")
        await until(lambda: trade.orderStatus.status == "Filled", "filled in regular hours")
        ib.disconnect()

    run(scenario())
    [order] = broker.orders()
    assert [h["status"] for h in order["history"]] == ["PreSubmitted", "Submitted", "Filled"]


def test_outside_rth_limit_fills_pre_market(broker: BrokerThread, lib: str) -> None:
    broker.set_time(2025, 6, 2, 7, 0)

    async def scenario() -> None:
        mod, ib, contract, errors = await session(lib, broker)
        trade = ib.placeOrder(contract, mod.LimitOrder("BUY", 5, 50.0, outsideRth=True))
        await until(lambda: trade.orderStatus.status == "Submitted", "Submitted pre-market")
        broker.price("49.90")
        await until(lambda: trade.orderStatus.status == "Filled", "filled pre-market")
        assert 399 not in errors.codes()
        ib.disconnect()

    run(scenario())


def test_day_order_expires_at_the_end_of_its_session(broker: BrokerThread, lib: str) -> None:
    async def scenario() -> None:
        mod, ib, contract, errors = await session(lib, broker)
        day = ib.placeOrder(contract, mod.LimitOrder("BUY", 5, 40.0, tif="DAY"))
        day_ext = ib.placeOrder(contract, mod.LimitOrder("BUY", 5, 40.0, tif="DAY", outsideRth=True))
        gtc = ib.placeOrder(contract, mod.LimitOrder("BUY", 5, 40.0, tif="GTC"))
        await until(lambda: gtc.orderStatus.status == "Submitted", "all working")
        broker.set_time(2025, 6, 2, 16, 0)
        await until(lambda: day.orderStatus.status == "Cancelled", "DAY expired at 16:00")
        assert day_ext.orderStatus.status == "Submitted"
        broker.set_time(2025, 6, 2, 20, 0)
        await until(lambda: day_ext.orderStatus.status == "Cancelled", "outsideRth DAY expired at 20:00")
        broker.set_time(2025, 6, 3, 10, 0)
        await settle()
        assert gtc.orderStatus.status == "Submitted"
        ib.disconnect()

    run(scenario())


def test_conditional_order_waits_in_presubmitted_then_triggers_and_fills(broker: BrokerThread, lib: str) -> None:
    async def scenario() -> None:
        mod, ib, contract, errors = await session(lib, broker)
        broker.price("100.00")
        trade = ib.placeOrder(contract, grid_buy(mod, 10, 99.0, con_id=contract.conId))
        await until(lambda: trade.orderStatus.status == "PreSubmitted", "PreSubmitted")
        broker.price("99.01")
        await settle()
        assert trade.orderStatus.status == "PreSubmitted"
        broker.price("98.90")  # the condition holds and the limit is reached on the same print
        await until(lambda: trade.orderStatus.status == "Filled", "triggered and filled")
        assert trade.fills[0].execution.price == 98.9
        assert errors.codes() == []
        ib.disconnect()

    run(scenario())
    [order] = broker.orders()
    assert [h["status"] for h in order["history"]] == ["PreSubmitted", "Submitted", "Filled"]
    assert order["conditions"] == [{"type": "price", "is_more": False, "price": "99.00", "con_id": 72539702,
                                    "exchange": "SMART", "trigger_method": 0, "conjunction": "a"}]
    assert order["conditions_ignore_rth"] is True


def test_conditions_respect_ignore_rth_and_cancel_order(broker: BrokerThread, lib: str) -> None:
    broker.set_time(2025, 6, 2, 18, 0)

    async def scenario() -> None:
        mod, ib, contract, errors = await session(lib, broker)
        rth_only = grid_buy(mod, 5, 50.0)
        rth_only.conditionsIgnoreRth = False
        held = ib.placeOrder(contract, rth_only)
        canceller = grid_buy(mod, 5, 50.0)
        canceller.conditionsCancelOrder = True
        cancelled = ib.placeOrder(contract, canceller)
        await until(lambda: held.orderStatus.status == "PreSubmitted", "both placed")
        broker.price("49.00")  # after hours: only the ignore-RTH condition is watched
        await until(lambda: cancelled.orderStatus.status == "Cancelled", "conditionsCancelOrder")
        await settle()
        assert held.orderStatus.status == "PreSubmitted"
        broker.set_time(2025, 6, 3, 9, 30)
        broker.price("49.50")
        await until(lambda: held.orderStatus.status == "Filled", "condition triggers in regular hours")
        ib.disconnect()

    run(scenario())


@pytest.mark.parametrize("con_id", [0, 123456])
def test_condition_with_an_invalid_instrument_gets_398(broker: BrokerThread, lib: str, con_id: int) -> None:
    async def scenario() -> None:
        mod, ib, contract, errors = await session(lib, broker)
        trade = ib.placeOrder(contract, grid_buy(mod, 5, 50.0, con_id=con_id))
        await until(lambda: 398 in errors.codes(trade.order.orderId), "398")
        assert any("Please provide valid financial instrument" in m for _, c, m in errors.errors if c == 398)
        await until(lambda: trade.orderStatus.status == "Cancelled", "the order is dead")
        ib.disconnect()

    run(scenario())


def test_the_21st_active_order_per_side_is_rejected(broker: BrokerThread, lib: str) -> None:
    async def scenario() -> None:
        mod, ib, contract, errors = await session(lib, broker)
        sells = [ib.placeOrder(contract, mod.LimitOrder("SELL", 1, 60.0 + i, tif="GTC")) for i in range(20)]
        buy = ib.placeOrder(contract, mod.LimitOrder("BUY", 1, 40.0, tif="GTC"))
        await until(lambda: all(t.orderStatus.status == "Submitted" for t in [*sells, buy]), "20 SELLs + 1 BUY")
        extra = ib.placeOrder(contract, mod.LimitOrder("SELL", 1, 90.0, tif="GTC"))
        await until(lambda: extra.orderStatus.status == "Cancelled", "21st SELL rejected")
        assert any(c == 201 and "at most 20 active orders per contract per side" in m for _, c, m in errors.errors)
        ib.cancelOrder(sells[0].order)
        await until(lambda: sells[0].orderStatus.status == "Cancelled", "a slot frees up")
        again = ib.placeOrder(contract, mod.LimitOrder("SELL", 1, 90.0, tif="GTC"))
        await until(lambda: again.orderStatus.status == "Submitted", "accepted once below the cap")
        ib.disconnect()

    run(scenario(), timeout=90)


def test_global_cancel(broker: BrokerThread, lib: str) -> None:
    async def scenario() -> None:
        mod, ib, contract, errors = await session(lib, broker)
        trades = [ib.placeOrder(contract, mod.LimitOrder("BUY", 1, 40.0 + i, tif="GTC")) for i in range(3)]
        await until(lambda: all(t.orderStatus.status == "Submitted" for t in trades), "working")
        ib.reqGlobalCancel()
        await until(lambda: all(t.orderStatus.status == "Cancelled" for t in trades), "all cancelled")
        ib.disconnect()

    run(scenario())
