"""The strategy service: ticks, state and broker events in; the core's commands out to the executor.

One asyncio loop. Each message from the bus is folded into the view (services.strategy.view); then one decision
(core.strategy.decide) on the view, and its commands go to the executor through the dispatcher (one in flight per
intent key). With nothing arriving, a decision still runs every ``IDLE_DECISION`` seconds (a command that timed
out is retried, a settling one released).

Resynchronisation (the Clone pattern): the state is fetched from the statekeeper (``StateSnapshotRequest`` over
DEALER) at start, after a hole in its ``StateUpdate`` numbering, and when the statekeeper restarts. Updates that
arrive while the snapshot is on its way are kept and applied after it, those it already contains skipped. Until
the first snapshot arrives nothing is decided. The broker's connection is learnt from ``broker.event`` and, at
start and whenever the executor (re)appears, from its ``BrokerSnapshot``; an executor whose heartbeats stopped
counts as disconnected.
"""

from __future__ import annotations

import asyncio
import logging
import time

import zmq.asyncio

from bus.command_client import CommandClient, CommandError
from bus.publisher import Publisher
from bus.subscriber import Subscriber
from core.strategy import Command, Decision, StrategyConfig, decide, live_orders
from gridbot.config import Config
from proto import topics
from proto.messages import (
    Alert,
    BrokerSnapshot,
    BrokerSnapshotRequest,
    CommandRejected,
    Message,
    PlaceOrder,
    StateSnapshot,
    StateSnapshotRequest,
    StateUpdate,
)
from services.strategy.dispatch import Dispatcher
from services.strategy.settings import strategy_config
from services.strategy.view import View, observe

log = logging.getLogger("strategy")

SENDER = "strategy"
EXECUTOR = "executor"
STATEKEEPER = "statekeeper"
# Seconds between decisions when no message arrives.
IDLE_DECISION = 0.25
# Seconds a stopping service waits for the replies to commands already sent.
DRAIN_ON_STOP = 2.0
# Seconds between BrokerSnapshotRequests while the broker is not known to be connected.
BROKER_ASK_INTERVAL = 5.0


class StrategyService:
    def __init__(self, cfg: Config, ctx: zmq.asyncio.Context | None = None, params: StrategyConfig | None = None):
        self.cfg = cfg
        self.params = params if params is not None else strategy_config(cfg)
        self.ctx = ctx if ctx is not None else zmq.asyncio.Context.instance()
        self.view = View(symbol=self.params.symbol)
        self.last_decision: Decision | None = None
        self.decisions = 0
        self._resync_wanted = True
        self._resync_task: asyncio.Task[None] | None = None
        self._pending_updates: list[StateUpdate] = []
        self._broker_task: asyncio.Task[None] | None = None
        self._broker_asked_at = 0.0
        self._executor_was_alive = False
        self._last_blocked: tuple[str | None, str | None] = ("", "")
        bus = cfg.bus
        self.publisher = Publisher(self.ctx, bus.xsub, SENDER, bus.heartbeat_interval)
        self.subscriber = Subscriber(
            self.ctx,
            bus.xpub,
            [
                topics.tick(self.params.symbol),
                topics.FEED_STATUS,
                topics.STATE_UPDATE,
                topics.ORDER_EVENT,
                topics.BROKER_EVENT,
                topics.CONTROL,
            ],
            on_gap=self._on_gap,
            heartbeat_interval=bus.heartbeat_interval,
            heartbeat_misses=bus.heartbeat_misses,
            on_restart=self._on_restart,
        )
        self.executor = CommandClient(self.ctx, bus.executor, SENDER, timeout=bus.command_timeout,
                                      retries=bus.command_retries)
        self.statekeeper = CommandClient(self.ctx, bus.statekeeper, SENDER, timeout=bus.command_timeout,
                                         retries=bus.command_retries)
        self.dispatcher = Dispatcher(self._send, settle=bus.command_timeout, on_reply=self._on_reply)

    # ----------------------------------------------------------------------------------------- the loop

    async def run(self) -> None:
        """Run until cancelled; on cancel, wait briefly for replies to commands in flight, then close."""
        await self.publisher.start()
        log.info(
            "strategy for %s: %d levels, %d queued, %d live SELLs at most; state from %s, commands to %s",
            self.params.symbol, len(self.params.lot_map), self.params.queued_levels, self.params.max_live_sells,
            self.cfg.bus.statekeeper, self.cfg.bus.executor,
        )
        try:
            while True:
                envelope = await self.subscriber.recv(timeout=IDLE_DECISION)
                if envelope is not None:
                    self._fold(envelope.msg)
                self._keep_in_touch()
                self._decide()
        finally:
            await self._stop()

    def _fold(self, msg: Message) -> None:
        if isinstance(msg, StateUpdate) and self._resync_task is not None:
            self._pending_updates.append(msg)
            return
        observed = observe(self.view, msg, time.time_ns())
        self.view = observed.view
        if observed.resync and not self._resync_wanted:
            log.info("state update %s does not follow %d: fetching a snapshot",
                     getattr(msg, "seq", "?"), self.view.state_seq)
            self._resync_wanted = True

    def _keep_in_touch(self) -> None:
        """Start the snapshot and broker requests that are due (each runs as its own task)."""
        if self._resync_wanted and self._resync_task is None:
            self._resync_wanted = False
            self._resync_task = asyncio.create_task(self._resync(), name="state snapshot")
        alive = self.subscriber.peer_alive(EXECUTOR)
        came_back = alive and not self._executor_was_alive
        self._executor_was_alive = alive
        now = time.monotonic()
        # Not known to be connected: ask now and then, in case the event that said so was lost on the way.
        doubtful = self.view.broker_connected is not True and now - self._broker_asked_at > BROKER_ASK_INTERVAL
        if (came_back or doubtful) and alive and self._broker_task is None:
            self._broker_asked_at = now
            self._broker_task = asyncio.create_task(self._ask_broker(), name="broker snapshot")

    def _decide(self) -> Decision | None:
        state = self.view.state
        if state is None:
            return None
        market = self.view.market(time.time_ns(), executor_alive=self.subscriber.peer_alive(EXECUTOR))
        decision = decide(state, market, self.params)
        self.decisions += 1
        self.last_decision = decision
        blocked = (decision.blocked, decision.level0_blocked)
        if blocked != self._last_blocked:
            self._last_blocked = blocked
            # The heartbeat carries it, so `gridbot status` shows why the grid is not trading.
            self.publisher.status = f"holding: {decision.blocked}" if decision.blocked else "ok"
            if decision.blocked:
                log.info("holding: %s", decision.blocked)
            elif decision.level0_blocked and not state.lots:
                log.info("no Level 0 yet: %s", decision.level0_blocked)
        if decision.commands:
            live = live_orders(state)
            for cmd in self.dispatcher.submit(decision.commands, self.view.state_seq, live):
                log.info("%s", _describe(cmd))
        return decision

    # ----------------------------------------------------------------------------------------- requests

    async def _send(self, cmd: Command) -> Message:
        return await self.executor.request(cmd)

    async def _resync(self) -> None:
        try:
            while True:
                try:
                    reply = await self.statekeeper.request(StateSnapshotRequest(ts_ns=time.time_ns()))
                except CommandError as e:
                    log.warning("no state snapshot from the statekeeper yet (%s); asking again", e)
                    continue
                if isinstance(reply, StateSnapshot):
                    break
                log.warning("the statekeeper answered a snapshot request with %s; asking again", type(reply).__name__)
                await asyncio.sleep(self.cfg.bus.command_timeout)
            self.view = observe(self.view, reply, time.time_ns()).view
            pending, self._pending_updates = self._pending_updates, []
            for update in sorted(pending, key=lambda u: u.seq):
                observed = observe(self.view, update, time.time_ns())
                self.view = observed.view
                if observed.resync:
                    self._resync_wanted = True
                    break
            log.info("state snapshot %d: cycle %d, %d lots, %d working orders, halted %s, in sync %s",
                     self.view.state_seq, reply.state.cycle, len(reply.state.lots), len(reply.state.orders),
                     reply.state.halted, reply.state.in_sync)
        finally:
            self._resync_task = None

    async def _ask_broker(self) -> None:
        try:
            reply = await self.executor.request(BrokerSnapshotRequest(ts_ns=time.time_ns()))
            if isinstance(reply, BrokerSnapshot):
                self.view = observe(self.view, reply, time.time_ns()).view
                log.info("executor says the broker is %s", "connected" if reply.connected else "disconnected")
        except CommandError as e:
            log.info("executor not answering yet: %s", e)
        finally:
            self._broker_task = None

    def _on_gap(self, sender: str, expected: int, got: int) -> None:
        if sender == STATEKEEPER:
            self._resync_wanted = True
        elif sender == EXECUTOR:
            # A broker event may be among the lost ones: ask the executor where the connection stands.
            self._executor_was_alive = False

    def _on_restart(self, sender: str, old: int, new: int) -> None:
        if sender == STATEKEEPER:
            log.info("the statekeeper restarted: fetching its state again")
            self._resync_wanted = True
        elif sender == EXECUTOR:
            # Its connection state is unknown until it says; ask it.
            self._executor_was_alive = False

    def _on_reply(self, cmd: Command, reply: Message | None) -> None:
        if isinstance(reply, CommandRejected) and isinstance(cmd, PlaceOrder):
            self.publisher.publish(
                topics.ALERT,
                Alert(ts_ns=time.time_ns(), severity="warning", source=SENDER, code="order_rejected",
                      text=f"{cmd.key}: {reply.reason}" + (f" (IB {reply.code})" if reply.code else "")),
            )

    # ----------------------------------------------------------------------------------------- stop

    async def _stop(self) -> None:
        await self.dispatcher.drain(DRAIN_ON_STOP)
        await self.dispatcher.close()
        for task in (self._resync_task, self._broker_task):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._resync_task, self._broker_task) if t is not None),
                             return_exceptions=True)
        await self.executor.close()
        await self.statekeeper.close()
        await self.subscriber.close()
        await self.publisher.close()


def _describe(cmd: Command) -> str:
    if isinstance(cmd, PlaceOrder):
        cond = f" if last <= {cmd.condition.price}" if cmd.condition is not None else ""
        return f"place {cmd.key}: {cmd.side} {cmd.quantity} LMT {cmd.limit} {cmd.tif}{cond}"
    return f"cancel {cmd.key}: {cmd.reason}"

