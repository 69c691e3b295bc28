"""The paper broker's order engine: placement, modification, cancellation, triggers, fills, expiry, the account.

No sockets here: each operation takes the simulated time and returns the events it caused, which the broker turns
into wire messages for the owning client. Matching and session rules come from the pure cores in core/.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from operator import attrgetter, itemgetter

from core import matching, sessions
from core.matching import OrderType, PriceCondition, Side
from sim.broker import contracts
from sim.broker.account import Account
from sim.broker.orders import (
    CANCELLED,
    FILLED,
    PRE_SUBMITTED,
    SUBMITTED,
    BrokerOrder,
    ClientError,
    Condition,
    Event,
    Execution,
    OrderAcknowledged,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderWarning,
    PortfolioChanged,
    StatusChange,
)
from sim.broker.requests import OrderTicket

log = logging.getLogger("sim.broker.engine")

# IB: "at most 20 active orders per contract per side per account" (TWS API, Order Limitations).
MAX_ACTIVE_PER_SIDE = 20
FIRST_PERM_ID = 1_000_000_001
AVG_PRICE_PLACES = Decimal("0.00000001")


# Matching's enums by the broker's strings (validated at placement: BUY/SELL, LMT/MKT); the enum call is the
# fallback, so an unexpected string fails exactly as before.
_SIDES = {side.value: side for side in Side}
_ORDER_TYPES = {kind.value: kind for kind in OrderType}
_BY_SEQ = attrgetter("seq")
_BY_FIRST = itemgetter(0)
# The exchanges a PriceCondition may name (an empty one is no exchange).
_CONDITION_EXCHANGES = contracts.KNOWN_EXCHANGES - {""}


def _snapshot(order: BrokerOrder) -> BrokerOrder:
    """A shallow copy of ``order`` (a snapshot for an event): what ``copy.copy`` makes of a plain dataclass
    (a new instance sharing the attribute values), without its generic reduce protocol."""
    snapshot = object.__new__(type(order))
    snapshot.__dict__ = order.__dict__.copy()  # (twice as fast as filling the new instance's own dict)
    return snapshot


def _reason(text: str) -> str:
    return f"Order rejected - reason:{text}"


@dataclass
class LastPrint:
    price: Decimal
    size: int
    ts_ns: int
    # Shares of this print not yet taken by orders (partial-fill mode only).
    liquidity: int


@dataclass
class Engine:
    account: Account
    # The time the state was first created (wall clock, seconds): a prefix that keeps execIds and permIds of a
    # fresh state directory apart from those of an earlier one that a bot's journal may still hold.
    epoch_s: int
    partial_fills: bool = False
    orders: dict[int, BrokerOrder] = field(default_factory=dict)
    # The orders not yet Filled or Cancelled (a subset of ``orders``): every print looks at these only.
    live: dict[int, BrokerOrder] = field(default_factory=dict)
    by_client: dict[tuple[int, int], int] = field(default_factory=dict)
    next_ids: dict[int, int] = field(default_factory=dict)
    executions: list[Execution] = field(default_factory=list)
    next_perm_id: int = 0
    next_exec_seq: int = 1
    next_seq: int = 1
    last: LastPrint | None = None
    # Set by the reject-next control: the next new order is rejected with this error code.
    reject_next: int | None = None
    # The stretch of time (within one US/Eastern day) that the last instant asked about lies in, and its session:
    # every print and placement asks for the session of its instant, and consecutive instants mostly share one.
    _session_span: sessions.SessionSpan | None = field(default=None, init=False, repr=False, compare=False)
    # What every print reads of the live orders, kept up to date by _index at every change of an order (placed,
    # restored, modified, triggered, filled, finished) instead of being rebuilt from the orders at each print:
    # - matching's view of each working order (live, conditions met), by permId;
    _book: dict[int, matching.WorkingOrder] = field(default_factory=dict, init=False, repr=False, compare=False)
    # - each live order still waiting for its conditions, as (seq, order, its conditions as matching evaluates
    #   them), by permId (seq first: the entries sort by it into placement order);
    _waiting: dict[int, tuple[int, BrokerOrder, list[PriceCondition]]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    # - the live orders that time may act on (advance): those with a DAY expiry, and those held for their session
    #   (PreSubmitted, conditions met), by permId (advance checks each again: one more is only looked at);
    _timed: dict[int, BrokerOrder] = field(default_factory=dict, init=False, repr=False, compare=False)
    # - the number of live orders per side (IB's cap per side is checked at every placement).
    _live_per_side: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.next_perm_id:
            # Spread fresh states over 1e9..2e9 by their creation time, within IB's 32-bit permId range.
            self.next_perm_id = FIRST_PERM_ID + (self.epoch_s % 1_000_000) * 1000
        # Live orders handed in at construction (not through add_order) are kept and indexed as add_order does.
        handed_in = list(self.live.values())
        self.live.clear()
        for order in handed_in:
            if not order.done:
                self._add_live(order)

    def _session_at(self, now_ns: int) -> sessions.Session:
        """:func:`core.sessions.session_at`, looked up in the calendar once per stretch of one session."""
        span = self._session_span
        if span is None or not span.start_ns <= now_ns < span.end_ns:
            span = self._session_span = sessions.session_span(now_ns)
        return span.session

    # --- queries -------------------------------------------------------------------------------------------------

    def next_valid_id(self, client_id: int) -> int:
        return self.next_ids.get(client_id, 1)

    def open_orders(self, client_id: int | None = None) -> list[BrokerOrder]:
        """The live orders (of ``client_id``, or all) in the order they were placed (``live`` is kept so)."""
        if client_id is None:
            return list(self.live.values())
        return [o for o in self.live.values() if o.client_id == client_id]

    def add_order(self, order: BrokerOrder) -> None:
        """Index an order (a new one, or one read back from the state directory)."""
        self.orders[order.perm_id] = order
        self.by_client[(order.client_id, order.order_id)] = order.perm_id
        if not order.done:
            self._add_live(order)

    def _add_live(self, order: BrokerOrder) -> None:
        """Make ``order`` live: kept in placement order, counted on its side, indexed for the prints."""
        newest = next(reversed(self.live.values()), None)
        self.live[order.perm_id] = order
        if newest is not None and newest.seq > order.seq:
            # ``live`` is kept in placement (seq) order: prints, open orders and global cancels go in that order.
            # New orders come in that order; this only re-sorts orders read back or handed in out of order.
            in_order = sorted(self.live.values(), key=_BY_SEQ)
            self.live.clear()
            self.live.update((o.perm_id, o) for o in in_order)
        self._live_per_side[order.action] = self._live_per_side.get(order.action, 0) + 1
        self._index(order)

    def _index(self, order: BrokerOrder) -> None:
        """Bring what prints read of the live ``order`` (``_book``, ``_waiting``, ``_timed``) up to date after it
        changed (placed, restored, modified, triggered, partly filled, activated)."""
        perm_id = order.perm_id
        if order.expires_ns is not None or (order.status == PRE_SUBMITTED and order.triggered):
            self._timed[perm_id] = order
        else:
            self._timed.pop(perm_id, None)
        if order.triggered:
            self._waiting.pop(perm_id, None)
            self._book[perm_id] = matching.WorkingOrder(  # (key, side, order_type, limit, remaining, outside_rth)
                perm_id,
                _SIDES.get(order.action) or Side(order.action),
                _ORDER_TYPES.get(order.order_type) or OrderType(order.order_type),
                order.limit,
                order.remaining,
                order.outside_rth,
            )
        else:
            self._book.pop(perm_id, None)
            self._waiting[perm_id] = (
                order.seq,
                order,
                [PriceCondition(c.is_more, c.price, c.conjunction != "o") for c in order.conditions],
            )

    def _unindex(self, perm_id: int) -> None:
        """Forget what prints read of an order that is done."""
        self._book.pop(perm_id, None)
        self._waiting.pop(perm_id, None)
        self._timed.pop(perm_id, None)

    def completed_orders(self, since_ns: int) -> list[BrokerOrder]:
        return [
            o for o in sorted(self.orders.values(), key=lambda o: o.completed_ns or 0)
            if o.done and (o.completed_ns or 0) >= since_ns
        ]

    def mark(self) -> Decimal | None:
        return self.last.price if self.last else None

    # --- placement -----------------------------------------------------------------------------------------------

    def place(self, client_id: int, ticket: OrderTicket, now_ns: int) -> list[Event]:
        """placeOrder: a new order, or a modification of an open one with the same (clientId, orderId)."""
        perm_id = self.by_client.get((client_id, ticket.order_id))
        if perm_id is not None:
            existing = self.orders[perm_id]
            if existing.status == FILLED:
                return [ClientError(client_id, ticket.order_id, 104, "Can't modify a filled order.")]
            if existing.done:
                return [ClientError(client_id, ticket.order_id, 103, "Duplicate order id")]
            return self._modify(existing, ticket, now_ns)
        if ticket.order_id < self.next_ids.get(client_id, 1):
            return [ClientError(client_id, ticket.order_id, 103, "Duplicate order id")]
        self.next_ids[client_id] = ticket.order_id + 1

        code, text = self._validate(ticket, now_ns, new=True)
        if code:
            return self._reject_new(client_id, ticket, now_ns, code, text)
        order = self._new_order(client_id, ticket, now_ns)
        events: list[Event] = [OrderAcknowledged(_snapshot(order))]
        if (
            order.order_type == "LMT"
            and not order.outside_rth
            and self._session_at(now_ns) is not sessions.Session.REGULAR
        ):
            opens = datetime.fromtimestamp(sessions.next_regular_open_ns(now_ns) / 1e9, tz=sessions.EASTERN)
            events.append(OrderWarning(_snapshot(order), 399, (
                f"Order Message:\n{order.action} {order.quantity} TQQQ NASDAQ.NMS\n"
                f"Warning: your order will not be placed at the exchange until "
                f"{opens:%Y-%m-%d %H:%M:%S} US/Eastern"
            )))
        events += self._arrive(order, now_ns)
        return events

    def _validate(self, t: OrderTicket, now_ns: int, new: bool) -> tuple[int, str]:
        """Return (0, '') when the ticket is acceptable, else (error code, message)."""
        if new and self.reject_next is not None:
            code, self.reject_next = self.reject_next, None
            return code, _reason("rejected by the paper broker's reject-next control")
        if t.sec_type_is_bag or contracts.lookup(
            t.contract.con_id, t.contract.symbol, t.contract.sec_type, t.contract.currency
        ) is None:
            return 200, "No security definition has been found for the request"
        if t.action not in ("BUY", "SELL"):
            return 201, _reason(f"action must be BUY or SELL, was {t.action!r}")
        qty = t.total_quantity
        if qty is None or qty <= 0 or qty != qty.to_integral_value():
            return 201, _reason(f"totalQuantity must be a positive whole number of shares, was {qty}")
        if t.order_type not in ("LMT", "MKT"):
            return 201, _reason(f"order type {t.order_type!r} is not supported by the paper broker (LMT, MKT)")
        if t.order_type == "LMT":
            if t.lmt_price is None or t.lmt_price <= 0:
                return 201, _reason(f"a LMT order needs a positive lmtPrice, was {t.lmt_price}")
            if t.lmt_price % contracts.TQQQ.min_tick:
                return 110, "The price does not conform to the minimum price variation for this contract."
        if t.tif not in ("", "DAY", "GTC"):
            return 201, _reason(f"time in force {t.tif!r} is not supported by the paper broker (DAY, GTC)")
        if t.order_type == "MKT" and self._session_at(now_ns) is not sessions.Session.REGULAR:
            return 201, _reason("market orders are accepted during regular trading hours only (09:30-16:00 ET)")
        if not t.transmit or t.parent_id or t.oca_group:
            return 201, _reason("untransmitted, bracket (parentId) and OCA orders are not supported by the paper broker")
        if t.account and t.account != self.account.account_id:
            return 201, _reason(f"account {t.account!r} is not this paper account ({self.account.account_id})")
        for i, cond in enumerate(t.conditions):
            if cond.cond_type != 1:
                return 201, _reason(f"condition {i}: only PriceCondition is supported by the paper broker")
            if (
                contracts.by_con_id(cond.con_id) is None
                or cond.exchange.upper() not in _CONDITION_EXCHANGES
                or cond.price is None
            ):
                return 398, "Condition trigger error: Please provide valid financial instrument"
        if new:
            side_active = self._live_per_side.get(t.action, 0)
            if side_active >= MAX_ACTIVE_PER_SIDE:
                return 201, _reason(
                    f"the account already has {side_active} active {t.action} orders for TQQQ; IB allows at most "
                    f"{MAX_ACTIVE_PER_SIDE} active orders per contract per side"
                )
        return 0, ""

    def _reject_new(self, client_id: int, t: OrderTicket, now_ns: int, code: int, text: str) -> list[Event]:
        """Record a refused order (so reports and completed orders show it) and tell its client."""
        order = self._make_order(client_id, t, now_ns)
        self._finish(order, CANCELLED, now_ns, f"rejected {code}: {text}")
        self.add_order(order)  # finished already: recorded, never live (it may be of a type matching cannot take)
        return [OrderRejected(client_id, t.order_id, code, text)]

    def _new_order(self, client_id: int, t: OrderTicket, now_ns: int) -> BrokerOrder:
        """Make, record and start working an accepted order."""
        order = self._make_order(client_id, t, now_ns)
        if order.tif == "DAY":
            order.expires_ns = sessions.day_order_expiry_ns(now_ns, order.outside_rth)
        order.set_status(self._working_status(order, now_ns), now_ns, "placed")
        self.add_order(order)
        return order

    def _make_order(self, client_id: int, t: OrderTicket, now_ns: int) -> BrokerOrder:
        """The broker's record of ``t``, with the next permId and seq."""
        qty = t.total_quantity if t.total_quantity is not None else Decimal(0)
        # The required fields by position (here and for the Execution in _fill): a class called with keywords
        # gets them as a dict, which costs as much as the rest of the record (test_broker_engine checks the fields).
        order = BrokerOrder(
            self.next_perm_id,  # perm_id
            client_id,
            t.order_id,
            self.account.account_id,  # account
            contracts.TQQQ.con_id,  # con_id
            t.action,
            int(qty) if qty == qty.to_integral_value() else 0,  # quantity
            t.order_type,
            _cents(t.lmt_price) if t.order_type == "LMT" else None,  # limit
            t.tif or "DAY",  # tif
            t.outside_rth,
            t.order_ref,
            now_ns,  # placed_ns
            self.next_seq,  # seq
        )
        if t.conditions:
            order.conditions = _conditions(t)
            order.triggered = False
        order.conditions_ignore_rth = t.conditions_ignore_rth
        order.conditions_cancel_order = t.conditions_cancel_order
        self.next_perm_id += 1
        self.next_seq += 1
        return order

    def _working_status(self, order: BrokerOrder, now_ns: int) -> str:
        """Submitted when the order works at the exchange now; PreSubmitted while held (condition, session)."""
        if order.triggered and sessions.can_trade(self._session_at(now_ns), order.outside_rth):
            return SUBMITTED
        return PRE_SUBMITTED

    def _modify(self, order: BrokerOrder, t: OrderTicket, now_ns: int) -> list[Event]:
        if t.action != order.action or t.order_type != order.order_type:
            return [ClientError(order.client_id, order.order_id, 105,
                                "Order being modified does not match original order.")]
        code, text = self._validate(t, now_ns, new=False)
        if not code and t.total_quantity is not None and t.total_quantity <= order.filled:
            code, text = 201, _reason(f"the new quantity {t.total_quantity} does not exceed the filled {order.filled}")
        if code:
            return [ClientError(order.client_id, order.order_id, code, text)]
        new_conditions = _conditions(t)
        if new_conditions != order.conditions:
            order.conditions = new_conditions
            order.triggered = not new_conditions
        order.quantity = int(t.total_quantity or 0)
        order.limit = _cents(t.lmt_price) if order.order_type == "LMT" else None
        if (t.tif or "DAY") != order.tif or t.outside_rth != order.outside_rth:
            order.tif = t.tif or "DAY"
            order.outside_rth = t.outside_rth
            order.expires_ns = (
                sessions.day_order_expiry_ns(now_ns, order.outside_rth) if order.tif == "DAY" else None
            )
        order.order_ref = t.order_ref
        order.conditions_ignore_rth = t.conditions_ignore_rth
        order.conditions_cancel_order = t.conditions_cancel_order
        order.set_status(self._working_status(order, now_ns), now_ns, "modified")
        self._index(order)
        return [OrderAcknowledged(_snapshot(order)), *self._arrive(order, now_ns)]

    # --- cancellation --------------------------------------------------------------------------------------------

    def cancel(self, client_id: int, order_id: int, now_ns: int) -> list[Event]:
        perm_id = self.by_client.get((client_id, order_id))
        if perm_id is None:
            return [ClientError(client_id, order_id, 10147,
                                f"OrderId {order_id} that needs to be cancelled is not found.")]
        order = self.orders[perm_id]
        if order.done:
            return [ClientError(client_id, order_id, 10148,
                                f"OrderId {order_id} that needs to be cancelled cannot be cancelled, "
                                f"state: {order.status}.")]
        self._finish(order, CANCELLED, now_ns, "cancelled by the client")
        return [OrderCancelled(_snapshot(order), "")]

    def global_cancel(self, now_ns: int) -> list[Event]:
        events: list[Event] = []
        for order in self.open_orders():
            self._finish(order, CANCELLED, now_ns, "global cancel")
            events.append(OrderCancelled(_snapshot(order), ""))
        return events

    def _finish(self, order: BrokerOrder, status: str, now_ns: int, note: str) -> None:
        order.set_status(status, now_ns, note)
        order.completed_ns = now_ns
        order.completed_status = note
        if self.live.pop(order.perm_id, None) is not None:
            self._live_per_side[order.action] -= 1
        self._unindex(order.perm_id)

    # --- the market ----------------------------------------------------------------------------------------------

    def on_print(self, price: Decimal, size: int, now_ns: int) -> list[Event]:
        """A trade print: trigger conditions, then fill what it reaches."""
        self.last = LastPrint(price, size, now_ns, size)
        events = self.advance(now_ns)
        if self._waiting:
            # In placement order, as the reports go out.
            events += self._trigger(sorted(self._waiting.values(), key=_BY_FIRST), now_ns)
        if self._book:
            events += self._match(self._book.values(), now_ns, arrival=False)
        return events

    def advance(self, now_ns: int) -> list[Event]:
        """Time moved: expire DAY orders past their session, activate held orders whose session opened."""
        events: list[Event] = []
        if not self._timed:
            return events
        for order in sorted(self._timed.values(), key=_BY_SEQ):  # in placement order, as the reports go out
            if order.expires_ns is not None and now_ns >= order.expires_ns:
                self._finish(order, CANCELLED, now_ns, "DAY order expired at the end of its session")
                events.append(OrderCancelled(_snapshot(order), "expired at the end of its session (DAY)"))
            elif order.status == PRE_SUBMITTED and self._working_status(order, now_ns) == SUBMITTED:
                order.set_status(SUBMITTED, now_ns, "session open")
                self._index(order)
                events.append(OrderAcknowledged(_snapshot(order)))
        return events

    def _arrive(self, order: BrokerOrder, now_ns: int) -> list[Event]:
        """A new or modified ``order`` against the last print: its conditions first, then matching."""
        if self.last is None:
            return []
        waiting = self._waiting.get(order.perm_id)
        events = self._trigger([waiting], now_ns) if waiting is not None else []
        entry = self._book.get(order.perm_id)
        if entry is not None:
            events += self._match([entry], now_ns, arrival=True)
        return events

    def _trigger(self, waiting: list[tuple[int, BrokerOrder, list[PriceCondition]]], now_ns: int) -> list[Event]:
        """Check the conditions of ``waiting`` orders (entries of ``_waiting``) against the last print."""
        assert self.last is not None, "conditions are checked against a print"
        events: list[Event] = []
        session = self._session_at(now_ns)
        last = self.last.price
        for _, order, conditions in waiting:
            if not matching.conditions_may_trigger(session, order.conditions_ignore_rth):
                continue
            if not matching.conditions_hold(conditions, last):
                continue
            if order.conditions_cancel_order:
                self._finish(order, CANCELLED, now_ns, f"condition met at {last}: conditionsCancelOrder")
                events.append(OrderCancelled(_snapshot(order), "condition met (conditionsCancelOrder)"))
                continue
            order.triggered = True
            order.set_status(self._working_status(order, now_ns), now_ns, f"condition met at {last}")
            self._index(order)
            events.append(OrderAcknowledged(_snapshot(order)))
        return events

    def _match(self, book: Iterable[matching.WorkingOrder], now_ns: int, arrival: bool) -> list[Event]:
        """Fill what the last print reaches of ``book`` (working orders, in any order)."""
        assert self.last is not None, "orders are matched against a print"
        # A print reaches few of the resting orders: matching sees only those, in time priority (placement order).
        reached = matching.reachable(book, self.last.price)
        if not reached:
            return []
        if len(reached) > 1:
            reached.sort(key=self._seq_of)
        liquidity = self.last.liquidity if self.partial_fills else self.last.size
        fills = matching.match(
            reached, matching.Print(self.last.price, liquidity), self._session_at(now_ns), self.partial_fills
        )
        if not fills:
            return []
        events: list[Event] = []
        for fill in fills:
            self.last.liquidity -= fill.quantity
            events.append(self._fill(self.orders[fill.key], fill.quantity, fill.price, now_ns, arrival))
        events.append(PortfolioChanged())
        return events

    def _seq_of(self, entry: matching.WorkingOrder) -> int:
        return self.orders[entry.key].seq

    def _fill(self, order: BrokerOrder, shares: int, price: Decimal, now_ns: int, arrival: bool) -> OrderFilled:
        commission = matching.execution_commission(order.filled, order.fill_value, shares, price)
        order.filled += shares
        order.fill_value += price * shares
        order.last_fill_price = price
        order.commission += commission
        realized = self.account.apply_execution(order.action == "BUY", shares, price, commission)
        execution = Execution(  # by position, as the BrokerOrder in _make_order
            f"{self.next_exec_seq:08x}.{self.epoch_s & 0xFFFFFFFF:08x}.01.01",  # exec_id
            order.perm_id,
            order.client_id,
            order.order_id,
            order.account,
            order.con_id,
            "BOT" if order.action == "BUY" else "SLD",  # side
            shares,
            price,
            order.filled,  # cum_qty
            order.avg_fill_price.quantize(AVG_PRICE_PLACES),  # avg_price
            now_ns,  # ts_ns
            order.order_ref,
            commission,
            realized,  # realized_pnl
        )
        if arrival:
            execution.liquidity = 2  # it took liquidity (the default: it added liquidity, a resting order)
        self.next_exec_seq += 1
        self.executions.append(execution)
        order.exec_ids.append(execution.exec_id)
        if order.filled >= order.quantity:
            self._finish(order, FILLED, now_ns, f"filled {order.filled} @ avg {execution.avg_price}")
        else:
            order.history.append(StatusChange(now_ns, order.status, f"partial fill {shares} @ {price}"))
            self._index(order)
        return OrderFilled(_snapshot(order), execution)


def _conditions(t: OrderTicket) -> list[Condition]:
    return [
        Condition(  # (is_more, price, con_id, exchange, trigger_method, conjunction): by position, as in _make_order
            c.is_more, _cents(c.price) or Decimal(0), c.con_id, c.exchange, c.trigger_method, c.conjunction or "a"
        )
        for c in t.conditions
        if c.cond_type == 1
    ]


def _cents(price: Decimal | None) -> Decimal | None:
    """Prices as the broker keeps them: Decimals to the cent (the clients send floats like '52.0')."""
    return None if price is None else matching.round_cent(price)
