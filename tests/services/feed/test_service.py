"""`python -m services.feed` against the sim's stream (another process), observed through a real ZeroMQ bus."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
import zmq.asyncio

from bus.subscriber import Subscriber
from proto.envelope import Envelope
from proto.messages import Alert, FeedStatus, Heartbeat, Message, Tick
from services.feed.stream import AlpacaTradeStream
from tests.services.feed.helpers import (
    EVENT_TIMEOUT,
    KEY,
    MS,
    SECRET,
    START_TIMEOUT,
    T0,
    BusForwarder,
    FeedProcess,
    StreamProcess,
    free_port,
    write_config,
)

M = TypeVar("M", bound=Message)


@pytest.fixture
def forwarder() -> Iterator[BusForwarder]:
    fwd = BusForwarder()
    yield fwd
    fwd.close()


@pytest.fixture
def sim() -> Iterator[StreamProcess]:
    process = StreamProcess()
    yield process
    process.close()


class BusWatcher:
    """Everything the feed publishes, collected in the background by a real bus Subscriber."""

    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.asyncio.Context()
        self.sub = Subscriber(self.ctx, endpoint, ["md.", "alert", "hb.feed"], heartbeat_interval=0.2)
        self.envelopes: list[Envelope] = []
        self._task = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        while True:
            envelope = await self.sub.recv(None)
            if envelope is not None:
                self.envelopes.append(envelope)

    def messages(self, cls: type[M]) -> list[M]:
        return [e.msg for e in self.envelopes if isinstance(e.msg, cls)]

    def mark(self, cls: type[Message]) -> int:
        """How many messages of ``cls`` came so far (for ``wait_for(after=...)``)."""
        return len(self.messages(cls))

    async def wait_for(
        self,
        cls: type[M],
        check: Callable[[M], bool],
        timeout: float,
        what: str,
        after: int = 0,
        log: Callable[[], str] | None = None,
    ) -> M:
        """The first message of ``cls`` after the first ``after`` ones (received or to come) that passes ``check``.

        ``log`` (e.g. a FeedProcess's) is quoted when the wait fails, to say why."""
        deadline = time.monotonic() + timeout
        seen = after
        while True:
            found = self.messages(cls)
            for msg in found[seen:]:
                if check(msg):
                    return msg
            seen = len(found)
            if time.monotonic() > deadline:
                detail = f"; its log:\n{log()[-3000:]}" if log is not None else ""
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; got {found[-5:]}{detail}")
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.sub.close()
        self.ctx.term()


def run(coro: Any, timeout: float = 100.0) -> Any:  # below pytest's 120 s, so a hang reports where it hung
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def start_feed(tmp_path: Path, forwarder: BusForwarder, url: str, **feed: Any) -> tuple[FeedProcess, BusWatcher]:
    """The watcher first (so nothing the feed says is missed), then the feed; wait for its first status."""
    watcher = BusWatcher(forwarder.xpub)
    feed_process = FeedProcess(write_config(tmp_path, forwarder, url, **feed))
    deadline = time.monotonic() + START_TIMEOUT
    while not watcher.messages(FeedStatus):
        if feed_process.proc.poll() is not None or time.monotonic() > deadline:
            feed_process.close()
            await watcher.close()
            raise AssertionError(f"the feed said nothing; its log:\n{feed_process.log()[-3000:]}")
        await asyncio.sleep(0.01)
    return feed_process, watcher


# deploy/supervisord.conf gives the feed stopwaitsecs=5 before it kills it.
SUPERVISORD_STOPWAITSECS = 5.0
# The feed's own stop: the stream's close, bounded by services.feed.service.STOP_TIMEOUT (1 s), then the last status.
OWN_STOP_LIMIT_S = 2.0


def assert_prompt_stop(feed: FeedProcess, took: float) -> None:
    """SIGTERM is handled in about a second and the process is gone long before supervisord would kill it.

    The feed's own part is timed by its log; the time from the signal to the exit also holds the waits for a CPU
    before the signal is handled and while the interpreter tears down, which grow with the machine's load.
    """
    own = feed.stop_seconds()
    assert own < OWN_STOP_LIMIT_S, f"the feed took {own:.2f} s to stop (its log)"
    assert took < SUPERVISORD_STOPWAITSECS, f"SIGTERM took {took:.2f} s to end the process"


def test_ticks_have_continuous_sequence_numbers_and_sigterm_is_clean(
    tmp_path: Path, forwarder: BusForwarder, sim: StreamProcess
) -> None:
    async def scenario() -> None:
        feed, bus = await start_feed(tmp_path, forwarder, sim.url())
        try:
            await bus.wait_for(FeedStatus, lambda s: s.connected, EVENT_TIMEOUT, "a connected FeedStatus")
            before = time.time_ns()
            prices = [f"97.{i:02d}" for i in range(60)]
            await asyncio.to_thread(sim.prints, prices[:30], T0, 10 * MS)
            await asyncio.to_thread(sim.prints, prices[30:], T0 + 300 * MS, 10 * MS)
            await bus.wait_for(Tick, lambda t: t.seq == 60, EVENT_TIMEOUT, "60 ticks")
            fresh = await bus.wait_for(FeedStatus, lambda s: not s.stale, EVENT_TIMEOUT, "a fresh FeedStatus")
            code, took = await asyncio.to_thread(feed.terminate)
            final = await bus.wait_for(
                FeedStatus, lambda s: s.reason == "stopped", EVENT_TIMEOUT, "the last FeedStatus"
            )
        finally:
            feed.close()
            await bus.close()

        ticks = [e for e in bus.envelopes if e.topic == "md.tick.TQQQ"]
        assert [e.msg.seq for e in ticks] == list(range(1, 61))  # type: ignore[attr-defined]
        assert [e.header.seq for e in ticks] == list(range(1, 61))
        assert {e.header.sender for e in ticks} == {"feed"}
        assert bus.sub.gaps == 0
        msgs = [e.msg for e in ticks]
        assert all(isinstance(t, Tick) for t in msgs)
        assert [t.price for t in msgs] == [Decimal(p) for p in prices]  # type: ignore[attr-defined]
        assert [t.exchange_ts_ns for t in msgs] == [T0 + i * 10 * MS for i in range(60)]  # type: ignore[attr-defined]
        assert all(t.symbol == "TQQQ" and t.size == 100 for t in msgs)  # type: ignore[attr-defined]
        assert all(before <= t.receive_ts_ns <= t.ts_ns <= time.time_ns() for t in msgs)  # type: ignore[attr-defined]
        assert fresh.connected and fresh.feed == "iex" and fresh.last_print_age_s is not None
        assert (code, final.connected, final.prints) == (0, False, 60)
        assert_prompt_stop(feed, took)

    run(scenario())


def test_bad_prints_are_dropped_counted_and_reported_never_published(
    tmp_path: Path, forwarder: BusForwarder, sim: StreamProcess
) -> None:
    async def scenario() -> None:
        feed, bus = await start_feed(tmp_path, forwarder, sim.url(), jump_band=0.05, jump_confirm=3)
        try:
            await bus.wait_for(FeedStatus, lambda s: s.connected, EVENT_TIMEOUT, "a connected FeedStatus")
            bad = ["97.00", "NaN", "-1", "0", "120.00", "97.01"]
            await asyncio.to_thread(sim.prints, bad, T0, 10 * MS, True)
            await asyncio.to_thread(sim.prints, ["97.02"], T0 - 1000 * MS, MS, True)  # older than the last good
            await asyncio.to_thread(sim.call, cmd="garbage")  # one well-framed trade with bad fields among it
            await asyncio.to_thread(sim.prints, ["97.03"], T0 + 1000 * MS)
            await bus.wait_for(Tick, lambda t: t.seq == 3, EVENT_TIMEOUT, "three good ticks")
            status = await bus.wait_for(
                FeedStatus, lambda s: s.dropped == 6, EVENT_TIMEOUT, "a FeedStatus counting 6 drops"
            )
            alert = await bus.wait_for(Alert, lambda a: a.code == "bad_prints", EVENT_TIMEOUT, "the bad-prints alert")
            code, _ = await asyncio.to_thread(feed.terminate)
        finally:
            feed.close()
            await bus.close()

        assert [t.price for t in bus.messages(Tick)] == [Decimal("97.00"), Decimal("97.01"), Decimal("97.03")]
        assert status.prints == 3 and status.connected
        assert alert.severity == "warning" and alert.source == "feed"
        for reason in ("not_a_number 1", "non_positive 2", "jump 1", "out_of_order 1", "malformed 1"):
            assert reason in alert.text
        assert code == 0

    run(scenario())


def test_5000_prints_per_second_reach_a_subscriber_with_no_gap(
    tmp_path: Path, forwarder: BusForwarder, sim: StreamProcess
) -> None:
    count = 10_000

    async def scenario() -> dict[str, Any]:
        feed, bus = await start_feed(tmp_path, forwarder, sim.url())
        try:
            await bus.wait_for(FeedStatus, lambda s: s.connected, EVENT_TIMEOUT, "a connected FeedStatus")
            paced = await asyncio.to_thread(sim.call, 30.0, cmd="pace", count=count, rate=5000, price="97.00", ts_ns=T0)
            await bus.wait_for(Tick, lambda t: t.seq == count, EVENT_TIMEOUT, f"{count} ticks")
            status = await bus.wait_for(
                FeedStatus, lambda s: s.prints == count, EVENT_TIMEOUT, "the status after the burst"
            )
            await asyncio.to_thread(feed.terminate)
        finally:
            feed.close()
            await bus.close()
        ticks = [e for e in bus.envelopes if e.topic == "md.tick.TQQQ"]
        assert [e.header.seq for e in ticks] == list(range(1, count + 1))
        assert [e.msg.seq for e in ticks] == list(range(1, count + 1))  # type: ignore[attr-defined]
        assert bus.sub.gaps == 0 and bus.sub.lost == 0
        assert status.dropped == 0
        return paced

    paced = run(scenario())
    assert paced["published"] == count
    # The stream process paces itself; on a loaded machine it may lag a little, but the rate must be the point.
    assert paced["seconds"] < count / 5000 * 1.6, f"the stream itself only managed {count / paced['seconds']:.0f}/s"


def test_feed_status_turns_stale_when_the_stream_goes_silent_and_recovers(
    tmp_path: Path, forwarder: BusForwarder, sim: StreamProcess
) -> None:
    stop_ticking = threading.Event()

    def ticker() -> None:
        """A print every 50 ms, as a live market would send them (the silence swallows some)."""
        i = 0
        while not stop_ticking.wait(0.05):
            sim.prints([f"97.{i % 50:02d}"], T0 + i * 50 * MS)
            i += 1

    async def scenario() -> None:
        # No periodic status during the test (status_interval 60 s): every status seen is published on a change.
        feed, bus = await start_feed(tmp_path, forwarder, sim.url(), stale_after=0.5, status_interval=60.0)
        thread = threading.Thread(target=ticker, daemon=True)
        try:
            await bus.wait_for(FeedStatus, lambda s: s.connected, EVENT_TIMEOUT, "a connected FeedStatus")
            thread.start()
            await bus.wait_for(
                FeedStatus, lambda s: s.connected and not s.stale, EVENT_TIMEOUT, "a fresh FeedStatus"
            )
            silence_start = time.monotonic()
            beats_before_silence = bus.mark(Heartbeat)
            # Silent until the test has seen the stale status, however long a busy machine takes to show it.
            await asyncio.to_thread(sim.call, cmd="silence", seconds=60.0)
            stale = await bus.wait_for(
                FeedStatus, lambda s: s.stale, EVENT_TIMEOUT, "a stale FeedStatus", bus.mark(FeedStatus), feed.log
            )
            stale_after = time.monotonic() - silence_start
            # The heartbeat (every second) says it too, for a monitor that missed the FeedStatus.
            stale_beat = await bus.wait_for(
                Heartbeat, lambda b: b.status.startswith("stale"), EVENT_TIMEOUT, "a stale heartbeat", beats_before_silence,
                feed.log,
            )
            before_recovery = bus.mark(FeedStatus)
            beats_before_recovery = bus.mark(Heartbeat)
            await asyncio.to_thread(sim.call, cmd="silence", seconds=0.0)  # the ticker's prints flow again
            fresh = await bus.wait_for(
                FeedStatus, lambda s: not s.stale, EVENT_TIMEOUT, "a fresh FeedStatus again", before_recovery, feed.log
            )
            fresh_beat = await bus.wait_for(
                Heartbeat, lambda b: b.status == "ok", EVENT_TIMEOUT, "an ok heartbeat again", beats_before_recovery
            )
            code, _ = await asyncio.to_thread(feed.terminate)
        finally:
            stop_ticking.set()
            thread.join(5)
            feed.close()
            await bus.close()

        assert stale.connected and stale.reason == "no print for more than 0.5 s"
        assert stale_after >= 0.2  # not before the threshold
        # Published when it turned stale: the feed's own clock says the last print was just over 0.5 s old then.
        assert stale.last_print_age_s is not None and 0.5 <= stale.last_print_age_s < 1.4
        assert fresh.connected and fresh.prints > stale.prints  # fresh again because prints came back
        assert stale_beat.service == "feed" and stale_beat.status == "stale: no print for more than 0.5 s"
        assert fresh_beat.service == "feed"
        assert code == 0

    run(scenario())


def test_a_dropped_stream_is_reported_and_the_feed_reconnects(
    tmp_path: Path, forwarder: BusForwarder, sim: StreamProcess
) -> None:
    async def scenario() -> None:
        feed, bus = await start_feed(tmp_path, forwarder, sim.url())
        try:
            await bus.wait_for(FeedStatus, lambda s: s.connected, EVENT_TIMEOUT, "a connected FeedStatus")
            await asyncio.to_thread(sim.call, cmd="drop")
            down = await bus.wait_for(
                FeedStatus, lambda s: not s.connected, EVENT_TIMEOUT, "a disconnected FeedStatus", bus.mark(FeedStatus)
            )
            await bus.wait_for(
                FeedStatus, lambda s: s.connected, EVENT_TIMEOUT, "a connected FeedStatus after the drop",
                bus.mark(FeedStatus),
            )
            await asyncio.to_thread(sim.prints, ["97.00"])
            tick = await bus.wait_for(Tick, lambda t: True, EVENT_TIMEOUT, "a tick after the reconnect")
            code, _ = await asyncio.to_thread(feed.terminate)
        finally:
            feed.close()
            await bus.close()
        assert down.reason.startswith("stream dropped")
        assert tick.seq == 1 and code == 0

    run(scenario())


def test_a_refused_key_raises_an_alert_naming_the_cause(tmp_path: Path, forwarder: BusForwarder, sim: StreamProcess) -> None:
    async def scenario() -> None:
        watcher = BusWatcher(forwarder.xpub)
        config = write_config(tmp_path, forwarder, sim.url())
        config.write_text(config.read_text().replace(f'api_secret = "{SECRET}"', 'api_secret = "WRONG"'))
        feed = FeedProcess(config)
        try:
            alert = await watcher.wait_for(
                Alert, lambda a: a.code == "stream_refused_402", START_TIMEOUT, "the 402 alert", log=feed.log
            )
            status = await watcher.wait_for(
                FeedStatus, lambda s: "402" in s.reason, EVENT_TIMEOUT, "a FeedStatus saying 402", log=feed.log
            )
            code, took = await asyncio.to_thread(feed.terminate)
            log = feed.log()
        finally:
            feed.close()
            await watcher.close()
        assert alert.severity == "critical" and "APCA_API_KEY_ID" in alert.text
        assert not status.connected and status.stale
        assert code == 0
        assert_prompt_stop(feed, took)
        assert "WRONG" not in log and SECRET not in log  # keys are never logged

    run(scenario())


def test_a_second_connection_with_the_same_key_raises_a_406_alert(
    tmp_path: Path, forwarder: BusForwarder, sim: StreamProcess
) -> None:
    class Quiet:
        def __getattr__(self, name: str) -> Callable[..., None]:
            return lambda *args: None

    async def scenario() -> None:
        first = AlpacaTradeStream(url=sim.url(), key_id=KEY, secret=SECRET, symbol="TQQQ", data_timeout=None,
                                  on_trade=lambda raw: None, events=Quiet())
        first.start()
        feed = None
        watcher = BusWatcher(forwarder.xpub)
        try:
            deadline = time.monotonic() + EVENT_TIMEOUT
            while not await asyncio.to_thread(sim.subscribed_clients):
                assert time.monotonic() < deadline, "the first client did not subscribe"
            feed = FeedProcess(write_config(tmp_path, forwarder, sim.url()))
            alert = await watcher.wait_for(
                Alert, lambda a: a.code == "stream_refused_406", START_TIMEOUT, "the 406 alert", log=feed.log
            )
            code, _ = await asyncio.to_thread(feed.terminate)
        finally:
            if feed is not None:
                feed.close()
            await first.stop(1.0)
            await watcher.close()
        assert alert.severity == "warning" and "another program uses the same keys" in alert.text
        assert code == 0

    run(scenario())


def test_409_is_fatal_with_an_alert(tmp_path: Path, forwarder: BusForwarder) -> None:
    sim = StreamProcess(no_sip=True)

    async def scenario() -> None:
        watcher = BusWatcher(forwarder.xpub)
        feed = FeedProcess(write_config(tmp_path, forwarder, sim.url("sip"), feed="sip"))
        try:
            code = await asyncio.to_thread(feed.wait, START_TIMEOUT)
            alert = await watcher.wait_for(Alert, lambda a: a.code == "feed_fatal", EVENT_TIMEOUT, "the fatal alert")
        finally:
            feed.close()
            await watcher.close()
        assert code == 1
        assert alert.severity == "critical" and "409" in alert.text and "feed.feed" in alert.text

    try:
        run(scenario())
    finally:
        sim.close()


def test_a_stream_that_is_not_up_yet_is_found_when_it_comes_up(tmp_path: Path, forwarder: BusForwarder) -> None:
    port = free_port()

    async def scenario() -> None:
        feed, bus = await start_feed(tmp_path, forwarder, f"ws://127.0.0.1:{port}/v2/iex")
        sim = None
        try:
            down = await bus.wait_for(
                FeedStatus, lambda s: "cannot connect" in s.reason, EVENT_TIMEOUT, "a failed connect"
            )
            sim = await asyncio.to_thread(StreamProcess, False, port)
            await bus.wait_for(FeedStatus, lambda s: s.connected, EVENT_TIMEOUT, "the connect once the stream is up")
            await asyncio.to_thread(sim.prints, ["97.00"])
            tick = await bus.wait_for(Tick, lambda t: True, EVENT_TIMEOUT, "a tick")
            code, _ = await asyncio.to_thread(feed.terminate)
        finally:
            feed.close()
            await bus.close()
            if sim is not None:
                sim.close()
        assert not down.connected and down.stale
        assert tick.price == Decimal("97.00") and code == 0

    run(scenario())
