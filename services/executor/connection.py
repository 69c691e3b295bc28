"""The IB connection: connect, sync, watch (liveness probe), reconnect with backoff; IB's connection codes.

On every connection: ``connectAsync`` (``reqMarketDataType(3)`` as soon as the API is up), qualify the symbol,
the sync, then ``BrokerConnected``. A drop, or a probe not answered, ends it and the loop makes a new one under
the same clientId. IB's error codes 1100/1101/1102 (connectivity), 326 (clientId in use) and 100 (pacing, handed
to the submission queue) are handled here; an order's error is noted in the intent table.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import bus
from proto import topics
from proto.messages import BrokerConnected, BrokerConnectivity, BrokerDisconnected
from services.executor.rules import ORDER_ENDING, Backoff, ErrorKind, classify_error
from services.executor.state import SERVICE, ConnectFailed, ExecutorState
from services.executor.submissions import SubmissionQueue
from services.executor.sync import Syncer

log = logging.getLogger("executor")

# IB's market data type 3 = delayed: the user's requirement, so that an unsubscribed account gets no error 354.
DELAYED_MARKET_DATA = 3
# Before the first connect, wait at most this many heartbeat intervals (and at least BUS_JOIN_MIN_S) for our own
# heartbeat to come back through the bus (see Connection._await_bus).
BUS_JOIN_BEATS = 3
BUS_JOIN_MIN_S = 1.0


class Connection:
    """The connection loop (``await run()``) and the handlers of the library's connection events."""

    def __init__(
        self,
        state: ExecutorState,
        syncer: Syncer,
        queue: SubmissionQueue,
        subscriber: bus.Subscriber,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self.state = state
        self.syncer = syncer
        self.queue = queue
        self.subscriber = subscriber
        self.spawn = spawn
        self.backoff = Backoff(state.cfg.broker.reconnect_initial, state.cfg.broker.reconnect_max)
        self._lost = asyncio.Event()
        self._client_id_alerted = False
        # Why we are closing the connection ourselves, for the BrokerDisconnected the library's event triggers.
        self._closing_reason = ""

    def on_api_start(self) -> None:
        # The user's requirement, the first request on every connection, before the library's own sync
        # requests: delayed market data where live data is not subscribed (no error 354).
        self.state.ib.reqMarketDataType(DELAYED_MARKET_DATA)

    async def _await_bus(self) -> None:
        """Wait (bounded) until this executor's own heartbeat comes back through the bus.

        A new publisher gets the bus's subscriptions a moment after it connects, and what it publishes before
        that is dropped: the first BrokerConnected, or an order adopted in the first sync, would be lost. The
        forwarder hands a new publisher every subscription it knows at once, so our heartbeat coming back means
        the subscribers that were up before us will get what follows. A bus that is not up only delays us.
        """
        cfg = self.state.cfg
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(BUS_JOIN_BEATS * cfg.bus.heartbeat_interval, BUS_JOIN_MIN_S)
        while not self.subscriber.peer_alive(SERVICE):
            if loop.time() > deadline:
                log.warning("no heartbeat of ours came back through the bus (%s); carrying on", cfg.bus.xpub)
                return
            await asyncio.sleep(0.02)

    async def run(self) -> None:
        await self._await_bus()
        broker = self.state.cfg.broker
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
                    broker.host,
                    broker.port,
                    self.state.client_id,
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
        broker = self.state.cfg.broker
        interval = broker.probe_interval
        while True:
            try:
                await asyncio.wait_for(self._lost.wait(), interval if interval > 0 else None)
                return
            except TimeoutError:
                pass
            try:
                await asyncio.wait_for(self.state.ib.reqCurrentTimeAsync(), broker.connect_timeout)
            except (TimeoutError, ConnectionError) as e:
                if self._lost.is_set():
                    return
                log.warning(
                    "IB did not answer a liveness probe within %.1f s (%s): the connection is dead; reconnecting",
                    broker.connect_timeout,
                    type(e).__name__,
                )
                self.close_connection(
                    f"no answer to a liveness probe within {broker.connect_timeout:g} s (dead connection)"
                )
                return

    async def _connect(self) -> None:
        state = self.state
        broker = state.cfg.broker
        timeout = broker.connect_timeout
        ib = state.ib
        try:
            await ib.connectAsync(broker.host, broker.port, clientId=state.client_id, timeout=timeout)
        except (TimeoutError, OSError, ConnectionError) as e:
            raise ConnectFailed(f"connect failed: {type(e).__name__}: {e}") from None
        state.connected = True
        self._client_id_alerted = False
        state.server_version = int(ib.client.serverVersion())
        state.accounts = list(ib.managedAccounts())
        contract = state.lib.stock(state.symbol)
        qualified = await asyncio.wait_for(ib.qualifyContractsAsync(contract), timeout)
        if not qualified or qualified[0] is None or not getattr(contract, "conId", 0):
            text = (
                f"IB did not qualify {state.symbol} (SMART/USD): no conId, so no PriceCondition can be built "
                "(error 398); check general.symbol"
            )
            state.alert("critical", "contract_not_qualified", text)
            raise ConnectFailed(text)
        state.contract = contract
        state.con_id = int(contract.conId)
        await self.syncer.sync("connect")
        log.info(
            "connected to IB %s:%d clientId %d (server version %d, accounts %s, %s conId %d)",
            broker.host,
            broker.port,
            state.client_id,
            state.server_version,
            ",".join(state.accounts),
            state.symbol,
            state.con_id,
        )
        state.publish(
            topics.BROKER_EVENT,
            BrokerConnected(
                ts_ns=time.time_ns(),
                host=broker.host,
                port=broker.port,
                client_id=state.client_id,
                server_version=state.server_version,
                accounts=state.accounts,
            ),
        )

    def _teardown(self) -> None:
        if self.state.ib.isConnected():
            self.state.ib.disconnect()
        self._mark_disconnected("connect failed", announce=False)

    def on_disconnected(self) -> None:
        reason = self._closing_reason or "socket closed by TWS / IB Gateway (drop, restart or clientId in use)"
        self._closing_reason = ""
        self._mark_disconnected(reason, announce=True)
        self._lost.set()

    def close_connection(self, reason: str) -> None:
        """Drop the IB connection ourselves; the connection loop then makes a new one."""
        self._closing_reason = reason
        if self.state.ib.isConnected():
            self.state.ib.disconnect()
        self.on_disconnected()

    def _mark_disconnected(self, reason: str, *, announce: bool) -> None:
        state = self.state
        was_connected = state.connected
        state.connected = False
        state.synced = False
        state.connectivity_lost = False
        self.queue.flush("broker disconnected before the order was sent: nothing reached IB; retry later")
        self.queue.update_send_allowed()
        state.set_status()
        if was_connected and announce:
            log.warning("IB connection lost: %s", reason)
            state.publish(topics.BROKER_EVENT, BrokerDisconnected(ts_ns=time.time_ns(), reason=reason))

    def on_error(self, req_id: int, code: int, text: str, contract: Any = None) -> None:
        state = self.state
        record = state.table.by_order_id(state.client_id, req_id) if req_id > 0 else None
        kind = classify_error(code, req_id, record is not None)
        if kind in ORDER_ENDING:
            state.table.note_error(state.client_id, req_id, code, text)
        now = time.time_ns()
        match kind:
            case ErrorKind.INFO:
                log.debug("IB info %d (reqId %d): %s", code, req_id, text)
            case ErrorKind.CONNECTIVITY_LOST:
                log.warning("IB %d: %s; submissions paused", code, text)
                state.connectivity_lost = True
                self.queue.update_send_allowed()
                state.set_status()
                state.publish(
                    topics.BROKER_EVENT, BrokerConnectivity(ts_ns=now, code=code, text=text, connected=False)
                )
            case ErrorKind.RESTORED_DATA_LOST:
                log.warning("IB %d: %s; full resync", code, text)
                state.connectivity_lost = False
                state.publish(
                    topics.BROKER_EVENT, BrokerConnectivity(ts_ns=now, code=code, text=text, connected=True)
                )
                self.spawn(self._resync_after_data_loss())
            case ErrorKind.RESTORED:
                log.info("IB %d: %s; carrying on", code, text)
                state.connectivity_lost = False
                self.queue.update_send_allowed()
                state.set_status()
                state.publish(
                    topics.BROKER_EVENT, BrokerConnectivity(ts_ns=now, code=code, text=text, connected=True)
                )
            case ErrorKind.CLIENT_ID_IN_USE:
                log.error("IB %d: %s", code, text)
                if not self._client_id_alerted:
                    self._client_id_alerted = True
                    state.alert(
                        "critical",
                        "client_id_in_use",
                        f"IB refused clientId {state.client_id} ({code}: {text}): another program uses it; "
                        "the executor keeps retrying with backoff. Stop the other program or change broker.client_id.",
                    )
            case ErrorKind.PACING:
                self.queue.pause_for_pacing(code, text)
            case ErrorKind.ORDER:
                log.warning("IB %d on orderId %d (%r): %s", code, req_id, record.key if record else "", text)
            case ErrorKind.OTHER:
                log.warning("IB error %d (reqId %d): %s", code, req_id, text)

    async def _resync_after_data_loss(self) -> None:
        try:
            await self.syncer.sync("1101 restored, data lost")
        except (TimeoutError, ConnectFailed, ConnectionError) as e:
            log.warning("resync after 1101 failed (%s); reconnecting", e)
            self.close_connection(f"resync after 1101 failed: {e}")
