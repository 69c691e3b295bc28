"""The executor's fault paths against the paper broker: drops, TWS restarts, SIGKILL, 1100/1101/1102, 326, halts.

Each scenario runs once with ib_insync and once with ib_async.
"""

from __future__ import annotations

import asyncio
import signal
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from proto import topics
from proto.messages import (
    Alert,
    BrokerConnected,
    BrokerConnectivity,
    BrokerDisconnected,
    ClosePosition,
    CommandAccepted,
    CommandDuplicate,
    CommandRejected,
    CommissionReported,
    Heartbeat,
    OrderAccepted,
    OrderFilled,
    OrderStatusChanged,
    TradingHalted,
    TradingResumed,
)
from services.executor import ib_api
from tests.services.executor.harness import CLIENT_ID, Bench, buy, run, sell

pytestmark = pytest.mark.slow

BUY_KEY = "tqgrid1 c1 L0 BUY"
SELL_KEY = "tqgrid1 c1 L0 SELL 100.00"


async def hold_a_lot_with_a_live_sell(b: Bench) -> OrderFilled:
    """Buy Level 0 at 100.00 and rest its SELL at 101.00; return the BUY's fill."""
    await b.control("price", "100.00")
    assert isinstance(await b.request(buy(BUY_KEY, "100.25", immediate=True)), CommandAccepted)
    await b.control("price", "100.00")
    fill: OrderFilled = await b.wait_event(OrderFilled, lambda m: m.key == BUY_KEY)
    assert isinstance(await b.request(sell(SELL_KEY, "101.00")), CommandAccepted)
    return fill


def test_sell_filled_while_disconnected_is_published_once_after_reconnect(tmp_path: Path, lib: str) -> None:
    async def scenario() -> None:
        async with Bench(tmp_path, lib) as b:
            await b.start_executor()
            await hold_a_lot_with_a_live_sell(b)

            await b.control("outage", 1.0)
            await b.wait_event(BrokerDisconnected)
            refused = await b.request(buy("tqgrid1 c1 L1 BUY", "99.00", trigger="99.00"))
            assert isinstance(refused, CommandRejected) and "disconnected" in refused.reason
            await b.control("price", "101.50")  # the SELL fills at the broker while the executor is away
            [away] = [o for o in await b.broker_orders(SELL_KEY) if o["status"] == "Filled"]

            await b.wait_connected(count=2, timeout=15)
            recovered = await b.wait_event(OrderFilled, lambda m: m.key == SELL_KEY)
            assert recovered.recovered and recovered.exec_id == away["fills"][0]["exec_id"]
            assert (recovered.side, recovered.shares, recovered.cum_qty) == ("SELL", 94, 94)
            # A SELL limit fills at the print when the print is better (the paper broker's rule, as IB's).
            assert recovered.price == Decimal("101.50") and recovered.commission is not None
            assert (await b.wait_event(CommissionReported, lambda m: m.exec_id == recovered.exec_id)).key == SELL_KEY
            await b.wait_event(OrderStatusChanged, lambda m: m.key == SELL_KEY and m.status == "Filled")

            # One more round trip through the broker and the bus: nothing is published twice.
            await b.control("drop")
            await b.wait_connected(count=3, timeout=15)
            await b.snapshot()
            fills = b.messages(OrderFilled)
            assert sorted(f.key for f in fills) == [BUY_KEY, SELL_KEY]
            again = await b.request(sell(SELL_KEY, "101.00"))
            assert isinstance(again, CommandDuplicate) and again.status == "Filled"

    run(scenario())


def test_socket_drop_reconnects_with_the_same_client_id_and_keeps_the_live_order(tmp_path: Path, lib: str) -> None:
    async def scenario() -> None:
        async with Bench(tmp_path, lib) as b:
            await b.start_executor()
            await hold_a_lot_with_a_live_sell(b)
            accepted = await b.wait_event(OrderAccepted, lambda m: m.key == SELL_KEY)

            started = time.monotonic()
            assert await b.control("drop") == 1
            disconnected = await b.wait_event(BrokerDisconnected)
            assert disconnected.reason
            reconnected = await b.wait_connected(count=2, timeout=10)
            assert reconnected.client_id == CLIENT_ID
            assert time.monotonic() - started >= 0.2  # the first backoff delay (broker.reconnect_initial)

            again = await b.request(sell(SELL_KEY, "101.00"))
            assert isinstance(again, CommandDuplicate)
            assert (again.perm_id, again.status) == (accepted.perm_id, "Submitted")
            assert len(await b.broker_orders(SELL_KEY)) == 1
            starts = await b.broker_requests("startApi")
            assert [r["fields"][1] for r in starts] == [str(CLIENT_ID)] * 2
            names = [r["request"] for r in await b.broker_requests()]
            after_start = [names[i + 1] for i, name in enumerate(names) if name == "startApi"]
            assert after_start == ["reqMarketDataType"] * 2  # on every connection

    run(scenario())


def test_a_silently_dead_connection_is_found_by_the_probe_and_made_again(tmp_path: Path, lib: str) -> None:
    async def scenario() -> None:
        overrides = {"probe_interval": 0.3, "connect_timeout": 1.0}
        async with Bench(tmp_path, lib, broker=overrides, proxy=True) as b:
            await b.start_executor()
            await hold_a_lot_with_a_live_sell(b)
            assert b.proxy is not None
            b.proxy.freeze()  # no close, no error: the executor's socket just goes quiet
            disconnected = await b.wait_event(BrokerDisconnected, timeout=10)
            assert "liveness probe" in disconnected.reason
            await b.wait_connected(count=2, timeout=15)
            again = await b.request(sell(SELL_KEY, "101.00"))
            assert isinstance(again, CommandDuplicate) and again.status == "Submitted"
            assert len(await b.broker_orders(SELL_KEY)) == 1

    run(scenario())


def test_killed_right_after_place_order_and_restarted_does_not_place_it_again(tmp_path: Path, lib: str) -> None:
    key = "tqgrid1 c7 L2 BUY"
    command = buy(key, "97.03", trigger="97.03")

    async def scenario() -> None:
        async with Bench(tmp_path, lib) as b:
            await b.start_executor(fault="kill-after-place")
            no_reply = asyncio.create_task(b.request(command, timeout=10))
            assert await b.wait_exit() == -signal.SIGKILL
            assert not no_reply.done()  # it died before answering
            no_reply.cancel()
            [order] = await b.broker_orders(key)  # it reached the broker before the executor died

            await b.start_executor()
            reply = await b.request(command)  # the strategy's retry
            assert isinstance(reply, CommandDuplicate)
            assert (reply.order_id, reply.perm_id) == (order["order_id"], order["perm_id"])
            assert len(await b.broker_orders(key)) == 1
            assert len(await b.broker_requests("placeOrder")) == 1
            adopted = await b.wait_event(OrderAccepted, lambda m: m.key == key)
            assert adopted.perm_id == order["perm_id"]

    run(scenario())


def test_1100_pauses_submissions_until_1102_and_1101_resyncs(tmp_path: Path, lib: str) -> None:
    async def scenario() -> None:
        async with Bench(tmp_path, lib) as b:
            await b.start_executor()
            await b.control("connectivity", 1100)
            lost = await b.wait_event(BrokerConnectivity, lambda m: m.code == 1100)
            assert not lost.connected
            paused = await b.request(buy("tqgrid1 c1 L1 BUY", "99.00", trigger="99.00"))
            assert isinstance(paused, CommandRejected) and "1100" in paused.reason

            await b.control("connectivity", 1102)
            assert (await b.wait_event(BrokerConnectivity, lambda m: m.code == 1102)).connected
            assert isinstance(await b.request(buy("tqgrid1 c1 L1 BUY", "99.00", trigger="99.00")), CommandAccepted)

            syncs = len(await b.broker_requests("reqAllOpenOrders"))
            await b.control("connectivity", 1101)
            assert (await b.wait_event(BrokerConnectivity, lambda m: m.code == 1101)).connected
            deadline = time.monotonic() + 5
            while len(await b.broker_requests("reqAllOpenOrders")) == syncs:
                assert time.monotonic() < deadline, "no resync after 1101"
                await asyncio.sleep(0.05)
            await b.wait_ready()
            assert isinstance(await b.request(buy("tqgrid1 c1 L1 BUY", "99.00", trigger="99.00")), CommandDuplicate)
            assert isinstance(await b.request(buy("tqgrid1 c1 L2 BUY", "98.01", trigger="98.01")), CommandAccepted)
            assert b.messages(BrokerDisconnected) == []

    run(scenario())


def test_client_id_in_use_raises_an_alert_and_connects_once_it_is_free(tmp_path: Path, lib: str) -> None:
    async def scenario() -> None:
        # A reconnect delay long enough for another program to take the clientId while the executor is away
        # (an executor that starts while the id is taken does the same, but its first alert would race the
        # test's subscription: pub/sub drops what is published before a subscriber has joined).
        async with Bench(tmp_path, lib, broker={"reconnect_initial": 0.6, "reconnect_max": 0.6, "connect_timeout": 1.0}) as b:
            await b.start_executor()
            await b.wait_connected()
            squatter: Any = ib_api.load(lib).new_ib()
            await b.control("drop")
            await b.wait_event(BrokerDisconnected)
            await squatter.connectAsync("127.0.0.1", b.broker.port, clientId=CLIENT_ID, timeout=5)
            try:
                alert = await b.wait_event(Alert, lambda m: m.code == "client_id_in_use", timeout=10)
                assert alert.severity == "critical" and str(CLIENT_ID) in alert.text
                assert len(b.messages(BrokerConnected)) == 1
            finally:
                squatter.disconnect()
            await b.wait_connected(count=2, timeout=15)
            assert len(b.messages(Alert, lambda m: m.code == "client_id_in_use")) == 1

    run(scenario())


def test_halt_from_the_bus_refuses_new_orders_and_resume_lifts_it(tmp_path: Path, lib: str) -> None:
    async def until_status(b: Bench, status: str, notice: Any) -> None:
        # Publish until the executor's heartbeat shows it took the notice (a slow joiner may miss the first).
        deadline = time.monotonic() + 10
        while not b.messages(Heartbeat, lambda m: m.service == "executor" and m.status == status):
            assert time.monotonic() < deadline, f"the executor never reported {status!r}"
            b.control_pub.publish(topics.CONTROL, notice)
            await asyncio.sleep(0.1)

    async def scenario() -> None:
        async with Bench(tmp_path, lib) as b:
            await b.start_executor()
            await until_status(b, "halted", TradingHalted(reason="reconcile found an unknown order"))
            refused = await b.request(buy(BUY_KEY, "100.25", immediate=True))
            assert isinstance(refused, CommandRejected)
            assert "halted (reconcile found an unknown order)" in refused.reason
            b.events.clear()
            await until_status(b, "ok", TradingResumed(reason="operator"))
            assert isinstance(await b.request(buy(BUY_KEY, "100.25", immediate=True)), CommandAccepted)
            assert len(await b.broker_orders(BUY_KEY)) == 1

    run(scenario())


def test_sigterm_stops_the_executor_with_exit_0(tmp_path: Path, lib: str) -> None:
    async def scenario() -> None:
        async with Bench(tmp_path, lib) as b:
            await b.start_executor()
            assert b.executor is not None
            b.executor.send_signal(signal.SIGTERM)
            assert await b.wait_exit() == 0
            requests = await b.broker_requests()
            assert requests[-1]["request"] == "disconnected"

    run(scenario())


def test_close_position_sells_the_position_even_while_halted_and_refuses_a_stale_quantity(
    tmp_path: Path, lib: str
) -> None:
    async def scenario() -> None:
        async with Bench(tmp_path, lib) as b:
            await b.start_executor()
            await b.control("price", "100.00")
            assert isinstance(await b.request(buy(BUY_KEY, "100.25", immediate=True)), CommandAccepted)
            await b.control("price", "100.00")
            await b.wait_event(OrderFilled, lambda m: m.key == BUY_KEY)
            while not b.messages(Heartbeat, lambda m: m.service == "executor" and m.status == "halted"):
                b.control_pub.publish(topics.CONTROL, TradingHalted(reason="operator reset"))
                await asyncio.sleep(0.1)

            stale = await b.request(ClosePosition(symbol="TQQQ", side="SELL", quantity=200, limit=Decimal("99.00")))
            assert isinstance(stale, CommandRejected) and "position is 94" in stale.reason

            # Marketable: the broker fills it at once against the last print (100.00).
            reply = await b.request(
                ClosePosition(symbol="TQQQ", side="SELL", quantity=94, limit=Decimal("99.00"), reason="test")
            )
            assert isinstance(reply, CommandAccepted) and "SELL 94 TQQQ filled at 100.00" in reply.detail
            [order] = [o for o in await b.broker_orders() if o["action"] == "SELL"]
            assert order["order_ref"] == "gridbot reset: close position" and order["tif"] == "DAY"
            snapshot = await b.snapshot(resync=True)
            assert [(p.symbol, p.quantity) for p in snapshot.positions] == [("TQQQ", 0)]
            fill = await b.wait_event(OrderFilled, lambda m: m.side == "SELL")
            assert fill.key == ""  # not a grid order: the ledger never takes it for a lot

    run(scenario())
