"""CommandClient (DEALER) -> CommandServer (ROUTER) over real ZeroMQ sockets on 127.0.0.1: retries executed once,
dropped replies, concurrency, the reply cache, malformed commands, handler errors, timeouts, a restarting server."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

import msgspec
import pytest
import zmq
import zmq.asyncio

from bus import BadReply, CommandClient, CommandServer, CommandTimeout
from proto.codec import encode
from proto.envelope import SCHEMA_VERSION, CommandHeader, unpack_command
from proto.messages import CancelOrder, CommandAccepted, CommandRejected, Halt, Message
from tests.bus.helpers import eventually, run_async, zmq_context

ANY_PORT = "tcp://127.0.0.1:*"
_encoder = msgspec.msgpack.Encoder()


class Recorder:
    """A handler that records what it was asked and answers CommandAccepted(detail=<the Halt's reason>)."""

    def __init__(self, delay: Callable[[Message], float] = lambda msg: 0.0) -> None:
        self.calls: list[Message] = []
        self.delay = delay

    async def __call__(self, msg: Message) -> Message:
        self.calls.append(msg)
        await asyncio.sleep(self.delay(msg))
        return CommandAccepted(detail=getattr(msg, "reason", ""), order_id=len(self.calls))


async def _recv(sock: zmq.asyncio.Socket, timeout: float = 5.0) -> list[bytes]:
    return await asyncio.wait_for(sock.recv_multipart(), timeout)


def _header(command_id: str, sender: str = "tester", schema: int = SCHEMA_VERSION, attempt: int = 1) -> bytes:
    return _encoder.encode(CommandHeader(sender, command_id, schema, time.time_ns(), attempt))


def _reply(frames: list[bytes]) -> tuple[CommandHeader, Message]:
    envelope = unpack_command(frames)
    return envelope.header, envelope.msg


def test_a_command_retried_three_times_by_a_slow_server_is_executed_once() -> None:
    async def scenario() -> None:
        with zmq_context() as ctx:
            handler = Recorder(delay=lambda msg: 0.35)
            server = CommandServer(ctx, ANY_PORT, handler, name="executor")
            await server.start()
            client = CommandClient(ctx, server.endpoint, "strategy", timeout=0.1, retries=3)

            reply = await client.request(Halt(reason="slow"))

            assert isinstance(reply, CommandAccepted) and reply.detail == "slow"
            assert len(handler.calls) == 1
            assert client.retried == 3 and client.sent == 4
            assert server.repeats == 3 and server.handled == 1
            # Every copy is answered; the client keeps the first answer and discards the other three.
            await eventually(lambda: client.late_replies == 3, 2, "3 late replies", lambda: asyncio.sleep(0.01))
            await client.close()
            await server.close()

    run_async(scenario())


def test_replies_lost_on_the_way_back_are_answered_from_the_cache_on_retry() -> None:
    async def scenario() -> None:
        with zmq_context() as ctx:
            handler = Recorder()
            server = CommandServer(ctx, ANY_PORT, handler, name="executor")
            await server.start()
            # A relay between client and server that loses the first two replies.
            front = ctx.socket(zmq.ROUTER)
            front.setsockopt(zmq.LINGER, 0)
            front_port = front.bind_to_random_port("tcp://127.0.0.1")
            back = ctx.socket(zmq.DEALER)
            back.setsockopt(zmq.LINGER, 0)
            back.connect(server.endpoint)
            replies_lost = 0

            async def relay() -> None:
                nonlocal replies_lost
                identity, *request = await front.recv_multipart()
                while True:
                    await back.send_multipart(request)
                    reply = await back.recv_multipart()
                    if replies_lost < 2:
                        replies_lost += 1
                    else:
                        await front.send_multipart([identity, *reply])
                    identity, *request = await front.recv_multipart()

            relay_task = asyncio.create_task(relay())
            client = CommandClient(ctx, f"tcp://127.0.0.1:{front_port}", "strategy", timeout=0.15, retries=3)

            reply = await client.request(CancelOrder(key="tqgrid1 c1 L3 BUY", reason="test"))

            assert isinstance(reply, CommandAccepted)
            assert replies_lost == 2
            assert len(handler.calls) == 1
            assert server.repeats == 2 and client.retried == 2
            relay_task.cancel()
            await client.close()
            await server.close()

    run_async(scenario())


def test_concurrent_requests_from_one_client_each_get_their_own_reply() -> None:
    async def scenario() -> None:
        with zmq_context() as ctx:
            # Later requests are answered sooner, so replies come back in the reverse order.
            handler = Recorder(delay=lambda msg: (50 - int(getattr(msg, "reason", "0"))) * 0.002)
            server = CommandServer(ctx, ANY_PORT, handler, name="executor")
            await server.start()
            client = CommandClient(ctx, server.endpoint, "strategy", timeout=10.0, retries=0)

            replies = await asyncio.gather(*(client.request(Halt(reason=str(i))) for i in range(50)))

            assert [r.detail for r in replies if isinstance(r, CommandAccepted)] == [str(i) for i in range(50)]
            assert len(handler.calls) == 50 and server.repeats == 0 and client.late_replies == 0
            await client.close()
            await server.close()

    run_async(scenario())


def test_the_cache_answers_a_repeated_command_id_without_calling_the_handler() -> None:
    async def scenario() -> None:
        with zmq_context() as ctx:
            handler = Recorder()
            server = CommandServer(ctx, ANY_PORT, handler, name="executor")
            await server.start()
            strategy = CommandClient(ctx, server.endpoint, "strategy", timeout=5.0, retries=0)
            operator = CommandClient(ctx, server.endpoint, "operator", timeout=5.0, retries=0)

            first = await strategy.request(Halt(reason="a"), command_id="cmd-1")
            repeat = await strategy.request(Halt(reason="a"), command_id="cmd-1")
            other_sender = await operator.request(Halt(reason="a"), command_id="cmd-1")

            assert first == repeat  # the very same reply: order_id 1
            assert isinstance(other_sender, CommandAccepted) and other_sender.order_id == 2
            assert len(handler.calls) == 2 and server.repeats == 1
            for c in (strategy, operator):
                await c.close()
            await server.close()

    run_async(scenario())


def test_a_repeat_arriving_while_the_first_is_handled_waits_for_the_same_reply() -> None:
    async def scenario() -> None:
        with zmq_context() as ctx:
            release = asyncio.Event()
            calls: list[Message] = []

            async def handler(msg: Message) -> Message:
                calls.append(msg)
                await release.wait()
                return CommandAccepted(detail="done", order_id=len(calls))

            server = CommandServer(ctx, ANY_PORT, handler, name="executor")
            await server.start()
            dealer = ctx.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.connect(server.endpoint)
            payload = encode(Halt(reason="twice"))

            await dealer.send_multipart([_header("dup-1", attempt=1), payload])
            await dealer.send_multipart([_header("dup-1", attempt=2), payload])
            await eventually(lambda: server.repeats == 1, 5, "the repeat to arrive", lambda: asyncio.sleep(0.005))
            assert len(calls) == 1
            release.set()
            replies = [_reply(await _recv(dealer)) for _ in range(2)]

            assert sorted(h.attempt for h, _ in replies) == [1, 2]
            assert {h.command_id for h, _ in replies} == {"dup-1"}
            assert replies[0][1] == replies[1][1] == CommandAccepted(detail="done", order_id=1)
            assert len(calls) == 1
            await server.close()

    run_async(scenario())


def test_malformed_commands_are_rejected_or_dropped_and_the_server_carries_on(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        with zmq_context() as ctx:
            handler = Recorder()
            server = CommandServer(ctx, ANY_PORT, handler, name="executor")
            await server.start()
            dealer = ctx.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.connect(server.endpoint)

            # No readable header: nothing to answer to, so dropped.
            await dealer.send_multipart([b"\xc1 not a header", encode(Halt(reason="x"))])
            await dealer.send_multipart([b""])
            # A readable header: answered with CommandRejected naming the problem.
            bad = {
                "one-frame": [_header("one-frame")],
                "garbage": [_header("garbage"), b"\xc1\xc1"],
                "unknown": [_header("unknown"), _encoder.encode({"type": "LaunchRocket", "ts_ns": 0})],
                "missing": [_header("missing"), _encoder.encode({"type": "CancelOrder"})],
                "schema": [_header("schema", schema=99), encode(Halt(reason="x"))],
            }
            for frames in bad.values():
                await dealer.send_multipart(frames)
            await dealer.send_multipart([_header("good"), encode(Halt(reason="fine"))])

            replies = {}
            while "good" not in replies:
                header, msg = _reply(await _recv(dealer))
                replies[header.command_id] = msg

            assert set(replies) == {*bad, "good"}
            for command_id in bad:
                rejected = replies[command_id]
                assert isinstance(rejected, CommandRejected) and rejected.reason.startswith("malformed command")
            assert "expected 2 frames" in replies["one-frame"].reason  # type: ignore[attr-defined]
            assert "'LaunchRocket'" in replies["unknown"].reason  # type: ignore[attr-defined]
            assert "schema 99" in replies["schema"].reason  # type: ignore[attr-defined]
            assert replies["good"] == CommandAccepted(detail="fine", order_id=1)
            assert server.dropped == 2 and server.malformed == len(bad) and server.handled == 1
            await server.close()

    with caplog.at_level(logging.WARNING, logger="bus.command_server"):
        run_async(scenario())
    assert caplog.text.count("dropped a message without a readable command header") == 2
    assert caplog.text.count("rejected command") == 5


def test_a_handler_exception_becomes_command_rejected_with_its_text(caplog: pytest.LogCaptureFixture) -> None:
    async def handler(msg: Message) -> Message:
        if isinstance(msg, CancelOrder):
            raise RuntimeError("IB said no")
        if isinstance(msg, Halt) and msg.reason == "wrong type":
            return "not a message"  # type: ignore[return-value]
        return CommandAccepted(detail="ok")

    async def scenario() -> None:
        with zmq_context() as ctx:
            server = CommandServer(ctx, ANY_PORT, handler, name="executor")
            await server.start()
            client = CommandClient(ctx, server.endpoint, "strategy", timeout=5.0, retries=0)

            failed = await client.request(CancelOrder(key="tqgrid1 c1 L2 BUY"))
            wrong = await client.request(Halt(reason="wrong type"))
            fine = await client.request(Halt(reason="fine"))

            assert failed == CommandRejected(
                ts_ns=failed.ts_ns, reason="RuntimeError: IB said no", key="tqgrid1 c1 L2 BUY"
            )
            assert isinstance(wrong, CommandRejected) and "returned str, not a reply Message" in wrong.reason
            assert fine == CommandAccepted(detail="ok")
            assert server.handler_errors == 2
            await client.close()
            await server.close()

    with caplog.at_level(logging.ERROR, logger="bus.command_server"):
        run_async(scenario())
    assert "the handler failed on CancelOrder" in caplog.text
    assert "IB said no" in caplog.text  # the traceback is logged


def test_no_server_raises_command_timeout_after_the_last_retry() -> None:
    async def scenario() -> None:
        with zmq_context() as ctx:
            # A port that was free a moment ago: nothing listens there.
            probe = ctx.socket(zmq.ROUTER)
            port = probe.bind_to_random_port("tcp://127.0.0.1")
            probe.close(linger=0)
            client = CommandClient(ctx, f"tcp://127.0.0.1:{port}", "strategy")
            started = time.monotonic()

            with pytest.raises(CommandTimeout, match="no reply after 3 attempts") as raised:
                await client.request(Halt(reason="anyone?"), timeout=0.05, retries=2)

            assert 0.15 <= time.monotonic() - started < 2
            assert raised.value.attempts == 3 and client.timeouts == 1
            await client.close()

    run_async(scenario())


def test_a_late_reply_is_discarded_and_the_next_request_gets_its_own() -> None:
    async def scenario() -> None:
        with zmq_context() as ctx:
            handler = Recorder(delay=lambda msg: 0.2 if getattr(msg, "reason", "") == "slow" else 0.0)
            server = CommandServer(ctx, ANY_PORT, handler, name="executor")
            await server.start()
            client = CommandClient(ctx, server.endpoint, "strategy", timeout=0.05, retries=0)

            with pytest.raises(CommandTimeout):
                await client.request(Halt(reason="slow"))
            await eventually(lambda: client.late_replies == 1, 2, "the late reply", lambda: asyncio.sleep(0.01))
            fresh = await client.request(Halt(reason="fast"), timeout=1.0)

            assert isinstance(fresh, CommandAccepted) and fresh.detail == "fast"
            await client.close()
            await server.close()

    run_async(scenario())


def test_a_server_that_restarts_is_reached_by_a_retry() -> None:
    async def scenario() -> None:
        with zmq_context() as ctx:
            before = Recorder()
            server = CommandServer(ctx, ANY_PORT, before, name="executor")
            endpoint = server.endpoint
            await server.start()
            client = CommandClient(ctx, endpoint, "strategy", timeout=0.1, retries=30)
            assert isinstance(await client.request(Halt(reason="first")), CommandAccepted)
            await server.close()

            pending = asyncio.create_task(client.request(Halt(reason="while away")))
            await asyncio.sleep(0.35)  # a few attempts find nobody
            assert not pending.done()
            after = Recorder()
            restarted = CommandServer(ctx, endpoint, after, name="executor")
            await restarted.start()
            reply = await asyncio.wait_for(pending, 5)

            assert isinstance(reply, CommandAccepted) and reply.detail == "while away"
            # Executed once. Attempts made while the server was away were not queued for later delivery (that
            # would be three or so at once); one repeat can happen when a retry crosses the reply.
            assert len(after.calls) == 1 and restarted.repeats <= 1
            assert client.retried >= 2
            await client.close()
            await restarted.close()

    run_async(scenario())


def test_the_reply_cache_is_bounded_and_forgets_the_oldest() -> None:
    async def scenario() -> None:
        with zmq_context() as ctx:
            handler = Recorder()
            server = CommandServer(ctx, ANY_PORT, handler, name="executor", cache_size=2)
            await server.start()
            client = CommandClient(ctx, server.endpoint, "strategy", timeout=5.0, retries=0)

            for command_id in ("a", "b", "c", "c", "a"):
                await client.request(Halt(reason=command_id), command_id=command_id)

            # "c" repeated is answered from the cache; "a" was forgotten when "c" arrived, so it runs again.
            assert [getattr(m, "reason", "") for m in handler.calls] == ["a", "b", "c", "a"]
            await client.close()
            await server.close()

    run_async(scenario())


def test_an_undecodable_reply_raises_bad_reply() -> None:
    async def scenario() -> None:
        with zmq_context() as ctx:
            router = ctx.socket(zmq.ROUTER)
            router.setsockopt(zmq.LINGER, 0)
            port = router.bind_to_random_port("tcp://127.0.0.1")
            client = CommandClient(ctx, f"tcp://127.0.0.1:{port}", "strategy", timeout=5.0, retries=0)

            async def bad_server() -> None:
                identity, header, _ = await _recv(router)
                await router.send_multipart([identity, header, b"\xc1 garbage"])

            serving = asyncio.create_task(bad_server())
            with pytest.raises(BadReply, match="not a msgpack message"):
                await client.request(Halt(reason="x"))
            await serving
            assert client.bad_replies == 1
            await client.close()

    run_async(scenario())


def test_bad_endpoints_and_policies_are_refused_with_a_message_naming_them() -> None:
    async def scenario() -> None:
        with zmq_context() as ctx:
            with pytest.raises(ValueError, match="'nonsense'"):
                CommandClient(ctx, "nonsense", "strategy")
            with pytest.raises(ValueError, match="timeout must be positive"):
                CommandClient(ctx, "tcp://127.0.0.1:1", "strategy", timeout=0)
            server = CommandServer(ctx, ANY_PORT, Recorder(), name="executor")
            with pytest.raises(OSError, match="cannot bind"):
                CommandServer(ctx, server.endpoint, Recorder(), name="executor")
            await server.close()

    run_async(scenario())



def test_replies_are_never_stranded_by_sends_on_the_same_socket() -> None:
    """Regression: sends through a plain view of the socket could eat the wake-up of a pending receive.

    With that bug about one run of 30 rounds in four stranded replies until the per-attempt timeout; 90 rounds
    make a miss unlikely. Every request must get its own reply well within the timeout.
    """

    async def scenario() -> None:
        rng = random.Random(1234)
        with zmq_context() as ctx:

            async def handler(msg: Message) -> Message:
                await asyncio.sleep(rng.random() * 0.01)
                return CommandAccepted(detail=getattr(msg, "reason", ""))

            server = CommandServer(ctx, ANY_PORT, handler, name="executor")
            await server.start()
            client = CommandClient(ctx, server.endpoint, "strategy", timeout=3.0, retries=0)
            stranded: list[str] = []

            async def one(tag: str) -> None:
                await asyncio.sleep(rng.random() * 0.05)
                try:
                    reply = await client.request(Halt(reason=tag))
                    assert isinstance(reply, CommandAccepted) and reply.detail == tag
                except CommandTimeout:
                    stranded.append(tag)

            for round_no in range(90):
                await asyncio.gather(*(one(f"{round_no}.{i}") for i in range(rng.randint(1, 12))))
            assert stranded == []
            await client.close()
            await server.close()

    run_async(scenario(), timeout=60)
