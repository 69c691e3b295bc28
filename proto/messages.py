"""Every message on the bus and on the command sockets: one frozen, tagged msgspec Struct per message.

The tag (the ``type`` field on the wire) is the class name, so it is stable; renaming a class is a breaking change.
Families (DESIGN section 2): market data, commands, command replies, order events, broker events, state, control.

Rules of evolution (msgspec schema evolution): new fields go last and have defaults; a field's type never changes.
Prices and money are ``Decimal``: msgspec carries them as strings on the wire, so nothing is rounded by a float.
Timestamps are ``*_ns`` integers, UTC nanoseconds since the epoch. Sides are ``"BUY"`` / ``"SELL"``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

Side = Literal["BUY", "SELL"]
TimeInForce = Literal["DAY", "GTC"]
Severity = Literal["info", "warning", "critical"]
SellSlot = Literal["live", "parked"]


class Message(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """Base of every message; ``ts_ns`` is when the sender created it (UTC nanoseconds)."""

    ts_ns: int = 0


# --------------------------------------------------------------------------------------------- market data


class Tick(Message, frozen=True):
    """One trade print from the feed (topic ``md.tick.<SYMBOL>``)."""

    symbol: str
    price: Decimal
    size: int
    exchange_ts_ns: int
    receive_ts_ns: int
    # The feed's own count of published ticks, 1, 2, 3 ... (the envelope's seq counts every message it sends).
    seq: int


class FeedStatus(Message, frozen=True):
    """The feed's health (topic ``md.status``), on change and every few seconds."""

    connected: bool
    stale: bool
    reason: str = ""
    feed: str = ""
    last_print_age_s: float | None = None
    prints: int = 0
    dropped: int = 0


# --------------------------------------------------------------------------------------------- commands
# Sent DEALER -> ROUTER with a command header (see proto.envelope); never over pub/sub.


class PriceCondition(msgspec.Struct, frozen=True, kw_only=True):
    """IB PriceCondition: trigger when the last price is ``<= price`` (is_more False) or ``>= price``."""

    price: Decimal
    is_more: bool = False
    # The executor fills in the qualified contract's conId and exchange (error 398 without them).
    trigger_method: int = 2  # IB: 2 = last price


class PlaceOrder(Message, frozen=True):
    """Place one grid order. ``key`` is the intent key, sent to IB as orderRef; a repeat of a key is harmless."""

    key: str
    symbol: str
    side: Side
    quantity: int
    limit: Decimal
    tif: TimeInForce
    outside_rth: bool = True
    condition: PriceCondition | None = None
    conditions_ignore_rth: bool = False
    # An immediate order (Level 0) must be final within the executor's immediate_order_timeout or it is cancelled.
    immediate: bool = False


class CancelOrder(Message, frozen=True):
    """Cancel the live order of an intent key."""

    key: str
    reason: str = ""


class CancelAll(Message, frozen=True):
    """Cancel every live grid order (those whose orderRef is a grid intent key)."""

    reason: str = ""
    # Also cancel orders of the symbol that are not the grid's (the operator's reset).
    include_foreign: bool = False


class BrokerSnapshotRequest(Message, frozen=True):
    """Ask the executor for a fresh ``BrokerSnapshot``."""

    resync: bool = False


class StateSnapshotRequest(Message, frozen=True):
    """Ask the statekeeper for a ``StateSnapshot``."""


class Halt(Message, frozen=True):
    """Stop placing new orders (live orders stay at IB); persisted by the statekeeper."""

    reason: str
    source: str = ""


class Resume(Message, frozen=True):
    """Lift a halt."""

    reason: str = ""
    source: str = ""


class ReconcileRequest(Message, frozen=True):
    """Compare the state with the broker; ``apply`` carries out the repair plan."""

    apply: bool = False


# --------------------------------------------------------------------------------------------- command replies


class CommandAccepted(Message, frozen=True):
    """The command was carried out (for PlaceOrder: sent to IB and acknowledged)."""

    key: str = ""
    order_id: int = 0
    perm_id: int = 0
    detail: str = ""


class CommandDuplicate(Message, frozen=True):
    """The key already has a live or filled order: nothing was sent to IB; this is that order."""

    key: str
    order_id: int
    perm_id: int
    status: str


class CommandRejected(Message, frozen=True):
    """The command was refused (by the executor's rules, or by IB with ``code``)."""

    reason: str
    key: str = ""
    code: int = 0


# --------------------------------------------------------------------------------------------- order events
# Published by the executor on topic ``order.event``. Keys are intent keys (orderRef); "" for a foreign order.


class OrderAccepted(Message, frozen=True):
    """IB acknowledged the order (PreSubmitted or Submitted)."""

    key: str
    order_id: int
    perm_id: int
    side: Side
    quantity: int
    limit: Decimal
    status: str
    client_id: int = 0


class OrderStatusChanged(Message, frozen=True):
    """A new IB status for an order."""

    key: str
    order_id: int
    perm_id: int
    status: str
    filled: int
    remaining: int
    avg_fill_price: Decimal = Decimal(0)


class OrderFilled(Message, frozen=True):
    """One execution (IB sends one order's fill in pieces, possibly on several venues). Idempotent by exec_id."""

    key: str
    exec_id: str
    order_id: int
    perm_id: int
    side: Side
    shares: int
    price: Decimal
    # Cumulative quantity and average price of the whole order after this execution.
    cum_qty: int
    avg_price: Decimal
    exec_ts_ns: int
    # The order's total quantity, so a consumer knows when it is complete.
    order_quantity: int = 0
    commission: Decimal | None = None
    # True when recovered from reqExecutions after a reconnect rather than seen live.
    recovered: bool = False


class CommissionReported(Message, frozen=True):
    """IB's commission report for an execution (arrives after the execution)."""

    exec_id: str
    key: str
    commission: Decimal
    realized_pnl: Decimal | None = None


class OrderCancelled(Message, frozen=True):
    """The order is cancelled (by us, by IB, or expired); ``filled`` shares were filled before."""

    key: str
    order_id: int
    perm_id: int
    filled: int
    reason: str = ""
    avg_fill_price: Decimal = Decimal(0)


class OrderRejected(Message, frozen=True):
    """IB (or the executor) rejected the order."""

    key: str
    order_id: int
    code: int
    text: str


# --------------------------------------------------------------------------------------------- broker events
# Published by the executor on topic ``broker.event``.


class BrokerConnected(Message, frozen=True):
    host: str
    port: int
    client_id: int
    server_version: int = 0
    accounts: list[str] = []


class BrokerDisconnected(Message, frozen=True):
    reason: str


class BrokerConnectivity(Message, frozen=True):
    """IB's connectivity codes: 1100 lost, 1101 restored with data lost, 1102 restored with data kept."""

    code: int
    text: str
    connected: bool


class OpenOrderInfo(msgspec.Struct, frozen=True, kw_only=True):
    """An order as the broker reports it (open, or completed in a snapshot's ``completed``)."""

    key: str
    order_id: int
    perm_id: int
    client_id: int
    symbol: str
    side: Side
    quantity: int
    limit: Decimal
    tif: str
    outside_rth: bool
    status: str
    filled: int = 0
    remaining: int = 0
    avg_fill_price: Decimal = Decimal(0)
    condition_price: Decimal | None = None


class PositionInfo(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    quantity: int
    avg_cost: Decimal
    account: str = ""


class ExecutionInfo(msgspec.Struct, frozen=True, kw_only=True):
    exec_id: str
    key: str
    order_id: int
    perm_id: int
    side: Side
    shares: int
    price: Decimal
    cum_qty: int
    avg_price: Decimal
    exec_ts_ns: int
    commission: Decimal | None = None


class BrokerSnapshot(Message, frozen=True):
    """What the broker holds now: open orders of every client, today's completed orders, executions, positions."""

    connected: bool
    orders: list[OpenOrderInfo] = []
    completed: list[OpenOrderInfo] = []
    executions: list[ExecutionInfo] = []
    positions: list[PositionInfo] = []
    # The symbol's qualified contract id (0 if not qualified yet).
    con_id: int = 0


# --------------------------------------------------------------------------------------------- state


class Lot(msgspec.Struct, frozen=True, kw_only=True):
    """One filled grid BUY, held until its own SELL fills (DESIGN section 4)."""

    cycle: int
    level: int
    quantity: int
    purchase_price: Decimal
    sell_target_price: Decimal
    buy_key: str
    sell_key: str
    sell_order_id: int | None = None
    sell_perm_id: int | None = None
    buy_perm_id: int | None = None
    sell: SellSlot = "parked"
    # Shares of this lot already sold by partial SELL fills.
    sold: int = 0
    opened_ts_ns: int = 0
    fees: Decimal = Decimal(0)
    # Exact money, so P&L is not rounded twice: the BUY's total cost (sum of shares x price of its fills) and the
    # proceeds of the shares sold so far; purchase_price is cost / quantity rounded for display and the SELL key.
    cost: Decimal = Decimal(0)
    sold_value: Decimal = Decimal(0)
    # Latest SELL execution time (the round trip's close time does not depend on the order fills arrive in).
    last_sell_ts_ns: int = 0


class WorkingOrder(msgspec.Struct, frozen=True, kw_only=True):
    """A grid order the bot is waiting on, by intent key."""

    key: str
    side: Side
    level: int
    quantity: int
    limit: Decimal
    order_id: int = 0
    perm_id: int = 0
    status: str = ""
    filled: int = 0
    avg_fill_price: Decimal = Decimal(0)
    placed_ts_ns: int = 0
    # Exact sum of shares x price of the fills so far, their commissions, the latest fill time (the ledger's own).
    fill_value: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)
    last_fill_ts_ns: int = 0


class RoundTrip(msgspec.Struct, frozen=True, kw_only=True):
    """A closed lot: bought, then sold by its own SELL."""

    cycle: int
    level: int
    quantity: int
    buy_price: Decimal
    sell_price: Decimal
    fees: Decimal
    realized_pnl: Decimal
    opened_ts_ns: int
    closed_ts_ns: int
    # The lot's keys: buy_key names the round trip (a late commission amends the one with this key).
    buy_key: str = ""
    sell_key: str = ""


class AppliedExecution(msgspec.Struct, frozen=True, kw_only=True):
    """An execution the ledger applied (its duplicate filter, and where a late commission finds its fill).

    ``shares`` 0 means the commission report came first and the execution itself has not been seen yet.
    """

    exec_id: str
    key: str
    perm_id: int = 0
    side: Side = "BUY"
    shares: int = 0
    price: Decimal = Decimal(0)
    commission: Decimal | None = None


class GridState(msgspec.Struct, frozen=True, kw_only=True):
    """The grid's whole state, as the statekeeper owns it (persisted as bot_state.json, DESIGN section 5)."""

    symbol: str
    cycle: int = 1
    anchor_price: Decimal | None = None
    halted: bool = False
    halt_reason: str = ""
    lots: list[Lot] = []
    orders: list[WorkingOrder] = []
    realized_pnl: Decimal = Decimal(0)
    # Level-0 attempts of the current cycle that have ended (unfilled, or filled into the lot); the next is this + 1.
    level0_attempt: int = 0
    # False until the statekeeper has reconciled with the broker since its start.
    in_sync: bool = False
    # Per level >= 1: how many times it has been bought in this cycle (the next BUY's attempt is this + 1).
    buy_attempts: dict[int, int] = {}
    # The most recent executions applied (a bounded window; the statekeeper's journal keeps every execId).
    executions: list[AppliedExecution] = []
    # permIds of orders that reached a final state recently: a stale acknowledgement of one is not a live order.
    ended_orders: list[int] = []


class StateSnapshot(Message, frozen=True):
    """The whole state, in reply to a ``StateSnapshotRequest``; ``seq`` is the last update it includes."""

    seq: int
    state: GridState


class StateUpdate(Message, frozen=True):
    """The whole state after a change (topic ``state.update``), numbered 1, 2, 3 ... by the statekeeper."""

    seq: int
    state: GridState
    cause: str = ""


class ReconcileFinding(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    detail: str
    explained: bool


class ReconcileReport(Message, frozen=True):
    """The result of a reconciliation: consistent or not, what was found, and the repair plan."""

    consistent: bool
    findings: list[ReconcileFinding] = []
    plan: list[str] = []
    applied: bool = False


# --------------------------------------------------------------------------------------------- control


class Heartbeat(Message, frozen=True):
    """Each service, every second (topic ``hb.<service>``)."""

    service: str
    pid: int
    started_ts_ns: int
    status: str = "ok"
    # The last envelope seq the sender used on each of its other topics: a subscriber that has seen less of a topic
    # it follows lost that topic's latest messages (a loss no later message on the topic would reveal).
    last_seq: dict[str, int] = {}


class Alert(Message, frozen=True):
    """Something an operator should know (topic ``alert``); critical alerts also go to the alert command."""

    severity: Severity
    source: str
    code: str
    text: str


class TradingHalted(Message, frozen=True):
    """Published (topic ``control``) when trading halts; the reason says why and what to do."""

    reason: str
    source: str = ""


class TradingResumed(Message, frozen=True):
    reason: str = ""
    source: str = ""


# --------------------------------------------------------------------------------------------- operator's reset
# Sent by `gridbot reset` (DEALER -> ROUTER), after its orders are cancelled and the broker confirmed it.


class ClosePosition(Message, frozen=True):
    """Close the symbol's position with one LMT order (``reset --flatten``); to the executor, even while halted.

    ``side``/``quantity`` are what the operator saw at the broker: the executor refuses when the position differs.
    The order's orderRef is not a grid intent key, so the ledger never takes it for a lot. The reply comes once the
    order is final: CommandAccepted (``detail`` says the fill) when completely filled, else CommandRejected (not
    filled in time: cancelled, with the filled part).
    """

    symbol: str = ""
    side: Side = "SELL"
    quantity: int = 0
    limit: Decimal = Decimal(0)
    reason: str = ""


class ResetState(Message, frozen=True):
    """Clear the grid's state (``reset``): no lots, no working orders, no anchor; the next cycle number.

    To the statekeeper, after the orders are cancelled (and the position closed) at the broker. The halt flag, the
    realized P&L, the cycle counter's history and the applied-execution window are kept (an old fill replayed later
    is still recognised). Replied with CommandAccepted, or CommandRejected with the reason.
    """

    reason: str = ""
    source: str = ""


AnyMessage = (
    Tick
    | FeedStatus
    | PlaceOrder
    | CancelOrder
    | CancelAll
    | BrokerSnapshotRequest
    | StateSnapshotRequest
    | Halt
    | Resume
    | ReconcileRequest
    | CommandAccepted
    | CommandDuplicate
    | CommandRejected
    | OrderAccepted
    | OrderStatusChanged
    | OrderFilled
    | CommissionReported
    | OrderCancelled
    | OrderRejected
    | BrokerConnected
    | BrokerDisconnected
    | BrokerConnectivity
    | BrokerSnapshot
    | StateSnapshot
    | StateUpdate
    | ReconcileReport
    | Heartbeat
    | Alert
    | TradingHalted
    | TradingResumed
    | ClosePosition
    | ResetState
)

MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.__name__: cls for cls in Message.__subclasses__()
}
