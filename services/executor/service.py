"""The executor service: the single owner of the IB connection (DESIGN sections 3 and 7; docs/executor.md).

The I/O shell around rules.py. One asyncio loop holds the IB client (ib_insync or ib_async, chosen in ib_api.py),
the command server (ROUTER on ``bus.executor``), the publisher (``order.event``, ``broker.event``, ``alert``) and a
subscriber to ``state.update`` / ``control`` (the halt flag). Tasks:

- the connection loop: connect, ``reqMarketDataType(3)``, qualify the symbol, sync (open orders of every client,
  completed orders, today's executions, positions), rebuild the intent table, publish missed fills, then accept
  commands; on a drop, reconnect with backoff under the same clientId;
- the submission worker: the one queue every placeOrder / cancelOrder goes through, at most
  ``broker.max_messages_per_second``, paused while IB reports connectivity lost (1100) or pacing (100);
- the monitor: cancels orders not acknowledged within ``broker.ack_timeout`` and immediate orders not final within
  ``broker.immediate_order_timeout``, with an alert;
- the control listener: the halt flag from the statekeeper.

Only the client library's blocking-free ``...Async`` methods and events are used: never ``ib.sleep``/``ib.run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import msgspec
import zmq.asyncio

import bus
from gridbot.alerts import AlertSink
from gridbot.config import Config
from proto import topics
from proto.messages import (
    BrokerConnected,
    BrokerConnectivity,
    BrokerDisconnected,
    BrokerSnapshot,
    BrokerSnapshotRequest,
    CancelAll,
    CancelOrder,
    ClosePosition,
    CommandAccepted,
    CommandDuplicate,
    CommandRejected,
    CommissionReported,
    ExecutionInfo,
    Message,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderStatusChanged,
    PlaceOrder,
    PositionInfo,
    Severity,
    StateSnapshot,
    StateSnapshotRequest,
    StateUpdate,
    TradingHalted,
    TradingResumed,
)
from services.executor import convert
from services.executor.ib_api import IbLib
from services.executor.rules import (
    QUEUED,
    Backoff,
    Duplicate,
    ErrorKind,
    ExecLedger,
    Gate,
    IntentTable,
    Limits,
    OrderRecord,
    Overdue,
    OverdueKind,
    Refuse,
    SendWindow,
    Submit,
    classify_error,
    intent_of,
    missed,
)

log = logging.getLogger("executor")

SERVICE = "executor"
# IB's market data type 3 = delayed: the user's requirement, so that an unsubscribed account gets no error 354.
DELAYED_MARKET_DATA = 3
# IB sometimes sends an order's final status a moment before the error that explains it (201 after Cancelled):
# a final status of an order never acknowledged waits this long for its error code before it is published.
REJECT_GRACE_S = 0.1
# How often the monitor looks for overdue orders and a connection that died without an event.
MONITOR_INTERVAL_S = 0.1
# After IB's pacing error (100), submissions pause this long, doubling while the errors go on (to the max).
PACING_PAUSE_S = 1.0
PACING_PAUSE_MAX_S = 10.0
# A PlaceOrder reply waits at most ack_timeout plus this for IB's acknowledgement before it answers "pending".
REPLY_MARGIN_S = 2.0
# Before the first connect, wait at most this many heartbeat intervals (and at least BUS_JOIN_MIN_S) for our own
# heartbeat to come back through the bus (see Executor._await_bus).
BUS_JOIN_BEATS = 3
BUS_JOIN_MIN_S = 1.0
# Test seam (documented in docs/executor.md): GRIDBOT_EXECUTOR_FAULT=kill-after-place makes the process SIGKILL
# itself right after handing its first placeOrder to the socket, to prove a restart does not place it again.
FAULT_ENV = "GRIDBOT_EXECUTOR_FAULT"
FAULT_KILL_AFTER_PLACE = "kill-after-place"


# Error kinds that, about one of our orders, end it (the order is rejected with that code).
ORDER_ENDING = frozenset({ErrorKind.ORDER, ErrorKind.PACING})


class ConnectFailed(Exception):
    """Connecting or syncing failed in a way the connection loop retries (the text says why)."""


@dataclass(eq=False)
class _Submission:
    kind: Literal["place", "cancel"]
    record: OrderRecord
    cmd: PlaceOrder | None = None
    dropped: bool = False


class Executor:
    """The executor's shell; ``await run()`` until cancelled."""

    def __init__(
        self,
        cfg: Config,
        lib: IbLib,
        ctx: zmq.asyncio.Context,
        *,
        fault: str = "",
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.cfg = cfg
        self.lib = lib
        self.symbol = cfg.general.symbol
        self.client_id = cfg.broker.client_id
        self.fault = fault
        self._now = monotonic_ns
        self.ib: Any = lib.new_ib()
        self.table = IntentTable(Limits(self.symbol, cfg.broker.max_live_buys, cfg.strategy.max_live_sells))
        self.ledger = ExecLedger()
        self.window = SendWindow(cfg.broker.max_messages_per_second)
        self.backoff = Backoff(cfg.broker.reconnect_initial, cfg.broker.reconnect_max)
        self.publisher = bus.Publisher(ctx, cfg.bus.xsub, SERVICE, cfg.bus.heartbeat_interval)
        self.alerts = AlertSink.from_config(cfg, SERVICE, self.publisher)
        self.subscriber = bus.Subscriber(
            ctx,
            cfg.bus.xpub,
            [topics.STATE_UPDATE, topics.CONTROL],
            on_gap=self._on_state_gap,
            heartbeat_interval=cfg.bus.heartbeat_interval,
            heartbeat_misses=cfg.bus.heartbeat_misses,
        )
        self.server = bus.CommandServer(ctx, cfg.bus.executor, self.handle, name=SERVICE)
        self.statekeeper = bus.CommandClient(
            ctx,
            cfg.bus.statekeeper,
            SERVICE,
            timeout=cfg.bus.command_timeout,
            retries=cfg.bus.command_retries,
        )
        # Connection state, read by the gate.
        self.connected = False
        self.synced = False
        self.connectivity_lost = False
        self.halted = False
        self.halt_reason = ""
        self.contract: Any = None
        self.con_id = 0
        self.server_version = 0
        self.accounts: list[str] = []
        self.positions: list[PositionInfo] = []
        self.executions: dict[str, ExecutionInfo] = {}
        self._queue: asyncio.Queue[_Submission] = asyncio.Queue()
        self._in_hand: _Submission | None = None
        self._send_allowed = asyncio.Event()
        self._lost = asyncio.Event()
        self._sync_lock = asyncio.Lock()
        self._pace_until = 0.0
        self._pace_pause = PACING_PAUSE_S
        self._client_id_alerted = False
        # Why we are closing the connection ourselves, for the BrokerDisconnected the library's event triggers.
        self._closing_reason = ""
        # PlaceOrder commands being carried out, by key: repeats wait for the first one's reply.
        self._inflight: dict[str, asyncio.Future[Message]] = {}
        # The reply a PlaceOrder is waiting for (acknowledged, rejected, ...), by key.
        self._outcomes: dict[str, asyncio.Future[Message]] = {}
        # Commands waiting for an order to become final (CancelOrder, CancelAll), by key.
        self._finals: dict[int, list[asyncio.Future[None]]] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._wire_events()

    # ============================================================================================ life cycle

    async def run(self) -> None:
        """Serve until cancelled (SIGTERM), then disconnect and close the sockets."""
        await self.publisher.start()
        await self.server.start()
        self._set_status()
        log.info(
            "executor: commands on %s, IB %s:%d clientId %d via %s",
            self.server.endpoint,
            self.cfg.broker.host,
            self.cfg.broker.port,
            self.client_id,
            self.lib.name,
        )
        self._tasks = [
            asyncio.create_task(self._connection_loop(), name="executor-connection"),
            asyncio.create_task(self._submission_worker(), name="executor-submissions"),
            asyncio.create_task(self._monitor(), name="executor-monitor"),
            asyncio.create_task(self._control_listener(), name="executor-control"),
            asyncio.create_task(self._ask_halt_flag(), name="executor-halt-flag"),
        ]
        try:
            # A task that dies of a bug is fatal (supervisord restarts the program); the others run for ever.
            done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            await self.close()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.ib.isConnected():
            self._close_connection("the executor is stopping")
        await self.server.close()
        await self.statekeeper.close()
        await self.subscriber.close()
        await self.publisher.close()

    def _wire_events(self) -> None:
        ib = self.ib
        ib.orderStatusEvent += self._on_trade
        ib.openOrderEvent += self._on_trade
        ib.execDetailsEvent += self._on_execution
        ib.commissionReportEvent += self._on_commission
        ib.errorEvent += self._on_error
        ib.disconnectedEvent += self._on_disconnected
        ib.positionEvent += self._on_position
        ib.client.apiStart += self._on_api_start

    def _on_api_start(self) -> None:
        # The user's requirement, the first request on every connection, before the library's own sync
        # requests: delayed market data where live data is not subscribed (no error 354).
        self.ib.reqMarketDataType(DELAYED_MARKET_DATA)

    # ============================================================================================ connection

    async def _await_bus(self) -> None:
        """Wait (bounded) until this executor's own heartbeat comes back through the bus.

        A new publisher gets the bus's subscriptions a moment after it connects, and what it publishes before
        that is dropped: the first BrokerConnected, or an order adopted in the first sync, would be lost. The
        forwarder hands a new publisher every subscription it knows at once, so our heartbeat coming back means
        the subscribers that were up before us will get what follows. A bus that is not up only delays us.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(BUS_JOIN_BEATS * self.cfg.bus.heartbeat_interval, BUS_JOIN_MIN_S)
        while not self.subscriber.peer_alive(SERVICE):
            if loop.time() > deadline:
                log.warning("no heartbeat of ours came back through the bus (%s); carrying on", self.cfg.bus.xpub)
                return
            await asyncio.sleep(0.02)

    async def _connection_loop(self) -> None:
        await self._await_bus()
        while True:
            self._lost.clear()
            try:
                await self._connect()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                reason = str(e) or type(e).__name__
                self._teardown()
                delay = self.backoff.next()
                log.warning(
                    "IB %s:%d clientId %d: %s; retrying in %.1f s",
                    self.cfg.broker.host,
                    self.cfg.broker.port,
                    self.client_id,
                    reason,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            self.backoff.reset()
            await self._watch_connection()
            delay = self.backoff.next()
            log.info("reconnecting in %.1f s", delay)
            await asyncio.sleep(delay)

    async def _watch_connection(self) -> None:
        """Return when the connection is lost; probe it every ``broker.probe_interval`` meanwhile.

        A socket can die without a close (a NAT, a frozen TWS): then no event ever comes, and the executor would
        wait for ever. A ``reqCurrentTime`` not answered within ``broker.connect_timeout`` ends the connection,
        and the loop makes a new one.
        """
        interval = self.cfg.broker.probe_interval
        while True:
            try:
                await asyncio.wait_for(self._lost.wait(), interval if interval > 0 else None)
                return
            except TimeoutError:
                pass
            try:
                await asyncio.wait_for(self.ib.reqCurrentTimeAsync(), self.cfg.broker.connect_timeout)
            except (TimeoutError, ConnectionError) as e:
                if self._lost.is_set():
                    return
                log.warning(
                    "IB did not answer a liveness probe within %.1f s (%s): the connection is dead; reconnecting",
                    self.cfg.broker.connect_timeout,
                    type(e).__name__,
                )
                self._close_connection(
                    f"no answer to a liveness probe within {self.cfg.broker.connect_timeout:g} s (dead connection)"
                )
                return

    async def _connect(self) -> None:
        broker = self.cfg.broker
        timeout = broker.connect_timeout
        try:
            await self.ib.connectAsync(broker.host, broker.port, clientId=self.client_id, timeout=timeout)
        except (TimeoutError, OSError, ConnectionError) as e:
            raise ConnectFailed(f"connect failed: {type(e).__name__}: {e}") from None
        self.connected = True
        self._client_id_alerted = False
        self.server_version = int(self.ib.client.serverVersion())
        self.accounts = list(self.ib.managedAccounts())
        contract = self.lib.stock(self.symbol)
        qualified = await asyncio.wait_for(self.ib.qualifyContractsAsync(contract), timeout)
        if not qualified or qualified[0] is None or not getattr(contract, "conId", 0):
            text = (
                f"IB did not qualify {self.symbol} (SMART/USD): no conId, so no PriceCondition can be built "
                "(error 398); check general.symbol"
            )
            self._alert("critical", "contract_not_qualified", text)
            raise ConnectFailed(text)
        self.contract = contract
        self.con_id = int(contract.conId)
        await self._sync("connect")
        log.info(
            "connected to IB %s:%d clientId %d (server version %d, accounts %s, %s conId %d)",
            broker.host,
            broker.port,
            self.client_id,
            self.server_version,
            ",".join(self.accounts),
            self.symbol,
            self.con_id,
        )
        self._publish(
            topics.BROKER_EVENT,
            BrokerConnected(
                ts_ns=time.time_ns(),
                host=broker.host,
                port=broker.port,
                client_id=self.client_id,
                server_version=self.server_version,
                accounts=self.accounts,
            ),
        )

    def _teardown(self) -> None:
        if self.ib.isConnected():
            self.ib.disconnect()
        self._mark_disconnected("connect failed", announce=False)

    def _on_disconnected(self) -> None:
        reason = self._closing_reason or "socket closed by TWS / IB Gateway (drop, restart or clientId in use)"
        self._closing_reason = ""
        self._mark_disconnected(reason, announce=True)
        self._lost.set()

    def _close_connection(self, reason: str) -> None:
        """Drop the IB connection ourselves; the connection loop then makes a new one."""
        self._closing_reason = reason
        if self.ib.isConnected():
            self.ib.disconnect()
        self._on_disconnected()

    def _mark_disconnected(self, reason: str, *, announce: bool) -> None:
        was_connected = self.connected
        self.connected = False
        self.synced = False
        self.connectivity_lost = False
        self._flush_queue("broker disconnected before the order was sent: nothing reached IB; retry later")
        self._update_send_allowed()
        self._set_status()
        if was_connected and announce:
            log.warning("IB connection lost: %s", reason)
            self._publish(topics.BROKER_EVENT, BrokerDisconnected(ts_ns=time.time_ns(), reason=reason))

    async def _sync(self, why: str) -> None:
        """Rebuild the table from TWS (broker truth), publish what changed and every fill missed meanwhile."""
        async with self._sync_lock:
            self.synced = False
            self._update_send_allowed()
            timeout = self.cfg.broker.connect_timeout
            ib = self.ib
            open_trades = await asyncio.wait_for(ib.reqAllOpenOrdersAsync(), timeout)
            completed = await asyncio.wait_for(ib.reqCompletedOrdersAsync(False), timeout)
            fills = await asyncio.wait_for(ib.reqExecutionsAsync(), timeout)
            positions = await asyncio.wait_for(ib.reqPositionsAsync(), timeout)
            if not ib.isConnected():
                raise ConnectFailed(f"the connection dropped during the {why} sync")
            infos = [
                convert.order_info(t) for t in [*completed, *open_trades] if t.contract.symbol == self.symbol
            ]
            waiting = list(self._outcomes)
            for event in self.table.rebuild(infos, self._now(), time.time_ns()):
                self._emit_order_event(event)
            for record in self.table.records():
                if record.final:
                    self._release_finals(record)
            self.positions = [convert.position_info(p) for p in positions if p.contract.symbol == self.symbol]
            quantities = {
                int(t.order.permId or 0): convert.shares(t.order.totalQuantity) for t in ib.trades()
            }
            # The library keeps the first Fill of an execId (with its commission report) and hands a bare copy
            # to a later request: take the kept one.
            kept = {f.execution.execId: f for f in ib.fills()}
            executions = [
                convert.execution_info(kept.get(f.execution.execId, f))
                for f in fills
                if f.contract.symbol == self.symbol
            ]
            recovered = missed(executions, self.ledger)
            for execution in recovered:
                self._publish_fill(execution, quantities.get(execution.perm_id, 0), recovered=True)
            for key in waiting:
                if self.table.get(key) is None:
                    self._settle(
                        key,
                        CommandRejected(
                            ts_ns=time.time_ns(),
                            key=key,
                            reason="lost in a disconnect: IB does not know the order after the resync; retry",
                        ),
                    )
            self.synced = True
            self._update_send_allowed()
            self._set_status()
            log.info(
                "synced (%s): %d orders (%d live grid), %d executions (%d recovered), position %s",
                why,
                len(infos),
                len(self.table.live_grid()),
                len(executions),
                len(recovered),
                ", ".join(f"{p.quantity} {p.symbol}" for p in self.positions) or "none",
            )

    # ============================================================================================ commands

    async def handle(self, msg: Message) -> Message:
        """The command server's handler: one reply per command."""
        log.info("command %s %s", type(msg).__name__, getattr(msg, "key", "") or "")
        match msg:
            case PlaceOrder():
                return await self._place(msg)
            case CancelOrder():
                return await self._cancel(msg)
            case CancelAll():
                return await self._cancel_all(msg)
            case BrokerSnapshotRequest():
                return await self._snapshot(msg)
            case ClosePosition():
                return await self._close_position(msg)
        return CommandRejected(
            ts_ns=time.time_ns(),
            reason=f"the executor does not take {type(msg).__name__}; it takes PlaceOrder, CancelOrder, "
            "CancelAll, ClosePosition and BrokerSnapshotRequest",
        )

    def gate(self) -> Gate:
        return Gate(
            connected=self.connected,
            synced=self.synced,
            halted=self.halted,
            halt_reason=self.halt_reason,
            connectivity_lost=self.connectivity_lost,
        )

    async def _place(self, cmd: PlaceOrder) -> Message:
        first = self._inflight.get(cmd.key)
        if first is not None:
            # The same key is being placed right now: nothing more goes to IB; answer with its outcome.
            return self._as_repeat(cmd.key, await asyncio.shield(first))
        decision = self.table.decide_place(cmd, self.gate(), self._now())
        if isinstance(decision, Refuse):
            log.info("PlaceOrder %r refused: %s", cmd.key, decision.reason)
            return CommandRejected(ts_ns=time.time_ns(), reason=decision.reason, key=cmd.key)
        if isinstance(decision, Duplicate):
            record = decision.record
            log.info(
                "PlaceOrder %r is a duplicate of orderId %d (%s)", cmd.key, record.order_id, record.status
            )
            return _duplicate(record)
        assert isinstance(decision, Submit)
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._inflight[cmd.key] = future
        try:
            reply = await self._submit(decision.record, cmd)
        except BaseException:
            future.cancel()
            raise
        finally:
            if self._inflight.get(cmd.key) is future:
                del self._inflight[cmd.key]
        future.set_result(reply)
        return reply

    def _as_repeat(self, key: str, first: Message) -> Message:
        record = self.table.get(key)
        if isinstance(first, CommandAccepted) and record is not None:
            return _duplicate(record)
        return first

    async def _submit(self, record: OrderRecord, cmd: PlaceOrder) -> Message:
        outcome: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._outcomes[cmd.key] = outcome
        self._queue.put_nowait(_Submission("place", record, cmd))
        try:
            return await asyncio.wait_for(
                asyncio.shield(outcome), self.cfg.broker.ack_timeout + REPLY_MARGIN_S
            )
        except TimeoutError:
            where = "still queued" if record.status == QUEUED else f"sent as orderId {record.order_id}"
            return CommandAccepted(
                ts_ns=time.time_ns(),
                key=cmd.key,
                order_id=record.order_id,
                perm_id=record.perm_id,
                detail=f"{where}, not yet acknowledged by IB; its events follow on order.event",
            )
        finally:
            if self._outcomes.get(cmd.key) is outcome:
                del self._outcomes[cmd.key]

    def _settle(self, key: str, reply: Message) -> None:
        outcome = self._outcomes.get(key)
        if outcome is not None and not outcome.done():
            outcome.set_result(reply)

    async def _cancel(self, cmd: CancelOrder) -> Message:
        record = self.table.get(cmd.key)
        if record is None or not record.live:
            status = record.status if record is not None else "unknown to the executor"
            return CommandRejected(
                ts_ns=time.time_ns(), key=cmd.key, reason=f"no live order for the key ({status})"
            )
        refusal = self._cancel_refusal(record)
        if refusal is not None:
            return CommandRejected(ts_ns=time.time_ns(), key=cmd.key, reason=refusal)
        await self._cancel_and_wait([record], cmd.reason or "CancelOrder")
        return CommandAccepted(
            ts_ns=time.time_ns(),
            key=cmd.key,
            order_id=record.order_id,
            perm_id=record.perm_id,
            detail=_cancel_detail(record),
        )

    async def _cancel_all(self, cmd: CancelAll) -> Message:
        if not self.connected or not self.synced:
            return CommandRejected(
                ts_ns=time.time_ns(),
                reason="broker disconnected or not yet synced: cancels cannot reach IB now; retry after BrokerConnected",
            )
        records = self.table.live_grid() + (self.table.live_foreign() if cmd.include_foreign else [])
        refused = {r.key or f"orderId {r.order_id}": self._cancel_refusal(r) for r in records}
        refused = {k: v for k, v in refused.items() if v is not None}
        eligible = [r for r in records if self._cancel_refusal(r) is None]
        await self._cancel_and_wait(eligible, cmd.reason or "CancelAll")
        done = sum(1 for r in eligible if not r.live)
        detail = f"{len(eligible)} cancelled ({done} confirmed final)"
        if refused:
            detail += "; not cancelled: " + "; ".join(f"{k}: {v}" for k, v in refused.items())
        return CommandAccepted(ts_ns=time.time_ns(), detail=detail)

    def _cancel_refusal(self, record: OrderRecord) -> str | None:
        if record.status == QUEUED:
            return None
        if not self.connected or not self.synced:
            return "broker disconnected or not yet synced: a cancel cannot reach IB now; retry"
        if record.client_id != self.client_id:
            return (
                f"orderId {record.order_id} belongs to clientId {record.client_id}; only that client (or TWS) "
                "can cancel it"
            )
        return None

    async def _cancel_and_wait(self, records: list[OrderRecord], reason: str) -> None:
        waits: list[asyncio.Future[None]] = []
        for record in records:
            if record.status == QUEUED:
                # Still in our queue: withdraw it; nothing was sent to IB.
                self.table.forget_unsent(record)
                record.status = "Cancelled"
                record.cancel_reason = reason
                self._settle(
                    record.key,
                    CommandRejected(
                        ts_ns=time.time_ns(), key=record.key, reason=f"withdrawn before it was sent: {reason}"
                    ),
                )
                continue
            waits.append(self._watch_final(record))
            if not record.cancel_reason:
                # Not asked before (by a command or the monitor): one cancel per order.
                record.cancel_reason = reason
                self._queue.put_nowait(_Submission("cancel", record))
        if waits:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), self.cfg.broker.ack_timeout)

    def _watch_final(self, record: OrderRecord) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if record.final:
            future.set_result(None)
        else:
            self._finals.setdefault(id(record), []).append(future)
        return future

    def _release_finals(self, record: OrderRecord) -> None:
        for future in self._finals.pop(id(record), []):
            if not future.done():
                future.set_result(None)

    async def _close_position(self, cmd: ClosePosition) -> Message:
        """The operator's reset --flatten: one LMT order for the position, even while halted; reply when final."""
        if self.connected and self.synced and not self.connectivity_lost:
            try:
                await self._sync("ClosePosition")  # the position as the broker has it now
            except (TimeoutError, ConnectFailed, ConnectionError) as e:
                return CommandRejected(ts_ns=time.time_ns(), reason=f"could not read the position from IB: {e}")
        position = sum(p.quantity for p in self.positions if p.symbol == self.symbol)
        decision = self.table.decide_close(cmd, self.gate(), position, self._now())
        if not isinstance(decision, Submit):
            reason = decision.reason if isinstance(decision, Refuse) else "a closing order is already working"
            log.warning("ClosePosition %s %d refused: %s", cmd.side, cmd.quantity, reason)
            return CommandRejected(ts_ns=time.time_ns(), reason=reason)
        record = decision.record
        order = PlaceOrder(
            ts_ns=cmd.ts_ns,
            key=record.key,
            symbol=self.symbol,
            side=cmd.side,
            quantity=cmd.quantity,
            limit=cmd.limit,
            tif="DAY",
            outside_rth=True,
            immediate=True,
        )
        log.warning("ClosePosition: %s %d %s LMT %s (%s)", cmd.side, cmd.quantity, self.symbol, cmd.limit, cmd.reason)
        final = self._watch_final(record)
        self._queue.put_nowait(_Submission("place", record, order))
        # The monitor cancels it at broker.immediate_order_timeout; its cancel is confirmed within ack_timeout.
        limit_s = self.cfg.broker.immediate_order_timeout + self.cfg.broker.ack_timeout + REPLY_MARGIN_S
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(final, limit_s)
        now = time.time_ns()
        if record.status == "Filled" or (record.final and record.filled >= record.quantity):
            detail = f"{cmd.side} {record.filled} {self.symbol} filled at {record.avg_fill_price} (orderId {record.order_id})"
            return CommandAccepted(ts_ns=now, order_id=record.order_id, perm_id=record.perm_id, detail=detail)
        why = record.error_text or record.cancel_reason or f"status {record.status or 'not sent'}"
        return CommandRejected(
            ts_ns=now,
            reason=f"the closing order did not fill completely ({why}): {record.filled} of {record.quantity} filled",
            code=record.error_code,
        )

    async def _snapshot(self, msg: BrokerSnapshotRequest) -> Message:
        if msg.resync and self.connected:
            try:
                await self._sync("snapshot request")
            except (TimeoutError, ConnectFailed, ConnectionError) as e:
                log.warning("resync for a snapshot failed: %s", e)
        records = self.table.records()
        return BrokerSnapshot(
            ts_ns=time.time_ns(),
            connected=self.connected and self.synced,
            orders=[r.info() for r in records if r.live and r.status != QUEUED],
            completed=[r.info() for r in records if r.final],
            executions=sorted(self.executions.values(), key=lambda e: (e.exec_ts_ns, e.exec_id)),
            positions=list(self.positions),
            con_id=self.con_id,
        )

    # ============================================================================================ submissions

    async def _submission_worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            item = await self._queue.get()
            self._in_hand = item
            try:
                await self._send_allowed.wait()
                delay = self.window.delay(loop.time())
                while delay > 0:
                    await asyncio.sleep(delay)
                    delay = self.window.delay(loop.time())
                if item.dropped:
                    continue
                if not self._send_allowed.is_set():
                    # Paused while this one waited for its slot: back to the head of the line.
                    self._requeue_front(item)
                    continue
                try:
                    self._send(item)
                except Exception as e:  # one order the library cannot send must not stop the queue
                    log.exception("sending %s for %r failed", item.kind, item.record.key)
                    self._drop(item, f"sending to IB failed: {type(e).__name__}: {e}")
                self.window.record(loop.time())
            finally:
                self._in_hand = None

    def _requeue_front(self, item: _Submission) -> None:
        rest = []
        while not self._queue.empty():
            rest.append(self._queue.get_nowait())
        self._queue.put_nowait(item)
        for other in rest:
            self._queue.put_nowait(other)

    def _send(self, item: _Submission) -> None:
        record = item.record
        if item.kind == "place":
            assert item.cmd is not None
            if not self.table.is_current(record) or record.status != QUEUED:
                self._settle(
                    record.key,
                    CommandRejected(
                        ts_ns=time.time_ns(), key=record.key, reason="withdrawn before it was sent"
                    ),
                )
                return
            order = self.lib.order_for(item.cmd, self.con_id)
            trade = self.ib.placeOrder(self.contract, order)
            self.table.mark_sent(record, int(trade.order.orderId), self.client_id, self._now())
            log.info(
                "placeOrder orderId %d %r: %s %d @ %s %s%s",
                record.order_id,
                record.key,
                item.cmd.side,
                item.cmd.quantity,
                item.cmd.limit,
                item.cmd.tif,
                f" if last <= {item.cmd.condition.price}" if item.cmd.condition else "",
            )
            if self.fault == FAULT_KILL_AFTER_PLACE:
                log.critical("fault injection %s=%s: SIGKILL now", FAULT_ENV, self.fault)
                os.kill(os.getpid(), signal.SIGKILL)
        else:
            if not record.live:
                self._release_finals(record)
                return
            self.ib.cancelOrder(self.lib.order_handle(record.order_id, record.client_id, record.perm_id))
            record.cancel_sent_ns = self._now()
            log.info("cancelOrder orderId %d %r: %s", record.order_id, record.key, record.cancel_reason)

    def _flush_queue(self, reason: str) -> None:
        items = []
        while not self._queue.empty():
            items.append(self._queue.get_nowait())
        if self._in_hand is not None:
            items.append(self._in_hand)
        for item in items:
            self._drop(item, reason)

    def _drop(self, item: _Submission, reason: str) -> None:
        """Give up a submission that did not reach IB, and answer whoever waits for it."""
        item.dropped = True
        if item.kind == "place":
            self.table.forget_unsent(item.record)
            if item.record.status == QUEUED:
                item.record.error_text = reason
            self._settle(item.record.key, CommandRejected(ts_ns=time.time_ns(), key=item.record.key, reason=reason))
        self._release_finals(item.record)

    def _update_send_allowed(self) -> None:
        paused = (
            not self.connected
            or not self.synced
            or self.connectivity_lost
            or asyncio.get_running_loop().time() < self._pace_until
        )
        if paused:
            self._send_allowed.clear()
        else:
            self._send_allowed.set()

    # ============================================================================================ IB's events

    def _on_trade(self, trade: Any) -> None:
        try:
            info = convert.order_info(trade)
        except ValueError as e:
            log.error("an order report from IB could not be read (%s): %r", e, trade)
            return
        if info.symbol and info.symbol != self.symbol:
            return
        code, text = convert.last_error(trade)
        if code and classify_error(code, info.order_id, True) in ORDER_ENDING:
            self.table.note_error(info.client_id, info.order_id, code, text)
        for event in self.table.apply(info, self._now(), time.time_ns()):
            self._emit_order_event(event)
        record = self.table.find(info.key, info.client_id, info.order_id, info.perm_id)
        if record is not None and record.final:
            self._release_finals(record)

    def _emit_order_event(self, event: Message) -> None:
        if isinstance(event, OrderCancelled) and event.key:
            record = self.table.get(event.key)
            if (
                record is not None
                and not record.acknowledged
                and not record.cancel_reason
                and record.error_code == 0
                and record.filled == 0
            ):
                # Wait a moment for the error that may explain it (a reject), then publish what is known.
                asyncio.get_running_loop().call_later(REJECT_GRACE_S, self._publish_final, record)
                return
        self._publish_order_event(event)

    def _publish_final(self, record: OrderRecord) -> None:
        self._publish_order_event(self.table.final_event(record, time.time_ns()))

    def _publish_order_event(self, event: Message) -> None:
        self._publish(topics.ORDER_EVENT, event)
        key = getattr(event, "key", "")
        if not key:
            return
        now = time.time_ns()
        match event:
            case OrderAccepted():
                self._settle(
                    key, CommandAccepted(ts_ns=now, key=key, order_id=event.order_id, perm_id=event.perm_id)
                )
            case OrderRejected():
                log.warning("order %r rejected by IB: %d %s", key, event.code, event.text)
                self._settle(key, CommandRejected(ts_ns=now, key=key, reason=event.text, code=event.code))
            case OrderCancelled():
                log.info("order %r cancelled (filled %d): %s", key, event.filled, event.reason)
                self._settle(
                    key,
                    CommandRejected(
                        ts_ns=now, key=key, reason=f"cancelled before acknowledgement: {event.reason}"
                    ),
                )
            case OrderStatusChanged() if event.status == "Filled":
                self._settle(
                    key,
                    CommandAccepted(
                        ts_ns=now, key=key, order_id=event.order_id, perm_id=event.perm_id, detail="filled"
                    ),
                )

    def _on_execution(self, trade: Any, fill: Any) -> None:
        try:
            execution = convert.execution_info(fill)
        except ValueError as e:
            log.error("an execution from IB could not be read (%s): %r", e, fill)
            return
        if fill.contract.symbol != self.symbol:
            return
        self._publish_fill(execution, convert.shares(trade.order.totalQuantity), recovered=False)

    def _publish_fill(self, execution: ExecutionInfo, order_quantity: int, *, recovered: bool) -> None:
        entered = self.ledger.record(execution)
        if entered is None:
            return
        self.executions[entered.exec_id] = entered
        key = entered.key if intent_of(entered.key) is not None else ""
        log.info(
            "%s %s %d @ %s (cum %d, avg %s) execId %s %r",
            "recovered fill" if recovered else "fill",
            entered.side,
            entered.shares,
            entered.price,
            entered.cum_qty,
            entered.avg_price,
            entered.exec_id,
            entered.key,
        )
        self._publish(
            topics.ORDER_EVENT,
            OrderFilled(
                ts_ns=time.time_ns(),
                key=key,
                exec_id=entered.exec_id,
                order_id=entered.order_id,
                perm_id=entered.perm_id,
                side=entered.side,
                shares=entered.shares,
                price=entered.price,
                cum_qty=entered.cum_qty,
                avg_price=entered.avg_price,
                exec_ts_ns=entered.exec_ts_ns,
                order_quantity=order_quantity,
                commission=entered.commission,
                recovered=recovered,
            ),
        )
        if entered.commission is not None:
            self._publish_commission(entered.exec_id, key, entered.commission, None)
        if key:
            record = self.table.get(key)
            self._settle(
                key,
                CommandAccepted(
                    ts_ns=time.time_ns(),
                    key=key,
                    order_id=entered.order_id,
                    perm_id=entered.perm_id,
                    detail=f"filling: {entered.cum_qty} of {order_quantity or (record.quantity if record else 0)}",
                ),
            )

    def _on_commission(self, trade: Any, fill: Any, report: Any) -> None:
        exec_id = report.execId
        if self.ledger.is_new(exec_id) or fill.contract.symbol != self.symbol:
            # Its execution is not published yet (a sync in progress): the fill will carry the commission.
            return
        commission = convert.decimal(report.commission)
        pnl = convert.decimal(report.realizedPNL)
        known = self.executions.get(exec_id)
        if known is not None:
            self.executions[exec_id] = msgspec.structs.replace(known, commission=commission)
        key = fill.execution.orderRef if intent_of(fill.execution.orderRef or "") is not None else ""
        self._publish_commission(exec_id, key, commission, pnl or None)

    def _publish_commission(self, exec_id: str, key: str, commission: Decimal, pnl: Decimal | None) -> None:
        if not self.ledger.commission_is_new(exec_id):
            return
        self._publish(
            topics.ORDER_EVENT,
            CommissionReported(
                ts_ns=time.time_ns(), exec_id=exec_id, key=key, commission=commission, realized_pnl=pnl
            ),
        )

    def _on_position(self, position: Any) -> None:
        if position.contract.symbol != self.symbol:
            return
        info = convert.position_info(position)
        self.positions = [p for p in self.positions if p.account != info.account] + [info]

    def _on_error(self, req_id: int, code: int, text: str, contract: Any = None) -> None:
        record = self.table.by_order_id(self.client_id, req_id) if req_id > 0 else None
        kind = classify_error(code, req_id, record is not None)
        if kind in ORDER_ENDING:
            self.table.note_error(self.client_id, req_id, code, text)
        now = time.time_ns()
        match kind:
            case ErrorKind.INFO:
                log.debug("IB info %d (reqId %d): %s", code, req_id, text)
            case ErrorKind.CONNECTIVITY_LOST:
                log.warning("IB %d: %s; submissions paused", code, text)
                self.connectivity_lost = True
                self._update_send_allowed()
                self._set_status()
                self._publish(
                    topics.BROKER_EVENT, BrokerConnectivity(ts_ns=now, code=code, text=text, connected=False)
                )
            case ErrorKind.RESTORED_DATA_LOST:
                log.warning("IB %d: %s; full resync", code, text)
                self.connectivity_lost = False
                self._publish(
                    topics.BROKER_EVENT, BrokerConnectivity(ts_ns=now, code=code, text=text, connected=True)
                )
                self._spawn(self._resync_after_data_loss())
            case ErrorKind.RESTORED:
                log.info("IB %d: %s; carrying on", code, text)
                self.connectivity_lost = False
                self._update_send_allowed()
                self._set_status()
                self._publish(
                    topics.BROKER_EVENT, BrokerConnectivity(ts_ns=now, code=code, text=text, connected=True)
                )
            case ErrorKind.CLIENT_ID_IN_USE:
                log.error("IB %d: %s", code, text)
                if not self._client_id_alerted:
                    self._client_id_alerted = True
                    self._alert(
                        "critical",
                        "client_id_in_use",
                        f"IB refused clientId {self.client_id} ({code}: {text}): another program uses it; "
                        "the executor keeps retrying with backoff. Stop the other program or change broker.client_id.",
                    )
            case ErrorKind.PACING:
                pause = self._pace_pause
                self._pace_pause = min(pause * 2, PACING_PAUSE_MAX_S)
                log.warning("IB %d (pacing): %s; submissions paused %.1f s", code, text, pause)
                loop = asyncio.get_running_loop()
                self._pace_until = loop.time() + pause
                self._update_send_allowed()
                loop.call_later(pause, self._end_pacing_pause)
                self._alert("warning", "pacing", f"IB {code}: {text}; submissions paused {pause:.1f} s")
            case ErrorKind.ORDER:
                log.warning("IB %d on orderId %d (%r): %s", code, req_id, record.key if record else "", text)
            case ErrorKind.OTHER:
                log.warning("IB error %d (reqId %d): %s", code, req_id, text)

    def _end_pacing_pause(self) -> None:
        self._update_send_allowed()
        if asyncio.get_running_loop().time() >= self._pace_until + PACING_PAUSE_MAX_S:
            self._pace_pause = PACING_PAUSE_S

    async def _resync_after_data_loss(self) -> None:
        try:
            await self._sync("1101 restored, data lost")
        except (TimeoutError, ConnectFailed, ConnectionError) as e:
            log.warning("resync after 1101 failed (%s); reconnecting", e)
            self._close_connection(f"resync after 1101 failed: {e}")

    # ============================================================================================ monitoring

    async def _monitor(self) -> None:
        broker = self.cfg.broker
        ack_ns = int(broker.ack_timeout * 1e9)
        immediate_ns = int(broker.immediate_order_timeout * 1e9)
        while True:
            await asyncio.sleep(MONITOR_INTERVAL_S)
            if self.connected and not self.ib.isConnected():
                # A connection that died without the library's event (belt and braces).
                self._on_disconnected()
            if not (self.connected and self.synced):
                continue
            for overdue in self.table.overdue(self._now(), ack_ns, immediate_ns):
                self._cancel_overdue(overdue)

    def _cancel_overdue(self, overdue: Overdue) -> None:
        record = overdue.record
        record.cancel_reason = overdue.reason
        log.error(
            "order %r (orderId %d, %s): %s; cancelling",
            record.key,
            record.order_id,
            record.status,
            overdue.reason,
        )
        code = "immediate_timeout" if overdue.kind is OverdueKind.IMMEDIATE_NOT_FINAL else "ack_timeout"
        self._alert(
            "warning",
            code,
            f"order {record.key!r} (orderId {record.order_id}, status {record.status}, filled {record.filled} of "
            f"{record.quantity}) {overdue.reason}: cancelled",
        )
        self._queue.put_nowait(_Submission("cancel", record))

    # ============================================================================================ halt flag

    async def _control_listener(self) -> None:
        while True:
            envelope = await self.subscriber.recv(timeout=1.0)
            if envelope is None:
                continue
            match envelope.msg:
                case StateUpdate(state=state):
                    self._set_halt(state.halted, state.halt_reason)
                case TradingHalted(reason=reason):
                    self._set_halt(True, reason)
                case TradingResumed():
                    self._set_halt(False, "")

    async def _ask_halt_flag(self) -> None:
        """Learn the halt flag at start from the statekeeper (it may not be up: updates will tell us then)."""
        try:
            reply = await self.statekeeper.request(StateSnapshotRequest(ts_ns=time.time_ns()))
        except bus.CommandError as e:
            log.info(
                "statekeeper did not answer a snapshot request (%s); the halt flag comes with its updates", e
            )
            return
        except Exception:  # best effort: the flag also comes with every state update
            log.exception("asking the statekeeper for the halt flag failed; the flag comes with its updates")
            return
        if isinstance(reply, StateSnapshot):
            self._set_halt(reply.state.halted, reply.state.halt_reason)

    def _on_state_gap(self, sender: str, expected: int, got: int) -> None:
        self._spawn(self._ask_halt_flag())

    def _set_halt(self, halted: bool, reason: str) -> None:
        if halted != self.halted:
            log.warning("trading %s%s", "halted" if halted else "resumed", f": {reason}" if reason else "")
        self.halted = halted
        self.halt_reason = reason
        self._set_status()

    # ============================================================================================ helpers

    def _publish(self, topic: str, msg: Message) -> None:
        if not self.publisher.publish(topic, msg):
            log.error("bus publisher dropped %s on %s (queue full)", type(msg).__name__, topic)

    def _alert(self, severity: Severity, code: str, text: str) -> None:
        # The log, the bus, and for a critical one the operator's alert command (gridbot.alerts).
        self.alerts.alert(severity, code, text)

    def _set_status(self) -> None:
        if not self.connected:
            status = "no broker"
        elif not self.synced:
            status = "syncing"
        elif self.connectivity_lost:
            status = "IB connectivity lost"
        elif self.halted:
            status = "halted"
        else:
            status = "ok"
        self.publisher.status = status

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)


def _duplicate(record: OrderRecord) -> CommandDuplicate:
    return CommandDuplicate(
        ts_ns=time.time_ns(),
        key=record.key,
        order_id=record.order_id,
        perm_id=record.perm_id,
        status=record.status,
    )


def _cancel_detail(record: OrderRecord) -> str:
    if record.live:
        return f"cancel sent, not yet confirmed (status {record.status})"
    return f"{record.status}, filled {record.filled} of {record.quantity}"
