"""The state directory: a restarted broker (even one killed with SIGKILL) carries on where it stopped.

The restart test runs the standalone ``python -m sim.broker`` as a subprocess, drives prices through its control
endpoint, and trades with the real clients in this process.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from sim.broker.account import Account
from sim.broker.engine import Engine
from sim.broker.requests import ContractRef, OrderTicket
from sim.broker.store import STATE_FILE, StateError, Store, restore, snapshot
from sim.control import call
from tests.sim.broker_harness import (
    LIBS,
    MONDAY_10_ET,
    WAIT,
    client_module,
    connect,
    grid_buy,
    run,
    tqqq,
    until,
)

PROJECT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 60.0  # a new Python process can take many seconds to start on a busy 2-core CI machine


def _pump(stream: Any, out: queue.Queue[str]) -> None:
    """Put each line of ``stream`` on ``out``, then "" at its end."""
    for line in stream:
        out.put(line)
    out.put("")


class BrokerProcess:
    """``python -m sim.broker`` on free ports; reads the ports it prints."""

    def __init__(self, state_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sim.broker", "--port", "0", "--state-dir", str(state_dir),
             "--control", "tcp://127.0.0.1:0", "--start", "2025-06-02T10:00:00-04:00"],
            cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        values: dict[str, str] = {}
        assert self.proc.stdout is not None
        # Lines come through a thread, so that a broker that never speaks fails the test instead of hanging it.
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_pump, args=(self.proc.stdout, lines), daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        while len(values) < 2:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.proc.kill()
                raise AssertionError(f"sim.broker printed no ports within {START_TIMEOUT} s") from None
            if not line:
                raise AssertionError(f"sim.broker exited early: {self.proc.stderr.read() if self.proc.stderr else ''}")
            key, sep, value = line.strip().partition("=")
            if sep and key in ("PAPER_BROKER_PORT", "CONTROL_ENDPOINT"):
                values[key] = value
        self.port = int(values["PAPER_BROKER_PORT"])
        self.control = values["CONTROL_ENDPOINT"]

    def ctl(self, verb: str, *args: Any) -> Any:
        return call(self.control, verb, *args, timeout=WAIT)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(WAIT)

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(WAIT)


@pytest.fixture
def processes() -> Iterator[list[BrokerProcess]]:
    started: list[BrokerProcess] = []
    yield started
    for p in started:
        if p.proc.poll() is None:
            p.kill()
        for stream in (p.proc.stdout, p.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.parametrize("lib", LIBS)
def test_restart_reloads_state_and_the_conditional_order_then_fills(
    tmp_path: Path, lib: str, processes: list[BrokerProcess]
) -> None:
    state = tmp_path / "state"
    first = BrokerProcess(state)
    processes.append(first)

    async def before_restart() -> dict[str, Any]:
        mod = client_module(lib)
        ib = await connect(lib, first.port)
        [contract] = await ib.qualifyContractsAsync(tqqq(mod))
        first.ctl("price", "100.00")
        buy = ib.placeOrder(contract, mod.LimitOrder("BUY", 10, 100.0, orderRef="level0"))
        await until(lambda: buy.orderStatus.status == "Filled", "level 0 filled")
        cond = ib.placeOrder(contract, grid_buy(mod, 10, 99.0, ref="tqgrid1 c1 L1 BUY"))
        await until(lambda: cond.orderStatus.status == "PreSubmitted", "conditional order held")
        await until(lambda: bool(buy.fills), "fill")
        result = {"exec_id": buy.fills[0].execution.execId, "perm_ids": {buy.order.permId, cond.order.permId},
                  "cond_id": cond.order.orderId}
        ib.disconnect()
        return result

    seen = run(before_restart())
    first.kill()  # no clean shutdown: the state on disk must already be complete

    second = BrokerProcess(state)
    processes.append(second)

    async def after_restart() -> None:
        ib = await connect(lib, second.port)
        [back] = ib.openTrades()
        assert (back.order.orderId, back.order.orderRef, back.orderStatus.status) == (
            seen["cond_id"], "tqgrid1 c1 L1 BUY", "PreSubmitted")
        assert back.order.permId in seen["perm_ids"]
        assert [p.position for p in ib.positions()] == [10.0]
        second.ctl("price", "98.95")
        await until(lambda: back.orderStatus.status == "Filled", "the reloaded conditional order fills")
        await until(lambda: len(ib.fills()) == 2, "both fills of the day")
        exec_ids = [f.execution.execId for f in ib.fills()]
        assert len(set(exec_ids)) == 2 and seen["exec_id"] in exec_ids
        await until(lambda: [p.position for p in ib.positions()] == [20.0], "position of both lots")
        mod = client_module(lib)
        [contract] = await ib.qualifyContractsAsync(tqqq(mod))
        fresh = ib.placeOrder(contract, mod.LimitOrder("SELL", 1, 150.0))
        await until(lambda: fresh.orderStatus.status == "Submitted", "a new order")
        assert fresh.order.permId not in seen["perm_ids"] and fresh.order.orderId > seen["cond_id"]
        ib.disconnect()

    run(after_restart())
    orders = second.ctl("orders")
    assert [o["status"] for o in orders] == ["Filled", "Filled", "Submitted"]
    assert second.terminate() == 0


def test_an_unreadable_state_file_stops_the_broker_naming_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / STATE_FILE).write_text("{ not json")
    proc = subprocess.run(
        [sys.executable, "-m", "sim.broker", "--port", "0", "--state-dir", str(state), "--control", "none"],
        cwd=PROJECT, capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 2
    assert str(state / STATE_FILE) in proc.stderr and "move it away" in proc.stderr
    assert (state / STATE_FILE).read_text() == "{ not json"  # never overwritten


def ticket(order_id: int, price: str) -> OrderTicket:
    contract = ContractRef(72539702, "TQQQ", "STK", "", "0", "", "", "SMART", "NASDAQ", "USD", "", "")
    return OrderTicket(
        order_id=order_id, contract=contract, action="BUY", total_quantity=Decimal(5), order_type="LMT",
        lmt_price=Decimal(price), aux_price=None, tif="GTC", oca_group="", account="", open_close="O", origin=0,
        order_ref=f"ref{order_id}", transmit=True, parent_id=0, outside_rth=True, hidden=False, good_after_time="",
        good_till_date="", what_if=False, algo_strategy="",
    )


def test_snapshot_round_trips_every_order_execution_and_counter(tmp_path: Path) -> None:
    engine = Engine(Account("DU1234567", Decimal("1000000")), epoch_s=1_761_714_642)
    engine.on_print(Decimal("50.00"), 100, MONDAY_10_ET)
    engine.place(17, ticket(4, "50.00"), MONDAY_10_ET)  # fills at once
    engine.place(17, ticket(5, "40.00"), MONDAY_10_ET)  # rests
    engine.cancel(17, 5, MONDAY_10_ET)
    engine.place(18, ticket(1, "45.00"), MONDAY_10_ET)
    store = Store(tmp_path)
    store.save(snapshot(engine))
    loaded = store.load()
    assert loaded is not None
    again = restore(loaded)
    assert again.orders == engine.orders and again.by_client == engine.by_client
    assert again.executions == engine.executions and again.account == engine.account
    assert (again.next_perm_id, again.next_exec_seq, again.next_ids) == (
        engine.next_perm_id, engine.next_exec_seq, {17: 6, 18: 2})
    assert [f for f in os.listdir(tmp_path)] == [STATE_FILE]  # the temporary file was renamed away


def test_an_unknown_format_version_is_refused(tmp_path: Path) -> None:
    engine = Engine(Account("DU1234567", Decimal("1000")), epoch_s=1)
    state = snapshot(engine)
    state.format_version = 99
    Store(tmp_path).save(state)
    with pytest.raises(StateError, match="format version 99"):
        Store(tmp_path).load()
