"""The broker side of a backtest: the paper broker's own engine, behind the executor's rules and events. In-process.

The orders are matched by :class:`sim.broker.engine.Engine`, the very engine the simulated exchange runs (its
triggers, ``outsideRth`` and session rules, DAY expiry, IB's 20-per-side cap, the commissions, all through
``core.matching`` and ``core.sessions``). What the executor does between the strategy and IB is mirrored here:

- a PlaceOrder for a key that is live or already filled is a duplicate (nothing is placed); a slot that holds a
  live order, or a side at its cap (``broker.max_live_buys`` / ``strategy.max_live_sells``) refuses it;
- an immediate order (Level 0) not final within ``broker.immediate_order_timeout`` is cancelled;
- the broker's reports become the executor's ``proto`` events, in the order the executor publishes them
  (docs/executor.md, "Events"): ``OrderAccepted`` at the first acknowledgement, ``OrderStatusChanged`` for a later
  status or fill count, one ``OrderFilled`` per execution followed by its ``CommissionReported``,
  ``OrderCancelled`` (with the executor's own reason when it asked), ``OrderRejected``.

Without sockets there is no latency: an order is acknowledged, and if marketable filled against the last print, at
the instant it is placed; a cancel is confirmed at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from core import sessions
from core.intent import parse
from gridbot.backtest.paths import Watch
from proto.messages import (
    CancelOrder,
    CommissionReported,
    Message,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderStatusChanged,
    PlaceOrder,
)
from sim.broker import contracts
from sim.broker.account import Account
from sim.broker.engine import Engine
from sim.broker.orders import (
    PRE_SUBMITTED,
    BrokerOrder,
)
from sim.broker.orders import (
    OrderAcknowledged as EngineAcknowledged,
)
from sim.broker.orders import (
    OrderCancelled as EngineCancelled,
)
from sim.broker.orders import (
    OrderFilled as EngineFilled,
)
from sim.broker.orders import (
    OrderRejected as EngineRejected,
)
from sim.broker.requests import ConditionSpec, ContractRef, OrderTicket

CLIENT_ID = 17
ACCOUNT_ID = "DU0BACKTEST"
IMMEDIATE_TIMEOUT_REASON = "immediate order not final within broker.immediate_order_timeout"
_CONTRACT = ContractRef(
    contracts.TQQQ.con_id, contracts.TQQQ.symbol, "STK", "", "0", "", "", "SMART", "NASDAQ", "USD", "", ""
)


@dataclass(frozen=True, slots=True)
class Limits:
    """The executor's caps and its timeout for immediate orders (config broker.*, strategy.max_live_sells)."""

    max_live_buys: int = 4
    max_live_sells: int = 18
    immediate_timeout_ns: int = 120 * 1_000_000_000


@dataclass(slots=True)
class _Known:
    """What the executor has published about one order (to tell a first acknowledgement from a change)."""

    key: str
    accepted: bool = False
    status: str = ""
    filled: int = 0
    final: bool = False
    cancel_reason: str = ""


@dataclass
class Counters:
    placed: int = 0
    cancelled: int = 0
    duplicates: int = 0
    refused: int = 0
    timed_out: int = 0
    refusals: list[str] = field(default_factory=list)


class SimulatedBroker:
    """The paper broker's engine plus the executor's rules, driven by one caller at simulated times."""

    def __init__(self, limits: Limits, partial_fills: bool = False, cash: Decimal = Decimal(10**9)) -> None:
        self.limits = limits
        # epoch 0: execIds and permIds are the same in every run of the same data.
        self.engine = Engine(Account(ACCOUNT_ID, cash), epoch_s=0, partial_fills=partial_fills)
        self.counters = Counters()
        self._next_order_id = 1
        self._known: dict[int, _Known] = {}
        self._by_order_id: dict[int, str] = {}
        # Keys that filled (even partly): never placed again (the executor answers them as duplicates).
        self._filled_keys: set[str] = set()
        self._deadlines: dict[int, int] = {}

    # ------------------------------------------------------------------------------------------ commands

    def execute(self, cmd: PlaceOrder | CancelOrder, now_ns: int) -> list[Message]:
        """Carry out one of the strategy's commands as the executor would; return the events it caused."""
        if isinstance(cmd, PlaceOrder):
            return self._place(cmd, now_ns)
        return self._cancel(cmd.key, cmd.reason or "cancelled by the strategy", now_ns)

    def _place(self, cmd: PlaceOrder, now_ns: int) -> list[Message]:
        if cmd.key in self._filled_keys:
            self.counters.duplicates += 1
            return []
        slot = parse(cmd.key).slot
        same_side = 0
        for order in self.engine.live.values():
            if order.order_ref == cmd.key:
                self.counters.duplicates += 1
                return []
            if order.action == cmd.side and _is_grid(order.order_ref):
                same_side += 1
                if parse(order.order_ref).slot == slot:
                    return self._refuse(f"{cmd.key!r}: its slot already has a live order")
        cap = self.limits.max_live_buys if cmd.side == "BUY" else self.limits.max_live_sells
        if same_side >= cap:
            return self._refuse(f"{cmd.key!r}: {same_side} live grid {cmd.side}s already (cap {cap})")
        order_id = self._next_order_id
        self._next_order_id += 1
        self._by_order_id[order_id] = cmd.key
        self.counters.placed += 1
        events = self._convert(self.engine.place(CLIENT_ID, _ticket(order_id, cmd), now_ns), now_ns)
        if cmd.immediate:
            perm = self.engine.by_client.get((CLIENT_ID, order_id))
            if perm is not None and perm in self.engine.live:
                self._deadlines[perm] = now_ns + self.limits.immediate_timeout_ns
        return events

    def _refuse(self, why: str) -> list[Message]:
        self.counters.refused += 1
        if len(self.counters.refusals) < 20:
            self.counters.refusals.append(why)
        return []

    def _cancel(self, key: str, reason: str, now_ns: int) -> list[Message]:
        order = next((o for o in self.engine.live.values() if o.order_ref == key), None)
        if order is None:
            return []
        self._known[order.perm_id].cancel_reason = reason
        self.counters.cancelled += 1
        return self._convert(self.engine.cancel(CLIENT_ID, order.order_id, now_ns), now_ns)

    def cancel_all(self, reason: str, now_ns: int) -> list[Message]:
        """Cancel every live order (a split: IB cancels open orders on a corporate action)."""
        events: list[Message] = []
        for order in list(self.engine.live.values()):
            events += self._cancel(order.order_ref, reason, now_ns)
        return events

    # ------------------------------------------------------------------------------------------ the market

    def on_print(self, price: Decimal, size: int, now_ns: int) -> list[Message]:
        """A trade print: the engine's triggers and fills."""
        return self._convert(self.engine.on_print(price, size, now_ns), now_ns)

    def timeouts(self, now_ns: int) -> list[Message]:
        """The executor's immediate-order timeouts due by ``now_ns``, each at its deadline (after the engine's own
        DAY expiries and session opens up to it). The engine's time up to ``now_ns`` itself moves with the print
        (``on_print``) or :meth:`advance`."""
        events: list[Message] = []
        for perm, deadline in sorted(self._deadlines.items(), key=lambda item: item[1]):
            if deadline > now_ns:
                break
            del self._deadlines[perm]
            events += self._convert(self.engine.advance(deadline), deadline)
            order = self.engine.live.get(perm)
            if order is not None:
                self.counters.timed_out += 1
                events += self._cancel(order.order_ref, IMMEDIATE_TIMEOUT_REASON, deadline)
        return events

    def advance(self, now_ns: int) -> list[Message]:
        """Let time act up to ``now_ns`` without a print: timeouts, DAY expiries, session opens."""
        return self.timeouts(now_ns) + self._convert(self.engine.advance(now_ns), now_ns)

    def watch(self, now_ns: int) -> Watch:
        """The prices and the time at which the broker or the executor next has something to do."""
        buy_at: Decimal | None = None
        sell_at: Decimal | None = None
        due: list[int] = [d for perm, d in self._deadlines.items() if perm in self.engine.live]
        every = False
        for order in self.engine.live.values():
            if order.expires_ns is not None:
                due.append(order.expires_ns)
            if order.triggered:
                if order.status == PRE_SUBMITTED:
                    due.append(next_session_change(now_ns))
                if order.limit is None:
                    every = True  # a market order takes the next print
                elif order.action == "BUY":
                    buy_at = order.limit if buy_at is None else max(buy_at, order.limit)
                else:
                    sell_at = order.limit if sell_at is None else min(sell_at, order.limit)
                continue
            for cond in order.conditions:
                if cond.is_more:
                    sell_at = cond.price if sell_at is None else min(sell_at, cond.price)
                else:
                    buy_at = cond.price if buy_at is None else max(buy_at, cond.price)
        return Watch(buy_at=buy_at, sell_at=sell_at, due_ns=min(due) if due else None, every=every)

    # ------------------------------------------------------------------------------------------ events

    def _convert(self, events: Iterable[object], now_ns: int) -> list[Message]:
        out: list[Message] = []
        for event in events:
            match event:
                case EngineAcknowledged(order=order):
                    out += self._on_status(order, now_ns)
                case EngineFilled(order=order, execution=ex):
                    key = order.order_ref
                    self._filled_keys.add(key)
                    out.append(
                        OrderFilled(
                            ts_ns=now_ns,
                            key=key,
                            exec_id=ex.exec_id,
                            order_id=ex.order_id,
                            perm_id=ex.perm_id,
                            side="BUY" if order.action == "BUY" else "SELL",
                            shares=ex.shares,
                            price=ex.price,
                            cum_qty=ex.cum_qty,
                            avg_price=ex.avg_price,
                            exec_ts_ns=ex.ts_ns,
                            order_quantity=order.quantity,
                        )
                    )
                    out += self._on_status(order, now_ns)
                    out.append(
                        CommissionReported(
                            ts_ns=now_ns,
                            exec_id=ex.exec_id,
                            key=key,
                            commission=ex.commission,
                            realized_pnl=ex.realized_pnl,
                        )
                    )
                case EngineCancelled(order=order, reason=reason):
                    known = self._known_of(order)
                    if known.final:
                        continue
                    known.final = True
                    known.status = order.status
                    self._deadlines.pop(order.perm_id, None)
                    out.append(
                        OrderCancelled(
                            ts_ns=now_ns,
                            key=order.order_ref,
                            order_id=order.order_id,
                            perm_id=order.perm_id,
                            filled=order.filled,
                            reason=known.cancel_reason or f"IB 202: Order Canceled - reason:{reason}",
                            avg_fill_price=_avg(order),
                        )
                    )
                case EngineRejected(order_id=order_id, code=code, text=text):
                    out.append(
                        OrderRejected(
                            ts_ns=now_ns, key=self._by_order_id.get(order_id, ""), order_id=order_id,
                            code=code, text=text,
                        )
                    )
                case _:
                    pass  # warnings (399), client errors, portfolio updates: logged by the executor, no event
        return out

    def _known_of(self, order: BrokerOrder) -> _Known:
        known = self._known.get(order.perm_id)
        if known is None:
            known = self._known[order.perm_id] = _Known(order.order_ref)
        return known

    def _on_status(self, order: BrokerOrder, now_ns: int) -> list[Message]:
        known = self._known_of(order)
        if known.final:
            return []
        out: list[Message] = []
        first = not known.accepted
        if first:
            known.accepted = True
            out.append(
                OrderAccepted(
                    ts_ns=now_ns,
                    key=order.order_ref,
                    order_id=order.order_id,
                    perm_id=order.perm_id,
                    side="BUY" if order.action == "BUY" else "SELL",
                    quantity=order.quantity,
                    limit=order.limit if order.limit is not None else Decimal(0),
                    status=order.status,
                    client_id=CLIENT_ID,
                )
            )
        changed = (order.status, order.filled) != (known.status, known.filled)
        known.status, known.filled = order.status, order.filled
        if order.done:
            known.final = True
            self._deadlines.pop(order.perm_id, None)
        if changed and not (first and order.filled == 0):
            out.append(
                OrderStatusChanged(
                    ts_ns=now_ns,
                    key=order.order_ref,
                    order_id=order.order_id,
                    perm_id=order.perm_id,
                    status=order.status,
                    filled=order.filled,
                    remaining=max(order.quantity - order.filled, 0),
                    avg_fill_price=_avg(order),
                )
            )
        return out

    # ------------------------------------------------------------------------------------------ splits

    def split(self, ratio: Decimal) -> None:
        """Rescale the paper account's position at a split (the orders were cancelled before)."""
        account = self.engine.account
        account.position = int(account.position * ratio)
        account.avg_cost = account.avg_cost / ratio


def _is_grid(ref: str) -> bool:
    return ref.startswith("tqgrid")


def _avg(order: BrokerOrder) -> Decimal:
    return order.avg_fill_price.quantize(Decimal("0.0001")) if order.filled else Decimal(0)


def _ticket(order_id: int, cmd: PlaceOrder) -> OrderTicket:
    """The placeOrder the executor would send for ``cmd`` (services/executor/ib_api.py builds the same order)."""
    conditions: tuple[ConditionSpec, ...] = ()
    if cmd.condition is not None:
        conditions = (
            ConditionSpec(
                cond_type=1,
                conjunction="a",
                is_more=cmd.condition.is_more,
                price=cmd.condition.price,
                con_id=contracts.TQQQ.con_id,
                exchange="SMART",
                trigger_method=cmd.condition.trigger_method,
            ),
        )
    return OrderTicket(
        order_id=order_id,
        contract=_CONTRACT,
        action=cmd.side,
        total_quantity=Decimal(cmd.quantity),
        order_type="LMT",
        lmt_price=cmd.limit,
        aux_price=None,
        tif=cmd.tif,
        oca_group="",
        account="",
        open_close="",
        origin=0,
        order_ref=cmd.key,
        transmit=True,
        parent_id=0,
        outside_rth=cmd.outside_rth,
        hidden=False,
        good_after_time="",
        good_till_date="",
        what_if=False,
        algo_strategy="",
        conditions=conditions,
        conditions_ignore_rth=cmd.conditions_ignore_rth,
    )


def next_session_change(now_ns: int) -> int:
    """The next instant after ``now_ns`` where a session starts or ends (pre-market, regular, after-hours)."""
    day = sessions.eastern_date(now_ns)
    for _ in range(10):
        td = sessions.trading_day(day)
        if td is not None:
            for edge in (td.pre_open_ns, td.regular_open_ns, td.regular_close_ns, td.after_close_ns):
                if edge > now_ns:
                    return edge
        day = sessions.next_trading_day(day)
    raise AssertionError(f"no trading day within ten days after {day}")  # the calendar always has one
