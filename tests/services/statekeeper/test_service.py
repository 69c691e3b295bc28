"""The statekeeper service on a real bus (ZeroMQ forwarder, sockets on 127.0.0.1): events in, numbered state out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import zmq
import zmq.asyncio

from core.lotmap import load_lot_map
from proto import topics
from proto.envelope import SCHEMA_VERSION, Header, pack
from proto.messages import (
    Alert,
    CommandAccepted,
    Halt,
    Message,
    OpenOrderInfo,
    ReconcileReport,
    ReconcileRequest,
    ResetState,
    Resume,
    StateSnapshot,
    StateSnapshotRequest,
    TradingHalted,
    TradingResumed,
)
from services.statekeeper import statefile
from tests.core.ledger_events import accepted, buy_key, fill
from tests.services.statekeeper.harness import statekeeper, wait_for

D = Decimal
T = TypeVar("T")
L0 = buy_key(1, 0)
LOTS = load_lot_map(Path(__file__).resolve().parents[3] / "config" / "lots.csv")


def run(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


# --------------------------------------------------------------------------------------------- events


def test_order_events_become_numbered_state_updates_persisted_before_they_are_published(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with statekeeper(tmp_path) as env:
            first = await env.in_sync()
            await env.subscribed()
            buy = fill(L0, "BUY", 94, "100.00", 94, order_id=1, exec_id="x1")

            env.executor.publish(accepted(L0, "BUY", 94, "100.25", order_id=1))
            env.executor.publish(buy)
            got = await env.update(lambda m: len(m.state.lots) == 1, "the Level-0 lot")

            assert got.seq == first.seq + 2 and got.cause == "OrderFilled"
            loaded = statefile.read(tmp_path / "bot_state.json")
            assert loaded is not None and loaded.state.lots == got.state.lots
            assert env.service.store.has_exec("x1")

            # The same execution again changes nothing: the next update is the SELL's acknowledgement.
            env.executor.publish(buy)
            sell_key = got.state.lots[0].sell_key
            env.executor.publish(accepted(sell_key, "SELL", 94, "101.00", order_id=2))
            nxt = await env.update(
                lambda m: bool(m.state.lots) and m.state.lots[0].sell == "live", "the SELL live"
            )
            assert (nxt.seq, nxt.cause) == (got.seq + 1, "OrderAccepted")

            reply = await env.client.request(StateSnapshotRequest())
            assert isinstance(reply, StateSnapshot)
            assert (reply.seq, reply.state) == (nxt.seq, nxt.state)

    run(scenario())


def test_a_closed_round_trip_goes_to_the_journals_history(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with statekeeper(tmp_path) as env:
            await env.in_sync()
            await env.subscribed()
            env.executor.publish(fill(L0, "BUY", 94, "100.00", 94, order_id=1, exec_id="b1"))
            env.executor.publish(
                fill("tqgrid1 c1 L0 SELL 100.00", "SELL", 94, "101.00", 94, order_id=2, exec_id="s1")
            )

            closed = await env.update(lambda m: m.state.cycle == 2, "the cycle to end")

            assert closed.state.lots == [] and closed.state.realized_pnl == D("94.00")
            trips = env.service.store.journal.round_trips()
            assert [(t.level, t.quantity, t.realized_pnl) for t in trips] == [(0, 94, D("94.00"))]

    run(scenario())


# --------------------------------------------------------------------------------------------- commands


def test_halt_and_resume_are_persisted_and_announced_on_control(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with statekeeper(tmp_path) as env:
            await env.in_sync()

            reply = await env.client.request(Halt(reason="going on holiday", source="operator"))
            assert isinstance(reply, CommandAccepted)
            notice = await env.watcher.until(lambda m: isinstance(m, TradingHalted), 5, "TradingHalted")
            assert isinstance(notice, TradingHalted) and notice.reason == "going on holiday"
            await env.update(lambda m: m.state.halted, "a halted state")
            loaded = statefile.read(tmp_path / "bot_state.json")
            assert loaded is not None and (loaded.state.halted, loaded.state.halt_reason) == (
                True,
                "going on holiday",
            )

            await env.client.request(Resume(reason="back"))
            await env.watcher.until(lambda m: isinstance(m, TradingResumed), 5, "TradingResumed")
            await env.update(lambda m: not m.state.halted, "the halt lifted")

    run(scenario())


def test_an_unexplained_order_halts_with_a_critical_alert_and_a_consistent_reconcile_lifts_it(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with statekeeper(tmp_path) as env:
            await env.in_sync()
            manual = OpenOrderInfo(
                key="",
                order_id=5,
                perm_id=555,
                client_id=0,
                symbol="TQQQ",
                side="BUY",
                quantity=100,
                limit=D("50.00"),
                tif="DAY",
                outside_rth=False,
                status="Submitted",
            )
            env.executor.extra_orders.append(manual)

            report = await env.client.request(ReconcileRequest())

            assert isinstance(report, ReconcileReport) and not report.consistent
            assert [f.kind for f in report.findings if not f.explained] == ["foreign_order"]
            alert = await env.watcher.until(
                lambda m: isinstance(m, Alert) and m.severity == "critical", 5, "alert"
            )
            assert isinstance(alert, Alert) and "foreign_order" in alert.text
            halted = await env.update(lambda m: m.state.halted, "the reconciliation's halt")
            assert halted.state.halt_reason.startswith("reconcile: ")

            env.executor.extra_orders.clear()
            report = await env.client.request(ReconcileRequest())

            assert isinstance(report, ReconcileReport) and report.consistent
            await env.watcher.until(lambda m: isinstance(m, TradingResumed), 5, "TradingResumed")
            await env.update(lambda m: not m.state.halted, "the halt lifted")

    run(scenario())


def test_an_operators_halt_is_not_lifted_by_a_consistent_reconciliation(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with statekeeper(tmp_path) as env:
            await env.in_sync()
            await env.client.request(Halt(reason="operator says stop"))

            report = await env.client.request(ReconcileRequest())

            assert isinstance(report, ReconcileReport) and report.consistent
            assert env.state.halted and env.state.halt_reason == "operator says stop"

    run(scenario())


# --------------------------------------------------------------------------------------------- start and gaps


def test_without_an_executor_the_state_stays_out_of_sync_until_it_answers(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with statekeeper(tmp_path, executor_up=False) as env:
            reply = await env.client.request(StateSnapshotRequest())
            assert isinstance(reply, StateSnapshot) and reply.state.in_sync is False
            await asyncio.sleep(1.2)  # at least one unanswered attempt (command_timeout 1.0 s)
            assert env.state.in_sync is False

            await env.executor.start()

            await env.in_sync()

    run(scenario(), timeout=30)


def test_a_disconnected_broker_postpones_the_reconciliation(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with statekeeper(tmp_path, connected=False) as env:
            await wait_for(lambda: env.executor.snapshots_served >= 2, 5, "a retried snapshot request")
            assert env.state.in_sync is False and not env.state.halted

            env.executor.connected = True

            await env.in_sync()

    run(scenario())


def test_a_gap_in_the_executors_events_is_caught_up_from_a_broker_snapshot(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with statekeeper(tmp_path, heartbeats=False) as env:
            await env.in_sync()
            raw = env.ctx.socket(zmq.PUB)
            raw.connect(env.forwarder.xsub_endpoint)
            incarnation = time.time_ns()

            def send(seq: int, msg: Message) -> None:
                header = Header("executor", seq, SCHEMA_VERSION, time.time_ns(), incarnation)
                raw.send_multipart(pack(topics.ORDER_EVENT, header, msg))

            first = accepted(L0, "BUY", 94, "100.25", order_id=1)
            env.executor.book(first)
            deadline = time.monotonic() + 5
            while not env.state.orders:  # repeats of message 1 are skipped by the subscriber
                assert time.monotonic() < deadline, "the statekeeper never received the first event"
                send(1, first)
                await asyncio.sleep(0.05)
            # Messages 2 and 3 are lost on the way; the broker has them.
            lost = [fill(L0, "BUY", 50, "100.00", 94, order_id=1, exec_id="g1")]
            lost.append(fill(L0, "BUY", 44, "100.00", 94, order_id=1, exec_id="g2"))
            for event in lost:
                env.executor.book(event)
            sell = accepted("tqgrid1 c1 L0 SELL 100.00", "SELL", 94, "101.00", order_id=2)
            env.executor.book(sell)

            send(4, sell)

            caught = await env.update(
                lambda m: m.state.lots and m.state.lots[0].sell == "live", "the catch-up"
            )
            assert caught.state.lots[0].quantity == 94
            raw.close(linger=0)

    run(scenario())


def test_a_reset_clears_lots_and_orders_and_starts_the_next_cycle_keeping_the_halt(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with statekeeper(tmp_path) as env:
            await env.in_sync()
            await env.subscribed()
            env.executor.publish(fill(L0, "BUY", 94, "100.00", 94, order_id=1, exec_id="r1"))
            env.executor.publish(accepted("tqgrid1 c1 L1 BUY", "BUY", 88, "99.00", order_id=2))
            await env.update(
                lambda m: len(m.state.lots) == 1 and len(m.state.orders) == 1, "a lot and an order"
            )
            await env.client.request(Halt(reason="operator reset in progress"))

            reply = await env.client.request(ResetState(reason="operator reset"))

            assert isinstance(reply, CommandAccepted) and "1 lot(s) and 1 order(s) dropped" in reply.detail
            cleared = await env.update(lambda m: m.cause == "reset", "the reset state")
            state = cleared.state
            assert (state.lots, state.orders, state.anchor_price, state.cycle) == ([], [], None, 2)
            assert state.halted and [e.exec_id for e in state.executions] == ["r1"]
            loaded = statefile.read(tmp_path / "bot_state.json")
            assert loaded is not None and loaded.state.lots == [] and loaded.state.cycle == 2

    run(scenario())


def test_commands_it_does_not_take_are_rejected_with_the_list_of_those_it_does(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with statekeeper(tmp_path) as env:
            reply = await env.client.request(fill(L0, "BUY", 1, "1.00", 1))

            assert "StateSnapshotRequest, Halt, Resume, ReconcileRequest and ResetState" in getattr(
                reply, "reason", ""
            )

    run(scenario())
