"""The unmodified alpaca-py StockDataStream (its own thread and loop) against the sim's stream over real TCP."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from sim.clock import SimClock
from sim.driver import Driver
from sim.market.path import PathSource
from sim.market.prints import NS_PER_SECOND, Print
from tests.sim.stream_helpers import (
    ALPACA_LOGGER,
    SYMBOL,
    AlpacaClient,
    LogRecorder,
    cpu_wait_s,
    run,
    start_stream,
    subscribed,
    take,
    until,
)

T0 = 1_748_872_800_123_456_789  # 2025-06-02 14:00:00.123456789 UTC


@pytest.fixture
def alpaca_log() -> Iterator[LogRecorder]:
    recorder = LogRecorder()
    logger = logging.getLogger(ALPACA_LOGGER)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(recorder)
    yield recorder
    logger.removeHandler(recorder)
    logger.setLevel(old_level)


def prints(n: int, t0: int = T0, step_ns: int = NS_PER_SECOND, base: str = "51.40") -> list[Print]:
    return [Print(t0 + i * step_ns, Decimal(base) + Decimal(i) / 1000, 100 + i) for i in range(n)]


def test_trades_quotes_and_bars_arrive_in_order_with_alpacas_fields() -> None:
    async def scenario() -> None:
        server = await start_stream()
        async with AlpacaClient(server.url("iex"), quotes=True, bars=True) as client:
            await until(subscribed(server, channel="bars"), what="the client's subscription")
            sent = prints(50, step_ns=3 * NS_PER_SECOND)  # 150 s: minutes 14:00, 14:01, 14:02
            server.publish(sent[:20], 1)
            server.publish(sent[20:], 21)
            trades = await take(client.trades, 50)
            quotes = await take(client.quotes, 50)
            bars = await take(client.bars, 2)
        await server.stop()

        assert [t.id for t in trades] == list(range(1, 51))
        for t, p in zip(trades, sent, strict=True):
            assert t.symbol == SYMBOL
            assert t.price == float(p.price) and t.size == p.size
            assert t.exchange == "V" and t.conditions == ["@"] and t.tape == "C"
            # alpaca-py truncates the msgpack timestamp's nanoseconds to microseconds
            assert t.timestamp == datetime.fromtimestamp(p.ts_ns // 1000 / 1e6, tz=UTC)
            assert t.timestamp.tzinfo is not None
        for q, p in zip(quotes, sent, strict=True):
            assert q.bid_price < float(p.price) < q.ask_price
            assert round(q.ask_price - q.bid_price, 2) == 0.02
        first_minute = [p for p in sent if p.ts_ns < 1_748_872_860_000_000_000]
        bar = bars[0]
        assert bar.timestamp == datetime(2025, 6, 2, 14, 0, tzinfo=UTC)
        assert bar.open == float(first_minute[0].price) and bar.close == float(first_minute[-1].price)
        assert bar.high == float(max(p.price for p in first_minute))
        assert bar.low == float(min(p.price for p in first_minute))
        assert bar.volume == sum(p.size for p in first_minute)
        assert bar.trade_count == len(first_minute)
        assert bars[1].timestamp == datetime(2025, 6, 2, 14, 1, tzinfo=UTC)

    run(scenario())


def test_a_server_side_drop_makes_the_client_reconnect_and_resubscribe(alpaca_log: LogRecorder) -> None:
    async def scenario() -> None:
        server = await start_stream()
        async with AlpacaClient(server.url("iex")) as client:
            await until(subscribed(server), what="the first subscription")
            server.publish(prints(3), 1)
            assert [t.id for t in await take(client.trades, 3)] == [1, 2, 3]

            assert server.drop() == 1
            await until(lambda: not server.clients(), what="the dropped connection to go")
            await until(subscribed(server), what="the client to reconnect and resubscribe")
            server.publish(prints(3, t0=T0 + 10 * NS_PER_SECOND), 4)
            assert [t.id for t in await take(client.trades, 3)] == [4, 5, 6]
        await server.stop()
        assert alpaca_log.count("restarting connection") >= 1

    run(scenario())


def test_a_wrong_secret_gets_402_and_no_data(alpaca_log: LogRecorder) -> None:
    async def scenario() -> None:
        server = await start_stream()
        async with AlpacaClient(server.url("iex"), secret="WRONG") as client:
            await until(lambda: alpaca_log.count("auth failed") >= 1, what="alpaca-py to report auth failed")
            assert not any(c.session.authenticated for c in server.clients())
            server.publish(prints(3), 1)
            await asyncio.sleep(0.2)
            assert client.trades.empty()
        await server.stop()

    run(scenario())


def test_a_second_connection_with_the_same_key_gets_406_and_the_first_keeps_streaming(
    alpaca_log: LogRecorder,
) -> None:
    async def scenario() -> None:
        server = await start_stream()
        async with AlpacaClient(server.url("iex")) as first:
            await until(subscribed(server), what="the first client")
            async with AlpacaClient(server.url("iex")) as second:
                await until(
                    lambda: alpaca_log.count("connection limit exceeded") >= 1, what="alpaca-py to report 406"
                )
                server.publish(prints(2), 1)
                assert [t.id for t in await take(first.trades, 2)] == [1, 2]
                assert second.trades.empty()
                assert sum(c.session.authenticated for c in server.clients()) == 1
        await server.stop()

    run(scenario())


def test_garbage_frames_are_survived_without_a_reconnect(alpaca_log: LogRecorder) -> None:
    async def scenario() -> None:
        server = await start_stream()
        async with AlpacaClient(server.url("iex")) as client:
            await until(subscribed(server), what="the subscription")
            server.publish(prints(1), 1)
            await take(client.trades, 1)
            assert server.garbage() == 1
            server.publish(prints(2, t0=T0 + 5 * NS_PER_SECOND), 2)
            assert [t.id for t in await take(client.trades, 2)] == [2, 3]
            assert alpaca_log.count("restarting connection") == 0
            assert alpaca_log.count("error during websocket communication") >= 1  # seen, logged, survived
            assert len(server.clients()) == 1
        await server.stop()

    run(scenario())


def test_a_client_stopped_while_it_chews_on_garbage_stops_cleanly(alpaca_log: LogRecorder) -> None:
    # alpaca-py's run loop returns by itself as soon as it sees the stop flag between two bad frames, possibly while
    # the close handshake the stop started is still under way. The helper's stop must survive that (it did not: the
    # loop's teardown cancelled it, and stop() raised CancelledError). A close slowed to 0.3 s, as on a busy machine,
    # and a flood of bad frames make that order of events the usual one rather than a rare one.
    async def scenario() -> None:
        server = await start_stream()
        for attempt in range(3):
            client = AlpacaClient(server.url("iex"))
            real_close = client.stream.close

            async def slow_close(close: Callable[[], Awaitable[None]] = real_close) -> None:
                await asyncio.sleep(0.3)
                await close()

            client.stream.close = slow_close  # type: ignore[method-assign]
            client.start()
            try:
                await until(subscribed(server), what=f"subscription {attempt}")
                for _ in range(200):
                    server.garbage()
            finally:
                await asyncio.to_thread(client.stop)
            assert client.returned.is_set() and client.failure is None
            await until(lambda: not server.clients(), what="the stopped client's connection to go")
        await server.stop()
        assert alpaca_log.count("error during websocket communication") >= 3  # it was chewing when stopped

    run(scenario())


def test_sip_without_a_subscription_gets_409_and_alpaca_py_stops_quietly(alpaca_log: LogRecorder) -> None:
    async def scenario() -> None:
        server = await start_stream(sip_entitled=False)
        client = AlpacaClient(server.url("sip")).start()
        try:
            await until(client.returned.is_set, what="alpaca-py's run loop to return")
        finally:
            await asyncio.to_thread(client.stop)
        await server.stop()
        assert alpaca_log.count("insufficient subscription") >= 1

    run(scenario())


def test_delayed_sip_streams_each_print_15_simulated_minutes_late() -> None:
    async def scenario() -> None:
        clock = SimClock(start_ns=T0, driven=True)
        server = await start_stream(clock)
        async with AlpacaClient(server.url("delayed_sip")) as client:
            await until(subscribed(server), what="the subscription")
            early = prints(2)
            server.publish(early, 1)
            await asyncio.sleep(0.2)
            assert client.trades.empty()
            clock.advance_to(T0 + (15 * 60 + 1) * NS_PER_SECOND)
            server.publish([Print(clock.now_ns(), Decimal("52.00"), 10)], 3)
            got = await take(client.trades, 2)
        await server.stop()
        assert [t.id for t in got] == [1, 2] and got[0].exchange == "Q"

    run(scenario())


def test_a_replay_at_5000_prints_per_second_reaches_the_client_without_a_gap() -> None:
    total = 10_000
    attempts = 3  # every one must be gap-free; the pace is judged on the best, as timeit does (see below)

    async def scenario() -> list[tuple[float, float, float, float]]:
        clock = SimClock(start_ns=T0, driven=True)
        server = await start_stream(clock)
        timings: list[tuple[float, float, float, float]] = []
        async with AlpacaClient(server.url("iex"), raw_data=False) as client:
            await until(subscribed(server), what="the subscription")
            # The driver and the server run on this thread, alpaca-py on the client's.
            threads = (threading.get_native_id(), client.native_id())
            for attempt in range(attempts):
                first_id = attempt * total + 1

                def publish(batch: Sequence[Print], trade_id: int, offset: int = first_id - 1) -> None:
                    server.publish(batch, trade_id + offset)  # trade ids go on from the previous attempt

                # 0.2 simulated seconds apart at 1000x: 5,000 prints per wall second for 2 s.
                rows = [(i * NS_PER_SECOND // 5, Decimal("60.00") + Decimal(i % 50) / 100, 100) for i in range(total)]
                source = PathSource(rows, T0 + attempt * 3600 * NS_PER_SECOND)
                driver = Driver(source, clock, speed=1000, publish=publish, backlog=server.backlog)
                started, wait_0 = time.monotonic(), cpu_wait_s(*threads)
                await driver.run()
                sent_in, wait_1 = time.monotonic() - started, cpu_wait_s(*threads)
                got = await take(client.trades, total, timeout=30)
                received_in, wait_2 = time.monotonic() - started, cpu_wait_s(*threads)
                assert [t.id for t in got] == list(range(first_id, first_id + total))
                assert sent_in > 1.9, f"the driver sent 2 s of prints in {sent_in:.2f} s: faster than its speed"
                timings.append((sent_in, received_in, wait_1 - wait_0, wait_2 - wait_1))
                if paced(*timings[-1]):
                    break
        await server.stop()
        return timings

    def paced(sent_in: float, received_in: float, waited_sending: float, waited_receiving: float) -> bool:
        """The driver took under 3.5 s for its 2 s of prints and the client was at most 1 s behind it, not counting
        the time other processes kept our two threads from a CPU meanwhile (none on an idle machine, where these
        are the plain wall-clock bounds; a pipeline that is itself too slow spends its time working, not waiting)."""
        return sent_in - waited_sending < 3.5 and received_in - sent_in - waited_receiving < 1.0

    timings = run(scenario())
    # Other processes on a busy machine can only ever add wall time, so the best attempt is the one that measures
    # the sim and alpaca-py; a pipeline that is really too slow fails all three.
    summary = "; ".join(
        f"sent in {sent:.2f} s ({w_send:.2f} s waiting for a CPU), received in {received:.2f} s ({w_recv:.2f} s)"
        for sent, received, w_send, w_recv in timings
    )
    assert any(paced(*t) for t in timings), (
        f"the driver did not pace 2 s of prints in under 3.5 s with the client at most 1 s behind: {summary}"
    )
