"""Builders of the executor's order events, for the ledger's tests (the same shapes the executor publishes)."""

from __future__ import annotations

import itertools
from decimal import Decimal

from core.intent import IntentKey
from proto.messages import (
    CommissionReported,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderStatusChanged,
    Side,
)

D = Decimal
_ids = itertools.count(1000)


def buy_key(cycle: int, level: int, attempt: int = 1) -> str:
    return IntentKey.buy(cycle, level, attempt).encode()


def sell_key(cycle: int, level: int, purchase: str | Decimal, attempt: int = 1) -> str:
    return IntentKey.sell(cycle, level, D(purchase), attempt).encode()


def accepted(
    key: str,
    side: Side,
    quantity: int,
    limit: str,
    order_id: int = 1,
    perm_id: int = 0,
    status: str = "Submitted",
) -> OrderAccepted:
    return OrderAccepted(
        key=key,
        order_id=order_id,
        perm_id=perm_id or 900_000 + order_id,
        side=side,
        quantity=quantity,
        limit=D(limit),
        status=status,
    )


def fill(
    key: str,
    side: Side,
    shares: int,
    price: str,
    order_quantity: int,
    exec_id: str | None = None,
    order_id: int = 1,
    perm_id: int = 0,
    ts: int = 0,
    commission: str | None = None,
) -> OrderFilled:
    return OrderFilled(
        key=key,
        exec_id=exec_id or f"0000e{next(_ids)}.01",
        order_id=order_id,
        perm_id=perm_id or 900_000 + order_id,
        side=side,
        shares=shares,
        price=D(price),
        cum_qty=shares,
        avg_price=D(price),
        exec_ts_ns=ts,
        order_quantity=order_quantity,
        commission=D(commission) if commission is not None else None,
    )


def commission(exec_id: str, key: str, amount: str) -> CommissionReported:
    return CommissionReported(exec_id=exec_id, key=key, commission=D(amount))


def cancelled(
    key: str, filled: int = 0, avg: str = "0", order_id: int = 1, perm_id: int = 0
) -> OrderCancelled:
    return OrderCancelled(
        key=key,
        order_id=order_id,
        perm_id=perm_id or 900_000 + order_id,
        filled=filled,
        avg_fill_price=D(avg),
    )


def rejected(key: str, order_id: int = 1) -> OrderRejected:
    return OrderRejected(key=key, order_id=order_id, code=201, text="Order rejected")


def status(
    key: str, value: str, filled: int = 0, remaining: int = 0, order_id: int = 1
) -> OrderStatusChanged:
    return OrderStatusChanged(
        key=key,
        order_id=order_id,
        perm_id=900_000 + order_id,
        status=value,
        filled=filled,
        remaining=remaining,
    )
