"""The command handler: PlaceOrder, CancelOrder, CancelAll, ClosePosition, BrokerSnapshotRequest; one reply each.

The decisions are rules.py's (the gate, duplicates, slots, caps); this module queues what was decided and waits
for IB's answer (waiters.py) to reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from proto.messages import (
    BrokerSnapshot,
    BrokerSnapshotRequest,
    CancelAll,
    CancelOrder,
    ClosePosition,
    CommandAccepted,
    CommandDuplicate,
    CommandRejected,
    Message,
    PlaceOrder,
)
from services.executor.rules import QUEUED, Duplicate, OrderRecord, Refuse, Submit
from services.executor.state import ConnectFailed, ExecutorState
from services.executor.submissions import SubmissionQueue
from services.executor.sync import Syncer
from services.executor.waiters import Waiters

log = logging.getLogger("executor")

# A PlaceOrder reply waits at most ack_timeout plus this for IB's acknowledgement before it answers "pending".
REPLY_MARGIN_S = 2.0


class CommandHandler:
    """``await handle(msg)``: the command server's handler."""

    def __init__(self, state: ExecutorState, queue: SubmissionQueue, waiters: Waiters, syncer: Syncer) -> None:
        self.state = state
        self.queue = queue
        self.waiters = waiters
        self.syncer = syncer
        # PlaceOrder commands being carried out, by key: repeats wait for the first one's reply.
        self._inflight: dict[str, asyncio.Future[Message]] = {}

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

    # ------------------------------------------------------------------------------------------- PlaceOrder

    async def _place(self, cmd: PlaceOrder) -> Message:
        first = self._inflight.get(cmd.key)
        if first is not None:
            # The same key is being placed right now: nothing more goes to IB; answer with its outcome.
            return self._as_repeat(cmd.key, await asyncio.shield(first))
        decision = self.state.table.decide_place(cmd, self.state.gate(), self.state.now())
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
        record = self.state.table.get(key)
        if isinstance(first, CommandAccepted) and record is not None:
            return _duplicate(record)
        return first

    async def _submit(self, record: OrderRecord, cmd: PlaceOrder) -> Message:
        outcome = self.waiters.expect_outcome(cmd.key)
        self.queue.place(record, cmd)
        try:
            return await asyncio.wait_for(
                asyncio.shield(outcome), self.state.cfg.broker.ack_timeout + REPLY_MARGIN_S
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
            self.waiters.forget_outcome(cmd.key, outcome)

    # ------------------------------------------------------------------------------------------- cancels

    async def _cancel(self, cmd: CancelOrder) -> Message:
        record = self.state.table.get(cmd.key)
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
        state = self.state
        if not state.connected or not state.synced:
            return CommandRejected(
                ts_ns=time.time_ns(),
                reason="broker disconnected or not yet synced: cancels cannot reach IB now; retry after BrokerConnected",
            )
        records = state.table.live_grid() + (state.table.live_foreign() if cmd.include_foreign else [])
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
        state = self.state
        if record.status == QUEUED:
            return None
        if not state.connected or not state.synced:
            return "broker disconnected or not yet synced: a cancel cannot reach IB now; retry"
        if record.client_id != state.client_id:
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
                self.state.table.forget_unsent(record)
                record.status = "Cancelled"
                record.cancel_reason = reason
                self.waiters.settle(
                    record.key,
                    CommandRejected(
                        ts_ns=time.time_ns(), key=record.key, reason=f"withdrawn before it was sent: {reason}"
                    ),
                )
                continue
            waits.append(self.waiters.watch_final(record))
            if not record.cancel_reason:
                # Not asked before (by a command or the monitor): one cancel per order.
                record.cancel_reason = reason
                self.queue.cancel(record)
        if waits:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), self.state.cfg.broker.ack_timeout)

    # ------------------------------------------------------------------------------------------- ClosePosition

    async def _close_position(self, cmd: ClosePosition) -> Message:
        """The operator's reset --flatten: one LMT order for the position, even while halted; reply when final."""
        state = self.state
        if state.connected and state.synced and not state.connectivity_lost:
            try:
                await self.syncer.sync("ClosePosition")  # the position as the broker has it now
            except (TimeoutError, ConnectFailed, ConnectionError) as e:
                return CommandRejected(ts_ns=time.time_ns(), reason=f"could not read the position from IB: {e}")
        position = sum(p.quantity for p in state.positions if p.symbol == state.symbol)
        decision = state.table.decide_close(cmd, state.gate(), position, state.now())
        if not isinstance(decision, Submit):
            reason = decision.reason if isinstance(decision, Refuse) else "a closing order is already working"
            log.warning("ClosePosition %s %d refused: %s", cmd.side, cmd.quantity, reason)
            return CommandRejected(ts_ns=time.time_ns(), reason=reason)
        record = decision.record
        order = PlaceOrder(
            ts_ns=cmd.ts_ns,
            key=record.key,
            symbol=state.symbol,
            side=cmd.side,
            quantity=cmd.quantity,
            limit=cmd.limit,
            tif="DAY",
            outside_rth=True,
            immediate=True,
        )
        log.warning(
            "ClosePosition: %s %d %s LMT %s (%s)", cmd.side, cmd.quantity, state.symbol, cmd.limit, cmd.reason
        )
        final = self.waiters.watch_final(record)
        self.queue.place(record, order)
        # The monitor cancels it at broker.immediate_order_timeout; its cancel is confirmed within ack_timeout.
        broker = state.cfg.broker
        limit_s = broker.immediate_order_timeout + broker.ack_timeout + REPLY_MARGIN_S
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(final, limit_s)
        now = time.time_ns()
        if record.status == "Filled" or (record.final and record.filled >= record.quantity):
            detail = (
                f"{cmd.side} {record.filled} {state.symbol} filled at {record.avg_fill_price} "
                f"(orderId {record.order_id})"
            )
            return CommandAccepted(ts_ns=now, order_id=record.order_id, perm_id=record.perm_id, detail=detail)
        why = record.error_text or record.cancel_reason or f"status {record.status or 'not sent'}"
        return CommandRejected(
            ts_ns=now,
            reason=f"the closing order did not fill completely ({why}): {record.filled} of {record.quantity} filled",
            code=record.error_code,
        )

    # ------------------------------------------------------------------------------------------- snapshot

    async def _snapshot(self, msg: BrokerSnapshotRequest) -> Message:
        state = self.state
        if msg.resync and state.connected:
            try:
                await self.syncer.sync("snapshot request")
            except (TimeoutError, ConnectFailed, ConnectionError) as e:
                log.warning("resync for a snapshot failed: %s", e)
        elif state.connected and not state.synced:
            # A sync is under way (at connect, or a resync another client asked for): answer with its outcome.
            # A snapshot taken mid-sync would say "disconnected" for a moment, and the asker would hold its
            # orders until it asked again (seen: the strategy missed a Level-0 tick that way).
            try:
                await asyncio.wait_for(self.syncer.settled(), state.cfg.broker.connect_timeout)
            except TimeoutError:
                log.warning("a snapshot waited %.0f s for a sync in progress; answering as it stands",
                            state.cfg.broker.connect_timeout)
        records = state.table.records()
        return BrokerSnapshot(
            ts_ns=time.time_ns(),
            connected=state.connected and state.synced,
            orders=[r.info() for r in records if r.live and r.status != QUEUED],
            completed=[r.info() for r in records if r.final],
            executions=sorted(state.executions.values(), key=lambda e: (e.exec_ts_ns, e.exec_id)),
            positions=list(state.positions),
            con_id=state.con_id,
        )


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
