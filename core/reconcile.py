"""Reconciliation (DESIGN section 6): the state compared with the broker's snapshot, repaired where that is explained.

:func:`reconcile` is pure: (state, BrokerSnapshot, lot map, rules) -> :class:`Reconciliation`. It works in three
passes.

1. **Catch up** (explained, applied through the ledger as ordinary events): executions the state has not seen
   (fills while the system was down: a BUY that completed becomes a lot, a SELL that filled closes its lot);
   completed orders (a cancel after a partial BUY fill makes the lot; a SELL reported filled without executions,
   e.g. from an earlier day, closes its lot at the order's average price); the open orders' ids and status; and
   the state's working orders and live SELLs that the broker no longer has (they ended while we were away).
2. **Adopt** (explained): an open grid SELL (its orderRef an intent key) with no lot becomes a lot again, rebuilt
   from its key (cycle, level, attempt, purchase price) and the order (quantity, filled, limit). An open SELL
   without an intent key (the older single-script bot's) is matched through the lot map by its quantity, when
   exactly one level that the grid does not hold has that quantity. Adopting lots of a later cycle moves the state
   to that cycle; a Level-0 lot, or an open grid BUY's limit (a trigger), gives back a lost anchor.
3. **Check** (findings; what is not explained halts trading): SELLs without an intent key whose quantity several
   free levels share (ambiguous: the plan assigns them by price, the lowest limit to the deepest level; ``apply``
   carries that out); foreign orders on the symbol; two open SELLs for one lot; grid BUYs outside the queue
   (explained: the strategy cancels them); the broker's position against lots + partial BUY fills +
   ``external_shares``; lots with no anchor.

The plan lists what ``apply`` would do (automatic steps) and what only the operator can do (cancel a foreign
order in TWS, correct ``statekeeper.external_shares``, ...).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Context, Decimal

import msgspec

from core.intent import IntentKey, NotAnIntentKey, Side, parse
from core.ledger import (
    DEFAULT_RULES,
    FINAL_STATUSES,
    Applied,
    LedgerRules,
    key_finished,
    open_lots_shares,
    step,
)
from core.lotmap import LotMap
from core.prices import QUEUED_LEVELS, SELL_MARKUP, STEP, buy_queue, to_cent, trigger_chain
from proto.messages import (
    BrokerSnapshot,
    CommissionReported,
    ExecutionInfo,
    GridState,
    Lot,
    Message,
    OpenOrderInfo,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    ReconcileFinding,
    ReconcileReport,
)

_CTX = Context(prec=34, rounding=ROUND_HALF_UP)
# How far (in cents) around the first estimate an anchor is searched for when it is rebuilt from a trigger.
_ANCHOR_SEARCH_CENTS = 200

# Finding kinds.
CAUGHT_UP = "caught_up"
ORDER_GONE = "order_gone"
SELL_GONE = "sell_gone"
ADOPTED = "adopted_sell"
ADOPTED_LEGACY = "adopted_legacy_sell"
AMBIGUOUS_LEGACY = "ambiguous_legacy_sell"
FOREIGN_ORDER = "foreign_order"
DUPLICATE_SELL = "duplicate_sell"
DUPLICATE_BUY = "duplicate_buy"
UNEXPECTED_BUY = "unexpected_buy"
POSITION_MISMATCH = "position_mismatch"
ANCHOR_REBUILT = "anchor_rebuilt"
ANCHOR_UNKNOWN = "anchor_unknown"
BROKER_UNAVAILABLE = "broker_unavailable"


@dataclass(frozen=True, slots=True)
class ReconcileRules:
    """What reconciliation needs from config."""

    symbol: str
    external_shares: int = 0
    sell_markup: Decimal = SELL_MARKUP
    step: Decimal = STEP
    queued_levels: int = QUEUED_LEVELS

    @property
    def ledger(self) -> LedgerRules:
        return LedgerRules(sell_markup=self.sell_markup, exec_memory=DEFAULT_RULES.exec_memory)


@dataclass(frozen=True, slots=True)
class PlanStep:
    """One repair: ``automatic`` ones are carried out by ``gridbot reconcile --apply``, the others by the operator."""

    kind: str
    text: str
    automatic: bool
    perm_id: int = 0
    level: int = -1


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """The outcome: the events applied to catch up (each with its ledger result), the repaired state, findings, plan."""

    state: GridState
    caught_up: tuple[tuple[Message, Applied], ...] = ()
    findings: tuple[ReconcileFinding, ...] = ()
    plan: tuple[PlanStep, ...] = ()
    applied: bool = False

    @property
    def consistent(self) -> bool:
        return all(f.explained for f in self.findings)

    @property
    def unexplained(self) -> tuple[ReconcileFinding, ...]:
        return tuple(f for f in self.findings if not f.explained)

    def report(self, ts_ns: int = 0) -> ReconcileReport:
        return ReconcileReport(
            ts_ns=ts_ns,
            consistent=self.consistent,
            findings=list(self.findings),
            plan=[("apply: " if s.automatic else "operator: ") + s.text for s in self.plan],
            applied=self.applied,
        )

    def summary(self) -> str:
        """One line naming what is unexplained (for the halt reason and the alert)."""
        bad = self.unexplained
        if not bad:
            return "consistent"
        kinds = sorted({f.kind for f in bad})
        return f"{len(bad)} unexplained finding(s) ({', '.join(kinds)}): {bad[0].detail}"


@dataclass
class _Work:
    state: GridState
    rules: ReconcileRules
    caught_up: list[tuple[Message, Applied]] = field(default_factory=list)
    findings: list[ReconcileFinding] = field(default_factory=list)
    plan: list[PlanStep] = field(default_factory=list)

    def find(self, kind: str, detail: str, explained: bool) -> None:
        self.findings.append(ReconcileFinding(kind=kind, detail=detail, explained=explained))

    def feed(self, event: Message) -> Applied:
        result = step(self.state, event, self.rules.ledger)
        if result.changed or result.closed or result.amended:
            self.caught_up.append((event, result))
        self.state = result.state
        return result


def reconcile(
    state: GridState,
    snapshot: BrokerSnapshot,
    lot_map: LotMap,
    rules: ReconcileRules,
    *,
    known_exec_ids: Iterable[str] = (),
    apply: bool = False,
) -> Reconciliation:
    """Compare ``state`` with ``snapshot`` and repair what is explained; ``apply`` also carries out the plan.

    ``known_exec_ids``: executions the caller's journal has applied already (skipped even when the state's own
    window has forgotten them).
    """
    if not snapshot.connected:
        finding = ReconcileFinding(
            kind=BROKER_UNAVAILABLE,
            detail="the executor is not connected to the broker (or not synced yet); nothing can be compared",
            explained=False,
        )
        step_ = PlanStep(
            "wait", "wait until the executor is connected, then reconcile again", automatic=False
        )
        return Reconciliation(state=state, findings=(finding,), plan=(step_,))
    work = _Work(state=state, rules=rules)
    open_orders = [o for o in snapshot.orders if o.symbol == rules.symbol and o.status not in FINAL_STATUSES]
    completed = [o for o in snapshot.completed if o.symbol == rules.symbol]
    _catch_up(work, snapshot, open_orders, completed, frozenset(known_exec_ids))
    legacy = _adopt_grid_sells(work, open_orders)
    _check_foreign(work, legacy, lot_map, apply)
    _check_sells(work, open_orders)
    _check_buys(work, open_orders, lot_map)
    _check_anchor(work, open_orders, apply)
    _check_position(work, snapshot)
    return Reconciliation(
        state=work.state,
        caught_up=tuple(work.caught_up),
        findings=tuple(work.findings),
        plan=tuple(work.plan),
        applied=apply,
    )


# --------------------------------------------------------------------------------------------- 1. catch up


def _catch_up(
    work: _Work,
    snapshot: BrokerSnapshot,
    open_orders: list[OpenOrderInfo],
    completed: list[OpenOrderInfo],
    known: frozenset[str],
) -> None:
    orders_by_perm = {o.perm_id: o for o in [*completed, *open_orders] if o.perm_id}
    executed_perms: set[int] = set()
    recovered = 0
    for execution in sorted(snapshot.executions, key=lambda e: (e.exec_ts_ns, e.exec_id)):
        executed_perms.add(execution.perm_id)
        if execution.exec_id not in known:
            order = orders_by_perm.get(execution.perm_id)
            result = work.feed(_as_fill(execution, order.quantity if order is not None else 0))
            if result.changed:
                recovered += 1
        if execution.commission is not None and _commission_missing(work.state, execution.exec_id):
            # A commission report missed while away (the ledger books each execution's commission once).
            work.feed(
                CommissionReported(
                    exec_id=execution.exec_id, key=execution.key, commission=execution.commission
                )
            )
    if recovered:
        work.find(CAUGHT_UP, f"{recovered} execution(s) applied that the state had not seen", True)
    for order in completed:
        if order.status == "Filled":
            _close_from_completed(work, order, executed_perms, known)
        elif order.status in FINAL_STATUSES:
            result = work.feed(
                OrderCancelled(
                    key=order.key,
                    order_id=order.order_id,
                    perm_id=order.perm_id,
                    filled=order.filled,
                    avg_fill_price=order.avg_fill_price,
                    reason=f"completed at the broker ({order.status})",
                )
            )
            if result.changed:
                work.find(ORDER_GONE, f"{_describe(order)} ended at the broker ({order.status})", True)
    for order in open_orders:
        work.feed(
            OrderAccepted(
                key=order.key,
                order_id=order.order_id,
                perm_id=order.perm_id,
                side=order.side,
                quantity=order.quantity,
                limit=order.limit,
                status=order.status,
                client_id=order.client_id,
            )
        )
    _end_what_the_broker_lacks(work, open_orders)


def _commission_missing(state: GridState, exec_id: str) -> bool:
    return any(rec.exec_id == exec_id and rec.commission is None for rec in state.executions)


def _as_fill(execution: ExecutionInfo, order_quantity: int) -> OrderFilled:
    return OrderFilled(
        ts_ns=execution.exec_ts_ns,
        key=execution.key,
        exec_id=execution.exec_id,
        order_id=execution.order_id,
        perm_id=execution.perm_id,
        side=execution.side,
        shares=execution.shares,
        price=execution.price,
        cum_qty=execution.cum_qty,
        avg_price=execution.avg_price,
        exec_ts_ns=execution.exec_ts_ns,
        order_quantity=order_quantity,
        commission=execution.commission,
        recovered=True,
    )


def _close_from_completed(
    work: _Work, order: OpenOrderInfo, executed: set[int], known: frozenset[str]
) -> None:
    """A completed, filled order whose executions the snapshot lacks (an earlier day's): book it at its average."""
    exec_id = f"completed:{order.perm_id}"
    if order.perm_id in executed or exec_id in known or order.filled <= 0 or order.avg_fill_price <= 0:
        return
    key = _key(order.key)
    if key is None and not any(lot.sell_perm_id == order.perm_id for lot in work.state.lots):
        return
    shares = order.filled
    if order.side == "SELL":
        lot = next(
            (
                lot
                for lot in work.state.lots
                if lot.sell_key == order.key or lot.sell_perm_id == order.perm_id
            ),
            None,
        )
        if lot is None:
            return
        shares = lot.quantity - lot.sold
    else:
        working = next((o for o in work.state.orders if o.key == order.key), None)
        shares = order.filled - (working.filled if working is not None else 0)
    if shares <= 0:
        return
    result = work.feed(
        OrderFilled(
            key=order.key,
            exec_id=exec_id,
            order_id=order.order_id,
            perm_id=order.perm_id,
            side=order.side,
            shares=shares,
            price=order.avg_fill_price,
            cum_qty=order.filled,
            avg_price=order.avg_fill_price,
            exec_ts_ns=0,
            order_quantity=order.quantity,
            recovered=True,
        )
    )
    if result.changed:
        work.find(
            CAUGHT_UP,
            f"{_describe(order)} filled while the system was away (no executions left at the broker); "
            f"booked {shares} shares at its average {order.avg_fill_price}",
            True,
        )


def _end_what_the_broker_lacks(work: _Work, open_orders: list[OpenOrderInfo]) -> None:
    """Working orders and live SELLs the broker no longer has ended while we were away."""
    open_keys = {o.key for o in open_orders}
    open_perms = {o.perm_id for o in open_orders if o.perm_id}
    for order in list(work.state.orders):
        if order.key in open_keys or (order.perm_id and order.perm_id in open_perms):
            continue
        work.feed(
            OrderCancelled(
                key=order.key,
                order_id=order.order_id,
                perm_id=order.perm_id,
                filled=order.filled,
                avg_fill_price=order.avg_fill_price,
                reason="not at the broker",
            )
        )
        work.find(ORDER_GONE, f"{order.side} {order.key!r} is no longer at the broker; dropped", True)
    for lot in list(work.state.lots):
        if lot.sell != "live" or lot.sell_key in open_keys or (lot.sell_perm_id or 0) in open_perms:
            continue
        result = work.feed(
            OrderCancelled(
                key=lot.sell_key, order_id=lot.sell_order_id or 0, perm_id=lot.sell_perm_id or 0, filled=0
            )
        )
        if result.changed:
            work.find(
                SELL_GONE, f"the SELL of lot {lot.buy_key!r} is no longer at the broker; lot parked", True
            )


# --------------------------------------------------------------------------------------------- 2. adopt


def _adopt_grid_sells(work: _Work, open_orders: list[OpenOrderInfo]) -> list[OpenOrderInfo]:
    """Make lots of open grid SELLs that have none; return the open orders without an intent key."""
    foreign: list[OpenOrderInfo] = []
    for order in sorted(open_orders, key=lambda o: (o.side, o.limit, o.perm_id)):
        key = _key(order.key)
        if key is None:
            if not any(lot.sell_perm_id == order.perm_id for lot in work.state.lots if order.perm_id):
                foreign.append(order)
            continue
        if key.side is not Side.SELL or any(lot.sell_key == order.key for lot in work.state.lots):
            continue
        if key_finished(work.state, order.key):
            work.find(
                DUPLICATE_SELL,
                f"{_describe(order)} is open but its lot is already closed (the key filled before)",
                False,
            )
            work.plan.append(PlanStep("cancel", f"cancel {_describe(order)} in TWS", False, order.perm_id))
            continue
        assert key.purchase_price is not None  # a SELL key always carries it
        quantity = max(order.quantity, order.filled + 1)
        lot = Lot(
            cycle=key.cycle,
            level=key.level,
            quantity=quantity,
            purchase_price=key.purchase_price,
            sell_target_price=order.limit,
            buy_key=IntentKey.buy(key.cycle, key.level, key.attempt).encode(),
            sell_key=order.key,
            sold=order.filled,
            cost=_CTX.multiply(key.purchase_price, Decimal(quantity)),
            sold_value=_CTX.multiply(order.avg_fill_price, Decimal(order.filled)),
        )
        _add_lot(work, lot, key.attempt_number)
        _accept(work, order, order.key)
        work.find(
            ADOPTED,
            f"{_describe(order)} had no lot: rebuilt lot level {key.level} of cycle {key.cycle}, "
            f"{quantity} shares bought at {key.purchase_price}",
            True,
        )
    return foreign


def _add_lot(work: _Work, lot: Lot, attempt: int) -> None:
    state = work.state
    cycle = state.cycle
    anchor = state.anchor_price
    level0 = state.level0_attempt
    attempts = dict(state.buy_attempts)
    if lot.cycle > cycle:
        cycle, anchor, level0, attempts = lot.cycle, None, 0, {}
    if lot.cycle == cycle:
        if lot.level == 0:
            anchor = lot.purchase_price
            level0 = max(level0, attempt)
        else:
            attempts[lot.level] = max(attempts.get(lot.level, 0), attempt)
    lots = sorted([*state.lots, lot], key=lambda x: (x.cycle, x.level, x.buy_key))
    work.state = msgspec.structs.replace(
        state,
        cycle=cycle,
        anchor_price=anchor,
        level0_attempt=level0,
        buy_attempts=dict(sorted(attempts.items())),
        lots=lots,
    )


def _accept(work: _Work, order: OpenOrderInfo, key: str) -> None:
    work.feed(
        OrderAccepted(
            key=key,
            order_id=order.order_id,
            perm_id=order.perm_id,
            side=order.side,
            quantity=order.quantity,
            limit=order.limit,
            status=order.status,
            client_id=order.client_id,
        )
    )


def _legacy_lot(work: _Work, order: OpenOrderInfo, level: int) -> Lot:
    """A lot for an older bot's SELL: its purchase price estimated from the SELL's limit (limit / (1 + markup))."""
    state = work.state
    attempt = state.buy_attempts.get(level, 0) + 1 if level else state.level0_attempt + 1
    purchase = to_cent(_CTX.divide(order.limit, _CTX.add(1, work.rules.sell_markup)))
    quantity = max(order.quantity, order.filled + 1)
    return Lot(
        cycle=state.cycle,
        level=level,
        quantity=quantity,
        purchase_price=purchase,
        sell_target_price=order.limit,
        buy_key=IntentKey.buy(state.cycle, level, attempt).encode(),
        sell_key=IntentKey.sell(state.cycle, level, purchase, attempt).encode(),
        sell_perm_id=order.perm_id or None,
        sell_order_id=order.order_id or None,
        sold=order.filled,
        cost=_CTX.multiply(purchase, Decimal(quantity)),
        sold_value=_CTX.multiply(order.avg_fill_price, Decimal(order.filled)),
    )


def _adopt_legacy(work: _Work, order: OpenOrderInfo, level: int, why: str, explained: bool) -> None:
    lot = _legacy_lot(work, order, level)
    attempt = parse(lot.buy_key).attempt_number
    _add_lot(work, lot, attempt)
    # The order has no intent key: its events reach the lot by permId.
    _accept(work, order, "")
    work.find(
        ADOPTED_LEGACY if explained else AMBIGUOUS_LEGACY,
        f"{_describe(order)} (no intent key) adopted as level {level}, {why}; purchase price estimated "
        f"{lot.purchase_price} from its limit",
        explained,
    )


# --------------------------------------------------------------------------------------------- 3. check


def _check_foreign(work: _Work, foreign: list[OpenOrderInfo], lot_map: LotMap, apply: bool) -> None:
    """Orders without an intent key: the older bot's SELLs matched through the lot map, the rest reported."""
    held = {lot.level for lot in work.state.lots if lot.cycle == work.state.cycle}
    sells = [o for o in foreign if o.side == "SELL"]
    by_quantity: dict[int, list[OpenOrderInfo]] = {}
    for order in sells:
        by_quantity.setdefault(order.quantity, []).append(order)
    for quantity, orders in sorted(by_quantity.items()):
        free = [level for level, shares in enumerate(lot_map) if shares == quantity and level not in held]
        if len(free) == 1 and len(orders) == 1:
            _adopt_legacy(work, orders[0], free[0], f"the only free level of {quantity} shares", True)
            held.add(free[0])
            continue
        if not free:
            for order in orders:
                _report_foreign(work, order, f"no free level of the lot map has {quantity} shares")
            continue
        # Ambiguous. The grid buys its levels in order, so the shallowest free levels are the likely ones; among
        # them the higher the limit, the shallower the level (SELL targets fall with the level).
        ranked = sorted(orders, key=lambda o: (-o.limit, o.perm_id))
        levels = sorted(free)
        for n, order in enumerate(ranked):
            if n >= len(levels):
                _report_foreign(work, order, f"more SELLs of {quantity} shares than free levels {levels}")
                continue
            level = levels[n]
            text = (
                f"adopt {_describe(order)} as level {level} (free levels {_span(levels)} all have {quantity} "
                "shares; assigned in order of price: the highest limit to the shallowest level)"
            )
            if apply:
                _adopt_legacy(work, order, level, "by price order (operator's --apply)", True)
                held.add(level)
            else:
                work.find(
                    AMBIGUOUS_LEGACY,
                    f"{_describe(order)} (no intent key): free levels {_span(levels)} fit",
                    False,
                )
                work.plan.append(PlanStep("adopt_legacy", text, True, order.perm_id, level))
    for order in foreign:
        if order.side == "BUY":
            _report_foreign(work, order, "a BUY the grid did not place")


def _report_foreign(work: _Work, order: OpenOrderInfo, why: str) -> None:
    work.find(FOREIGN_ORDER, f"{_describe(order)} is not the grid's: {why}", False)
    work.plan.append(
        PlanStep(
            "cancel",
            f"cancel {_describe(order)} in TWS (or let it finish and count its shares in "
            "statekeeper.external_shares), then run `gridbot reconcile` again",
            False,
            order.perm_id,
        )
    )


def _check_sells(work: _Work, open_orders: list[OpenOrderInfo]) -> None:
    """Every open grid SELL belongs to one lot, and no lot has two."""
    per_lot: dict[str, list[OpenOrderInfo]] = {}
    for order in open_orders:
        if order.side != "SELL":
            continue
        lot = next(
            (
                lot
                for lot in work.state.lots
                if lot.sell_key == order.key or lot.sell_perm_id == order.perm_id
            ),
            None,
        )
        if lot is not None:
            per_lot.setdefault(lot.buy_key, []).append(order)
    for buy_key, orders in per_lot.items():
        if len(orders) > 1:
            lot = next(lot for lot in work.state.lots if lot.buy_key == buy_key)
            extra = [o for o in orders if o.perm_id != lot.sell_perm_id] or orders[1:]
            work.find(
                DUPLICATE_SELL,
                f"lot {buy_key!r} has {len(orders)} open SELLs: " + ", ".join(_describe(o) for o in orders),
                False,
            )
            for order in extra:
                work.plan.append(
                    PlanStep("cancel", f"cancel the extra {_describe(order)} in TWS", False, order.perm_id)
                )


def _check_buys(work: _Work, open_orders: list[OpenOrderInfo], lot_map: LotMap) -> None:
    """Open grid BUYs against the queue the grid wants (others are cancelled by the strategy)."""
    state = work.state
    held = [lot.level for lot in state.lots if lot.cycle == state.cycle and lot.level < len(lot_map)]
    queue = set(buy_queue(held, len(lot_map), work.rules.queued_levels)) if held else {0}
    for order in open_orders:
        key = _key(order.key)
        if key is None or key.side is not Side.BUY:
            continue
        if any(lot.buy_key == order.key for lot in state.lots):
            work.find(DUPLICATE_BUY, f"{_describe(order)} is open but its lot exists", False)
            work.plan.append(PlanStep("cancel", f"cancel {_describe(order)} in TWS", False, order.perm_id))
        elif key.cycle != state.cycle or key.level not in queue:
            where = f"cycle {key.cycle}" if key.cycle != state.cycle else f"level {key.level}"
            work.find(
                UNEXPECTED_BUY,
                f"{_describe(order)} is outside the queue ({where}; queue {sorted(queue)} of cycle {state.cycle}); "
                "the strategy cancels it",
                True,
            )


def _check_anchor(work: _Work, open_orders: list[OpenOrderInfo], apply: bool) -> None:
    state = work.state
    if state.anchor_price is not None or not any(lot.cycle == state.cycle for lot in state.lots):
        return
    for order in sorted(open_orders, key=lambda o: o.perm_id):
        key = _key(order.key)
        if key is None or key.side is not Side.BUY or key.cycle != state.cycle or key.level == 0:
            continue
        anchor = anchor_for_trigger(key.level, order.limit, work.rules.step)
        if anchor is not None:
            work.state = msgspec.structs.replace(state, anchor_price=anchor)
            work.find(
                ANCHOR_REBUILT,
                f"anchor rebuilt as {anchor} from {_describe(order)} (its limit is trigger({key.level}))",
                True,
            )
            return
    # Last resort: the shallowest lot was bought near its trigger, so a chain through its purchase price (to the
    # cent) is a fair estimate; it is only an estimate, so it waits for the operator's --apply.
    shallowest = min((lot for lot in state.lots if lot.cycle == state.cycle), key=lambda lot: lot.level)
    purchase = to_cent(shallowest.purchase_price)
    estimate = (
        purchase if shallowest.level == 0 else anchor_for_trigger(shallowest.level, purchase, work.rules.step)
    )
    if estimate is not None and apply:
        work.state = msgspec.structs.replace(state, anchor_price=estimate)
        work.find(
            ANCHOR_REBUILT,
            f"anchor set to {estimate}, estimated from the level-{shallowest.level} lot bought at "
            f"{shallowest.purchase_price} (operator's --apply)",
            True,
        )
        return
    work.find(
        ANCHOR_UNKNOWN,
        f"lots of cycle {state.cycle} are held but its anchor (Level 0's price) is lost",
        False,
    )
    if estimate is not None:
        work.plan.append(
            PlanStep(
                "anchor",
                f"set the anchor to {estimate}: the chain of triggers through the level-{shallowest.level} lot's "
                f'purchase price {purchase} (an estimate; or set "anchor_price" in the state file yourself)',
                True,
            )
        )
    else:
        work.plan.append(
            PlanStep(
                "anchor",
                'stop the statekeeper, set "anchor_price" in the state file to Level 0\'s purchase price, '
                "start it again",
                False,
            )
        )


def _check_position(work: _Work, snapshot: BrokerSnapshot) -> None:
    symbol = work.rules.symbol
    broker = sum(p.quantity for p in snapshot.positions if p.symbol == symbol)
    grid = open_lots_shares(work.state)
    external = work.rules.external_shares
    if broker == grid + external:
        return
    work.find(
        POSITION_MISMATCH,
        f"the broker holds {broker} {symbol}; the grid accounts for {grid} (lots and partial BUY fills) + "
        f"{external} held outside the grid (statekeeper.external_shares) = {grid + external}",
        False,
    )
    work.plan.append(
        PlanStep(
            "position",
            f"find the {abs(broker - grid - external)} shares' story: if they are yours outside the grid, set "
            f"statekeeper.external_shares = {broker - grid}; if a lot was sold by hand, remove it from the state "
            "file (statekeeper stopped); then run `gridbot reconcile` again",
            False,
        )
    )


# --------------------------------------------------------------------------------------------- helpers


def anchor_for_trigger(level: int, trigger: Decimal, step_: Decimal = STEP) -> Decimal | None:
    """An anchor whose trigger chain passes through ``trigger`` at ``level`` (so every deeper trigger matches)."""
    if level <= 0 or trigger <= 0:
        return None
    estimate = to_cent(_CTX.divide(trigger, _CTX.power(_CTX.subtract(1, step_), level)))
    cent = Decimal("0.01")
    for distance in range(_ANCHOR_SEARCH_CENTS + 1):
        for candidate in {estimate - distance * cent, estimate + distance * cent}:
            if candidate > 0 and trigger_chain(candidate, level + 1, step_)[level] == trigger:
                return candidate
    return None


def _span(levels: list[int]) -> str:
    """``[68, 69, 70]`` -> ``68-70``; ``[3, 7]`` -> ``3, 7``."""
    if len(levels) > 2 and levels == list(range(levels[0], levels[-1] + 1)):
        return f"{levels[0]}-{levels[-1]}"
    return ", ".join(str(level) for level in levels)


def _key(ref: str) -> IntentKey | None:
    try:
        return parse(ref)
    except NotAnIntentKey:
        return None


def _describe(order: OpenOrderInfo) -> str:
    ref = f" {order.key!r}" if order.key else ""
    return f"{order.side} {order.quantity} @ {order.limit} permId {order.perm_id}{ref}"
