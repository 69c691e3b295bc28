"""Test harness for the statekeeper on a real bus: a broker-truth executor stand-in, a watcher, config files.

``TruthExecutor`` plays the executor's part of the protocol on real sockets: it publishes order events on
``order.event`` as sender "executor" (with heartbeats) and answers ``BrokerSnapshotRequest`` on a ROUTER with a
snapshot built from everything it has published (open and completed orders, executions with their commissions,
the position): the broker's truth the statekeeper reconciles against after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import zmq.asyncio

from bus import CommandClient, CommandServer, Publisher, Subscriber
from bus.forwarder import Forwarder
from core.lotmap import load_lot_map
from gridbot.config import load
from proto import topics
from proto.messages import (
    BrokerSnapshot,
    BrokerSnapshotRequest,
    CommandRejected,
    CommissionReported,
    ExecutionInfo,
    GridState,
    Message,
    OpenOrderInfo,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    PositionInfo,
    StateSnapshot,
    StateSnapshotRequest,
    StateUpdate,
)
from services.statekeeper.service import StatekeeperService
from services.statekeeper.store import Store

SYMBOL = "TQQQ"
LOTS = load_lot_map(Path(__file__).resolve().parents[3] / "config" / "lots.csv")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def overrides(run_dir: Path, xsub: str, xpub: str, executor: str, statekeeper: str) -> dict[str, Any]:
    """Config overrides for a statekeeper under test: its own run directory, fast heartbeats and retries."""
    return {
        "general": {"run_dir": str(run_dir), "log_level": "INFO"},
        "bus": {
            "xsub": xsub,
            "xpub": xpub,
            "executor": executor,
            "statekeeper": statekeeper,
            "heartbeat_interval": 0.1,
            "heartbeat_misses": 5,
            "command_timeout": 1.0,
            "command_retries": 1,
        },
        "statekeeper": {"reconcile_retry": 0.2},
    }


def write_config(path: Path, values: dict[str, Any]) -> Path:
    """A user config file (TOML) with ``values`` (nested tables of scalars)."""
    lines: list[str] = []
    for section, table in values.items():
        lines.append(f"[{section}]")
        for key, value in table.items():
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, str):
                text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
            else:
                text = repr(value)
            lines.append(f"{key} = {text}")
        lines.append("")
    path.write_text("\n".join(lines))
    return path


class TruthExecutor:
    """Publishes order events as the executor and answers snapshot requests with the truth they add up to."""

    def __init__(self, ctx: zmq.asyncio.Context, xsub: str, endpoint: str = "tcp://127.0.0.1:*") -> None:
        self.publisher = Publisher(ctx, xsub, "executor", heartbeat_interval=0.1)
        self.server = CommandServer(ctx, endpoint, self._handle, name="executor")
        self.endpoint = self.server.endpoint
        self.connected = True
        self.snapshots_served = 0
        self.orders: dict[int, OpenOrderInfo] = {}
        self.executions: dict[str, ExecutionInfo] = {}
        self.position = 0
        # Extra open orders (foreign, manual) that appear in snapshots only.
        self.extra_orders: list[OpenOrderInfo] = []

    async def start(self, heartbeats: bool = True) -> None:
        if heartbeats:
            await self.publisher.start()
        await self.server.start()

    async def close(self) -> None:
        await self.server.close()
        await self.publisher.close()

    async def _handle(self, msg: Message) -> Message:
        if isinstance(msg, BrokerSnapshotRequest):
            self.snapshots_served += 1
            return self.snapshot()
        return CommandRejected(reason=f"test executor takes BrokerSnapshotRequest, not {type(msg).__name__}")

    def snapshot(self) -> BrokerSnapshot:
        live = [o for o in self.orders.values() if o.status in ("Submitted", "PreSubmitted")]
        final = [o for o in self.orders.values() if o.status not in ("Submitted", "PreSubmitted")]
        return BrokerSnapshot(
            ts_ns=time.time_ns(),
            connected=self.connected,
            orders=[*live, *self.extra_orders],
            completed=final,
            executions=sorted(self.executions.values(), key=lambda e: (e.exec_ts_ns, e.exec_id)),
            positions=[PositionInfo(symbol=SYMBOL, quantity=self.position, avg_cost=Decimal(0))]
            if self.position
            else [],
        )

    def publish(self, event: Message) -> None:
        """Book ``event`` into the truth, then publish it."""
        self.book(event)
        self.publisher.publish(topics.ORDER_EVENT, event)

    def book(self, event: Message) -> None:
        match event:
            case OrderAccepted():
                known = self.orders.get(event.perm_id)
                self.orders[event.perm_id] = OpenOrderInfo(
                    key=event.key,
                    order_id=event.order_id,
                    perm_id=event.perm_id,
                    client_id=17,
                    symbol=SYMBOL,
                    side=event.side,
                    quantity=event.quantity,
                    limit=event.limit,
                    tif="GTC",
                    outside_rth=True,
                    status=known.status if known is not None else event.status,
                    filled=known.filled if known is not None else 0,
                    remaining=event.quantity - (known.filled if known is not None else 0),
                    avg_fill_price=known.avg_fill_price if known is not None else Decimal(0),
                )
            case OrderFilled():
                if event.exec_id in self.executions:
                    return
                self.executions[event.exec_id] = ExecutionInfo(
                    exec_id=event.exec_id,
                    key=event.key,
                    order_id=event.order_id,
                    perm_id=event.perm_id,
                    side=event.side,
                    shares=event.shares,
                    price=event.price,
                    cum_qty=event.cum_qty,
                    avg_price=event.avg_price,
                    exec_ts_ns=event.exec_ts_ns,
                    commission=event.commission,
                )
                self.position += event.shares if event.side == "BUY" else -event.shares
                order = self.orders.get(event.perm_id) or OpenOrderInfo(
                    key=event.key,
                    order_id=event.order_id,
                    perm_id=event.perm_id,
                    client_id=17,
                    symbol=SYMBOL,
                    side=event.side,
                    quantity=event.order_quantity,
                    limit=event.price,
                    tif="GTC",
                    outside_rth=True,
                    status="Submitted",
                )
                filled = order.filled + event.shares
                value = order.avg_fill_price * order.filled + event.price * event.shares
                self.orders[event.perm_id] = msgspec.structs.replace(
                    order,
                    filled=filled,
                    remaining=order.quantity - filled,
                    avg_fill_price=value / filled,
                    status="Filled" if filled >= order.quantity else order.status,
                )
            case CommissionReported():
                execution = self.executions.get(event.exec_id)
                if execution is not None:
                    self.executions[event.exec_id] = msgspec.structs.replace(
                        execution, commission=event.commission
                    )
            case OrderCancelled():
                order = self.orders.get(event.perm_id)
                if order is not None:
                    self.orders[event.perm_id] = msgspec.structs.replace(order, status="Cancelled")
            case OrderRejected():
                pass


class Watcher:
    """A subscriber to the statekeeper's output (state updates, control, alerts) with waiting helpers."""

    def __init__(self, ctx: zmq.asyncio.Context, xpub: str) -> None:
        self.subscriber = Subscriber(
            ctx, xpub, [topics.STATE_UPDATE, topics.CONTROL, topics.ALERT], heartbeat_interval=0.1
        )
        self.seen: list[Message] = []

    async def until(self, condition: Callable[[Message], bool], timeout: float, what: str) -> Message:
        """Receive until a message satisfies ``condition``; fail naming ``what`` after ``timeout`` seconds."""
        for msg in self.seen:
            if condition(msg):
                self.seen.remove(msg)
                return msg
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            envelope = await self.subscriber.recv(timeout=remaining)
            if envelope is None:
                continue
            if condition(envelope.msg):
                return envelope.msg
            self.seen.append(envelope.msg)

    async def hears(self, sender: str, timeout: float) -> None:
        """Receive until ``sender``'s heartbeat arrives: from then on nothing it publishes is lost to us."""
        deadline = time.monotonic() + timeout
        while not self.subscriber.peer_alive(sender):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting to hear {sender}")
            envelope = await self.subscriber.recv(timeout=0.05)
            if envelope is not None:
                self.seen.append(envelope.msg)

    async def quiet(self, seconds: float) -> list[Message]:
        """Everything received within ``seconds``."""
        got: list[Message] = []
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            envelope = await self.subscriber.recv(timeout=remaining)
            if envelope is not None:
                got.append(envelope.msg)
        return got

    async def close(self) -> None:
        await self.subscriber.close()


async def wait_for(condition: Callable[[], bool], timeout: float, what: str, poll: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(poll)


@dataclass
class Env:
    ctx: zmq.asyncio.Context
    forwarder: Forwarder
    executor: TruthExecutor
    service: StatekeeperService
    watcher: Watcher
    client: CommandClient
    run_dir: Path

    @property
    def state(self) -> GridState:
        return self.service.state

    async def in_sync(self) -> StateSnapshot:
        """Wait for the first reconciliation; return a snapshot (the update itself may precede our subscription)."""
        await wait_for(lambda: self.state.in_sync, 10, "the first reconciliation")
        reply = await self.client.request(StateSnapshotRequest())
        assert isinstance(reply, StateSnapshot)
        return reply

    async def update(self, condition: Any, what: str, timeout: float = 5.0) -> StateUpdate:
        msg = await self.watcher.until(lambda m: isinstance(m, StateUpdate) and condition(m), timeout, what)
        assert isinstance(msg, StateUpdate)
        return msg

    def write_config(self, path: Path) -> Path:
        """A config file for a program (the gridbot CLI) to reach this statekeeper, executor and bus."""
        values = overrides(
            self.run_dir,
            self.forwarder.xsub_endpoint,
            self.forwarder.xpub_endpoint,
            self.executor.endpoint,
            self.service.server.endpoint,
        )
        return write_config(path, values)

    async def subscribed(self) -> None:
        """Wait until the statekeeper hears the executor (its subscription path through the bus is up)."""
        await wait_for(
            lambda: self.service.subscriber.peer_alive("executor"), 5, "the statekeeper to hear the executor"
        )


@contextlib.asynccontextmanager
async def statekeeper(
    tmp_path: Path, executor_up: bool = True, heartbeats: bool = True, connected: bool = True
) -> AsyncIterator[Env]:
    forwarder = Forwarder("tcp://127.0.0.1:*", "tcp://127.0.0.1:*")
    forwarder.start()
    ctx = zmq.asyncio.Context()
    executor = TruthExecutor(ctx, forwarder.xsub_endpoint)
    executor.connected = connected
    if executor_up:
        await executor.start(heartbeats=heartbeats)
    cfg = load(
        overrides=overrides(
            tmp_path, forwarder.xsub_endpoint, forwarder.xpub_endpoint, executor.endpoint, "tcp://127.0.0.1:*"
        )
    )
    store = Store.open(cfg.run_path("bot_state.json"), cfg.run_path("journal.sqlite"), "TQQQ")
    watcher = Watcher(ctx, forwarder.xpub_endpoint)
    service = StatekeeperService(cfg, ctx, store, LOTS)
    client = CommandClient(ctx, service.server.endpoint, "test", timeout=5.0, retries=0)
    task = asyncio.create_task(service.run())
    try:
        # Our subscription is up once the statekeeper's heartbeat reaches it: later updates are not lost to it.
        await watcher.hears("statekeeper", 5)
        yield Env(ctx, forwarder, executor, service, watcher, client, tmp_path)
    finally:
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=5)
        assert done, "the statekeeper did not stop within 5 s of its cancellation"
        await client.close()
        await watcher.close()
        await executor.close()
        ctx.term()
        forwarder.stop()
