"""Test harness for the paper broker: the broker on its own event loop in a thread, the real clients in the test.

The broker runs a driven SimClock, so simulated time moves only when a test says so (``set_time``, prints).
Every wait has a timeout, so a missing message fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from core import sessions
from sim.broker import PaperBroker
from sim.clock import SimClock

T = TypeVar("T")
LIBS = ["ib_insync", "ib_async"]
NS = 1_000_000_000
# Monday 2 June 2025, regular hours.
MONDAY_10_ET = int(datetime(2025, 6, 2, 10, 0, tzinfo=sessions.EASTERN).timestamp()) * NS
# Waits for what should come at once; they cost time only when it never comes, so they are sized for a 2-core CI
# machine that runs other tests' processes too.
WAIT = 10.0


def et(*args: int) -> int:
    return int(datetime(*args, tzinfo=sessions.EASTERN).timestamp()) * NS


class BrokerThread:
    """A PaperBroker serving on 127.0.0.1 from a background event loop."""

    def __init__(self, state_dir: Path, start_ns: int = MONDAY_10_ET, **kwargs: Any) -> None:
        self.state_dir = state_dir
        self.clock = SimClock(start_ns, driven=True)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="paper-broker", daemon=True)
        self.thread.start()
        self.broker: PaperBroker = self.call(lambda: PaperBroker(self.clock, state_dir, **kwargs))
        self.port: int = self.run(self.broker.start("127.0.0.1", 0))

    def run(self, coro: Awaitable[T], timeout: float = WAIT) -> T:
        async def wrapper() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the broker's loop and return its result."""

        async def wrapper() -> T:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(WAIT)

    def price(self, price: str, size: int = 100) -> None:
        self.call(self.broker.on_print, Decimal(price), size)

    def set_time(self, *eastern: int) -> None:
        self.call(self.broker.set_time, et(*eastern))

    def orders(self) -> list[dict[str, Any]]:
        return self.call(self.broker.orders_report)

    def stop(self) -> None:
        try:
            self.run(self.broker.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(WAIT)
            self.loop.close()


def client_module(lib: str) -> Any:
    return importlib.import_module(lib)


async def connect(lib: str, port: int, client_id: int = 17, timeout: float = WAIT) -> Any:
    mod = client_module(lib)
    ib = mod.IB()
    await ib.connectAsync("127.0.0.1", port, clientId=client_id, timeout=timeout)
    return ib


async def until(predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Wait (yielding to the client's loop) until ``predicate()`` holds; fail naming ``what`` after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


async def settle() -> None:
    """Give the client's loop a moment to read what the broker already sent (for asserting that nothing came)."""
    await asyncio.sleep(0.05)


def run(coro: Awaitable[T], timeout: float = 60.0) -> T:
    """Run one client scenario with an overall time limit."""

    async def limited() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(limited())


def tqqq(mod: Any) -> Any:
    return mod.Stock("TQQQ", "SMART", "USD")


def grid_buy(mod: Any, qty: int, price: float, con_id: int = 72539702, ref: str = "tqgrid1 c1 L1 BUY") -> Any:
    """The grid's conditional BUY: LMT at the trigger with a PriceCondition at the trigger (DESIGN section 4)."""
    order = mod.LimitOrder("BUY", qty, price, tif="GTC", outsideRth=True, orderRef=ref)
    order.conditions = [mod.PriceCondition(isMore=False, price=price, conId=con_id, exch="SMART")]
    order.conditionsIgnoreRth = True
    return order


class ErrorLog:
    """Collect (reqId, code, message) of every error event of an IB instance."""

    def __init__(self, ib: Any) -> None:
        self.errors: list[tuple[int, int, str]] = []
        ib.errorEvent += self._on_error

    def _on_error(self, req_id: int, code: int, message: str, *rest: Any) -> None:
        self.errors.append((req_id, code, message))

    def codes(self, req_id: int | None = None) -> list[int]:
        return [code for r, code, _ in self.errors if req_id is None or r == req_id]
