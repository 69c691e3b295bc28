"""Order matching against trade prints: trigger rules, fill prices and quantities, commissions.

Pure: functions of (orders, print, session) -> fills. The paper broker and the backtester run the same rules.

The model (documented for users in docs/sim.md):
- A print is a trade at a price with a size. Orders fill against prints only (no quotes, no queue position).
- A BUY limit fills when a print is at or below its limit, a SELL limit when a print is at or above it, at the
  print's price: for a resting order that is the limit itself or better (a gap through the limit fills at the
  print). A market order fills at the print.
- An order fills only in a session it may trade in: regular hours always, pre-market and after-hours only with
  ``outsideRth``.
- Full fills by default. With partial fills on, a print's size is the liquidity it offers: orders take it in time
  priority (the order they were placed or triggered in), each at most its remaining quantity.
- Price conditions (IB's PriceCondition) compare the last print with their price: ``isMore`` means last >= price,
  else last <= price; conditions chain left to right with their conjunction ("a" = and, "o" = or).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from core.sessions import Session, can_trade

CENT = Decimal("0.01")
ZERO_CENTS = Decimal("0.00")

# IB's fixed pricing for US stocks (interactivebrokers.com, "Commissions Stocks", fixed): per share, with a minimum
# per order and a cap of 1% of the trade value.
FIXED_PER_SHARE = Decimal("0.005")
FIXED_MIN_PER_ORDER = Decimal("1.00")
FIXED_MAX_FRACTION = Decimal("0.01")


class Side(enum.Enum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(enum.Enum):
    LIMIT = "LMT"
    MARKET = "MKT"


# Enum members read for every resting order at every print, looked up once here: in CPython 3.11 an attribute of
# an Enum class is read through EnumType's __getattr__ hook, many times slower than a module global.
_BUY = Side.BUY
_MARKET = OrderType.MARKET
_REGULAR = Session.REGULAR
_CLOSED = Session.CLOSED


@dataclass(frozen=True)
class PriceCondition:
    """IB's PriceCondition, reduced to what decides it: the comparison and the chaining to the next condition."""

    is_more: bool
    price: Decimal
    conjunction_and: bool = True

    def holds(self, last: Decimal) -> bool:
        return last >= self.price if self.is_more else last <= self.price


@dataclass(frozen=True)
class Print:
    """One trade print from the market source."""

    price: Decimal
    size: int


@dataclass(frozen=True)
class WorkingOrder:
    """What matching needs to know of a live order. ``key`` is the caller's id for it (IB's permId)."""

    key: int
    side: Side
    order_type: OrderType
    limit: Decimal | None
    remaining: int
    outside_rth: bool


@dataclass(frozen=True)
class Fill:
    key: int
    quantity: int
    price: Decimal


def round_cent(value: Decimal) -> Decimal:
    """Round half-up to the cent (TQQQ's tick)."""
    return value.quantize(CENT, ROUND_HALF_UP)


def conditions_hold(conditions: Sequence[PriceCondition], last: Decimal) -> bool:
    """Evaluate IB's condition chain left to right: each condition's conjunction joins it to the next one."""
    if not conditions:
        return True
    previous = conditions[0]
    result = previous.holds(last)
    for cond in conditions[1:]:
        result = (result and cond.holds(last)) if previous.conjunction_and else (result or cond.holds(last))
        previous = cond
    return result


def conditions_may_trigger(session: Session, ignore_rth: bool) -> bool:
    """Conditions are watched during regular hours, or in every open session with ``conditionsIgnoreRth``."""
    return session is _REGULAR or (ignore_rth and session is not _CLOSED)


def fill_price(order: WorkingOrder, print_price: Decimal) -> Decimal | None:
    """The price ``order`` fills at against a print at ``print_price``, or None when the print does not reach it."""
    if order.order_type is _MARKET:
        return print_price
    assert order.limit is not None, "a limit order has a limit price"
    if order.side is _BUY:
        return print_price if print_price <= order.limit else None
    return print_price if print_price >= order.limit else None


def reachable(orders: Iterable[WorkingOrder], print_price: Decimal) -> list[WorkingOrder]:
    """The orders (in their given order) that a print at ``print_price`` reaches: those :func:`fill_price` gives a
    price for. The same rule in one comparison per order and no call, for a caller that holds many resting orders
    of which a print reaches few (the paper broker narrows its book down with it at every print)."""
    return [
        o for o in orders
        if o.order_type is _MARKET
        or o.limit is None  # (not a valid limit order: left for fill_price to refuse)
        or (print_price <= o.limit if o.side is _BUY else print_price >= o.limit)
    ]


def match(
    orders: Iterable[WorkingOrder], prt: Print, session: Session, partial_fills: bool = False
) -> list[Fill]:
    """Fill the working orders (in time priority) that ``prt`` reaches in ``session``.

    With ``partial_fills`` the print's size is shared out in time priority; otherwise every order it reaches
    fills completely.
    """
    fills: list[Fill] = []
    liquidity = prt.size
    for order in orders:
        if order.remaining <= 0 or not can_trade(session, order.outside_rth):
            continue
        price = fill_price(order, prt.price)
        if price is None:
            continue
        quantity = order.remaining
        if partial_fills:
            quantity = min(quantity, liquidity)
            if quantity <= 0:
                break
            liquidity -= quantity
        fills.append(Fill(order.key, quantity, price))
    return fills


def fixed_commission(shares: int, value: Decimal) -> Decimal:
    """IB fixed-pricing commission for an order that has filled ``shares`` for a total of ``value`` dollars."""
    if shares <= 0:
        return ZERO_CENTS
    per_share = FIXED_PER_SHARE * shares
    # The 1% cap wins over the minimum (a small order pays 1% of its value).
    return round_cent(min(max(per_share, FIXED_MIN_PER_ORDER), FIXED_MAX_FRACTION * value))


def execution_commission(filled_before: int, value_before: Decimal, shares: int, price: Decimal) -> Decimal:
    """The commission of one execution: the order's commission after it minus the order's commission before it.

    So the per-order minimum is charged once, on the first execution, as IB does for partial fills.
    """
    before = fixed_commission(filled_before, value_before)
    after = fixed_commission(filled_before + shares, value_before + price * shares)
    return after - before
