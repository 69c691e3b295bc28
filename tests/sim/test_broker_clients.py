"""Several clients, reconnects, faults and market data against the paper broker, with both client libraries."""

from __future__ import annotations

import asyncio
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


def test_orders_and_their_events_go_to_the_owning_client(broker: BrokerThread, lib: str) -> None:
    async def scenario() -> None:
        mod = client_module(lib)
        a = await connect(lib, broker.port, client_id=17)
        b = await connect(lib, broker.port, client_id=18)
        [contract] = await a.qualifyContractsAsync(tqqq(mod))
        ta = a.placeOrder(contract, mod.LimitOrder("BUY", 5, 50.0, orderRef="from-a"))
        tb = b.placeOrder(contract, mod.LimitOrder("SELL", 5, 70.0, orderRef="from-b"))
        await until(lambda: ta.orderStatus.status == "Submitted" and tb.orderStatus.status == "Submitted", "acks")
        broker.price("49.00")
        await until(lambda: ta.orderStatus.status == "Filled", "A's fill")
        await settle()
        assert b.fills() == [] and len(a.fills()) == 1
        own = await b.reqOpenOrdersAsync()
        assert [t.order.orderRef for t in own] == ["from-b"]
        everything = await a.reqAllOpenOrdersAsync()
        assert [(t.order.clientId, t.order.orderRef) for t in everything] == [(18, "from-b")]
        a.disconnect()
        b.disconnect()

    run(scenario())


def test_a_client_id_in_use_gets_326_and_is_closed(broker: BrokerThread, lib: str) -> None:
    async def scenario() -> None:
        mod = client_module(lib)
        first = await connect(lib, broker.port, client_id=17)
        second = mod.IB()
        errors = ErrorLog(second)
        # The clients wait out their timeout after the broker closes the socket (as with a real TWS).
        with pytest.raises((ConnectionError, TimeoutError, asyncio.TimeoutError)):
            await second.connectAsync("127.0.0.1", broker.port, clientId=17, timeout=0.5)
        assert 326 in errors.codes(-1)
        assert not second.isConnected()
        assert first.isConnected()
        assert await first.reqCurrentTimeAsync()  # the first connection still works
        first.disconnect()

    run(scenario())


def test_reconnect_returns_the_open_conditional_order_and_the_fills_made_while_away(
    broker: BrokerThread, lib: str
) -> None:
    async def scenario() -> None:
        mod = client_module(lib)
        ib = await connect(lib, broker.port)
        [contract] = await ib.qualifyContractsAsync(tqqq(mod))
        broker.price("100.00")
        cond = ib.placeOrder(contract, grid_buy(mod, 10, 97.0, ref="tqgrid1 c1 L3 BUY"))
        plain = ib.placeOrder(contract, mod.LimitOrder("BUY", 7, 99.0, tif="GTC", orderRef="tqgrid1 c1 L1 BUY"))
        await until(lambda: cond.orderStatus.status == "PreSubmitted" and plain.orderStatus.status == "Submitted",
                    "both acknowledged")
        last_id = plain.order.orderId
        ib.disconnect()
        await until(lambda: broker.call(lambda: 17 not in broker.broker.sessions), "the broker saw the drop")

        broker.price("98.90")  # fills the plain BUY while the client is away

        ib = await connect(lib, broker.port)
        [back] = ib.openTrades()
        assert back.order.orderRef == "tqgrid1 c1 L3 BUY" and back.orderStatus.status == "PreSubmitted"
        assert back.order.conditions[0].price == 97.0 and back.order.conditionsIgnoreRth
        [fill] = ib.fills()
        assert (fill.execution.orderRef, fill.execution.shares, fill.execution.price) == (
            "tqgrid1 c1 L1 BUY", 7.0, 98.9)
        assert fill.commissionReport.commission == 1.0
        assert any(t.order.orderRef == "tqgrid1 c1 L1 BUY" and t.orderStatus.status == "Filled"
                   for t in ib.trades())  # from reqCompletedOrders
        broker.price("96.95")
        await until(lambda: back.orderStatus.status == "Filled", "the returned order triggers and fills")
        fresh = ib.placeOrder(contract, mod.LimitOrder("SELL", 1, 200.0))
        await until(lambda: fresh.orderStatus.status == "Submitted", "new ids continue above the old ones")
        assert fresh.order.orderId > last_id
        ib.disconnect()

    run(scenario())


def test_drop_closes_every_client_and_they_reconnect(broker: BrokerThread, lib: str) -> None:
    async def scenario() -> None:
        a = await connect(lib, broker.port, client_id=1)
        b = await connect(lib, broker.port, client_id=2)
        assert broker.call(broker.broker.drop) == 2
        await until(lambda: not a.isConnected() and not b.isConnected(), "both disconnected")
        a = await connect(lib, broker.port, client_id=1)
        assert a.isConnected()
        a.disconnect()

    run(scenario())


def test_outage_refuses_connections_until_it_ends(broker: BrokerThread, lib: str) -> None:
    async def scenario() -> None:
        ib = await connect(lib, broker.port)
        # Long enough that even a starved test sees the refusal before the outage ends by itself.
        result = broker.run(broker.broker.outage(60))
        assert result["dropped"] == 1
        await until(lambda: not ib.isConnected(), "dropped by the outage")
        with pytest.raises((ConnectionRefusedError, OSError)):
            await asyncio.open_connection("127.0.0.1", broker.port)
        assert broker.run(broker.broker.outage(0.3))["refusing_for"] == 0.3  # a new outage replaces the long one
        await until(lambda: broker.call(lambda: broker.broker.outage_until is None), "the outage ends by itself")
        ib = await connect(lib, broker.port)
        assert ib.isConnected()
        ib.disconnect()

    run(scenario())


def test_connectivity_errors_reach_every_client_and_1102_gets_account_summary(
    broker: BrokerThread, lib: str
) -> None:
    async def scenario() -> None:
        ib = await connect(lib, broker.port)
        errors = ErrorLog(ib)
        assert broker.call(broker.broker.connectivity, 1100) == 1
        await until(lambda: 1100 in errors.codes(-1), "1100")
        broker.call(broker.broker.connectivity, 1102)
        await until(lambda: bool(ib.wrapper.acctSummary), "the client's account summary after 1102")
        assert any(v.tag == "NetLiquidation" for v in ib.wrapper.acctSummary.values())
        ib.disconnect()

    run(scenario())
    names = [r["request"] for r in broker.call(broker.broker.requests_report)]
    assert "reqAccountSummary" in names


def test_market_data_live_delayed_and_snapshot(broker: BrokerThread, lib: str) -> None:
    async def scenario() -> None:
        mod = client_module(lib)
        delayed_ib = await connect(lib, broker.port, client_id=1)
        delayed_ib.reqMarketDataType(3)
        live_ib = await connect(lib, broker.port, client_id=2)
        [contract] = await live_ib.qualifyContractsAsync(tqqq(mod))
        delayed = delayed_ib.reqMktData(contract)
        live = live_ib.reqMktData(contract)
        broker.price("97.05", 300)
        await until(lambda: delayed.last == 97.05 and live.last == 97.05, "ticks on both")
        assert (delayed.marketDataType, live.marketDataType) == (3, 1)
        assert live.lastSize == 300
        [snap] = await live_ib.reqTickersAsync(contract)
        assert snap.last == 97.05
        live_ib.cancelMktData(contract)
        await settle()
        broker.price("97.10")
        await until(lambda: delayed.last == 97.10, "delayed tick")
        await settle()
        assert live.last == 97.05
        delayed_ib.disconnect()
        live_ib.disconnect()

    run(scenario())
    log = broker.call(broker.broker.requests_report, 1)
    names = [r["request"] for r in log]
    # reqMarketDataType(3) right after the connect's sync (the field notes' fix for error 354).
    assert names[names.index("reqExecutions") + 1] == "reqMarketDataType"
    assert log[names.index("reqMarketDataType")]["fields"] == ["1", "3"]


def test_positions_and_account_values_update_after_a_fill(broker: BrokerThread, lib: str) -> None:
    async def scenario() -> None:
        mod = client_module(lib)
        ib = await connect(lib, broker.port)
        [contract] = await ib.qualifyContractsAsync(tqqq(mod))
        broker.price("50.00")
        ib.placeOrder(contract, mod.LimitOrder("BUY", 100, 50.0))
        await until(lambda: bool(ib.portfolio()) and bool(ib.positions()), "portfolio and position")
        [item] = ib.portfolio()
        assert (item.position, item.marketPrice, item.marketValue) == (100.0, 50.0, 5000.0)

        def cash() -> str:
            return next(v.value for v in ib.accountValues() if v.tag == "TotalCashValue" and not v.modelCode)

        await until(lambda: cash() == "994999.00", "cash after 5000.00 + 1.00 commission")
        ib.disconnect()

    run(scenario())


def test_req_ids_and_unsupported_requests(broker: BrokerThread, lib: str) -> None:
    async def scenario() -> None:
        mod = client_module(lib)
        ib = await connect(lib, broker.port)
        errors = ErrorLog(ib)
        ib.client.reqIds(1)
        ib.client.reqScannerParameters()  # not served: an error, and the connection carries on
        await until(lambda: 321 in errors.codes(-1), "321 for an unsupported request")
        ib.client.send(3, 4242, 72539702, "TQQQ")  # a placeOrder cut short
        await until(lambda: 321 in errors.codes(4242), "321 naming the order id of a bad placeOrder")
        assert any("message ends before field" in m for r, c, m in errors.errors if r == 4242)
        assert await ib.reqCurrentTimeAsync()
        [contract] = await ib.qualifyContractsAsync(tqqq(mod))
        assert contract.conId == 72539702
        ib.disconnect()

    run(scenario())


def _raw_client(port: int) -> Any:
    return asyncio.open_connection("127.0.0.1", port)


def test_garbage_and_half_messages_never_kill_the_server(broker: BrokerThread, lib: str) -> None:
    async def scenario() -> None:
        reader, writer = await _raw_client(broker.port)
        writer.write(b"GET / HTTP/1.1\r\n\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), WAIT) == b""  # closed, not crashed
        writer.close()
        reader, writer = await _raw_client(broker.port)
        writer.write(b"API\0\0\0\0\x09v157..176")  # then silence
        await writer.drain()
        writer.close()
        ib = await connect(lib, broker.port)
        assert ib.isConnected()
        ib.disconnect()

    run(scenario())


@pytest.mark.parametrize("max_version", [157, 163, 170])
def test_older_api_versions_negotiate_and_trade(broker: BrokerThread, lib: str, max_version: int) -> None:
    async def scenario() -> None:
        mod = client_module(lib)
        ib = mod.IB()
        ib.client.MaxClientVersion = max_version  # an older client: the broker answers min(176, its max)
        await ib.connectAsync("127.0.0.1", broker.port, clientId=17, timeout=WAIT)
        assert ib.client.serverVersion() == max_version
        errors = ErrorLog(ib)
        [contract] = await ib.qualifyContractsAsync(tqqq(mod))
        broker.price("100.00")
        trade = ib.placeOrder(contract, grid_buy(mod, 10, 99.0))
        await until(lambda: trade.orderStatus.status == "PreSubmitted", "conditional order held")
        broker.price("98.99")
        await until(lambda: trade.orderStatus.status == "Filled", "filled")
        ib.cancelOrder(trade.order)
        await until(lambda: 10148 in errors.codes(trade.order.orderId), "10148 reaches an older client too")
        ib.disconnect()

    run(scenario())


def test_a_client_outside_the_supported_versions_is_closed(broker: BrokerThread) -> None:
    async def scenario() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
        version = b"v100..150"
        writer.write(b"API\0" + len(version).to_bytes(4, "big") + version)
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), WAIT) == b""
        writer.close()

    run(scenario())
