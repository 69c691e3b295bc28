"""Test helpers for the sim's market stream: the unmodified alpaca-py StockDataStream in its own thread and loop.

alpaca-py's run() cannot run inside a loop and subscribe_* deadlocks inside its own loop (docs/alpaca-protocol.md),
so the client gets a thread with a fresh loop, subscribes before ``_run_forever()`` and stops with
``stop_ws()`` + ``close()``. Everything it receives goes to thread-safe queues the test reads with timeouts.

The stop runs inside the client thread's main coroutine, never as a separate task sent in from the test thread:
``_run_forever()`` returns on its own as soon as it sees the stop flag (e.g. right after logging a garbage frame),
and the loop's teardown would then cancel a stop task still waiting for the close handshake.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from alpaca.data.live.stock import StockDataStream

from sim.clock import SimClock
from sim.stream.server import StreamServer

KEY, SECRET = "TESTKEY", "TESTSECRET"
SYMBOL = "TQQQ"
ALPACA_LOGGER = "alpaca.data.live.websocket"
# How long a test waits for something that should happen at once. It only costs time when the thing never happens,
# so it is sized for a 2-core CI machine running other tests' processes too, where a login can take seconds.
EVENT_TIMEOUT = 15.0


class LogRecorder(logging.Handler):
    """Keep alpaca-py's log lines (they are how it reports 402, 406 and reconnects)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock:
            self.lines.append(record.getMessage())

    def count(self, text: str) -> int:
        with self._lock:
            return sum(text in line for line in self.lines)


class AlpacaClient:
    """Run StockDataStream against ``url`` in a thread; trades, quotes and bars land in queues."""

    def __init__(
        self,
        url: str,
        key: str = KEY,
        secret: str = SECRET,
        quotes: bool = False,
        bars: bool = False,
        raw_data: bool = False,
    ) -> None:
        self.stream = StockDataStream(key, secret, raw_data=raw_data, url_override=url)
        self.trades: queue.Queue[Any] = queue.Queue()
        self.quotes: queue.Queue[Any] = queue.Queue()
        self.bars: queue.Queue[Any] = queue.Queue()
        self.stream.subscribe_trades(self._on_trade, SYMBOL)
        if quotes:
            self.stream.subscribe_quotes(self._on_quote, SYMBOL)
        if bars:
            self.stream.subscribe_bars(self._on_bar, SYMBOL)
        self.returned = threading.Event()  # _run_forever returned by itself (409) or after stop
        self._loop = asyncio.new_event_loop()
        self._stop_requested = asyncio.Event()  # set only on self._loop, via call_soon_threadsafe
        self.failure: BaseException | None = None  # what ended the client thread, if not a clean return
        self._thread = threading.Thread(target=self._run, name="alpaca-client", daemon=True)

    async def _on_trade(self, t: Any) -> None:
        self.trades.put(t)

    async def _on_quote(self, q: Any) -> None:
        self.quotes.put(q)

    async def _on_bar(self, b: Any) -> None:
        self.bars.put(b)

    async def _main(self) -> None:
        """Run the stream until it returns by itself or a stop is requested; then stop it and wait for it."""
        run_forever = asyncio.create_task(self.stream._run_forever(), name="alpaca-run-forever")
        stop_requested = asyncio.create_task(self._stop_requested.wait(), name="alpaca-stop-requested")
        try:
            await asyncio.wait({run_forever, stop_requested}, return_when=asyncio.FIRST_COMPLETED)
            if not run_forever.done():
                # stop_ws() raises the flag _run_forever checks; close() ends the recv() it may be blocked in
                # for up to 5 s. Whichever of the two _run_forever notices first, it returns and we await it.
                await self.stream.stop_ws()
                await self.stream.close()
            await run_forever
        finally:
            stop_requested.cancel()

    def _run(self) -> None:
        try:
            with asyncio.Runner(loop_factory=lambda: self._loop) as runner:
                runner.run(self._main())
        except BaseException as e:  # reported by stop(), in the test's thread
            self.failure = e
        finally:
            self.returned.set()

    def start(self) -> AlpacaClient:
        self._thread.start()
        return self

    def native_id(self) -> int:
        """The client thread's id as the operating system knows it (once started)."""
        assert self._thread.native_id is not None, "start() the client first"
        return self._thread.native_id

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the client's loop to stop the stream; wait for its thread to end (a loaded machine is slow)."""
        if not self.returned.is_set():
            try:
                self._loop.call_soon_threadsafe(self._stop_requested.set)
            except RuntimeError:  # the loop closed meanwhile: the thread is ending by itself
                pass
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"alpaca-py client did not stop within {timeout} s"
        if self.failure is not None:
            raise AssertionError(f"the alpaca-py client thread failed: {self.failure!r}") from self.failure

    # The server under test runs on the test's loop: never block it while the client talks to it.
    async def __aenter__(self) -> AlpacaClient:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    # When the server runs in another process, blocking here is fine.
    def __enter__(self) -> AlpacaClient:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def take(q: queue.Queue[Any], n: int, timeout: float = EVENT_TIMEOUT) -> list[Any]:
    """Read ``n`` items from ``q`` (in a worker thread: the loop keeps serving) or fail after ``timeout`` s."""
    return await asyncio.to_thread(take_sync, q, n, timeout)


def take_sync(q: queue.Queue[Any], n: int, timeout: float = EVENT_TIMEOUT) -> list[Any]:
    """Read ``n`` items from ``q``, blocking (no loop runs in this thread), or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    out = []
    for _ in range(n):
        try:
            out.append(q.get(timeout=max(0.0, deadline - time.monotonic())))
        except queue.Empty:
            raise AssertionError(f"got {len(out)} of {n} items within {timeout} s") from None
    return out


async def until(condition: Callable[[], bool], timeout: float = EVENT_TIMEOUT, what: str = "condition") -> None:
    """Wait on the running loop until ``condition()`` holds, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.005)


async def start_stream(clock: SimClock | None = None, **kwargs: Any) -> StreamServer:
    """Start a StreamServer on a free loopback port with the test key pair."""
    clock = clock or SimClock(start_ns=1_748_872_800_000_000_000, driven=True)
    server = StreamServer(clock.now_ns, SYMBOL, KEY, SECRET, **kwargs)
    await server.start("127.0.0.1", 0)
    return server


def subscribed(server: StreamServer, n: int = 1, channel: str = "trades") -> Callable[[], bool]:
    """A condition: ``n`` clients are subscribed to ``channel`` of the symbol."""
    return lambda: sum(SYMBOL in c.session.subscriptions[channel] for c in server.clients()) >= n


def cpu_wait_s(*thread_ids: int) -> float:
    """Seconds the given threads (native ids) of this process have spent ready to run but waiting for a CPU.

    Linux's scheduler counts it per thread (/proc/self/task/<id>/schedstat, second field, ns). It is what other
    processes on a busy machine add to a wall-clock measurement; elsewhere it reads 0, so nothing is discounted.
    """
    total_ns = 0
    for tid in thread_ids:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                total_ns += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            pass
    return total_ns / 1e9


def run(coro: Any, timeout: float = 90.0) -> Any:
    """Run a test scenario on a fresh loop with an overall timeout (a hang fails instead of hanging)."""
    return asyncio.run(asyncio.wait_for(coro, timeout))
