"""IB's order, execution, commission and position reports -> ``proto`` events on ``order.event``.

Each order report goes through the intent table (rules.py), which says what is news; each execution is published
once per execId (the execution ledger), its commission once; each event also settles the PlaceOrder waiting for
its key (waiters.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from decimal import Decimal
from typing import Any

import msgspec

from proto import topics
from proto.messages import (
    CommandAccepted,
    CommandRejected,
    CommissionReported,
    ExecutionInfo,
    Message,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderStatusChanged,
)
from services.executor import convert
from services.executor.rules import ORDER_ENDING, OrderRecord, classify_error, intent_of
from services.executor.state import ExecutorState
from services.executor.waiters import Waiters

log = logging.getLogger("executor")

# IB sometimes sends an order's final status a moment before the error that explains it (201 after Cancelled):
# a final status of an order never acknowledged waits this long for its error code before it is published.
REJECT_GRACE_S = 0.1


class IbEvents:
    """The handlers of IB's reports (wired to the client library's events by service.py)."""

    def __init__(self, state: ExecutorState, waiters: Waiters) -> None:
        self.state = state
        self.waiters = waiters

    def on_trade(self, trade: Any) -> None:
        state = self.state
        try:
            info = convert.order_info(trade)
        except ValueError as e:
            log.error("an order report from IB could not be read (%s): %r", e, trade)
            return
        if info.symbol and info.symbol != state.symbol:
            return
        code, text = convert.last_error(trade)
        if code and classify_error(code, info.order_id, True) in ORDER_ENDING:
            state.table.note_error(info.client_id, info.order_id, code, text)
        for event in state.table.apply(info, state.now(), time.time_ns()):
            self.emit_order_event(event)
        record = state.table.find(info.key, info.client_id, info.order_id, info.perm_id)
        if record is not None and record.final:
            self.waiters.release_finals(record)

    def emit_order_event(self, event: Message) -> None:
        """Publish an order event from the table, holding back an unexplained end for its error code."""
        if isinstance(event, OrderCancelled) and event.key:
            record = self.state.table.get(event.key)
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
        self._publish_order_event(self.state.table.final_event(record, time.time_ns()))

    def _publish_order_event(self, event: Message) -> None:
        self.state.publish(topics.ORDER_EVENT, event)
        key = getattr(event, "key", "")
        if not key:
            return
        now = time.time_ns()
        settle = self.waiters.settle
        match event:
            case OrderAccepted():
                settle(key, CommandAccepted(ts_ns=now, key=key, order_id=event.order_id, perm_id=event.perm_id))
            case OrderRejected():
                log.warning("order %r rejected by IB: %d %s", key, event.code, event.text)
                settle(key, CommandRejected(ts_ns=now, key=key, reason=event.text, code=event.code))
            case OrderCancelled():
                log.info("order %r cancelled (filled %d): %s", key, event.filled, event.reason)
                settle(
                    key,
                    CommandRejected(
                        ts_ns=now, key=key, reason=f"cancelled before acknowledgement: {event.reason}"
                    ),
                )
            case OrderStatusChanged() if event.status == "Filled":
                settle(
                    key,
                    CommandAccepted(
                        ts_ns=now, key=key, order_id=event.order_id, perm_id=event.perm_id, detail="filled"
                    ),
                )

    def on_execution(self, trade: Any, fill: Any) -> None:
        try:
            execution = convert.execution_info(fill)
        except ValueError as e:
            log.error("an execution from IB could not be read (%s): %r", e, fill)
            return
        if fill.contract.symbol != self.state.symbol:
            return
        self.publish_fill(execution, convert.shares(trade.order.totalQuantity), recovered=False)

    def publish_fill(self, execution: ExecutionInfo, order_quantity: int, *, recovered: bool) -> None:
        """Publish an execution as ``OrderFilled``, once per execId."""
        state = self.state
        entered = state.ledger.record(execution)
        if entered is None:
            return
        state.executions[entered.exec_id] = entered
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
        state.publish(
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
            record = state.table.get(key)
            self.waiters.settle(
                key,
                CommandAccepted(
                    ts_ns=time.time_ns(),
                    key=key,
                    order_id=entered.order_id,
                    perm_id=entered.perm_id,
                    detail=f"filling: {entered.cum_qty} of {order_quantity or (record.quantity if record else 0)}",
                ),
            )

    def on_commission(self, trade: Any, fill: Any, report: Any) -> None:
        state = self.state
        exec_id = report.execId
        if state.ledger.is_new(exec_id) or fill.contract.symbol != state.symbol:
            # Its execution is not published yet (a sync in progress): the fill will carry the commission.
            return
        commission = convert.decimal(report.commission)
        pnl = convert.decimal(report.realizedPNL)
        known = state.executions.get(exec_id)
        if known is not None:
            state.executions[exec_id] = msgspec.structs.replace(known, commission=commission)
        key = fill.execution.orderRef if intent_of(fill.execution.orderRef or "") is not None else ""
        self._publish_commission(exec_id, key, commission, pnl or None)

    def _publish_commission(self, exec_id: str, key: str, commission: Decimal, pnl: Decimal | None) -> None:
        if not self.state.ledger.commission_is_new(exec_id):
            return
        self.state.publish(
            topics.ORDER_EVENT,
            CommissionReported(
                ts_ns=time.time_ns(), exec_id=exec_id, key=key, commission=commission, realized_pnl=pnl
            ),
        )

    def on_position(self, position: Any) -> None:
        state = self.state
        if position.contract.symbol != state.symbol:
            return
        info = convert.position_info(position)
        state.positions = [p for p in state.positions if p.account != info.account] + [info]
