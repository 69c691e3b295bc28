"""The statekeeper with the real executor and the paper broker (processes, TCP, the real bus): the ledger, restarts
and reconciliation against what the broker really holds.

The test plays the strategy (PlaceOrder to the executor) and drives prices through the broker's control endpoint.
The statekeeper runs in the test process (on the test's event loop) and is stopped and started again on the same
state file and journal, as supervisord would after a crash. A manual order is placed by a second client with the
real ib_insync, without an orderRef.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from bus import CommandClient
from core.lotmap import load_lot_map
from gridbot.config import load
from proto.messages import (
    CommandAccepted,
    CommissionReported,
    GridState,
    OrderFilled,
    ReconcileReport,
    ReconcileRequest,
)
from services.statekeeper.service import StatekeeperService
from services.statekeeper.store import Store
from tests.services.executor.harness import Bench, buy, sell
from tests.services.statekeeper.harness import wait_for

pytestmark = pytest.mark.slow

D = Decimal
LIB = "ib_insync"
L0 = "tqgrid1 c1 L0 BUY"
LOTS = load_lot_map(Path(__file__).resolve().parents[3] / "config" / "lots.csv")


@contextlib.asynccontextmanager
async def statekeeper(bench: Bench, run_dir: Path) -> AsyncIterator[StatekeeperService]:
    """The statekeeper on the bench's bus and executor, on the state files in ``run_dir``; stopped at exit."""
    cfg = load(
        overrides={
            "general": {"run_dir": str(run_dir), "log_level": "INFO"},
            "bus": {
                "xsub": bench.forwarder.xsub_endpoint,
                "xpub": bench.forwarder.xpub_endpoint,
                "executor": bench.command_endpoint,
                "statekeeper": "tcp://127.0.0.1:*",
                "heartbeat_interval": 0.2,
                "command_timeout": 5.0,
            },
            "statekeeper": {"reconcile_retry": 0.2},
        }
    )
    store = Store.open(cfg.run_path("bot_state.json"), cfg.run_path("journal.sqlite"), "TQQQ")
    service = StatekeeperService(cfg, bench.ctx, store, LOTS)
    task = asyncio.create_task(service.run())
    try:
        yield service
    finally:
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=5)
        assert done, "the statekeeper did not stop"


async def settled(
    service: StatekeeperService, condition: object, what: str, timeout: float = 10.0
) -> GridState:
    await wait_for(lambda: service.state.in_sync and condition(service.state), timeout, what)  # type: ignore[operator]
    return service.state


def test_restarts_rebuild_and_catch_up_from_the_broker(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"

    async def scenario() -> None:
        async with Bench(tmp_path, LIB) as bench:
            await bench.start_executor()
            await bench.control("price", "100.00")

            # 1. A Level 0 bought and its SELL placed: the lot is in the state, its SELL live.
            async with statekeeper(bench, run_dir) as sk:
                await settled(sk, lambda s: True, "the first reconciliation")
                await wait_for(lambda: sk.subscriber.peer_alive("executor"), 5, "the executor heard")
                assert isinstance(await bench.request(buy(L0, "100.25", immediate=True)), CommandAccepted)
                state = await settled(sk, lambda s: len(s.lots) == 1, "the Level-0 lot")
                lot = state.lots[0]
                assert (lot.level, lot.quantity, lot.purchase_price, state.anchor_price) == (
                    0,
                    94,
                    D("100.00"),
                    D("100.00"),
                )
                reply = await bench.request(sell(lot.sell_key, str(lot.sell_target_price)))
                assert isinstance(reply, CommandAccepted)
                state = await settled(sk, lambda s: s.lots[0].sell == "live", "the SELL live")
                assert state.lots[0].sell_perm_id == reply.perm_id
                await wait_for(lambda: sk.state.lots[0].fees > 0, 5, "the BUY's commission")
                buy_fees = sk.state.lots[0].fees

            # 2. The state file and the journal lost: everything is rebuilt from the orderRefs at the broker.
            for path in run_dir.iterdir():
                path.unlink()
            async with statekeeper(bench, run_dir) as sk:
                state = await settled(sk, lambda s: len(s.lots) == 1, "the lot rebuilt")
                assert sk.last_report is not None and sk.last_report.consistent, sk.last_report
                rebuilt = state.lots[0]
                assert (rebuilt.level, rebuilt.quantity, rebuilt.purchase_price, rebuilt.sell) == (
                    0,
                    94,
                    D("100.00"),
                    "live",
                )
                assert (rebuilt.sell_key, rebuilt.sell_perm_id) == (lot.sell_key, reply.perm_id)
                assert (state.cycle, state.anchor_price, state.halted) == (1, D("100.00"), False)

            # 3. The SELL fills while the statekeeper is down: the next start closes the lot from the executions.
            await bench.control("price", "101.00")
            fill = await bench.wait_event(OrderFilled, lambda m: m.side == "SELL")
            sell_fee = await bench.wait_event(CommissionReported, lambda m: m.exec_id == fill.exec_id)
            async with statekeeper(bench, run_dir) as sk:
                state = await settled(sk, lambda s: s.lots == [], "the lot closed")
                assert (state.cycle, state.anchor_price, state.halted) == (2, None, False)
                trips = sk.store.journal.round_trips()
                assert [(t.level, t.quantity, t.buy_price, t.sell_price) for t in trips] == [
                    (0, 94, D("100.00"), D("101.00"))
                ]
                # Both commissions: the BUY's came back with today's executions, the SELL's from the broker too.
                assert trips[0].fees == buy_fees + sell_fee.commission
                assert trips[0].realized_pnl == D("94.00") - trips[0].fees

    asyncio.run(asyncio.wait_for(scenario(), 90))


def test_a_manual_order_on_the_symbol_halts_trading_until_it_is_gone(tmp_path: Path) -> None:
    import ib_insync

    async def scenario() -> None:
        async with Bench(tmp_path, LIB) as bench:
            await bench.start_executor()
            await bench.control("price", "100.00")
            async with statekeeper(bench, tmp_path / "run") as sk:
                await settled(sk, lambda s: True, "the first reconciliation")
                assert not sk.state.halted
                operator = CommandClient(bench.ctx, sk.server.endpoint, "gridbot", timeout=15.0, retries=0)
                manual = ib_insync.IB()
                await manual.connectAsync("127.0.0.1", bench.broker.port, clientId=99, timeout=10)
                try:
                    contract = ib_insync.Stock("TQQQ", "SMART", "USD")
                    trade = manual.placeOrder(contract, ib_insync.LimitOrder("BUY", 10, 50.00, tif="GTC"))
                    await wait_for(
                        lambda: trade.orderStatus.status == "Submitted", 10, "the manual order live"
                    )

                    report = await operator.request(ReconcileRequest(ts_ns=time.time_ns()))

                    assert isinstance(report, ReconcileReport)
                    assert [f.kind for f in report.findings if not f.explained] == ["foreign_order"], report
                    assert sk.state.halted and "foreign_order" in sk.state.halt_reason

                    manual.cancelOrder(trade.order)
                    await wait_for(
                        lambda: trade.orderStatus.status == "Cancelled", 10, "the manual order cancelled"
                    )
                    report = await operator.request(ReconcileRequest(ts_ns=time.time_ns()))

                    assert isinstance(report, ReconcileReport) and report.consistent, report
                    assert not sk.state.halted
                finally:
                    manual.disconnect()
                    await operator.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))
