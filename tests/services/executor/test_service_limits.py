"""The executor's limits against the paper broker: its message rate, IB's 20-order cap, IB's pacing error (100).

Each scenario runs once with ib_insync and once with ib_async.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from proto.messages import Alert, CancelAll, CommandAccepted, CommandRejected, OrderRejected
from services.executor import ib_api
from tests.services.executor.harness import Bench, buy, run, sell

pytestmark = pytest.mark.slow

SECOND_NS = 1_000_000_000


def test_submissions_never_exceed_the_configured_messages_per_second(tmp_path: Path, lib: str) -> None:
    rate = 10
    keys = [(f"tqgrid1 c1 L{n} BUY", f"{90 - n}.00") for n in range(1, 5)]

    async def scenario() -> None:
        async with Bench(tmp_path, lib, broker={"max_messages_per_second": rate}) as b:
            await b.start_executor()
            await b.control("price", "100.00")
            started = time.monotonic()
            for key, trigger in keys:
                assert isinstance(await b.request(buy(key, trigger, trigger=trigger)), CommandAccepted)
            assert isinstance(await b.request(CancelAll(reason="test")), CommandAccepted)
            for key, trigger in keys:  # cancelled with nothing filled: each key may be placed again
                assert isinstance(await b.request(buy(key, trigger, trigger=trigger)), CommandAccepted)
            elapsed = time.monotonic() - started

            sent = [r["ts_ns"] for r in await b.broker_requests() if r["request"] in ("placeOrder", "cancelOrder")]
            assert len(sent) == 12
            # Measured where the broker receives them, so allow the wire's jitter: any 0.9 s holds at most `rate`.
            window = 9 * SECOND_NS // 10
            busiest = max(sum(1 for t in sent if start <= t < start + window) for start in sent)
            assert busiest <= rate
            assert elapsed >= 1.0  # 12 messages at 10 per second need one full wait

    run(scenario())


def test_ibs_cap_of_20_orders_per_side_is_reported_with_its_reason(tmp_path: Path, lib: str) -> None:
    async def scenario() -> None:
        async with Bench(tmp_path, lib) as b:
            await b.start_executor()
            other: Any = ib_api.load(lib)
            manual = other.new_ib()
            await manual.connectAsync("127.0.0.1", b.broker.port, clientId=99, timeout=5)
            try:
                contract = other.stock("TQQQ")
                await manual.qualifyContractsAsync(contract)
                for n in range(20):  # the user's own SELLs, placed by hand in TWS
                    manual.placeOrder(contract, other.module.LimitOrder("SELL", 1, 150.0 + n, tif="GTC"))
                deadline = time.monotonic() + 5
                while len([o for o in await b.broker_orders() if o["status"] == "Submitted"]) < 20:
                    assert time.monotonic() < deadline, "the broker did not take the 20 manual SELLs"
                    await asyncio.sleep(0.05)
            finally:
                manual.disconnect()
            key = "tqgrid1 c1 L1 SELL 99.00"
            reply = await b.request(sell(key, "100.00"))
            assert isinstance(reply, CommandRejected) and reply.code == 201
            assert "20 active orders per contract per side" in reply.reason
            event = await b.wait_event(OrderRejected, lambda m: m.key == key)
            assert event.code == 201 and event.text == reply.reason
            # Other clients' orders are not pushed to the executor; a resync fetches them (reqAllOpenOrders).
            assert [o for o in (await b.snapshot()).orders if o.client_id == 99] == []
            snapshot = await b.snapshot(resync=True)
            assert len([o for o in snapshot.orders if o.key == "" and o.client_id == 99]) == 20

    run(scenario())


def test_pacing_error_100_backs_off_with_an_alert(tmp_path: Path, lib: str) -> None:
    async def scenario() -> None:
        async with Bench(tmp_path, lib) as b:
            await b.start_executor()
            await b.control("reject-next", 100)
            first = await b.request(buy("tqgrid1 c1 L1 BUY", "99.00", trigger="99.00"))
            assert isinstance(first, CommandRejected) and first.code == 100
            alert = await b.wait_event(Alert, lambda m: m.code == "pacing")
            assert "paused 1.0 s" in alert.text
            started = time.monotonic()
            second = await b.request(buy("tqgrid1 c1 L1 BUY", "99.00", trigger="99.00"))
            assert isinstance(second, CommandAccepted)
            assert time.monotonic() - started >= 0.5  # held in the queue until the pause ended
            places = await b.broker_requests("placeOrder")
            assert len(places) == 2 and places[1]["ts_ns"] - places[0]["ts_ns"] >= 0.9 * SECOND_NS

    run(scenario())
