"""The executor process against the paper broker over TCP: connect, place, fill, duplicates, caps, cancel, reject.

Each scenario runs once with ib_insync and once with ib_async (the executor's ``--lib``).
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path

import pytest

from proto.messages import (
    Alert,
    BrokerSnapshot,
    BrokerSnapshotRequest,
    CancelAll,
    CancelOrder,
    CommandAccepted,
    CommandDuplicate,
    CommandRejected,
    CommissionReported,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderStatusChanged,
)
from tests.services.executor.harness import Bench, buy, run, sell

pytestmark = pytest.mark.slow

TQQQ_CON_ID = 72539702


def test_connect_asks_delayed_data_first_then_qualifies_and_syncs_everything(tmp_path: Path, lib: str) -> None:
    async def scenario() -> None:
        async with Bench(tmp_path, lib) as b:
            await b.start_executor()
            connected = await b.wait_connected()
            requests = await b.broker_requests()
            names = [r["request"] for r in requests]
            # The first request after startApi, before the library's own connect sync (positions, orders, ...).
            assert names[:2] == ["startApi", "reqMarketDataType"] and requests[1]["fields"][-1] == "3"
            # Then the library's sync, and the executor's own: qualify the symbol, then every order and fill.
            own = names.index("reqContractDetails")
            assert names.index("reqExecutions") < own
            assert names[own:][:5] == [
                "reqContractDetails",
                "reqAllOpenOrders",
                "reqCompletedOrders",
                "reqExecutions",
                "reqPositions",
            ]
            assert connected.client_id == 17 and connected.server_version == 176
            assert connected.accounts == ["DU1234567"]
            snapshot = await b.snapshot()
            assert snapshot.connected and snapshot.con_id == TQQQ_CON_ID
            assert snapshot.orders == [] and snapshot.positions == []

    run(scenario())


def test_level0_places_fills_and_publishes_each_step_and_a_repeat_sends_nothing(tmp_path: Path, lib: str) -> None:
    key = "tqgrid1 c1 L0 BUY"

    async def scenario() -> None:
        async with Bench(tmp_path, lib) as b:
            await b.start_executor()
            reply = await b.request(buy(key, "100.25", immediate=True))
            assert isinstance(reply, CommandAccepted) and reply.key == key
            assert reply.order_id > 0 and reply.perm_id > 0
            accepted = await b.wait_event(OrderAccepted, lambda m: m.key == key)
            assert (accepted.order_id, accepted.perm_id, accepted.quantity) == (reply.order_id, reply.perm_id, 94)
            assert accepted.limit == Decimal("100.25") and accepted.client_id == 17

            await b.control("price", "100.00")
            fill = await b.wait_event(OrderFilled, lambda m: m.key == key)
            assert (fill.side, fill.shares, fill.cum_qty, fill.order_quantity) == ("BUY", 94, 94, 94)
            assert fill.price == Decimal("100.00") and fill.avg_price == Decimal("100.00")
            assert fill.perm_id == reply.perm_id and fill.exec_id and not fill.recovered
            commission = await b.wait_event(CommissionReported, lambda m: m.exec_id == fill.exec_id)
            assert commission.key == key and commission.commission > 0
            await b.wait_event(OrderStatusChanged, lambda m: m.key == key and m.status == "Filled")

            again = await b.request(buy(key, "100.25", immediate=True))
            assert isinstance(again, CommandDuplicate)
            assert (again.order_id, again.perm_id, again.status) == (reply.order_id, reply.perm_id, "Filled")
            assert len(await b.broker_orders(key)) == 1

            snapshot = await b.snapshot()
            assert [(p.symbol, p.quantity) for p in snapshot.positions] == [("TQQQ", 94)]
            assert [e.exec_id for e in snapshot.executions] == [fill.exec_id]
            assert snapshot.executions[0].commission == commission.commission
            assert [(o.key, o.status, o.filled) for o in snapshot.completed] == [(key, "Filled", 94)]
            assert len(b.messages(OrderFilled)) == 1

    run(scenario())


def test_ten_identical_place_orders_at_once_make_one_order_at_the_broker(tmp_path: Path, lib: str) -> None:
    key = "tqgrid1 c4 L0 BUY"

    async def scenario() -> None:
        async with Bench(tmp_path, lib) as b:
            await b.start_executor()
            replies = await asyncio.gather(*(b.request(buy(key, "90.00", immediate=True)) for _ in range(10)))
            accepted = [r for r in replies if isinstance(r, CommandAccepted)]
            duplicates = [r for r in replies if isinstance(r, CommandDuplicate)]
            assert len(accepted) == 1 and len(duplicates) == 9
            assert {(d.order_id, d.perm_id) for d in duplicates} == {(accepted[0].order_id, accepted[0].perm_id)}
            assert len(await b.broker_orders(key)) == 1
            assert len(await b.broker_requests("placeOrder")) == 1

    run(scenario())


def test_a_snapshot_asked_during_anothers_resync_reports_the_broker_connected(tmp_path: Path, lib: str) -> None:
    """A plain snapshot that lands while a resync runs waits for it, instead of saying "disconnected" mid-sync."""

    async def scenario() -> None:
        async with Bench(tmp_path, lib) as b:
            await b.start_executor()
            # The resync request goes first; the plain one follows at staggered offsets, so that some arrive
            # while its sync is under way (a sync is a few round trips to the broker: milliseconds).
            for offset_ms in range(0, 30, 2):
                resync = asyncio.create_task(b.request(BrokerSnapshotRequest(resync=True)))
                await asyncio.sleep(offset_ms / 1000)
                plain = await b.request(BrokerSnapshotRequest())
                assert isinstance(plain, BrokerSnapshot) and plain.connected, f"mid-sync at +{offset_ms} ms"
                resynced = await resync
                assert isinstance(resynced, BrokerSnapshot) and resynced.connected

    run(scenario())


def test_one_live_order_per_slot_and_the_executors_caps(tmp_path: Path, lib: str) -> None:
    async def scenario() -> None:
        async with Bench(tmp_path, lib, strategy={"max_live_sells": 1}) as b:
            await b.start_executor()
            await b.control("price", "100.00")
            level0 = await b.request(buy("tqgrid1 c1 L0 BUY", "95.00", immediate=True))
            assert isinstance(level0, CommandAccepted)
            second = await b.request(buy("tqgrid1 c1 L0 BUY a2", "95.00", immediate=True))
            assert isinstance(second, CommandRejected) and "slot (cycle 1, level 0, BUY)" in second.reason

            for level, trigger in ((1, "94.00"), (2, "93.00"), (3, "92.00")):
                queued = await b.request(buy(f"tqgrid1 c1 L{level} BUY", trigger, trigger=trigger))
                assert isinstance(queued, CommandAccepted), queued
            fifth = await b.request(buy("tqgrid1 c1 L4 BUY", "91.00", trigger="91.00"))
            assert isinstance(fifth, CommandRejected)
            assert "order cap" in fifth.reason and "broker.max_live_buys" in fifth.reason

            # The paper broker does not check the position: a SELL far above the market just rests.
            first_sell = await b.request(sell("tqgrid1 c0 L5 SELL 80.00", "180.00", quantity=1))
            assert isinstance(first_sell, CommandAccepted)
            capped = await b.request(sell("tqgrid1 c0 L6 SELL 80.00", "181.00", quantity=1))
            assert isinstance(capped, CommandRejected) and "strategy.max_live_sells" in capped.reason

            orders = await b.broker_orders()
            refs = sorted(o["order_ref"] for o in orders)
            assert "tqgrid1 c1 L0 BUY a2" not in refs and "tqgrid1 c1 L4 BUY" not in refs
            assert "tqgrid1 c0 L6 SELL 80.00" not in refs
            conditional = next(o for o in orders if o["order_ref"] == "tqgrid1 c1 L1 BUY")
            [condition] = conditional["conditions"]
            assert condition["con_id"] == 72539702 and condition["exchange"] == "SMART"
            assert condition["price"] == "94.00" and condition["is_more"] is False
            assert conditional["conditions_ignore_rth"] is True and conditional["outside_rth"] is True
            assert conditional["tif"] == "GTC" and conditional["status"] == "PreSubmitted"

    run(scenario())


def test_reject_201_is_reported_with_its_code_and_reason(tmp_path: Path, lib: str) -> None:
    key = "tqgrid1 c2 L0 BUY"

    async def scenario() -> None:
        async with Bench(tmp_path, lib) as b:
            await b.start_executor()
            await b.control("reject-next", 201)
            reply = await b.request(buy(key, "100.25", immediate=True))
            assert isinstance(reply, CommandRejected) and reply.code == 201 and reply.key == key
            assert "reject" in reply.reason.lower()
            rejected = await b.wait_event(OrderRejected, lambda m: m.key == key)
            assert rejected.code == 201 and rejected.text == reply.reason
            # A rejected key never lived: it may be placed again.
            retry = await b.request(buy(key, "100.25", immediate=True))
            assert isinstance(retry, CommandAccepted)

    run(scenario())


def test_cancel_order_and_cancel_all_and_a_cancelled_key_placed_again(tmp_path: Path, lib: str) -> None:
    async def scenario() -> None:
        async with Bench(tmp_path, lib) as b:
            await b.start_executor()
            await b.control("price", "100.00")
            keys = [f"tqgrid1 c1 L{n} BUY" for n in (1, 2, 3)]
            for key, trigger in zip(keys, ("99.00", "98.01", "97.03"), strict=True):
                assert isinstance(await b.request(buy(key, trigger, trigger=trigger)), CommandAccepted)

            cancelled = await b.request(CancelOrder(key=keys[0], reason="queue moved"))
            assert isinstance(cancelled, CommandAccepted) and "Cancelled" in cancelled.detail
            event = await b.wait_event(OrderCancelled, lambda m: m.key == keys[0])
            assert event.filled == 0 and event.reason == "queue moved"
            unknown = await b.request(CancelOrder(key="tqgrid1 c1 L9 BUY"))
            assert isinstance(unknown, CommandRejected) and "no live order" in unknown.reason

            again = await b.request(buy(keys[0], "99.00", trigger="99.00"))
            assert isinstance(again, CommandAccepted) and again.order_id != cancelled.order_id

            everything = await b.request(CancelAll(reason="operator reset"))
            assert isinstance(everything, CommandAccepted) and "3 cancelled (3 confirmed final)" in everything.detail
            live = [o for o in await b.broker_orders() if o["status"] not in ("Cancelled", "Filled")]
            assert live == []
            assert (await b.snapshot()).orders == []

    run(scenario())


def test_immediate_order_not_final_in_time_is_cancelled_with_an_alert(tmp_path: Path, lib: str) -> None:
    key = "tqgrid1 c1 L0 BUY"

    async def scenario() -> None:
        async with Bench(tmp_path, lib, broker={"immediate_order_timeout": 0.5}) as b:
            await b.start_executor()
            await b.control("price", "100.00")
            reply = await b.request(buy(key, "99.00", immediate=True))
            assert isinstance(reply, CommandAccepted)
            alert = await b.wait_event(Alert, lambda m: m.code == "immediate_timeout", timeout=5)
            assert key in alert.text and alert.source == "executor"
            cancelled = await b.wait_event(OrderCancelled, lambda m: m.key == key, timeout=5)
            assert "immediate_order_timeout" in cancelled.reason and cancelled.filled == 0
            [order] = await b.broker_orders(key)
            assert order["status"] == "Cancelled"
            # Unfilled and final: the strategy's next attempt is free to go.
            assert isinstance(await b.request(buy("tqgrid1 c1 L0 BUY a2", "100.25", immediate=True)), CommandAccepted)

    run(scenario())


def test_one_order_filled_in_pieces_is_published_per_execution_with_running_totals(tmp_path: Path, lib: str) -> None:
    key = "tqgrid1 c1 L0 BUY"

    async def scenario() -> None:
        async with Bench(tmp_path, lib, broker_args=["--partial-fills"]) as b:
            await b.start_executor()
            reply = await b.request(buy(key, "100.25", immediate=True))
            assert isinstance(reply, CommandAccepted)
            await b.control("price", "100.00", 40)
            await b.control("price", "100.10", 200)
            second = await b.wait_event(OrderFilled, lambda m: m.key == key, count=2)
            first = b.messages(OrderFilled)[0]
            assert (first.shares, first.cum_qty, first.price) == (40, 40, Decimal("100.00"))
            assert (second.shares, second.cum_qty, second.price) == (54, 94, Decimal("100.10"))
            assert first.exec_id != second.exec_id and first.perm_id == second.perm_id == reply.perm_id
            expected = (40 * Decimal("100.00") + 54 * Decimal("100.10")) / 94
            assert abs(second.avg_price - expected) < Decimal("0.0001")
            partial = await b.wait_event(OrderStatusChanged, lambda m: m.key == key and m.filled == 40)
            assert partial.status == "Submitted" and partial.remaining == 54
            await b.wait_event(OrderStatusChanged, lambda m: m.key == key and m.status == "Filled")
            snapshot: BrokerSnapshot = await b.snapshot()
            assert sum(e.shares for e in snapshot.executions) == 94

    run(scenario())


def test_an_order_never_acknowledged_is_cancelled_after_the_ack_timeout(tmp_path: Path, lib: str) -> None:
    # The paper broker takes the order but its acknowledgement is lost (sim verb mute-next): the executor's monitor
    # cancels it after broker.ack_timeout (3 s in the harness) and says why, in the reply, the event and an alert.
    key = "tqgrid1 c1 L1 BUY"

    async def scenario() -> None:
        async with Bench(tmp_path, lib) as b:
            await b.start_executor()
            await b.control("price", "100.00")
            await b.control("mute-next")
            sent = time.monotonic()
            reply = await b.request(buy(key, "99.00", trigger="99.00"))
            cancelled = await b.wait_event(OrderCancelled, lambda m: m.key == key)
            waited = time.monotonic() - sent
            alert = await b.wait_event(Alert, lambda a: a.code == "ack_timeout")
            at_broker = [o for o in await b.broker_orders() if o["order_ref"] == key]

            assert isinstance(reply, CommandRejected) and "not acknowledged" in reply.reason
            assert cancelled.filled == 0 and "within broker.ack_timeout" in cancelled.reason
            assert waited >= 3.0
            assert "status PendingSubmit" in alert.text and key in alert.text
            assert [o["status"] for o in at_broker] == ["Cancelled"]
            # Nothing of it filled: the key may be placed again, and this time IB's answer arrives.
            again = await b.request(buy(key, "99.00", trigger="99.00"))
            assert isinstance(again, CommandAccepted) and again.order_id != cancelled.order_id

    run(scenario())
