"""IB's objects -> proto records, at the edge (NautilusTrader's ``parsing`` tables are the model).

Takes the client library's ``Trade``, ``Fill`` and ``Position`` objects by their attributes (both ib_insync and
ib_async have the same shapes), so this module imports neither. Prices become ``Decimal`` from the float's
shortest repr (``97.03`` -> ``Decimal('97.03')``), never through binary arithmetic; IB's "unset" double becomes 0.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Any

from proto.messages import ExecutionInfo, OpenOrderInfo, PositionInfo, Side

# IB's UNSET_DOUBLE is 1.7976931348623157e308; anything this large is "no value".
_UNSET_ABOVE = 1e300
CENT = Decimal("0.01")
_LOG_PREFIX = re.compile(r"^(?:Error|Warning) -?\d+, reqId -?\d+: ")
_SIDES: dict[str, Side] = {"BUY": "BUY", "BOT": "BUY", "SELL": "SELL", "SLD": "SELL"}


def decimal(value: Any) -> Decimal:
    """A price from the library (float, int, str or None) as an exact Decimal; unset and None become 0."""
    if value is None or value == "":
        return Decimal(0)
    number = float(value)
    if number != number or abs(number) >= _UNSET_ABOVE:
        return Decimal(0)
    exact = Decimal(repr(number))
    # Cents always written (100.0 -> 100.00), more places kept exactly as IB gave them (an average fill).
    exponent = exact.as_tuple().exponent
    return exact.quantize(CENT) if isinstance(exponent, int) and exponent > -2 else exact


def shares(value: Any) -> int:
    """A quantity from the library (a float like 94.0) as whole shares; unset becomes 0."""
    if value is None or value == "":
        return 0
    number = float(value)
    if number != number or abs(number) >= _UNSET_ABOVE:
        return 0
    return int(round(number))


def side(action: str) -> Side:
    try:
        return _SIDES[action.upper()]
    except KeyError:
        raise ValueError(f"unknown order side {action!r} from IB (expected BUY/SELL or BOT/SLD)") from None


def ts_ns(moment: Any) -> int:
    """A library timestamp (an aware datetime, or epoch seconds) in UTC nanoseconds; 0 when unknown."""
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            return 0
        return int(moment.timestamp() * 1_000_000) * 1000
    if isinstance(moment, int | float) and moment > 0:
        return int(moment * 1_000_000_000)
    return 0


def order_info(trade: Any) -> OpenOrderInfo:
    """A Trade (open or completed) as the order report the intent table and the snapshot use."""
    order = trade.order
    status = trade.orderStatus
    # A completed order's Trade carries only its status; its filled quantity is on the order itself.
    filled = max(shares(status.filled), shares(getattr(order, "filledQuantity", 0)))
    quantity = shares(order.totalQuantity)
    return OpenOrderInfo(
        key=order.orderRef or "",
        order_id=int(order.orderId or 0),
        perm_id=int(order.permId or status.permId or 0),
        client_id=int(order.clientId or 0),
        symbol=trade.contract.symbol or "",
        side=side(order.action),
        quantity=quantity,
        limit=decimal(order.lmtPrice),
        tif=order.tif or "",
        outside_rth=bool(order.outsideRth),
        status=status.status,
        filled=filled,
        remaining=max(quantity - filled, 0),
        avg_fill_price=decimal(status.avgFillPrice),
        condition_price=condition_price(order),
    )


def condition_price(order: Any) -> Decimal | None:
    for condition in getattr(order, "conditions", None) or []:
        if hasattr(condition, "price"):
            return decimal(condition.price)
    return None


def last_error(trade: Any) -> tuple[int, str]:
    """The error IB last reported on this trade (from its log), or (0, "")."""
    for entry in reversed(trade.log or []):
        code = getattr(entry, "errorCode", 0) or 0
        if code:
            # The library prefixes IB's text ("Error 201, reqId 5: ..."); keep IB's own words.
            return int(code), _LOG_PREFIX.sub("", str(entry.message), count=1)
        # Only the most recent entries matter: an older error was already seen.
        break
    return 0, ""


def execution_info(fill: Any) -> ExecutionInfo:
    """One execution (``Fill``), with its commission when the report has already arrived."""
    execution = fill.execution
    report = fill.commissionReport
    commission = (
        decimal(report.commission) if report is not None and report.execId == execution.execId else None
    )
    return ExecutionInfo(
        exec_id=execution.execId,
        key=execution.orderRef or "",
        order_id=int(execution.orderId or 0),
        perm_id=int(execution.permId or 0),
        side=side(execution.side),
        shares=shares(execution.shares),
        price=decimal(execution.price),
        cum_qty=shares(execution.cumQty),
        avg_price=decimal(execution.avgPrice),
        exec_ts_ns=ts_ns(execution.time) or ts_ns(fill.time),
        commission=commission,
    )


def position_info(position: Any) -> PositionInfo:
    return PositionInfo(
        symbol=position.contract.symbol or "",
        quantity=shares(position.position),
        avg_cost=decimal(position.avgCost),
        account=position.account or "",
    )
