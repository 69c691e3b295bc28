"""The one submission queue: every placeOrder and cancelOrder goes through it, in order, at IB's pace.

At most ``broker.max_messages_per_second`` messages in any sliding second (``SendWindow``). The queue waits while
the broker is disconnected or syncing, while IB reports connectivity lost (1100) and during a pacing pause (100);
a disconnect empties it, answering each queued PlaceOrder that nothing reached IB.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from dataclasses import dataclass
from typing import Literal

from proto.messages import CommandRejected, PlaceOrder
from services.executor.rules import QUEUED, OrderRecord, SendWindow
from services.executor.state import ExecutorState
from services.executor.waiters import Waiters

log = logging.getLogger("executor")

# After IB's pacing error (100), submissions pause this long, doubling while the errors go on (to the max).
PACING_PAUSE_S = 1.0
PACING_PAUSE_MAX_S = 10.0
# Test seam (documented in docs/executor.md): GRIDBOT_EXECUTOR_FAULT=kill-after-place makes the process SIGKILL
# itself right after handing its first placeOrder to the socket, to prove a restart does not place it again.
FAULT_ENV = "GRIDBOT_EXECUTOR_FAULT"
FAULT_KILL_AFTER_PLACE = "kill-after-place"


@dataclass(eq=False)
class Submission:
    kind: Literal["place", "cancel"]
    record: OrderRecord
    cmd: PlaceOrder | None = None
    dropped: bool = False


class SubmissionQueue:
    """The FIFO of placeOrder / cancelOrder messages and its worker (``await run()``)."""

    def __init__(self, state: ExecutorState, waiters: Waiters, *, fault: str = "") -> None:
        self.state = state
        self.waiters = waiters
        self.fault = fault
        self.window = SendWindow(state.cfg.broker.max_messages_per_second)
        self._queue: asyncio.Queue[Submission] = asyncio.Queue()
        self._in_hand: Submission | None = None
        self._send_allowed = asyncio.Event()
        self._pace_until = 0.0
        self._pace_pause = PACING_PAUSE_S

    def place(self, record: OrderRecord, cmd: PlaceOrder) -> None:
        self._queue.put_nowait(Submission("place", record, cmd))

    def cancel(self, record: OrderRecord) -> None:
        self._queue.put_nowait(Submission("cancel", record))

    async def run(self) -> None:
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

    def _requeue_front(self, item: Submission) -> None:
        rest = []
        while not self._queue.empty():
            rest.append(self._queue.get_nowait())
        self._queue.put_nowait(item)
        for other in rest:
            self._queue.put_nowait(other)

    def _send(self, item: Submission) -> None:
        state = self.state
        record = item.record
        if item.kind == "place":
            assert item.cmd is not None
            if not state.table.is_current(record) or record.status != QUEUED:
                self.waiters.settle(
                    record.key,
                    CommandRejected(
                        ts_ns=time.time_ns(), key=record.key, reason="withdrawn before it was sent"
                    ),
                )
                return
            order = state.lib.order_for(item.cmd, state.con_id)
            trade = state.ib.placeOrder(state.contract, order)
            state.table.mark_sent(record, int(trade.order.orderId), state.client_id, state.now())
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
                self.waiters.release_finals(record)
                return
            state.ib.cancelOrder(state.lib.order_handle(record.order_id, record.client_id, record.perm_id))
            record.cancel_sent_ns = state.now()
            log.info("cancelOrder orderId %d %r: %s", record.order_id, record.key, record.cancel_reason)

    def flush(self, reason: str) -> None:
        """Give up every submission not yet sent (the one in hand too), answering those who wait."""
        items = []
        while not self._queue.empty():
            items.append(self._queue.get_nowait())
        if self._in_hand is not None:
            items.append(self._in_hand)
        for item in items:
            self._drop(item, reason)

    def _drop(self, item: Submission, reason: str) -> None:
        """Give up a submission that did not reach IB, and answer whoever waits for it."""
        item.dropped = True
        table = self.state.table
        if item.kind == "place":
            table.forget_unsent(item.record)
            if item.record.status == QUEUED:
                item.record.error_text = reason
            self.waiters.settle(
                item.record.key, CommandRejected(ts_ns=time.time_ns(), key=item.record.key, reason=reason)
            )
        self.waiters.release_finals(item.record)

    def update_send_allowed(self) -> None:
        """Open or close the queue after a change of the connection, the sync, 1100 or a pacing pause."""
        state = self.state
        paused = (
            not state.connected
            or not state.synced
            or state.connectivity_lost
            or asyncio.get_running_loop().time() < self._pace_until
        )
        if paused:
            self._send_allowed.clear()
        else:
            self._send_allowed.set()

    def pause_for_pacing(self, code: int, text: str) -> None:
        """IB's pacing error (100): pause submissions, longer while the errors go on, with an alert."""
        pause = self._pace_pause
        self._pace_pause = min(pause * 2, PACING_PAUSE_MAX_S)
        log.warning("IB %d (pacing): %s; submissions paused %.1f s", code, text, pause)
        loop = asyncio.get_running_loop()
        self._pace_until = loop.time() + pause
        self.update_send_allowed()
        loop.call_later(pause, self._end_pacing_pause)
        self.state.alert("warning", "pacing", f"IB {code}: {text}; submissions paused {pause:.1f} s")

    def _end_pacing_pause(self) -> None:
        self.update_send_allowed()
        if asyncio.get_running_loop().time() >= self._pace_until + PACING_PAUSE_MAX_S:
            self._pace_pause = PACING_PAUSE_S
