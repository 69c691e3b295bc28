"""A strategy service on a real bus: the forwarder on a thread, the service in the test's loop, and its peers.

The peers speak the real protocol on real sockets: the "executor" is a CommandServer answering commands and
publishing heartbeats (and broker events) as the executor does; the "statekeeper" a CommandServer answering
snapshot requests and a Publisher of numbered StateUpdates; the "feed" a Publisher of ticks. They stand in for the
real services here; tests/services/strategy/test_integration.py runs the real ones.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import zmq.asyncio

from bus import CommandServer, Publisher
from bus.forwarder import Forwarder
from gridbot.config import Config, load
from proto import topics
from proto.messages import (
    BrokerSnapshot,
    BrokerSnapshotRequest,
    CommandAccepted,
    CommandDuplicate,
    GridState,
    Message,
    PlaceOrder,
    StateSnapshot,
    StateSnapshotRequest,
    StateUpdate,
    Tick,
)
from services.strategy.service import StrategyService

HEARTBEAT = 0.1


def free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def test_config(forwarder: Forwarder, executor: str, statekeeper: str, **strategy: Any) -> Config:
    return load(
        overrides={
            "bus": {
                "xsub": forwarder.xsub_endpoint,
                "xpub": forwarder.xpub_endpoint,
                "executor": executor,
                "statekeeper": statekeeper,
                "heartbeat_interval": HEARTBEAT,
                "heartbeat_misses": 5,
                "command_timeout": 0.5,
                "command_retries": 1,
            },
            "strategy": strategy,
        }
    )


async def eventually(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


async def handled(service: StrategyService, tick_seq: int, timeout: float = 5.0) -> None:
    """Wait until the service has decided on the feed's tick ``tick_seq`` and every command it sent was answered.

    A decision follows each message at once, so after this nothing more comes of those ticks: a test that checks
    that nothing was sent needs no fixed sleep (which a loaded machine could outrun).
    """
    await eventually(lambda: service.view.tick is not None and service.view.tick.seq >= tick_seq,
                     f"the strategy to take tick {tick_seq}", timeout)
    await service.dispatcher.drain(timeout)


class FakeExecutor:
    """Answers commands like the executor: a new key is accepted, a known one is a duplicate."""

    def __init__(self, ctx: zmq.asyncio.Context, endpoint: str, xsub: str) -> None:
        self.commands: list[Message] = []
        self.connected = True
        self.server = CommandServer(ctx, endpoint, self.handle, name="executor")
        self.publisher = Publisher(ctx, xsub, "executor", HEARTBEAT)
        self._known: dict[str, int] = {}

    async def start(self) -> None:
        await self.server.start()
        await self.publisher.start()

    async def close(self) -> None:
        await self.server.close()
        await self.publisher.close()

    async def handle(self, msg: Message) -> Message:
        if isinstance(msg, BrokerSnapshotRequest):
            return BrokerSnapshot(connected=self.connected)
        self.commands.append(msg)
        key = getattr(msg, "key", "")
        if isinstance(msg, PlaceOrder) and key in self._known:
            return CommandDuplicate(key=key, order_id=self._known[key], perm_id=0, status="Submitted")
        self._known[key] = len(self._known) + 1
        return CommandAccepted(key=key, order_id=self._known[key])

    def places(self) -> list[PlaceOrder]:
        return [c for c in self.commands if isinstance(c, PlaceOrder)]


class FakeStatekeeper:
    def __init__(self, ctx: zmq.asyncio.Context, endpoint: str, xsub: str, state: GridState) -> None:
        self.state = state
        self.seq = 1
        self.snapshot_requests = 0
        self.server = CommandServer(ctx, endpoint, self.handle, name="statekeeper")
        self.publisher = Publisher(ctx, xsub, "statekeeper", HEARTBEAT)

    async def start(self) -> None:
        await self.server.start()
        await self.publisher.start()

    async def close(self) -> None:
        await self.server.close()
        await self.publisher.close()

    async def handle(self, msg: Message) -> Message:
        assert isinstance(msg, StateSnapshotRequest)
        self.snapshot_requests += 1
        return StateSnapshot(seq=self.seq, state=self.state)

    def update(self, state: GridState, skip: int = 0) -> None:
        """Publish the next numbered update (``skip`` numbers lost on the way, to make a gap)."""
        self.seq += 1 + skip
        self.state = state
        self.publisher.publish(topics.STATE_UPDATE, StateUpdate(seq=self.seq, state=state))


class Feed:
    def __init__(self, ctx: zmq.asyncio.Context, xsub: str) -> None:
        self.publisher = Publisher(ctx, xsub, "feed", HEARTBEAT)
        self.seq = 0

    def tick(self, price: str) -> None:
        self.seq += 1
        now = time.time_ns()
        self.publisher.publish(
            topics.tick("TQQQ"),
            Tick(ts_ns=now, symbol="TQQQ", price=Decimal(price), size=100, exchange_ts_ns=now, receive_ts_ns=now,
                 seq=self.seq),
        )


class Harness:
    """Everything but the executor's and statekeeper's own code, on real sockets."""

    def __init__(self, state: GridState, start_executor: bool = True, **strategy: Any) -> None:
        self.forwarder = Forwarder("tcp://127.0.0.1:*", "tcp://127.0.0.1:*")
        self.forwarder.start()
        self.ctx = zmq.asyncio.Context()
        xsub = self.forwarder.xsub_endpoint
        # The peers bind free ports themselves (a port picked in advance and bound later can be taken meanwhile by
        # another test: "Address already in use"); only an executor started later needs one picked in advance.
        self.statekeeper = FakeStatekeeper(self.ctx, "tcp://127.0.0.1:*", xsub, state)
        self.executor = FakeExecutor(self.ctx, "tcp://127.0.0.1:*", xsub) if start_executor else None
        self.executor_endpoint = self.executor.server.endpoint if self.executor is not None else free_endpoint()
        self.statekeeper_endpoint = self.statekeeper.server.endpoint
        self.cfg = test_config(self.forwarder, self.executor_endpoint, self.statekeeper_endpoint, **strategy)
        self.feed = Feed(self.ctx, xsub)
        self.service = StrategyService(self.cfg, self.ctx)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Harness:
        if self.executor is not None:
            await self.executor.start()
        await self.statekeeper.start()
        await self.feed.publisher.start()
        self.task = asyncio.create_task(self.service.run())
        # Ready once the service holds the state and hears every peer (so its subscriptions reach them).
        await eventually(lambda: self.service.view.state is not None, "the first state snapshot")
        peers = ["feed", "statekeeper"] + (["executor"] if self.executor is not None else [])
        await eventually(lambda: all(self.service.subscriber.peer_alive(p) for p in peers), "every peer's heartbeat")
        return self

    async def start_executor(self) -> FakeExecutor:
        self.executor = FakeExecutor(self.ctx, self.executor_endpoint, self.forwarder.xsub_endpoint)
        await self.executor.start()
        return self.executor

    async def __aexit__(self, *exc: object) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self.executor is not None:
            await self.executor.close()
        await self.statekeeper.close()
        await self.feed.publisher.close()
        self.ctx.term()
        self.forwarder.stop()
