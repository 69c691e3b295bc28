"""The feed's alpaca-py wrapper (unmodified StockDataStream in our loop) against the sim's stream in another process:
trades in order with their fields, drop -> reconnect and resubscribe, 402, 406, 409, garbage, silence, fast stop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest

from services.feed.convert import MalformedTrade, trade_from_raw
from services.feed.stream import AlpacaTradeStream, error_code, stream_url
from tests.services.feed.helpers import EVENT_TIMEOUT, KEY, MS, SECRET, T0, StreamProcess


@pytest.fixture
def sim() -> Iterator[StreamProcess]:
    process = StreamProcess()
    yield process
    process.close()


class Recorder:
    """A StreamEvents listener and trade sink that keeps everything it is told, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.trades: list[dict[str, Any]] = []

    def on_trade(self, raw: dict[str, Any]) -> None:
        self.trades.append(raw)

    def stream_connected(self) -> None:
        self.events.append(("connected",))

    def stream_lost(self, reason: str) -> None:
        self.events.append(("lost", reason))

    def stream_refused(self, code: int | None, text: str) -> None:
        self.events.append(("refused", code, text))

    def stream_error(self, code: int | None, text: str) -> None:
        self.events.append(("error", code, text))

    def stream_fault(self, text: str) -> None:
        self.events.append(("fault", text))

    def count(self, kind: str) -> int:
        return sum(e[0] == kind for e in self.events)


def make_stream(rec: Recorder, url: str, secret: str = SECRET, data_timeout: float | None = None) -> AlpacaTradeStream:
    return AlpacaTradeStream(
        url=url, key_id=KEY, secret=secret, symbol="TQQQ", data_timeout=data_timeout,
        on_trade=rec.on_trade, events=rec,
    )


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


def run(coro: Any, timeout: float = 90.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_trades_arrive_in_order_with_their_fields_and_nanoseconds(sim: StreamProcess) -> None:
    async def scenario() -> None:
        rec = Recorder()
        stream = make_stream(rec, sim.url())
        stream.start()
        await until(lambda: rec.count("connected") == 1, EVENT_TIMEOUT, "the login")
        await until(sim.subscribed_clients, EVENT_TIMEOUT, "the subscription")
        prices = [f"97.{i:02d}" for i in range(40)]
        await asyncio.to_thread(sim.prints, prices, T0 + 123_456_789, 7 * MS)
        await until(lambda: len(rec.trades) == 40, EVENT_TIMEOUT, "40 trades")
        await stream.stop(1.0)

        trades = [trade_from_raw(raw) for raw in rec.trades]
        assert [t.price for t in trades] == [Decimal(p) for p in prices]
        assert [t.exchange_ts_ns for t in trades] == [T0 + 123_456_789 + i * 7 * MS for i in range(40)]
        assert {t.symbol for t in trades} == {"TQQQ"} and {t.size for t in trades} == {100}
        assert [raw["i"] for raw in rec.trades] == list(range(1, 41))
        assert rec.events[0] == ("connected",) and rec.events[-1] == ("lost", "stopped")

    run(scenario())


def test_a_server_side_drop_reconnects_and_resubscribes(sim: StreamProcess) -> None:
    async def scenario() -> None:
        rec = Recorder()
        stream = make_stream(rec, sim.url())
        stream.start()
        await until(sim.subscribed_clients, EVENT_TIMEOUT, "the subscription")
        await asyncio.to_thread(sim.prints, ["97.00"])
        await until(lambda: len(rec.trades) == 1, EVENT_TIMEOUT, "the first trade")

        assert (await asyncio.to_thread(sim.call, cmd="drop"))["dropped"] == 1
        await until(lambda: rec.count("connected") == 2, EVENT_TIMEOUT, "the reconnect")
        await until(sim.subscribed_clients, EVENT_TIMEOUT, "the new subscription")
        await asyncio.to_thread(sim.prints, ["97.01"], T0 + 1000 * MS)
        await until(lambda: len(rec.trades) == 2, EVENT_TIMEOUT, "a trade after the reconnect")
        await stream.stop(1.0)

        lost = [e for e in rec.events if e[0] == "lost"]
        assert lost[0][1].startswith("stream dropped: ")
        assert trade_from_raw(rec.trades[1]).price == Decimal("97.01")

    run(scenario())


def test_a_wrong_secret_is_refused_with_402_and_retried(sim: StreamProcess) -> None:
    async def scenario() -> None:
        rec = Recorder()
        stream = make_stream(rec, sim.url(), secret="WRONG")
        stream.start()
        await until(lambda: rec.count("refused") >= 2, EVENT_TIMEOUT, "two refusals (alpaca-py retries)")
        await stream.stop(1.0)
        assert rec.events[0] == ("refused", 402, "auth failed")
        assert rec.count("connected") == 0

    run(scenario())


def test_a_second_connection_with_the_same_key_is_refused_with_406(sim: StreamProcess) -> None:
    async def scenario() -> None:
        first, second = Recorder(), Recorder()
        one = make_stream(first, sim.url())
        one.start()
        await until(lambda: first.count("connected") == 1, EVENT_TIMEOUT, "the first login")
        two = make_stream(second, sim.url())
        two.start()
        await until(lambda: second.count("refused") >= 1, EVENT_TIMEOUT, "the second login's refusal")
        await two.stop(1.0)
        await one.stop(1.0)
        assert second.events[0] == ("refused", 406, "connection limit exceeded")
        assert first.count("lost") == 1  # only its own stop

    run(scenario())


def test_409_ends_the_stream_by_itself() -> None:
    sim = StreamProcess(no_sip=True)
    try:

        async def scenario() -> None:
            rec = Recorder()
            stream = make_stream(rec, sim.url("sip"))
            task = stream.start()
            await asyncio.wait_for(asyncio.shield(task), EVENT_TIMEOUT)
            assert rec.events == [("refused", 409, "insufficient subscription")]
            await stream.stop(1.0)

        run(scenario())
    finally:
        sim.close()


def test_garbage_frames_are_survived_and_reported(sim: StreamProcess) -> None:
    async def scenario() -> None:
        rec = Recorder()
        stream = make_stream(rec, sim.url())
        stream.start()
        await until(sim.subscribed_clients, EVENT_TIMEOUT, "the subscription")
        await asyncio.to_thread(sim.call, cmd="garbage")
        await until(lambda: rec.count("fault") >= 3, EVENT_TIMEOUT, "the unreadable frames")
        await asyncio.to_thread(sim.prints, ["97.00", "97.01"])
        # The sim's garbage includes one well-framed trade with bad fields: it reaches the handler first.
        await until(lambda: len(rec.trades) == 3, EVENT_TIMEOUT, "the bad trade and two good ones")
        await stream.stop(1.0)

        with pytest.raises(MalformedTrade):
            trade_from_raw(rec.trades[0])
        assert [trade_from_raw(t).price for t in rec.trades[1:]] == [Decimal("97.00"), Decimal("97.01")]
        assert rec.count("connected") == 1  # the connection was kept

    run(scenario())


def test_a_silent_socket_is_dropped_after_data_timeout_and_reconnected(sim: StreamProcess) -> None:
    async def scenario() -> None:
        rec = Recorder()
        stream = make_stream(rec, sim.url(), data_timeout=0.5)
        stream.start()
        await until(sim.subscribed_clients, EVENT_TIMEOUT, "the subscription")
        await asyncio.to_thread(sim.prints, ["97.00"])
        await until(lambda: len(rec.trades) == 1, EVENT_TIMEOUT, "the first trade")
        await until(lambda: rec.count("lost") >= 1, EVENT_TIMEOUT, "the data timeout")
        await until(lambda: rec.count("connected") >= 2, EVENT_TIMEOUT, "the reconnect")
        await stream.stop(1.0)
        assert "data_timeout" in next(e for e in rec.events if e[0] == "lost")[1]

    run(scenario())


def test_stop_is_quick_while_idle(sim: StreamProcess) -> None:
    async def scenario() -> float:
        rec = Recorder()
        stream = make_stream(rec, sim.url())
        task = stream.start()
        await until(lambda: rec.count("connected") == 1, EVENT_TIMEOUT, "the login")
        start = time.monotonic()
        await stream.stop(1.0)
        assert task.done()
        return time.monotonic() - start

    assert run(scenario()) < 0.5


@pytest.mark.parametrize(
    "text, code",
    [("auth failed", 402), ("connection limit exceeded", 406), ("insufficient subscription", 409), ("what?", None)],
)
def test_error_texts_map_to_alpacas_codes(text: str, code: int | None) -> None:
    assert error_code(text) == code


def test_the_url_is_the_configured_one_or_alpacas_for_the_feed() -> None:
    assert stream_url("iex", "ws://127.0.0.1:7911/v2/iex") == "ws://127.0.0.1:7911/v2/iex"
    assert stream_url("sip", "") == "wss://stream.data.alpaca.markets/v2/sip"
    assert stream_url("delayed_sip", "") == "wss://stream.data.alpaca.markets/v2/delayed_sip"
