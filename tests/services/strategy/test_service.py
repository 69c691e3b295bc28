"""The strategy service on a real bus: resync, one order per key, halts, retries, and its program's exit codes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Coroutine
from decimal import Decimal
from pathlib import Path
from typing import Any

from gridbot.config import PROJECT_ROOT
from proto import topics
from proto.messages import CancelOrder, GridState, TradingHalted, WorkingOrder
from tests.services.strategy.harness import Harness, eventually, handled
from tests.services.strategy.system import Process

D = Decimal


def run(coro: Coroutine[Any, Any, None], timeout: float = 20.0) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout))


def empty() -> GridState:
    return GridState(symbol="TQQQ", in_sync=True)


def test_ten_ticks_at_once_send_one_level0_order() -> None:
    async def scenario() -> None:
        async with Harness(empty()) as h:
            assert h.executor is not None
            for n in range(10):
                h.feed.tick(f"100.0{n}")
            await handled(h.service, 10)  # every tick taken: a second order would have been sent by now

            assert [p.key for p in h.executor.places()] == ["tqgrid1 c1 L0 BUY"]
            assert h.executor.places()[0].limit == D("100.25")  # the first tick's price x 1.0025

    run(scenario())


def test_once_the_state_shows_the_order_later_ticks_send_nothing() -> None:
    async def scenario() -> None:
        async with Harness(empty()) as h:
            assert h.executor is not None
            h.feed.tick("100.00")
            await eventually(lambda: len(h.executor.places()) == 1, "the Level-0 order")
            h.statekeeper.update(GridState(symbol="TQQQ", in_sync=True, orders=[
                WorkingOrder(key="tqgrid1 c1 L0 BUY", side="BUY", level=0, quantity=94, limit=D("100.25"),
                             status="Submitted"),
            ]))
            await eventually(lambda: h.service.view.state_seq == 2, "the state update")
            for price in ("100.10", "99.90", "100.00"):
                h.feed.tick(price)
            await handled(h.service, 4)

            assert len(h.executor.commands) == 1

    run(scenario())


def test_a_gap_in_the_state_numbering_fetches_a_snapshot() -> None:
    async def scenario() -> None:
        async with Harness(empty()) as h:
            assert h.statekeeper.snapshot_requests == 1
            h.statekeeper.update(GridState(symbol="TQQQ", in_sync=True, cycle=1), skip=2)

            await eventually(lambda: h.statekeeper.snapshot_requests == 2, "a second snapshot request")
            await eventually(lambda: h.service.view.state_seq == 4, "the snapshot's number")

    run(scenario())


def test_a_halt_notice_stops_new_orders_at_once() -> None:
    async def scenario() -> None:
        async with Harness(empty()) as h:
            assert h.executor is not None
            h.statekeeper.publisher.publish(topics.CONTROL, TradingHalted(reason="operator"))
            await eventually(lambda: h.service.view.state is not None and h.service.view.state.halted, "the halt")
            h.feed.tick("100.00")
            await handled(h.service, 1)

            assert h.executor.places() == []
            assert h.service.last_decision is not None and h.service.last_decision.blocked == "halted: operator"
            assert h.service.publisher.status == "holding: halted: operator"  # what its heartbeat says

    run(scenario())


def test_nothing_is_placed_while_the_state_is_not_in_sync() -> None:
    async def scenario() -> None:
        async with Harness(GridState(symbol="TQQQ", in_sync=False)) as h:
            assert h.executor is not None
            h.feed.tick("100.00")
            await handled(h.service, 1)
            assert h.executor.places() == []

            h.statekeeper.update(empty())
            h.feed.tick("100.00")
            await eventually(lambda: len(h.executor.places()) == 1, "the Level-0 order once in sync")

    run(scenario())


def test_nothing_is_sent_before_the_executor_is_up_then_one_level0_goes() -> None:
    async def scenario() -> None:
        async with Harness(empty(), start_executor=False) as h:
            h.feed.tick("100.00")
            await handled(h.service, 1)  # decided on while no executor is up
            executor = await h.start_executor()
            await eventually(lambda: h.service.subscriber.peer_alive("executor"), "the executor's heartbeat")
            await eventually(lambda: h.service.view.broker_connected is True, "the executor's broker snapshot")
            h.feed.tick("100.00")
            await eventually(lambda: len(executor.places()) >= 1, "the Level-0 order")

            assert {p.key for p in executor.places()} == {"tqgrid1 c1 L0 BUY"}

    run(scenario())


def test_a_queued_buy_that_left_the_queue_is_cancelled_over_the_bus() -> None:
    async def scenario() -> None:
        from core.intent import IntentKey
        from core.prices import sell_target
        from proto.messages import Lot

        def lot(level: int, price: str) -> Lot:
            p = D(price)
            return Lot(cycle=1, level=level, quantity=10, purchase_price=p, sell_target_price=sell_target(p),
                       buy_key=IntentKey.buy(1, level).encode(), sell_key=IntentKey.sell(1, level, p).encode())

        def buy(level: int, limit: str) -> WorkingOrder:
            return WorkingOrder(key=f"tqgrid1 c1 L{level} BUY", side="BUY", level=level, quantity=10,
                                limit=D(limit), status="PreSubmitted")

        state = GridState(symbol="TQQQ", in_sync=True, anchor_price=D("100.00"),
                          lots=[lot(0, "100.00")], orders=[buy(2, "98.01"), buy(3, "97.03"), buy(4, "96.06")])
        async with Harness(state) as h:
            assert h.executor is not None
            await eventually(lambda: len(h.executor.commands) >= 3, "the commands")
            await h.service.dispatcher.drain(5.0)

            cancels = [c.key for c in h.executor.commands if isinstance(c, CancelOrder)]
            assert cancels == ["tqgrid1 c1 L4 BUY"]
            assert sorted(p.key for p in h.executor.places()) == ["tqgrid1 c1 L0 SELL 100.00", "tqgrid1 c1 L1 BUY"]

    run(scenario())


# --------------------------------------------------------------------------------------------- the program


def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "gridbot.toml"
    path.write_text(body)
    return path


def program(config: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", GRIDBOT_CONFIG=str(config))
    return subprocess.Popen([sys.executable, "-m", "services.strategy"], cwd=PROJECT_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_the_program_stops_on_sigterm_with_exit_0(tmp_path: Path) -> None:
    from tests.services.strategy.harness import free_endpoint

    endpoints = [free_endpoint() for _ in range(4)]
    config = write_config(tmp_path, f"""
[bus]
xsub = "{endpoints[0]}"
xpub = "{endpoints[1]}"
executor = "{endpoints[2]}"
statekeeper = "{endpoints[3]}"
""")
    env = dict(os.environ, PYTHONUNBUFFERED="1", GRIDBOT_CONFIG=str(config))
    strategy = Process("strategy", ["-m", "services.strategy"], env, tmp_path)
    try:
        # It runs without any peer: it keeps asking for the state. (Read with a deadline: a silent program fails.)
        strategy.wait_for("strategy for TQQQ", timeout=20)
        strategy.proc.send_signal(signal.SIGTERM)
        assert strategy.proc.wait(10) == 0
    finally:
        strategy.stop()


def test_the_program_names_a_bad_lot_map_and_exits_2(tmp_path: Path) -> None:
    config = write_config(tmp_path, f'[general]\nlot_map = "{tmp_path / "missing.csv"}"\n')
    proc = program(config)
    out, _ = proc.communicate(timeout=20)

    assert proc.returncode == 2
    assert "missing.csv" in out and "does not exist" in out
