"""The sync: rebuild the intent table from IB (broker truth beats memory) and publish what was missed.

Run after every connect, after 1101 (restored, data lost), before a ClosePosition and for a
``BrokerSnapshotRequest(resync=True)``. Submissions wait while it runs.
"""

from __future__ import annotations

import asyncio
import logging
import time

from proto.messages import CommandRejected
from services.executor import convert
from services.executor.events import IbEvents
from services.executor.rules import missed
from services.executor.state import ConnectFailed, ExecutorState
from services.executor.submissions import SubmissionQueue
from services.executor.waiters import Waiters

log = logging.getLogger("executor")


class Syncer:
    """``await sync(why)``: one sync at a time."""

    def __init__(self, state: ExecutorState, events: IbEvents, waiters: Waiters, queue: SubmissionQueue) -> None:
        self.state = state
        self.events = events
        self.waiters = waiters
        self.queue = queue
        self._lock = asyncio.Lock()

    async def settled(self) -> None:
        """Return once no sync is running (at once when none is)."""
        async with self._lock:
            pass

    async def sync(self, why: str) -> None:
        """Rebuild the table from TWS (broker truth), publish what changed and every fill missed meanwhile."""
        state = self.state
        async with self._lock:
            state.synced = False
            self.queue.update_send_allowed()
            timeout = state.cfg.broker.connect_timeout
            ib = state.ib
            open_trades = await asyncio.wait_for(ib.reqAllOpenOrdersAsync(), timeout)
            completed = await asyncio.wait_for(ib.reqCompletedOrdersAsync(False), timeout)
            fills = await asyncio.wait_for(ib.reqExecutionsAsync(), timeout)
            positions = await asyncio.wait_for(ib.reqPositionsAsync(), timeout)
            if not ib.isConnected():
                raise ConnectFailed(f"the connection dropped during the {why} sync")
            infos = [
                convert.order_info(t) for t in [*completed, *open_trades] if t.contract.symbol == state.symbol
            ]
            waiting = self.waiters.waiting_keys()
            for event in state.table.rebuild(infos, state.now(), time.time_ns()):
                self.events.emit_order_event(event)
            for record in state.table.records():
                if record.final:
                    self.waiters.release_finals(record)
            state.positions = [convert.position_info(p) for p in positions if p.contract.symbol == state.symbol]
            quantities = {
                int(t.order.permId or 0): convert.shares(t.order.totalQuantity) for t in ib.trades()
            }
            # The library keeps the first Fill of an execId (with its commission report) and hands a bare copy
            # to a later request: take the kept one.
            kept = {f.execution.execId: f for f in ib.fills()}
            executions = [
                convert.execution_info(kept.get(f.execution.execId, f))
                for f in fills
                if f.contract.symbol == state.symbol
            ]
            recovered = missed(executions, state.ledger)
            for execution in recovered:
                self.events.publish_fill(execution, quantities.get(execution.perm_id, 0), recovered=True)
            for key in waiting:
                if state.table.get(key) is None:
                    self.waiters.settle(
                        key,
                        CommandRejected(
                            ts_ns=time.time_ns(),
                            key=key,
                            reason="lost in a disconnect: IB does not know the order after the resync; retry",
                        ),
                    )
            state.synced = True
            self.queue.update_send_allowed()
            state.set_status()
            log.info(
                "synced (%s): %d orders (%d live grid), %d executions (%d recovered), position %s",
                why,
                len(infos),
                len(state.table.live_grid()),
                len(executions),
                len(recovered),
                ", ".join(f"{p.quantity} {p.symbol}" for p in state.positions) or "none",
            )
