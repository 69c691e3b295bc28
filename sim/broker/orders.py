"""The broker's records: orders in every state, executions, and the events the engine emits about them.

Records are plain dataclasses so the store can write them as JSON and read them back unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

PRE_SUBMITTED = "PreSubmitted"
SUBMITTED = "Submitted"
FILLED = "Filled"
CANCELLED = "Cancelled"
DONE_STATUSES = frozenset({FILLED, CANCELLED})


@dataclass
class Condition:
    """A PriceCondition as the client sent it (echoed back in openOrder and completedOrder)."""

    is_more: bool
    price: Decimal
    con_id: int
    exchange: str
    trigger_method: int = 0
    conjunction: str = "a"


@dataclass
class StatusChange:
    ts_ns: int
    status: str
    note: str = ""


@dataclass
class BrokerOrder:
    perm_id: int
    client_id: int
    order_id: int
    account: str
    con_id: int
    action: str
    quantity: int
    order_type: str
    limit: Decimal | None
    tif: str
    outside_rth: bool
    order_ref: str
    placed_ns: int
    seq: int
    conditions: list[Condition] = field(default_factory=list)
    conditions_ignore_rth: bool = False
    conditions_cancel_order: bool = False
    status: str = PRE_SUBMITTED
    # True once the conditions held (or when there are none): the order works at the exchange.
    triggered: bool = True
    filled: int = 0
    fill_value: Decimal = Decimal(0)
    last_fill_price: Decimal = Decimal(0)
    commission: Decimal = Decimal(0)
    expires_ns: int | None = None
    completed_ns: int | None = None
    completed_status: str = ""
    history: list[StatusChange] = field(default_factory=list)
    exec_ids: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.status in DONE_STATUSES

    @property
    def remaining(self) -> int:
        return 0 if self.status == CANCELLED else self.quantity - self.filled

    @property
    def avg_fill_price(self) -> Decimal:
        return self.fill_value / self.filled if self.filled else Decimal(0)

    def set_status(self, status: str, ts_ns: int, note: str = "") -> None:
        self.status = status
        self.history.append(StatusChange(ts_ns, status, note))


@dataclass
class Execution:
    exec_id: str
    perm_id: int
    client_id: int
    order_id: int
    account: str
    con_id: int
    side: str  # "BOT" or "SLD", as TWS reports it
    shares: int
    price: Decimal
    cum_qty: int
    avg_price: Decimal
    ts_ns: int
    order_ref: str
    commission: Decimal
    realized_pnl: Decimal | None
    exchange: str = "ISLAND"
    # 1 = added liquidity (a resting order), 2 = removed it (marketable on arrival).
    liquidity: int = 1


# --- events: what happened, for the broker to turn into wire messages for the owning client --------------------


@dataclass(frozen=True)
class OrderAcknowledged:
    """openOrder + orderStatus with the order's current state (placement, modification, trigger, activation)."""

    order: BrokerOrder


@dataclass(frozen=True)
class OrderWarning:
    order: BrokerOrder
    code: int
    text: str


@dataclass(frozen=True)
class OrderRejected:
    client_id: int
    order_id: int
    code: int
    text: str


@dataclass(frozen=True)
class OrderCancelled:
    order: BrokerOrder
    reason: str


@dataclass(frozen=True)
class OrderFilled:
    order: BrokerOrder
    execution: Execution


@dataclass(frozen=True)
class ClientError:
    """An error for one client about a request (unknown id to cancel, duplicate id, ...)."""

    client_id: int
    req_id: int
    code: int
    text: str


@dataclass(frozen=True)
class PortfolioChanged:
    """Positions, cash or P&L moved: subscribers of positions and account updates get fresh values."""


Event = OrderAcknowledged | OrderWarning | OrderRejected | OrderCancelled | OrderFilled | ClientError | PortfolioChanged
