"""The order monitor: cancels orders IB did not acknowledge in time and immediate orders not final in time.

Every 0.1 s while connected and synced: an order handed to IB and not acknowledged within ``broker.ack_timeout``,
and an immediate (Level-0) order not final within ``broker.immediate_order_timeout``, is cancelled through the
submission queue, with an alert and an error in the log. It also notices a connection that died without the
library's event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from services.executor.rules import Overdue, OverdueKind
from services.executor.state import ExecutorState
from services.executor.submissions import SubmissionQueue

log = logging.getLogger("executor")

# How often the monitor looks for overdue orders and a connection that died without an event.
MONITOR_INTERVAL_S = 0.1


class Monitor:
    """``await run()``: the overdue-order watch."""

    def __init__(self, state: ExecutorState, queue: SubmissionQueue, on_disconnected: Callable[[], None]) -> None:
        self.state = state
        self.queue = queue
        self.on_disconnected = on_disconnected

    async def run(self) -> None:
        state = self.state
        broker = state.cfg.broker
        ack_ns = int(broker.ack_timeout * 1e9)
        immediate_ns = int(broker.immediate_order_timeout * 1e9)
        while True:
            await asyncio.sleep(MONITOR_INTERVAL_S)
            if state.connected and not state.ib.isConnected():
                # A connection that died without the library's event (belt and braces).
                self.on_disconnected()
            if not (state.connected and state.synced):
                continue
            for overdue in state.table.overdue(state.now(), ack_ns, immediate_ns):
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
        self.state.alert(
            "warning",
            code,
            f"order {record.key!r} (orderId {record.order_id}, status {record.status}, filled {record.filled} of "
            f"{record.quantity}) {overdue.reason}: cancelled",
        )
        self.queue.cancel(record)
