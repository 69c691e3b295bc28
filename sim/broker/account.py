"""The paper account's books: cash, the position, its average cost and realized P&L, as IB computes them.

IB folds commissions into the average cost (a BUY's cost per share includes its commission) and reports realized
P&L net of the closing commission. Shorts are allowed (a paper account may short TQQQ) and mirror longs.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

ZERO = Decimal(0)


@dataclass
class Account:
    account_id: str
    cash: Decimal
    position: int = 0
    # Per share, commissions included; positive for longs and shorts alike.
    avg_cost: Decimal = ZERO
    realized_pnl: Decimal = ZERO

    def apply_execution(self, buy: bool, shares: int, price: Decimal, commission: Decimal) -> Decimal | None:
        """Book one execution; return the realized P&L it made (None when it only opened or added)."""
        signed = shares if buy else -shares
        self.cash -= price * signed + commission
        realized: Decimal | None = None
        closing = min(shares, abs(self.position)) if self.position and (self.position > 0) != buy else 0
        if closing:
            per_share_commission = commission / shares
            if self.position > 0:
                realized = (price - self.avg_cost) * closing - per_share_commission * closing
            else:
                realized = (self.avg_cost - price) * closing - per_share_commission * closing
            self.position += closing if buy else -closing
            if self.position == 0:
                self.avg_cost = ZERO
        opening = shares - closing
        if opening:
            per_share_commission = commission / shares
            # A long's cost rises by the commission, a short's proceeds fall by it.
            unit = price + per_share_commission if buy else price - per_share_commission
            total = self.avg_cost * abs(self.position) + unit * opening
            self.position += opening if buy else -opening
            self.avg_cost = total / abs(self.position)
        if realized is not None:
            self.realized_pnl += realized
        return realized

    def market_value(self, mark: Decimal | None) -> Decimal:
        return self.position * (mark if mark is not None else self.avg_cost)

    def unrealized_pnl(self, mark: Decimal | None) -> Decimal:
        if not self.position or mark is None:
            return ZERO
        return (mark - self.avg_cost) * self.position

    def net_liquidation(self, mark: Decimal | None) -> Decimal:
        return self.cash + self.market_value(mark)
