"""What a backtest measures as it goes: the mark-to-market equity, its drawdown, lots held, capital deployed.

Between two processed prints the holdings do not change, so the equity is ``constant + shares x price``: the
tracker recomputes the two numbers when the state changes (:meth:`Tracker.on_state`) and evaluates the line at
every mark (:meth:`Tracker.mark`). The engine marks every vertex of every bar and every processed print; the path is
monotone between them, so the lowest and highest equity of the modelled path are among the marks and the drawdown
is exact for that path.

Equity here is the grid's net P&L so far: realized P&L (after all fees) plus, for every open lot, its market value
and what its SELL already sold, less its cost and its fees.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from proto.messages import GridState

ZERO = Decimal(0)


@dataclass
class Drawdown:
    """The largest fall of the equity from a previous peak: amount, the peak's and the trough's times."""

    amount: Decimal = ZERO
    peak_ns: int = 0
    trough_ns: int = 0
    peak_equity: Decimal = ZERO


@dataclass
class Series:
    """The marks, for the plot: time (UTC seconds), price, equity, lots held."""

    ts: array[float] = field(default_factory=lambda: array("d"))
    price: array[float] = field(default_factory=lambda: array("d"))
    equity: array[float] = field(default_factory=lambda: array("d"))
    lots: array[int] = field(default_factory=lambda: array("i"))


class Tracker:
    def __init__(self, state: GridState) -> None:
        self.series = Series()
        self.drawdown = Drawdown()
        self.first_ns: int | None = None
        self.last_ns = 0
        self.last_price: Decimal | None = None
        self.max_lots = 0
        self.max_lots_ns = 0
        self.max_capital = ZERO
        self.max_capital_ns = 0
        # Seconds spent with n lots held, by n.
        self.depth_ns: dict[int, int] = {}
        self._peak = ZERO
        self._peak_ns = 0
        self._state: GridState | None = None
        self._lots = 0
        self._since_ns: int | None = None
        self._constant = ZERO
        self._shares = 0
        self._capital = ZERO
        self.on_state(0, state)

    @property
    def shares(self) -> int:
        return self._shares

    def equity_at(self, price: Decimal) -> Decimal:
        return self._constant + self._shares * price

    def on_state(self, ts: int, state: GridState) -> None:
        """The state after a processed print: recompute the equity line, lots held and capital deployed."""
        if state is self._state:
            return
        self._state = state
        constant = state.realized_pnl
        shares = 0
        capital = ZERO
        for lot in state.lots:
            remaining = lot.quantity - lot.sold
            shares += remaining
            constant += lot.sold_value - lot.cost - lot.fees
            capital += lot.cost if not lot.sold else lot.cost * remaining / lot.quantity
        for order in state.orders:
            if order.side == "BUY" and order.filled:
                # Shares of a BUY still filling are held, though not yet a lot.
                shares += order.filled
                constant -= order.fill_value + order.fees
                capital += order.fill_value
        self._constant, self._shares, self._capital = constant, shares, capital
        lots = len(state.lots)
        if self._since_ns is not None and lots != self._lots:
            self.depth_ns[self._lots] = self.depth_ns.get(self._lots, 0) + ts - self._since_ns
            self._since_ns = ts
        self._lots = lots
        if lots > self.max_lots:
            self.max_lots, self.max_lots_ns = lots, ts
        if capital > self.max_capital:
            self.max_capital, self.max_capital_ns = capital, ts

    def mark(self, ts: int, price: Decimal) -> None:
        """The path passed ``price`` at ``ts`` with the current holdings."""
        self.pass_prices(((ts, price),))

    def pass_prices(self, marks: Sequence[tuple[int, Decimal]]) -> None:
        """The path passed these (time, price) points in order with the current holdings; the plot's series keeps
        the last one only."""
        if self.first_ns is None:
            self.first_ns = self._since_ns = self._peak_ns = marks[0][0]
        constant, shares = self._constant, self._shares
        equity = constant
        if shares or len(marks) == 1:
            for ts, price in marks:
                equity = constant + shares * price
                if equity > self._peak:
                    self._peak, self._peak_ns = equity, ts
                elif self._peak - equity > self.drawdown.amount:
                    self.drawdown = Drawdown(self._peak - equity, self._peak_ns, ts, self._peak)
        else:
            self.mark_flat(marks[-1][0], equity)
        ts, price = marks[-1]
        self.last_ns = ts
        self.last_price = price
        s = self.series
        s.ts.append(ts / 1e9)
        s.price.append(float(price))
        s.equity.append(float(equity))
        s.lots.append(self._lots)

    def mark_flat(self, ts: int, equity: Decimal) -> None:
        """Nothing held: the equity is the same at every price of the marks."""
        if equity > self._peak:
            self._peak, self._peak_ns = equity, ts
        elif self._peak - equity > self.drawdown.amount:
            self.drawdown = Drawdown(self._peak - equity, self._peak_ns, ts, self._peak)

    def split(self, ts: int, ratio: Decimal, state: GridState) -> None:
        """A split: prices divide by ``ratio``; the equity line is recomputed from the rescaled state."""
        self._state = None
        self.on_state(ts, state)
        if self.last_price is not None:
            self.last_price = self.last_price / ratio

    def finish(self) -> dict[int, int]:
        """Time at each depth up to the last mark (nanoseconds by number of lots held)."""
        depth = dict(self.depth_ns)
        if self._since_ns is not None:
            depth[self._lots] = depth.get(self._lots, 0) + self.last_ns - self._since_ns
        return dict(sorted(depth.items()))

    @property
    def capital(self) -> Decimal:
        return self._capital
