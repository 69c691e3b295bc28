"""Publisher -> bus -> Subscriber over real ZeroMQ sockets on 127.0.0.1: throughput without gaps, gaps across a
bus restart, restarts of a sender, bad messages survived, heartbeat liveness, drops counted at the publisher."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
import zmq

from bus import Publisher, Subscriber
from bus.forwarder import Forwarder
from proto.envelope import SCHEMA_VERSION, Header
from proto.messages import Alert, Heartbeat, Tick
from tests.bus.helpers import BusProgram, eventually, raw_socket, run_async, tick, zmq_context

TOPIC = "md.tick.TQQQ"


async def _until_connected(publish: Callable[[], object], sub: Subscriber, timeout: float = 5.0) -> None:
    """Publish probes until one arrives: subscriptions take a moment to reach a publisher through the bus."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        publish()
        if await sub.recv(timeout=0.02) is not None:
            return
    raise AssertionError(f"nothing arrived through the bus within {timeout} s")


@pytest.mark.timeout(60)
def test_100k_ticks_through_python_m_bus_arrive_in_order_without_a_gap(bus_program: BusProgram) -> None:
    # Arrange: the publisher runs in a thread with its own loop and context, like a separate service.
    count = 100_000
    ready = threading.Event()
    stop = threading.Event()
    publisher_done: dict[str, int] = {}

    def feed() -> None:
        async def main() -> None:
            with zmq_context() as ctx:
                pub = Publisher(ctx, bus_program.xsub, "feed")
                while not ready.wait(0.01):
                    if stop.is_set():
                        return
                    pub.publish(TOPIC, tick(0))  # probes until the subscriber hears one
                for seq in range(1, count + 1):
                    pub.publish(TOPIC, tick(seq))
                    if seq % 500 == 0:
                        await asyncio.sleep(0.001)  # a fast feed, not a tight loop holding the GIL
                publisher_done.update(sent=pub.sent, dropped=pub.dropped)
                await pub.close()

        asyncio.run(main())

    gaps: list[tuple[str, int, int]] = []
    counters: dict[str, int] = {}

    async def subscribe() -> list[int]:
        with zmq_context() as ctx:
            sub = Subscriber(ctx, bus_program.xpub, ["md.tick."], on_gap=lambda *a: gaps.append(a))
            seqs: list[int] = []
            while not ready.is_set():
                if await sub.recv(timeout=5.0) is None:
                    raise AssertionError("no probe arrived within 5 s")
                ready.set()
            while len(seqs) < count:
                envelope = await sub.recv(timeout=5.0)
                assert envelope is not None, f"stalled after {len(seqs)} ticks: {sub.counters()}"
                assert isinstance(envelope.msg, Tick)
                if envelope.msg.seq:
                    seqs.append(envelope.msg.seq)
            counters.update(sub.counters())
            await sub.close()
            return seqs

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()

    # Act
    started = time.monotonic()
    try:
        seqs = run_async(subscribe(), timeout=45)
    finally:
        stop.set()
        thread.join(10)
    elapsed = time.monotonic() - started

    # Assert
    assert seqs == list(range(1, count + 1))
    assert gaps == []
    assert counters["gaps"] == counters["lost"] == counters["decode_errors"] == counters["duplicates"] == 0
    assert publisher_done == {"sent": publisher_done["sent"], "dropped": 0}
    assert elapsed < 30, f"100k ticks took {elapsed:.1f} s"


@pytest.mark.timeout(60)
def test_a_restarted_bus_loses_messages_and_the_subscriber_reports_the_gap() -> None:
    # A publisher keeps what its queue holds while the bus is away (ZeroMQ reconnects and delivers it); what
    # does not fit is dropped and counted. A small queue makes the loss certain.
    bus = BusProgram()
    gaps: list[tuple[str, int, int]] = []
    restarts: list[Any] = []

    async def scenario() -> None:
        with zmq_context() as ctx:
            pub = Publisher(ctx, bus.xsub, "feed", hwm=50)
            sub = Subscriber(
                ctx, bus.xpub, ["md.tick."], on_gap=lambda *a: gaps.append(a), on_restart=lambda *a: restarts.append(a)
            )
            seq = 0
            received: list[int] = []

            def publish_next() -> bool:
                nonlocal seq
                seq += 1
                return pub.publish(TOPIC, tick(seq))

            async def publish_and_receive() -> None:
                publish_next()
                envelope = await sub.recv(timeout=0.02)
                if envelope is not None:
                    assert isinstance(envelope.msg, Tick)
                    received.append(envelope.msg.seq)

            await eventually(lambda: bool(received), 5, "a tick through the bus", publish_and_receive)
            assert bus.stop() == 0
            # Published while the bus is down: more than the publisher's queue holds.
            dropped = [seq + 1 for _ in range(200) if not publish_next()]
            down_to = seq
            restarted = BusProgram(bus.xsub, bus.xpub)
            try:
                await eventually(lambda: received[-1] > down_to, 10, "a tick through the restarted bus", publish_and_receive)
            finally:
                assert restarted.stop() == 0

            assert dropped and pub.dropped >= len(dropped)
            assert gaps and all(sender == "feed" and expected < got for sender, expected, got in gaps)
            assert sub.gaps == len(gaps)
            assert received == sorted(set(received))
            # Every number after the first is either received or inside a reported gap, and nothing dropped by
            # the publisher arrives.
            reported_lost = {n for _, expected, got in gaps for n in range(expected, got)}
            assert set(range(received[0], received[-1] + 1)) == set(received) | reported_lost
            assert set(dropped) <= reported_lost
            assert sub.lost == len(reported_lost)
            assert restarts == []  # the sender did not restart: same incarnation
            await pub.close()
            await sub.close()

    try:
        run_async(scenario(), timeout=40)
    finally:
        bus.kill()


def test_a_restarted_sender_is_reported_as_a_restart_not_a_gap(forwarder: Forwarder) -> None:
    async def scenario() -> None:
        with zmq_context() as ctx:
            gaps: list[Any] = []
            restarts: list[tuple[str, int, int]] = []
            sub = Subscriber(
                ctx,
                forwarder.xpub_endpoint,
                [TOPIC],
                on_gap=lambda *a: gaps.append(a),
                on_restart=lambda *a: restarts.append(a),
            )
            first = Publisher(ctx, forwarder.xsub_endpoint, "feed")
            await _until_connected(lambda: first.publish(TOPIC, tick(1)), sub)
            await first.close()
            await asyncio.sleep(0.002)  # incarnations are start times: make sure the second is later
            second = Publisher(ctx, forwarder.xsub_endpoint, "feed")

            # Its first messages are lost while it connects (a slow joiner): still a restart, not a gap.
            await _until_connected(lambda: second.publish(TOPIC, tick(1)), sub)

            assert restarts == [("feed", first.incarnation, second.incarnation)]
            assert gaps == [] and sub.restarts == 1 and sub.gaps == 0
            await second.close()
            await sub.close()

    run_async(scenario())


def test_bad_messages_are_counted_logged_and_skipped_while_the_loop_carries_on(
    forwarder: Forwarder, caplog: pytest.LogCaptureFixture
) -> None:
    encoder = msgspec.msgpack.Encoder()
    seqs = iter(range(1, 100_000))

    def header(seq: int | None = None, schema: int = SCHEMA_VERSION) -> bytes:
        return encoder.encode(Header("rogue", next(seqs) if seq is None else seq, schema, time.time_ns(), 7))

    def good(price_seq: int) -> list[bytes]:
        return [TOPIC.encode(), header(), encoder.encode(tick(price_seq))]

    async def scenario() -> None:
        with zmq_context() as ctx, raw_socket(zmq.PUB, connect=forwarder.xsub_endpoint) as raw:
            sub = Subscriber(ctx, forwarder.xpub_endpoint, [TOPIC])
            await _until_connected(lambda: raw.send_multipart(good(0)), sub)
            bad = [
                # Envelopes that are unusable as a whole: no sequence number is read from them (seq=0 here so
                # that the stream of good numbers stays whole).
                [TOPIC.encode(), header(seq=0)],  # two frames
                [TOPIC.encode(), b"\xc1garbage", b"x"],  # the header is not msgpack
                [TOPIC.encode(), header(seq=0, schema=99), encoder.encode(tick(1))],  # a foreign schema
                # Sound envelopes around bad payloads: their numbers count, so no gap follows them.
                [TOPIC.encode(), header(), b"\xc1\xc1"],  # the payload is not msgpack
                [TOPIC.encode(), header(), encoder.encode({"type": "Tick", "symbol": "TQQQ"})],  # fields missing
                [TOPIC.encode(), header(), encoder.encode({"type": "QuoteFromTheFuture", "bid": "1"})],
                [TOPIC.encode(), header(), encoder.encode([1, 2, 3])],  # not a message object
            ]
            for frames in bad:
                raw.send_multipart(frames)
            raw.send_multipart(good(4242))

            envelope = await sub.recv(timeout=5.0)

            assert envelope is not None and isinstance(envelope.msg, Tick) and envelope.msg.seq == 4242
            assert sub.decode_errors == len(bad)
            assert sub.unknown_types == 1
            assert sub.received == 2  # the probe and the last tick
            assert sub.gaps == 0
            await sub.close()

    with caplog.at_level(logging.WARNING, logger="bus.subscriber"):
        run_async(scenario())
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert logged.count("skipped a bad bus message") == 7
    assert "expected 3 frames" in logged
    assert "schema 99" in logged
    assert "'QuoteFromTheFuture'" in logged
    assert "from 'rogue' on 'md.tick.TQQQ'" in logged


def test_heartbeats_keep_a_peer_alive_and_three_missed_beats_mark_it_down(forwarder: Forwarder) -> None:
    interval = 0.05

    async def scenario() -> None:
        with zmq_context() as ctx:
            # Subscribed to ticks only: heartbeats are still read for liveness, but never returned.
            sub = Subscriber(ctx, forwarder.xpub_endpoint, [TOPIC], heartbeat_interval=interval, heartbeat_misses=3)
            pub = Publisher(ctx, forwarder.xsub_endpoint, "executor", heartbeat_interval=interval)
            await pub.start()

            async def listen() -> None:
                assert await sub.recv(timeout=0.01) is None

            await eventually(lambda: sub.peer_alive("executor"), 5, "the first heartbeat", listen)
            alive_until = time.monotonic() + 10 * interval
            while time.monotonic() < alive_until:
                await listen()
                assert sub.peer_alive("executor"), f"down while beating: {sub.peers()}"

            await pub.close()
            stopped = time.monotonic()
            await eventually(lambda: not sub.peer_alive("executor"), 5, "the peer marked down", listen)
            down_after = time.monotonic() - stopped

            # Down once three intervals passed since the last beat (which came up to one interval before close).
            assert 2 * interval <= down_after < 3 * interval + 0.5
            assert sub.peers()["executor"] >= 3 * interval
            assert not sub.peer_alive("nobody")
            await sub.close()

    run_async(scenario())


def test_heartbeats_are_returned_to_a_subscriber_of_hb(forwarder: Forwarder) -> None:
    async def scenario() -> None:
        with zmq_context() as ctx:
            sub = Subscriber(ctx, forwarder.xpub_endpoint, ["hb."])
            pub = Publisher(ctx, forwarder.xsub_endpoint, "statekeeper", heartbeat_interval=0.02)
            pub.status = "degraded"
            await pub.start()

            envelope = await sub.recv(timeout=5.0)

            assert envelope is not None and envelope.topic == "hb.statekeeper"
            assert isinstance(envelope.msg, Heartbeat)
            assert envelope.msg.service == "statekeeper" and envelope.msg.status == "degraded"
            assert envelope.msg.started_ts_ns == pub.incarnation == envelope.header.incarnation
            await pub.close()
            await sub.close()

    run_async(scenario())


def test_publish_never_blocks_or_raises_when_the_queue_is_full_and_counts_drops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    big = Alert(severity="info", source="test", code="fill", text="x" * 4000)

    async def scenario() -> None:
        # A "bus" that subscribes to everything and never reads: the queues fill and the publisher must drop.
        with zmq_context() as ctx, raw_socket(zmq.XSUB) as stuck:
            stuck.setsockopt(zmq.RCVHWM, 10)
            port = stuck.bind_to_random_port("tcp://127.0.0.1")
            stuck.send(b"\x01")  # subscribe to every topic
            pub = Publisher(ctx, f"tcp://127.0.0.1:{port}", "executor", hwm=10)
            await _wait_subscribed(pub, stuck)
            started = time.monotonic()

            results = [pub.publish("alert", big) for _ in range(20_000)]

            elapsed = time.monotonic() - started
            assert False in results
            assert pub.dropped == results.count(False)
            assert pub.seq("alert") >= 20_000  # dropped messages spend their numbers: subscribers see the hole
            assert elapsed < 10
            await pub.close()

    with caplog.at_level(logging.WARNING, logger="bus.publisher"):
        run_async(scenario())
    assert "dropping messages" in caplog.text


async def _wait_subscribed(pub: Publisher, stuck: zmq.Socket[bytes]) -> None:
    """Publish probes until the stuck end receives one: before the subscription arrives, a PUB discards."""
    probe = Alert(severity="info", source="test", code="probe", text="")
    deadline = time.monotonic() + 5
    while not stuck.poll(0):
        assert time.monotonic() < deadline, "the subscription never reached the publisher"
        pub.publish("alert", probe)
        await asyncio.sleep(0.01)
    while stuck.poll(0):
        stuck.recv_multipart()


def test_subscriber_refuses_a_bare_string_of_topics() -> None:
    with pytest.raises(TypeError, match="list of topic prefixes"):
        Subscriber(None, "tcp://127.0.0.1:1", "md.tick.TQQQ")  # type: ignore[arg-type]


def test_an_async_gap_callback_finishes_before_the_message_is_returned_and_a_failing_one_is_logged(
    forwarder: Forwarder, caplog: pytest.LogCaptureFixture
) -> None:
    encoder = msgspec.msgpack.Encoder()

    def frames(seq: int) -> list[bytes]:
        return [TOPIC.encode(), encoder.encode(Header("feed", seq, SCHEMA_VERSION, time.time_ns(), 7)), encoder.encode(tick(seq))]

    events: list[str] = []

    async def resync(sender: str, expected: int, got: int) -> None:
        events.append(f"resync {sender} {expected}-{got} started")
        await asyncio.sleep(0.05)
        events.append("resync done")

    def broken(sender: str, old: int, new: int) -> None:
        raise RuntimeError("a bug in the restart callback")

    async def scenario() -> None:
        with zmq_context() as ctx, raw_socket(zmq.PUB, connect=forwarder.xsub_endpoint) as raw:
            sub = Subscriber(ctx, forwarder.xpub_endpoint, [TOPIC], on_gap=resync, on_restart=broken)
            probe = iter(range(1, 1000))
            await _until_connected(lambda: raw.send_multipart(frames(next(probe))), sub)
            last = next(probe)
            for seq in (last, last, last + 4, last + 5):  # a repeat, then a jump of three
                raw.send_multipart(frames(seq))
            for _ in range(3):
                envelope = await sub.recv(timeout=5.0)
                assert envelope is not None and isinstance(envelope.msg, Tick)
                events.append(f"got {envelope.msg.seq}")
            # A new incarnation: the failing callback is logged and the message still arrives.
            raw.send_multipart([TOPIC.encode(), encoder.encode(Header("feed", 1, SCHEMA_VERSION, 0, 8)), encoder.encode(tick(1))])
            restarted = await sub.recv(timeout=5.0)

            assert events == [f"got {last}", f"resync feed {last + 1}-{last + 4} started", "resync done", f"got {last + 4}", f"got {last + 5}"]
            assert sub.duplicates == 1 and sub.gaps == 1 and sub.lost == 3
            assert restarted is not None and restarted.header.incarnation == 8 and sub.restarts == 1
            await sub.close()

    with caplog.at_level(logging.WARNING, logger="bus.subscriber"):
        run_async(scenario())
    assert "a bug in the restart callback" in caplog.text
    assert "skipped a repeat of feed's message" in caplog.text


def test_a_stalled_subscriber_loses_its_own_messages_without_slowing_the_publisher_or_the_others() -> None:
    # Smaller queues on the bus than the default, so that the stalled subscriber's share overflows quickly.
    forwarder = Forwarder("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", hwm=1000)
    forwarder.start()
    big = "x" * 2000
    count = 20_000

    async def scenario() -> None:
        with zmq_context() as ctx:
            stalled = Subscriber(ctx, forwarder.xpub_endpoint, ["alert"], hwm=100)
            reader = Subscriber(ctx, forwarder.xpub_endpoint, ["alert"])
            pub = Publisher(ctx, forwarder.xsub_endpoint, "executor", heartbeat_interval=0.05)
            probe = Alert(severity="info", source="test", code="probe", text="")
            await _until_connected(lambda: pub.publish("alert", probe), reader)
            # The stalled subscriber is connected too once it holds a probe (which it does not read yet).
            await eventually(lambda: stalled._socket.poll(0) != 0, 5, "a probe at the stalled subscriber", lambda: asyncio.sleep(0.01))
            while await reader.recv(timeout=0.05) is not None:
                pass  # the other probes
            await pub.start()
            started = time.monotonic()

            for batch in range(count // 100):
                for i in range(100):
                    assert pub.publish("alert", Alert(severity="info", source="test", code=str(batch * 100 + i), text=big))
                for _ in range(100):
                    assert await reader.recv(timeout=5.0) is not None, (batch, reader.counters(), pub.dropped)

            elapsed = time.monotonic() - started
            assert pub.dropped == 0
            assert reader.gaps == 0 and reader.received >= count
            assert elapsed < 20
            # Now the stalled one reads: it gets what its queues held, with holes; a message after a hole, or at
            # the end the next heartbeat (no later alert would), reports every one it lost.
            codes: list[int] = []

            async def read_stalled() -> None:
                envelope = await stalled.recv(timeout=0.05)
                if envelope is not None and isinstance(envelope.msg, Alert) and envelope.msg.code.isdigit():
                    codes.append(int(envelope.msg.code))

            await eventually(lambda: len(codes) + stalled.lost >= count, 10, "every alert received or reported lost", read_stalled)
            assert codes == sorted(set(codes)) and codes[0] == 0
            assert stalled.gaps >= 1 and stalled.lost > count // 2
            for closeable in (pub, stalled, reader):
                await closeable.close()

    try:
        run_async(scenario(), timeout=40)
    finally:
        forwarder.stop()


def test_a_heartbeat_reveals_that_the_latest_messages_of_a_topic_were_lost(forwarder: Forwarder) -> None:
    encoder = msgspec.msgpack.Encoder()

    def frames(topic: str, seq: int, msg: Any) -> list[bytes]:
        return [topic.encode(), encoder.encode(Header("statekeeper", seq, SCHEMA_VERSION, time.time_ns(), 5)), encoder.encode(msg)]

    def alert(n: int) -> Alert:
        return Alert(severity="info", source="statekeeper", code=str(n), text="")

    gaps: list[tuple[str, int, int]] = []

    async def scenario() -> None:
        with zmq_context() as ctx, raw_socket(zmq.PUB, connect=forwarder.xsub_endpoint) as raw:
            # Subscribed to alerts only: heartbeats are read for liveness and for this check, not returned.
            sub = Subscriber(ctx, forwarder.xpub_endpoint, ["alert"], on_gap=lambda *a: gaps.append(a))
            sent = iter(range(1, 1000))
            await _until_connected(lambda: raw.send_multipart(frames("alert", next(sent), alert(0))), sub)
            last = next(sent)
            raw.send_multipart(frames("alert", last, alert(1)))
            assert await sub.recv(timeout=5.0) is not None
            # The sender published up to last + 3 on "alert", but those three never came.
            beat = Heartbeat(service="statekeeper", pid=1, started_ts_ns=5, last_seq={"alert": last + 3, "other": 9})
            raw.send_multipart(frames("hb.statekeeper", 1, beat))
            raw.send_multipart(frames("alert", last + 4, alert(2)))

            envelope = await sub.recv(timeout=5.0)

            assert envelope is not None and envelope.header.seq == last + 4
            assert gaps == [("statekeeper", last + 1, last + 4)]  # from the heartbeat; not again by the alert
            assert sub.lost == 3
            await sub.close()

    run_async(scenario())


def test_a_closed_publisher_counts_drops_and_a_closed_subscriber_says_it_is_closed(forwarder: Forwarder) -> None:
    async def scenario() -> None:
        with zmq_context() as ctx:
            pub = Publisher(ctx, forwarder.xsub_endpoint, "feed")
            sub = Subscriber(ctx, forwarder.xpub_endpoint, [TOPIC])
            await pub.close()
            await sub.close()

            assert pub.publish(TOPIC, tick(1)) is False and pub.dropped == 1
            with pytest.raises(RuntimeError, match="is closed"):
                await sub.recv(timeout=0.01)

    run_async(scenario())
