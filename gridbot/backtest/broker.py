"""The broker side of a backtest: the paper broker's engine behind the executor's own rules. In-process.

The orders are matched by :class:`sim.broker.engine.Engine`, the very engine the simulated exchange runs (its
triggers, ``outsideRth`` and session rules, DAY expiry, IB's 20-per-side cap, the commissions, all through
``core.matching`` and ``core.sessions``). Between the strategy and the engine stands the executor's pure core,
``services/executor/rules.py``, used as the executor service uses it (``commands.py``, ``events.py``,
``monitor.py``); every decision is the executor's, none is re-implemented here:

- a PlaceOrder goes to :meth:`IntentTable.decide_place`: a key that is live or already filled is a duplicate (nothing
  is placed); a slot that holds a live order, or a side at its cap (``broker.max_live_buys`` /
  ``strategy.max_live_sells``) refuses it; a Submit is marked sent and placed on the engine as the order
  ``services/executor/ib_api.py`` builds;
- the engine's report of an order, as the client library's ``Trade`` would carry it (an ``OpenOrderInfo``), goes to
  :meth:`IntentTable.apply`, which says what is news: ``OrderAccepted`` at the acknowledgement,
  ``OrderStatusChanged`` for a later status or fill count, ``OrderCancelled`` (with the executor's own reason when
  it asked), ``OrderRejected``;
- an execution goes through :meth:`ExecLedger.record` and is published as ``events.py`` publishes it:
  ``OrderFilled``, then the order's status, then its ``CommissionReported`` (once per execId), the order in which
  the paper broker sends them (``sim/broker/server.py``);
- a cancel sets the record's ``cancel_reason`` before it is sent (``commands.py``, ``monitor.py``); an error about
  an order is noted (:meth:`IntentTable.note_error`) before the client library's Cancelled status is applied, which
  makes it an ``OrderRejected``; the 202 that follows a cancellation's Cancelled status changes no event and is not
  replayed;
- an immediate order (Level 0) is cancelled at the deadline :meth:`IntentTable.overdue` gives it
  (``broker.immediate_order_timeout``), as the executor's monitor cancels it.

Without sockets there is no latency: an order is acknowledged, and if marketable filled against the last print, at
the instant it is placed; a cancel is confirmed at once. So the acknowledgement timeout (``broker.ack_timeout``)
never passes and is not modelled.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache

import msgspec

from core import sessions
from gridbot.backtest.paths import Watch
from proto.messages import (
    CancelOrder,
    CommissionReported,
    ExecutionInfo,
    Message,
    OpenOrderInfo,
    OrderFilled,
    PlaceOrder,
)
from services.executor.rules import (
    Duplicate,
    ExecLedger,
    Gate,
    IntentTable,
    OrderRecord,
    Overdue,
    Refuse,
    intent_of,
)
from services.executor.rules import Limits as ExecutorLimits
from sim.broker import contracts
from sim.broker.account import Account
from sim.broker.engine import Engine
from sim.broker.orders import (
    PRE_SUBMITTED,
    BrokerOrder,
    Execution,
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
SYMBOL = contracts.TQQQ.symbol
ACCOUNT_ID = "DU0BACKTEST"
# The reason the executor's monitor gives an immediate order's cancel (rules.Overdue.reason).
IMMEDIATE_TIMEOUT_REASON = "immediate order not final within broker.immediate_order_timeout"
# In-process the broker is always connected and the intent table always in sync with it.
CONNECTED = Gate(connected=True, synced=True)
# An acknowledgement timeout no order reaches: every order is acknowledged (or rejected) the instant it is placed.
NO_ACK_TIMEOUT = 2**63
# Asking the monitor's rule at a time no backtest reaches names every order that will be overdue unless it ends
# first: the next deadline is the earliest of theirs.
END_OF_TIME = 2**62
# An order's average fill price in its status events: to 1/100 of a cent.
AVG_PLACES = Decimal("0.0001")
ZERO = Decimal(0)
_CONTRACT = ContractRef(
    contracts.TQQQ.con_id, contracts.TQQQ.symbol, "STK", "", "0", "", "", "SMART", "NASDAQ", "USD", "", ""
)


@dataclass(frozen=True, slots=True)
class Limits:
    """The executor's caps and its timeout for immediate orders (config broker.*, strategy.max_live_sells)."""

    max_live_buys: int = 4
    max_live_sells: int = 18
    immediate_timeout_ns: int = 120 * 1_000_000_000


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
        # The executor's own state: its intent table (every order, the rules) and its execution ledger.
        self.table = IntentTable(
            ExecutorLimits(SYMBOL, limits.max_live_buys, limits.max_live_sells)
        )
        self.ledger = ExecLedger()
        self._next_order_id = 1

    # ------------------------------------------------------------------------------------------ commands

    def execute(self, cmd: PlaceOrder | CancelOrder, now_ns: int) -> list[Message]:
        """Carry out one of the strategy's commands as the executor would; return the events it caused."""
        if isinstance(cmd, PlaceOrder):
            return self._place(cmd, now_ns)
        record = self.table.get(cmd.key)
        if record is None or not record.live or record.cancel_reason:
            # No live order for the key (the executor rejects the command), or its cancel was already asked.
            return []
        return self._cancel(record, cmd.reason or "CancelOrder", now_ns)

    def _place(self, cmd: PlaceOrder, now_ns: int) -> list[Message]:
        decision = self.table.decide_place(cmd, CONNECTED, now_ns)
        if isinstance(decision, Duplicate):
            self.counters.duplicates += 1
            return []
        if isinstance(decision, Refuse):
            self.counters.refused += 1
            if len(self.counters.refusals) < 20:
                self.counters.refusals.append(f"{cmd.key!r}: {decision.reason}")
            return []
        order_id = self._next_order_id
        self._next_order_id += 1
        self.table.mark_sent(decision.record, order_id, CLIENT_ID, now_ns)
        self.counters.placed += 1
        return self._convert(self.engine.place(CLIENT_ID, _ticket(order_id, cmd), now_ns), now_ns)

    def _cancel(self, record: OrderRecord, reason: str, now_ns: int) -> list[Message]:
        # The reason first, as the executor's command handler and monitor set it: the cancellation carries it.
        record.cancel_reason = reason
        record.cancel_sent_ns = now_ns
        self.counters.cancelled += 1
        return self._convert(self.engine.cancel(CLIENT_ID, record.order_id, now_ns), now_ns)

    def cancel_all(self, reason: str, now_ns: int) -> list[Message]:
        """Cancel every live order, in the order they were placed (a split: IB cancels open orders on a corporate
        action)."""
        events: list[Message] = []
        for order in list(self.engine.live.values()):
            record = self.table.get(order.order_ref)
            if record is not None and record.live and not record.cancel_reason:
                events += self._cancel(record, reason, now_ns)
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
        while due := self._overdue(now_ns):
            # The earliest deadline first; what the engine did up to it may have ended the order: the rule looks
            # again at that time.
            deadline = min(overdue.record.sent_ns + self.limits.immediate_timeout_ns for overdue in due)
            events += self._convert(self.engine.advance(deadline), deadline)
            for overdue in self._overdue(deadline):
                self.counters.timed_out += 1
                events += self._cancel(overdue.record, overdue.reason, deadline)
        return events

    def _overdue(self, now_ns: int) -> list[Overdue]:
        return self.table.overdue(now_ns, NO_ACK_TIMEOUT, self.limits.immediate_timeout_ns)

    def _next_deadline(self) -> int | None:
        """When the executor's monitor next finds an immediate order overdue, unless it ends before."""
        coming = self._overdue(END_OF_TIME)
        if not coming:
            return None
        return min(overdue.record.sent_ns for overdue in coming) + self.limits.immediate_timeout_ns

    def advance(self, now_ns: int) -> list[Message]:
        """Let time act up to ``now_ns`` without a print: timeouts, DAY expiries, session opens."""
        return self.timeouts(now_ns) + self._convert(self.engine.advance(now_ns), now_ns)

    def watch(self, now_ns: int) -> Watch:
        """The prices and the time at which the broker or the executor next has something to do."""
        buy_at: Decimal | None = None
        sell_at: Decimal | None = None
        deadline = self._next_deadline()
        due: list[int] = [] if deadline is None else [deadline]
        every = False
        # The highest price a BUY waits for and the lowest a SELL waits for (a limit, or a condition's trigger).
        for order in self.engine.live.values():
            if order.expires_ns is not None:
                due.append(order.expires_ns)
            if order.triggered:
                if order.status == PRE_SUBMITTED:
                    due.append(next_session_change(now_ns))
                limit = order.limit
                if limit is None:
                    every = True  # a market order takes the next print
                elif order.action == "BUY":
                    if buy_at is None or limit > buy_at:
                        buy_at = limit
                elif sell_at is None or limit < sell_at:
                    sell_at = limit
                continue
            for cond in order.conditions:
                price = cond.price
                if cond.is_more:
                    if sell_at is None or price < sell_at:
                        sell_at = price
                elif buy_at is None or price > buy_at:
                    buy_at = price
        return Watch(buy_at=buy_at, sell_at=sell_at, due_ns=min(due) if due else None, every=every)

    # ------------------------------------------------------------------------------------------ events

    def _convert(self, reports: Iterable[object], now_ns: int) -> list[Message]:
        """The executor's events for the engine's reports (``now_ns`` stamps them)."""
        out: list[Message] = []
        for report in reports:
            match report:
                case EngineAcknowledged(order=order) | EngineCancelled(order=order):
                    out += self.table.apply(_order_info(order), now_ns, now_ns)
                case EngineFilled(order=order, execution=execution):
                    out += self._on_execution(order, execution, now_ns)
                case EngineRejected(order_id=order_id, code=code, text=text):
                    out += self._on_rejection(order_id, code, text, now_ns)
                case _:
                    pass  # warnings (399), client errors, portfolio updates: the executor logs them, no event
        return out

    def _on_execution(self, order: BrokerOrder, execution: Execution, now_ns: int) -> list[Message]:
        """An execution, then the order's status, then the commission report (events.py's publish_fill,
        on_trade, on_commission)."""
        entered = self.ledger.record(_execution_info(execution))
        if entered is None:
            return []  # published before
        key = entered.key if intent_of(entered.key) is not None else ""
        out: list[Message] = [
            OrderFilled(
                ts_ns=now_ns,
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
                order_quantity=order.quantity,
                commission=entered.commission,
            )
        ]
        out += self.table.apply(_order_info(order), now_ns, now_ns)
        if self.ledger.commission_is_new(execution.exec_id):
            out.append(
                CommissionReported(
                    ts_ns=now_ns,
                    exec_id=execution.exec_id,
                    key=key,
                    commission=execution.commission,
                    # IB reports no realized P&L (unset, read as 0) for an execution that only opened a position.
                    realized_pnl=execution.realized_pnl or None,
                )
            )
        return out

    def _on_rejection(self, order_id: int, code: int, text: str, now_ns: int) -> list[Message]:
        """IB's error about a new order: noted, then the client library marks the order Cancelled and reports it
        (ib_insync's and ib_async's error handlers), which the table makes an ``OrderRejected``."""
        record = self.table.note_error(CLIENT_ID, order_id, code, text)
        if record is None:
            return []
        cancelled = msgspec.structs.replace(record.info(), status="Cancelled")
        return self.table.apply(cancelled, now_ns, now_ns)

    # ------------------------------------------------------------------------------------------ splits

    def split(self, ratio: Decimal) -> None:
        """Rescale the paper account's position at a split (the orders were cancelled before)."""
        account = self.engine.account
        account.position = int(account.position * ratio)
        account.avg_cost = account.avg_cost / ratio


def _order_info(order: BrokerOrder) -> OpenOrderInfo:
    """The engine's order as the executor reads IB's report of it (services/executor/convert.order_info)."""
    return OpenOrderInfo(
        key=order.order_ref,
        order_id=order.order_id,
        perm_id=order.perm_id,
        client_id=order.client_id,
        symbol=SYMBOL,
        side="BUY" if order.action == "BUY" else "SELL",
        quantity=order.quantity,
        limit=order.limit if order.limit is not None else ZERO,
        tif=order.tif,
        outside_rth=order.outside_rth,
        status=order.status,
        filled=order.filled,
        remaining=order.quantity - order.filled,  # the engine never fills more than the quantity
        avg_fill_price=order.avg_fill_price.quantize(AVG_PLACES) if order.filled else ZERO,
        condition_price=order.conditions[0].price if order.conditions else None,
    )


def _execution_info(execution: Execution) -> ExecutionInfo:
    """The engine's execution as the executor reads IB's (services/executor/convert.execution_info): its commission
    is not known yet, the commission report comes after it."""
    return ExecutionInfo(
        exec_id=execution.exec_id,
        key=execution.order_ref,
        order_id=execution.order_id,
        perm_id=execution.perm_id,
        side="BUY" if execution.side == "BOT" else "SELL",
        shares=execution.shares,
        price=execution.price,
        cum_qty=execution.cum_qty,
        avg_price=execution.avg_price,
        exec_ts_ns=execution.ts_ns,
    )


def _ticket(order_id: int, cmd: PlaceOrder) -> OrderTicket:
    """The placeOrder the executor would send for ``cmd`` (services/executor/ib_api.py builds the same order)."""
    conditions: tuple[ConditionSpec, ...] = ()
    if cmd.condition is not None:
        conditions = (_price_condition(cmd.condition.is_more, cmd.condition.price, cmd.condition.trigger_method),)
    # Positional, in OrderTicket's field order (sim/broker/requests.py; tests/backtest/test_broker.py checks each
    # field by name): a frozen dataclass of 25 fields is dear to build, and keyword arguments add a quarter to it,
    # for every one of the backtest's orders.
    return OrderTicket(
        order_id,
        _CONTRACT,  # contract
        cmd.side,  # action
        Decimal(cmd.quantity),  # total_quantity
        "LMT",  # order_type
        cmd.limit,  # lmt_price
        None,  # aux_price
        cmd.tif,  # tif
        "",  # oca_group
        "",  # account
        "",  # open_close
        0,  # origin
        cmd.key,  # order_ref
        True,  # transmit
        0,  # parent_id
        cmd.outside_rth,  # outside_rth
        False,  # hidden
        "",  # good_after_time
        "",  # good_till_date
        False,  # what_if
        "",  # algo_strategy
        conditions,  # conditions
        cmd.conditions_ignore_rth,  # conditions_ignore_rth
    )


# The grid places its conditional BUYs at a few thousand trigger prices over and over (half of all orders); a
# ConditionSpec is immutable, so one per distinct condition serves every ticket that has it.
@lru_cache(maxsize=4096)
def _price_condition(is_more: bool, price: Decimal, trigger_method: int) -> ConditionSpec:
    """The PriceCondition on the contract's last price that ib_api.py attaches (conjunction "and", SMART)."""
    return ConditionSpec(
        cond_type=1,
        conjunction="a",
        is_more=is_more,
        price=price,
        con_id=contracts.TQQQ.con_id,
        exchange="SMART",
        trigger_method=trigger_method,
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
