"""The lot ledger (DESIGN sections 4 and 5): a pure function from (state, order event) to the next state.

:func:`apply` takes a :class:`proto.messages.GridState` and one order event from the executor and returns the next
state; :func:`step` returns the same plus what the statekeeper must record elsewhere (round trips closed, fee
amendments of closed round trips, notes for the log). No I/O and no clock: the backtester runs this very module.

The rules:

- **Idempotent**: an execution (``exec_id``) is applied once; a repeat, or any event for an order that is already
  final, changes nothing. The state keeps a bounded window of applied executions (``GridState.executions``); the
  statekeeper's journal keeps every execId, so a repeat older than the window is filtered there.
- **Indifferent to order**: fills aggregate per order by sums (shares, exact value, fees), so fills arriving in any
  order give the same lot; an acknowledgement after a fill does not reset it; a commission report before its
  execution waits for it in the window.
- **Lots**: a lot exists once its BUY is completely filled (or cancelled / rejected after a partial fill, with the
  filled quantity). ``purchase_price`` = the BUY's average fill, rounded half-up to 4 decimals (the exact cost is kept
  in ``cost``); its SELL key carries that price and the BUY's attempt; ``sell_target_price`` = round(purchase x
  (1 + sell_markup)). Level 0's lot sets the anchor.
- **Sells**: a SELL fill reduces exactly its own lot, found by the SELL's intent key (or, for an order without one,
  by its permId): never FIFO. The fill that sells the last share closes the lot and yields a :class:`RoundTrip`;
  when the last lot of the cycle closes, the cycle number increases and the cycle's counters reset.
- **Attempts**: ``level0_attempt`` is the highest Level-0 attempt of the cycle that has ended (unfilled, or filled
  into the lot); ``buy_attempts[level]`` the highest attempt of a level >= 1 that bought a lot. The next key of a
  level uses that number + 1 (:func:`next_buy_attempt`). A level-n BUY cancelled with nothing filled does not count:
  its key may be placed again.
- **Working orders** (``GridState.orders``) are the grid orders acknowledged and not yet final, by intent key, with
  their ids and fill progress; a lot's ``sell`` is "live" while its SELL is working, else "parked".
"""

from __future__ import annotations

from bisect import insort_right
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal
from operator import attrgetter
from typing import TypeVar

import msgspec

from core.intent import IntentKey, NotAnIntentKey, Side, parse
from core.prices import SELL_MARKUP, sell_target
from proto.messages import (
    AppliedExecution,
    CommissionReported,
    GridState,
    Lot,
    Message,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderStatusChanged,
    RoundTrip,
    WorkingOrder,
)

# Our own context: results must not depend on what a caller did to the thread's decimal context.
_CTX = Context(prec=34, rounding=ROUND_HALF_UP)
# Average prices (purchase price, average fill, round-trip sell price) are kept to 4 decimals, as IB shows them.
PRICE_QUANTUM = Decimal("0.0001")
# How many recent executions the state remembers for its duplicate filter (a busy day has a few dozen).
EXEC_MEMORY = 256

# IB statuses after which an order can no longer fill.
FINAL_STATUSES = frozenset({"Cancelled", "ApiCancelled", "Inactive"})
# IB statuses of an order working at the exchange (or on its way there / being cancelled).
LIVE_STATUSES = frozenset({"PendingSubmit", "ApiPending", "PreSubmitted", "Submitted", "PendingCancel"})

OrderEvent = (
    OrderAccepted | OrderStatusChanged | OrderFilled | CommissionReported | OrderCancelled | OrderRejected
)

# The order a state keeps its lots and working orders in (attrgetter builds the same tuples as a lambda, in C).
_LOT_ORDER = attrgetter("cycle", "level", "buy_key")
_WORKING_ORDER_ORDER = attrgetter("side", "level", "key")

# The last few states :func:`step` made, each with its working orders by key (the index its book ended with). Such
# a state is in the ledger's order (see _known_orders), so the next event hands its untouched parts on without
# sorting or copying them, and finds its orders without indexing them again; any other state is put in order the
# long way. Only identity is asked, of states held here (an id cannot be reused while they live); a GridState is
# frozen, no one changes its lists, and a book copies an index before it changes it; a state missing here only
# costs time. A tuple, replaced whole, so a reader in another thread never sees it change under it.
_RECENT: tuple[tuple[GridState, dict[str, WorkingOrder]], ...] = ()
_RECENT_MEMORY = 4

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class LedgerRules:
    """The few numbers the ledger needs from config (strategy.sell_markup) and its memory size."""

    sell_markup: Decimal = SELL_MARKUP
    exec_memory: int = EXEC_MEMORY


DEFAULT_RULES = LedgerRules()


@dataclass(frozen=True, slots=True)
class FeeAmendment:
    """A commission that arrived after its round trip closed: the round trip with this key pays ``fee`` more."""

    key: str
    exec_id: str
    fee: Decimal


class Applied(msgspec.Struct, frozen=True):
    """The result of one event: the next state, the round trips it closed, fee amendments, notes for the log.

    A frozen Struct rather than a frozen dataclass: one is made per event, and a frozen dataclass's ``__init__``
    (an ``object.__setattr__`` per field) cost more than a tenth of a backtest's ledger time.
    """

    state: GridState
    changed: bool
    closed: tuple[RoundTrip, ...] = ()
    amended: tuple[FeeAmendment, ...] = ()
    notes: tuple[str, ...] = ()


def apply(state: GridState, event: Message, rules: LedgerRules = DEFAULT_RULES) -> GridState:
    """Return the state after ``event`` (events that are not order events leave it unchanged)."""
    return step(state, event, rules).state


def apply_all(state: GridState, events: Iterable[Message], rules: LedgerRules = DEFAULT_RULES) -> GridState:
    """Apply events in order."""
    for event in events:
        state = step(state, event, rules).state
    return state


def step(state: GridState, event: Message, rules: LedgerRules = DEFAULT_RULES) -> Applied:
    """Apply one event and report what else it did (round trips closed, fees amended, notes)."""
    book = _Book(state, rules)
    match event:
        case OrderFilled():
            book.on_filled(event)
        case CommissionReported():
            book.on_commission(event)
        case OrderAccepted():
            book.on_accepted(event)
        case OrderStatusChanged():
            book.on_status(event)
        case OrderCancelled():
            book.on_final(
                event.key,
                event.perm_id,
                event.order_id,
                event.filled,
                event.avg_fill_price,
                event.ts_ns,
                "cancelled",
            )
        case OrderRejected():
            why = f"rejected ({event.code}: {event.text})"
            book.on_final(event.key, 0, event.order_id, 0, Decimal(0), event.ts_ns, why)
        case _:
            return Applied(state=state, changed=False)
    new_state = book.freeze()
    return Applied(
        state=new_state,
        # A full comparison, and cheap: the parts the event left alone are the very objects of ``state``, and Structs
        # and lists compare an object with itself without looking inside.
        changed=new_state != state,
        closed=tuple(book.closed),
        amended=tuple(book.amended),
        notes=tuple(book.notes),
    )


def next_buy_attempt(state: GridState, level: int) -> int:
    """The attempt number the next BUY of ``level`` in the current cycle must carry (1 for the first)."""
    if level == 0:
        return state.level0_attempt + 1
    return state.buy_attempts.get(level, 0) + 1


def key_finished(state: GridState, key: str) -> bool:
    """True when the order ``key`` filled and is done with (its lot closed): a key that is never placed again."""
    return _Book(state, DEFAULT_RULES).finished(key)


def open_lots_shares(state: GridState) -> int:
    """Shares the grid holds: every lot's quantity less what its SELL already sold, plus BUYs filled so far."""
    held = sum(lot.quantity - lot.sold for lot in state.lots)
    buying = sum(order.filled for order in state.orders if order.side == "BUY")
    return held + buying


def halt(state: GridState, reason: str) -> GridState:
    """The state with trading halted for ``reason``."""
    return msgspec.structs.replace(state, halted=True, halt_reason=reason)


def resume(state: GridState) -> GridState:
    """The state with a halt lifted."""
    return msgspec.structs.replace(state, halted=False, halt_reason="")


def reset(state: GridState) -> GridState:
    """The state after the operator's reset: no lots, no working orders, no anchor, the next cycle.

    The halt flag, the realized P&L and the windows of applied executions and ended orders stay: a fill of the old
    orders replayed later is still recognised, and the new cycle's keys never repeat the old ones.
    """
    return msgspec.structs.replace(
        state, cycle=state.cycle + 1, anchor_price=None, lots=[], orders=[], level0_attempt=0, buy_attempts={}
    )


def average(value: Decimal, shares: int) -> Decimal:
    """``value / shares`` rounded half-up to 4 decimals (0 when no shares)."""
    if shares <= 0:
        return Decimal(0)
    return _CTX.divide(value, Decimal(shares)).quantize(PRICE_QUANTUM, rounding=ROUND_HALF_UP, context=_CTX)


def make_lot(key: IntentKey, quantity: int, cost: Decimal, rules: LedgerRules = DEFAULT_RULES) -> Lot:
    """A parked lot bought under BUY ``key``: purchase price, SELL target and SELL key follow from the cost."""
    purchase = average(cost, quantity)
    return Lot(
        cycle=key.cycle,
        level=key.level,
        quantity=quantity,
        purchase_price=purchase,
        sell_target_price=sell_target(purchase, rules.sell_markup),
        buy_key=key.encode(),
        sell_key=IntentKey.sell(key.cycle, key.level, purchase, key.attempt).encode(),
        cost=cost,
    )


def _grid_key(ref: str) -> IntentKey | None:
    try:
        return parse(ref)
    except NotAnIntentKey:
        return None


def _mul(shares: int, price: Decimal) -> Decimal:
    return _CTX.multiply(Decimal(shares), price)


def _known_orders(state: GridState) -> dict[str, WorkingOrder] | None:
    """The working orders by key of ``state`` when :func:`step` made it, and so it is in the order freeze puts
    every state in; None for any other state.

    That order: lots sorted by (cycle, level, buy key), working orders by (side, level, key) with no key twice, no
    execId twice in the window, ``buy_attempts`` by level. An event applied to such a state by keeping each part in
    that order as it changes gives exactly the state that sorting every part afresh gives.
    """
    for known, orders in _RECENT:
        if known is state:
            return orders
    return None


def _unique_executions(executions: list[AppliedExecution]) -> list[AppliedExecution]:
    """The executions with no execId twice: a repeated one keeps its first place and its last record."""
    return list({rec.exec_id: rec for rec in executions}.values())


def _position(items: list[_T], item: _T) -> int:
    """Where ``item`` itself (not one equal to it) is in ``items``."""
    for index, candidate in enumerate(items):
        if candidate is item:
            return index
    raise ValueError(f"{item!r} is not in the list")


def _window(items: list[_T], memory: int) -> list[_T]:
    """The last ``memory`` items (the very list when it is no longer)."""
    if memory <= 0:
        return []
    return items if len(items) <= memory else items[-memory:]


class _Book:
    """A working view of one GridState while one event is applied; :meth:`freeze` makes the next state.

    Copy-on-write: the book reads the state's own lists and dicts and copies a part only when the event changes it,
    and keeps lots and orders in order as they change, so an event costs what it changes, not what the state holds.
    The next state hands on the parts the event left alone as they are (a GridState is frozen: no one changes its
    lists).
    """

    __slots__ = (
        "base",
        "rules",
        "in_order",
        "cycle",
        "anchor",
        "level0_attempt",
        "buy_attempts",
        "attempts_in_order",
        "realized",
        "lots",
        "orders",
        "orders_shared",
        "order_list",
        "execs",
        "ended",
        "closed",
        "amended",
        "notes",
    )

    def __init__(self, state: GridState, rules: LedgerRules) -> None:
        self.base = state
        self.rules = rules
        # A state step made is in order already (see _known_orders): the book keeps it so. Any other state (read from a
        # file, rescaled for a split, made by a test) is worked on as it is and sorted by freeze, as always.
        known_orders = _known_orders(state)
        self.in_order = in_order = known_orders is not None
        self.cycle = state.cycle
        self.anchor = state.anchor_price
        self.level0_attempt = state.level0_attempt
        self.realized = state.realized_pnl
        # The state's own dict, list and lists until the event changes them (note_attempt, end_order and _own_lots
        # copy them first).
        self.buy_attempts = state.buy_attempts
        # True while buy_attempts is by level (note_attempt appends a level above the others or changes a known one).
        self.attempts_in_order = in_order
        self.ended = state.ended_orders
        self.lots = state.lots
        # Working orders by key (nearly every event looks one up: the index the state was made with, copied before
        # a change) and in their order (side, level, key): the state's own list until an order changes (put_order
        # and drop_order keep both).
        if known_orders is None:
            known_orders = {order.key: order for order in state.orders}
            self.order_list = sorted(known_orders.values(), key=_WORKING_ORDER_ORDER)
        else:
            self.order_list = state.orders
        self.orders: dict[str, WorkingOrder] = known_orders
        self.orders_shared = in_order
        # The window of executions: the state's own list until the event changes it (record_exec). One not in order
        # may repeat an execId; the first place and the last record count, as they always did.
        self.execs = state.executions if in_order else _unique_executions(state.executions)
        self.closed: list[RoundTrip] = []
        self.amended: list[FeeAmendment] = []
        self.notes: list[str] = []

    def freeze(self) -> GridState:
        global _RECENT
        base = self.base
        in_order = self.in_order
        attempts = self.buy_attempts
        if not self.attempts_in_order:
            attempts = dict(sorted(attempts.items()))
        memory = self.rules.exec_memory
        state = msgspec.structs.replace(
            base,
            cycle=self.cycle,
            anchor_price=self.anchor,
            level0_attempt=self.level0_attempt,
            buy_attempts=attempts,
            realized_pnl=self.realized,
            lots=self.lots if in_order else sorted(self.lots, key=_LOT_ORDER),
            orders=self.order_list,
            executions=_window(self.execs, memory),
            ended_orders=_window(self.ended, memory),
        )
        # A tuple replaced whole: a reader in another thread sees the old memory or the new, never a half.
        _RECENT = ((state, self.orders), *_RECENT[: _RECENT_MEMORY - 1])
        return state

    # ------------------------------------------------------------------------------------------ changes

    def _own_lots(self) -> list[Lot]:
        """The book's own list of lots, copied from the state's at the first change."""
        if self.lots is self.base.lots:
            self.lots = list(self.lots)
        return self.lots

    def add_lot(self, lot: Lot) -> None:
        lots = self._own_lots()
        if self.in_order:
            # Where a stable sort of the lots with this one appended puts it: after any of an equal key.
            insort_right(lots, lot, key=_LOT_ORDER)
        else:
            lots.append(lot)

    def replace_lot(self, old: Lot, new: Lot | None) -> None:
        """Put ``new`` where ``old`` was (no caller changes its sort key), or remove ``old``."""
        lots = self._own_lots()
        index = _position(lots, old)
        if new is None:
            del lots[index]
        else:
            lots[index] = new

    def _own_order_list(self) -> list[WorkingOrder]:
        """The book's own list of working orders, copied from the state's at the first change."""
        if self.order_list is self.base.orders:
            self.order_list = list(self.order_list)
        return self.order_list

    def _own_orders(self) -> dict[str, WorkingOrder]:
        """The book's own index of working orders, copied from the state's at the first change."""
        if self.orders_shared:
            self.orders = dict(self.orders)
            self.orders_shared = False
        return self.orders

    def put_order(self, key: str, order: WorkingOrder) -> None:
        """Let ``order`` work under ``key`` (its own key), in place of the order that did."""
        before = self._own_orders().get(key)
        self.orders[key] = order
        listed = self._own_order_list()
        if before is not None:
            index = _position(listed, before)
            if _WORKING_ORDER_ORDER(before) == _WORKING_ORDER_ORDER(order):
                listed[index] = order
                return
            del listed[index]
        insort_right(listed, order, key=_WORKING_ORDER_ORDER)

    def drop_order(self, key: str) -> WorkingOrder | None:
        if key not in self.orders:
            return None
        order = self._own_orders().pop(key)
        listed = self._own_order_list()
        del listed[_position(listed, order)]
        return order

    def find_exec(self, exec_id: str) -> AppliedExecution | None:
        for rec in self.execs:
            if rec.exec_id == exec_id:
                return rec
        return None

    def record_exec(self, rec: AppliedExecution, latest: bool) -> None:
        """Keep ``rec`` in the window of executions, in place of the record of its execId; ``latest`` puts it last
        (it was just applied)."""
        if self.execs is self.base.executions:
            self.execs = list(self.execs)
        execs = self.execs
        for index, known in enumerate(execs):
            if known.exec_id == rec.exec_id:
                if not latest:
                    execs[index] = rec
                    return
                del execs[index]
                break
        execs.append(rec)

    def note_attempt(self, level: int, attempt: int) -> None:
        """A level >= 1 bought a lot under ``attempt``: the highest of the cycle is remembered."""
        attempts = self.buy_attempts
        if attempts is self.base.buy_attempts:
            attempts = self.buy_attempts = dict(attempts)
        if level not in attempts and attempts and level < next(reversed(attempts)):
            # A level below the highest one known: freeze puts the levels back in order.
            self.attempts_in_order = False
        attempts[level] = max(attempts.get(level, 0), attempt)

    def end_order(self, perm_id: int) -> None:
        """Remember that the order ``perm_id`` is final, so a stale report of it cannot bring it back."""
        if perm_id and perm_id not in self.ended:
            if self.ended is self.base.ended_orders:
                self.ended = list(self.ended)
            self.ended.append(perm_id)

    # ------------------------------------------------------------------------------------------ lookups

    def relation(self, current: WorkingOrder | None, perm_id: int, order_id: int) -> str:
        """How a report about order ``perm_id`` relates to the key's working order: "same", "newer" or "older".

        A key has one live order at a time, but a key cancelled unfilled may be placed again, so reports of the old
        and the new order can interleave. The newer order (the higher orderId: IB numbers a client's orders upwards)
        is the working one; reports of the older one are stale.
        """
        if current is None:
            return "same"
        if perm_id and current.perm_id:
            if perm_id == current.perm_id:
                return "same"
        elif not (order_id and current.order_id) or order_id == current.order_id:
            # Without both permIds only the orderIds can tell two orders apart (a rejection has no permId).
            return "same"
        if current.perm_id in self.ended:
            return "newer"
        if order_id and current.order_id and order_id < current.order_id:
            return "older"
        return "newer"

    # The lookups below are plain loops: nearly every event searches the lots, and in CPython 3.11 a loop reading a
    # Struct's fields beats both a generator and map(attrgetter(...)).

    def lot_by_buy_key(self, key: str) -> Lot | None:
        for lot in self.lots:
            if lot.buy_key == key:
                return lot
        return None

    def lot_by_sell_perm_id(self, perm_id: int) -> Lot | None:
        for lot in self.lots:
            if lot.sell_perm_id == perm_id:
                return lot
        return None

    def sell_lot(self, key: str, perm_id: int) -> Lot | None:
        """The lot a SELL order belongs to: by its key, else (an order without a grid key) by its permId."""
        if key:
            for lot in self.lots:
                if lot.sell_key == key:
                    return lot
            if _grid_key(key) is not None:
                return None
        if perm_id:
            return self.lot_by_sell_perm_id(perm_id)
        return None

    def finished(self, key: str) -> bool:
        """True when ``key`` filled and is done: its executions are known but no order or lot carries it."""
        if key in self.orders:
            return False
        for lot in self.lots:
            if lot.buy_key == key or lot.sell_key == key:
                return False
        for rec in self.execs:
            if rec.key == key and rec.shares > 0:
                return True
        return False

    # ------------------------------------------------------------------------------------------ fills

    def on_filled(self, e: OrderFilled) -> None:
        known = self.find_exec(e.exec_id)
        if known is not None and known.shares > 0:
            self.notes.append(f"execution {e.exec_id} already applied; ignored")
            return
        if e.shares <= 0:
            self.notes.append(f"execution {e.exec_id} of {e.key!r} has {e.shares} shares; ignored")
            return
        fee = e.commission if e.commission is not None else (known.commission if known is not None else None)
        key = _grid_key(e.key)
        lot = self.sell_lot(e.key, e.perm_id) if e.side == "SELL" else None
        if key is None and lot is None:
            self.notes.append(
                f"execution {e.exec_id} of a foreign order (orderRef {e.key!r}); not the grid's"
            )
            return
        if key is not None and key.side.value != e.side:
            self.notes.append(f"execution {e.exec_id}: side {e.side} contradicts its key {e.key!r}; ignored")
            return
        order_key = lot.sell_key if lot is not None else e.key
        if e.side == "BUY":
            assert key is not None
            self.buy_fill(key, e, fee or Decimal(0))
        else:
            self.sell_fill(order_key, lot, e, fee or Decimal(0))
        # Recorded last: finished() must not count this very execution as proof that its order is done.
        self.record_exec(
            AppliedExecution(
                exec_id=e.exec_id,
                key=order_key,
                perm_id=e.perm_id,
                side=e.side,
                shares=e.shares,
                price=e.price,
                commission=fee,
            ),
            latest=True,
        )

    def buy_fill(self, key: IntentKey, e: OrderFilled, fee: Decimal) -> None:
        lot = self.lot_by_buy_key(e.key)
        if lot is not None:
            # The lot was made from the BUY's final report before this fill arrived; only its fee is news.
            self.replace_lot(lot, msgspec.structs.replace(lot, fees=lot.fees + fee))
            self.notes.append(
                f"late execution {e.exec_id} of completed BUY {e.key!r}: fee booked, quantity known"
            )
            return
        if self.finished(e.key):
            self.charge_closed(e.key, e.exec_id, fee)
            self.notes.append(f"late execution {e.exec_id} of closed lot's BUY {e.key!r}: fee booked")
            return
        current = self.orders.get(e.key)
        if self.relation(current, e.perm_id, e.order_id) == "newer":
            # The order working under this key was replaced (it ended unfilled; its report is still on its way).
            current = None
        order = current or WorkingOrder(
            key=e.key, side="BUY", level=key.level, quantity=e.order_quantity, limit=Decimal(0)
        )
        order = self.add_fill(order, e, fee)
        if order.quantity > 0 and order.filled >= order.quantity:
            self.drop_order(e.key)
            self.end_order(order.perm_id)
            self.open_lot(
                key, order.filled, order.fill_value, order.fees, order.perm_id, order.last_fill_ts_ns
            )
        else:
            self.put_order(e.key, order)

    def sell_fill(self, order_key: str, lot: Lot | None, e: OrderFilled, fee: Decimal) -> None:
        if lot is None and self.finished(order_key):
            self.charge_closed(order_key, e.exec_id, fee)
            self.notes.append(f"late execution {e.exec_id} of closed lot's SELL {order_key!r}: fee booked")
            return
        order = self.orders.get(order_key)
        relation = self.relation(order, e.perm_id, e.order_id)
        if relation == "newer":
            order = None
        if relation == "older" and lot is not None:
            # A late fill of an earlier SELL of this lot: the shares are sold; the working order is another one.
            order = None
        if order is None:
            level = lot.level if lot is not None else _level_of(order_key)
            remaining = lot.quantity - lot.sold if lot is not None else 0
            order = WorkingOrder(
                key=order_key,
                side="SELL",
                level=level,
                quantity=e.order_quantity or remaining,
                limit=lot.sell_target_price if lot is not None else Decimal(0),
            )
        # The SELL's own fee goes to its lot; an order with no lot yet keeps it until the lot appears.
        order = self.add_fill(order, e, Decimal(0) if lot is not None else fee)
        if relation != "older" or lot is None:
            self.put_order(order_key, order)
        if lot is None:
            self.notes.append(
                f"SELL execution {e.exec_id} of {order_key!r} has no lot (yet); kept on the order"
            )
            return
        sold = lot.sold + e.shares
        lot_after = msgspec.structs.replace(
            lot,
            sold=sold,
            sold_value=lot.sold_value + _mul(e.shares, e.price),
            fees=lot.fees + fee,
            last_sell_ts_ns=max(lot.last_sell_ts_ns, e.exec_ts_ns),
            sell_order_id=lot.sell_order_id or e.order_id or None,
            sell_perm_id=lot.sell_perm_id or e.perm_id or None,
        )
        self.replace_lot(lot, lot_after)
        self.settle_sell(lot_after, order)

    def add_fill(self, order: WorkingOrder, e: OrderFilled, fee: Decimal) -> WorkingOrder:
        filled = order.filled + e.shares
        value = order.fill_value + _mul(e.shares, e.price)
        quantity = max(order.quantity, e.order_quantity)
        return msgspec.structs.replace(
            order,
            quantity=quantity,
            filled=filled,
            fill_value=value,
            avg_fill_price=average(value, filled),
            fees=order.fees + fee,
            last_fill_ts_ns=max(order.last_fill_ts_ns, e.exec_ts_ns),
            order_id=order.order_id or e.order_id,
            perm_id=order.perm_id or e.perm_id,
            status="Filled" if quantity and filled >= quantity else "PartiallyFilled",
        )

    def settle_sell(self, lot: Lot, order: WorkingOrder | None) -> None:
        """Close ``lot`` when it is sold out; drop its SELL order when that order is complete."""
        if order is not None and order.quantity and order.filled >= order.quantity:
            self.end_order(order.perm_id)
        if lot.sold >= lot.quantity:
            if lot.sold > lot.quantity:
                self.notes.append(f"lot {lot.buy_key!r} sold {lot.sold} of {lot.quantity} shares: oversold")
            self.drop_order(lot.sell_key)
            self.close_lot(lot)
        elif order is not None and order.quantity and order.filled >= order.quantity:
            # The SELL was for fewer shares than the lot holds (a hand-edited order): the rest is parked.
            self.drop_order(order.key)
            self.replace_lot(
                lot, msgspec.structs.replace(lot, sell="parked", sell_order_id=None, sell_perm_id=None)
            )

    # ------------------------------------------------------------------------------------------ lots

    def open_lot(
        self, key: IntentKey, quantity: int, cost: Decimal, fees: Decimal, perm_id: int, ts: int
    ) -> None:
        if key.cycle > self.cycle:
            self.notes.append(f"BUY {key.encode()!r} is of cycle {key.cycle}, after the state's {self.cycle}")
            self.new_cycle(key.cycle)
        lot = msgspec.structs.replace(
            make_lot(key, quantity, cost, self.rules), fees=fees, buy_perm_id=perm_id or None, opened_ts_ns=ts
        )
        if key.cycle == self.cycle:
            if key.level == 0:
                self.anchor = lot.purchase_price
                self.level0_attempt = max(self.level0_attempt, key.attempt_number)
            else:
                self.note_attempt(key.level, key.attempt_number)
        else:
            self.notes.append(f"lot of cycle {key.cycle} opened while the grid is in cycle {self.cycle}")
        self.add_lot(lot)
        # A SELL of this lot may have been reported before the lot itself (events out of order).
        pending = self.orders.get(lot.sell_key)
        if pending is not None:
            lot_after = msgspec.structs.replace(
                lot,
                sold=pending.filled,
                sold_value=pending.fill_value,
                fees=lot.fees + pending.fees,
                last_sell_ts_ns=pending.last_fill_ts_ns,
                sell_order_id=pending.order_id or None,
                sell_perm_id=pending.perm_id or None,
                sell="live" if pending.status in LIVE_STATUSES else lot.sell,
            )
            pending = msgspec.structs.replace(pending, fees=Decimal(0))
            self.put_order(lot.sell_key, pending)
            self.replace_lot(lot, lot_after)
            if pending.filled > 0:
                self.settle_sell(lot_after, pending)

    def close_lot(self, lot: Lot) -> None:
        pnl = lot.sold_value - lot.cost - lot.fees
        trip = RoundTrip(
            cycle=lot.cycle,
            level=lot.level,
            quantity=lot.quantity,
            buy_price=lot.purchase_price,
            sell_price=average(lot.sold_value, lot.sold),
            fees=lot.fees,
            realized_pnl=pnl,
            opened_ts_ns=lot.opened_ts_ns,
            closed_ts_ns=lot.last_sell_ts_ns,
            buy_key=lot.buy_key,
            sell_key=lot.sell_key,
        )
        self.replace_lot(lot, None)
        self.realized += pnl
        self.closed.append(trip)
        if lot.cycle == self.cycle and not any(other.cycle == self.cycle for other in self.lots):
            self.new_cycle(self.cycle + 1)

    def new_cycle(self, cycle: int) -> None:
        self.cycle = cycle
        self.anchor = None
        self.level0_attempt = 0
        self.buy_attempts = {}
        self.attempts_in_order = True

    def charge_closed(self, key: str, exec_id: str, fee: Decimal) -> None:
        """A fee for an order whose lot is already closed amends that round trip."""
        if fee:
            self.realized -= fee
            self.amended.append(FeeAmendment(key=key, exec_id=exec_id, fee=fee))

    # ------------------------------------------------------------------------------------------ commissions

    def on_commission(self, e: CommissionReported) -> None:
        rec = self.find_exec(e.exec_id)
        if rec is not None and rec.commission is not None:
            self.notes.append(f"commission of execution {e.exec_id} already booked; ignored")
            return
        if rec is None:
            # Reported before its execution: wait for it in the window.
            self.record_exec(
                AppliedExecution(exec_id=e.exec_id, key=e.key, commission=e.commission), latest=False
            )
            return
        self.record_exec(msgspec.structs.replace(rec, commission=e.commission), latest=False)
        if rec.shares == 0:
            return
        fee = e.commission
        order = self.orders.get(rec.key)
        if rec.side == "BUY":
            lot = self.lot_by_buy_key(rec.key)
            if order is not None:
                self.put_order(rec.key, msgspec.structs.replace(order, fees=order.fees + fee))
            elif lot is not None:
                self.replace_lot(lot, msgspec.structs.replace(lot, fees=lot.fees + fee))
            else:
                self.charge_closed(rec.key, e.exec_id, fee)
            return
        lot = self.sell_lot(rec.key, rec.perm_id)
        if lot is not None:
            self.replace_lot(lot, msgspec.structs.replace(lot, fees=lot.fees + fee))
        elif order is not None:
            self.put_order(rec.key, msgspec.structs.replace(order, fees=order.fees + fee))
        else:
            self.charge_closed(rec.key, e.exec_id, fee)

    # ------------------------------------------------------------------------------------------ order status

    def on_accepted(self, e: OrderAccepted) -> None:
        lot = self.sell_lot(e.key, e.perm_id) if e.side == "SELL" else None
        key = _grid_key(e.key)
        if key is None and lot is None:
            return
        order_key = lot.sell_key if lot is not None else e.key
        if e.side == "BUY" and self.lot_by_buy_key(e.key) is not None:
            return
        if self.finished(order_key) or e.perm_id in self.ended:
            return
        current = self.orders.get(order_key)
        relation = self.relation(current, e.perm_id, e.order_id)
        if relation == "older":
            return
        order = (current if relation == "same" else None) or WorkingOrder(
            key=order_key,
            side=e.side,
            level=lot.level if lot is not None else _level_of(order_key),
            quantity=e.quantity,
            limit=e.limit,
            placed_ts_ns=e.ts_ns,
        )
        self.put_order(
            order_key,
            msgspec.structs.replace(
                order,
                quantity=e.quantity or order.quantity,
                limit=e.limit,
                order_id=e.order_id or order.order_id,
                perm_id=e.perm_id or order.perm_id,
                # A fill may have come first; its status says more than the acknowledgement.
                status=order.status if order.filled else e.status,
            ),
        )
        if lot is not None:
            self.replace_lot(
                lot,
                msgspec.structs.replace(
                    lot, sell="live", sell_order_id=e.order_id or None, sell_perm_id=e.perm_id or None
                ),
            )

    def on_status(self, e: OrderStatusChanged) -> None:
        if e.status in FINAL_STATUSES:
            self.on_final(
                e.key, e.perm_id, e.order_id, e.filled, e.avg_fill_price, e.ts_ns, f"status {e.status}"
            )
            return
        order_key = e.key
        lot = None
        if _grid_key(e.key) is None:
            lot = self.lot_by_sell_perm_id(e.perm_id) if e.perm_id else None
            if lot is None:
                return
            order_key = lot.sell_key
        order = self.orders.get(order_key)
        if order is None or e.perm_id in self.ended or self.relation(order, e.perm_id, e.order_id) != "same":
            return
        self.put_order(
            order_key,
            msgspec.structs.replace(
                order,
                status=e.status,
                order_id=order.order_id or e.order_id,
                perm_id=order.perm_id or e.perm_id,
            ),
        )

    def on_final(
        self, ref: str, perm_id: int, order_id: int, filled: int, avg: Decimal, ts: int, why: str
    ) -> None:
        """An order ended without filling completely (cancelled, rejected, inactive)."""
        key = _grid_key(ref)
        lot = self.sell_lot(ref, perm_id)
        if perm_id in self.ended:
            return
        if lot is not None:
            if self.relation(self.orders.get(lot.sell_key), perm_id, order_id) != "same":
                self.end_order(perm_id)
                return
            self.end_order(perm_id)
            order = self.drop_order(lot.sell_key)
            if order is not None and filled > order.filled:
                self.notes.append(
                    f"SELL {lot.sell_key!r} {why} with {filled} filled but only {order.filled} seen; "
                    "the missing executions come from the executor or reconciliation"
                )
            self.replace_lot(
                lot, msgspec.structs.replace(lot, sell="parked", sell_order_id=None, sell_perm_id=None)
            )
            return
        if key is None:
            return
        relation = self.relation(self.orders.get(ref), perm_id, order_id)
        self.end_order(perm_id)
        if relation != "same":
            # Another order works under this key now; this one ended (unfilled, or its fills made the lot).
            if filled == 0 and key.side is Side.BUY and key.level == 0 and key.cycle == self.cycle:
                self.level0_attempt = max(self.level0_attempt, key.attempt_number)
            return
        if key.side is Side.SELL:
            self.drop_order(ref)
            return
        if self.lot_by_buy_key(ref) is not None or self.finished(ref):
            return
        order = self.drop_order(ref)
        seen = order.filled if order is not None else 0
        total = max(filled, seen)
        if total <= 0:
            if key.level == 0 and key.cycle == self.cycle:
                self.level0_attempt = max(self.level0_attempt, key.attempt_number)
            self.notes.append(f"BUY {ref!r} {why} with nothing filled")
            return
        if order is not None and seen == total:
            cost = order.fill_value
        elif avg > 0:
            cost = _mul(total, avg)
        elif order is not None and seen > 0:
            cost = _CTX.divide(_mul(total, order.fill_value), Decimal(seen))
        else:
            self.notes.append(
                f"BUY {ref!r} {why} with {total} filled but no price known; reconciliation will adopt the lot"
            )
            return
        fees = order.fees if order is not None else Decimal(0)
        perm = (order.perm_id if order is not None else 0) or perm_id
        opened = (order.last_fill_ts_ns if order is not None else 0) or ts
        self.notes.append(f"BUY {ref!r} {why} after {total} shares: the lot holds {total}")
        self.open_lot(key, total, cost, fees, perm, opened)


def _level_of(ref: str) -> int:
    key = _grid_key(ref)
    return key.level if key is not None else -1
