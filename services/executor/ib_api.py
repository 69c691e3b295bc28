"""The one module that imports an IB client library: ``ib_insync`` 0.9.86, or its maintained fork ``ib_async``.

``GRIDBOT_IB_LIB=ib_async`` (environment) picks ib_async; anything else the rest of the executor needs from the
library goes through :class:`IbLib`, so switching libraries is this module's business only. Both libraries speak
the same protocol with the same event names; the differences that matter (ib_async's ``ValidationError``
pseudo-status, its error 202 handling) are handled where IB's answers are interpreted (rules.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from decimal import Decimal
from types import ModuleType
from typing import Any

from proto.messages import PlaceOrder

LIB_ENV = "GRIDBOT_IB_LIB"
SUPPORTED = ("ib_insync", "ib_async")
DEFAULT_LIB = "ib_insync"
# The exchange and currency of the grid's contract (a US ETF routed by IB's SMART router).
EXCHANGE = "SMART"
CURRENCY = "USD"
# IB's conjunction code for "and" between conditions.
CONJUNCTION_AND = "a"


@dataclass(frozen=True)
class IbLib:
    """The chosen client library: builds the ``IB`` object, contracts and orders."""

    name: str
    module: ModuleType

    def new_ib(self) -> Any:
        return self.module.IB()

    def stock(self, symbol: str) -> Any:
        return self.module.Stock(symbol, EXCHANGE, CURRENCY)

    def order_for(self, cmd: PlaceOrder, con_id: int) -> Any:
        """The IB LMT order for a PlaceOrder: the intent key in orderRef, the PriceCondition on the qualified conId."""
        order = self.module.LimitOrder(
            cmd.side,
            cmd.quantity,
            _price(cmd.limit),
            tif=cmd.tif,
            outsideRth=cmd.outside_rth,
            orderRef=cmd.key,
        )
        if cmd.condition is not None:
            # Error 398 ("Please provide valid financial instrument") is what a condition without the qualified
            # contract's conId and an exchange gets.
            order.conditions = [
                self.module.PriceCondition(
                    conjunction=CONJUNCTION_AND,
                    isMore=cmd.condition.is_more,
                    price=_price(cmd.condition.price),
                    conId=con_id,
                    exch=EXCHANGE,
                    triggerMethod=cmd.condition.trigger_method,
                )
            ]
            order.conditionsIgnoreRth = cmd.conditions_ignore_rth
        return order

    def order_handle(self, order_id: int, client_id: int, perm_id: int) -> Any:
        """A bare Order naming an existing order, enough for ``cancelOrder`` after a reconnect."""
        return self.module.Order(orderId=order_id, clientId=client_id, permId=perm_id)


def _price(value: Decimal) -> float:
    # The wire carries str(float): a cent price survives the round trip exactly (97.03 -> '97.03').
    return float(value)


def load(name: str | None = None) -> IbLib:
    """Import the client library named by ``name``, else by ``$GRIDBOT_IB_LIB``, else ib_insync."""
    chosen = name or os.environ.get(LIB_ENV) or DEFAULT_LIB
    if chosen not in SUPPORTED:
        raise ValueError(
            f"{LIB_ENV}={chosen!r} is not a supported IB client library; use one of {', '.join(SUPPORTED)}"
        )
    if chosen == "ib_async":
        import ib_async as module
    else:
        import ib_insync as module
    return IbLib(chosen, module)
