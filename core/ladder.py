"""The ladder: the whole grid for one anchor price, level by level, with the capital it needs (pure).

Level 0 is bought at the anchor (its average fill); level n at ``trigger(n)``. Cumulative cost is what the lots down
to a level cost at their triggers; it is the capital the grid needs when the price falls that far.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from core.lotmap import LotMap
from core.prices import SELL_MARKUP, STEP, sell_target, to_cent, trigger_chain


@dataclass(frozen=True, slots=True)
class LadderRow:
    level: int
    shares: int
    trigger: Decimal  # the BUY limit; level 0's is the anchor, shown to the cent
    sell_target: Decimal
    cum_shares: int
    cum_cost: Decimal  # to the cent
    drop_pct: Decimal  # how far below the anchor the trigger is, in percent, to 2 decimals


def build_ladder(
    anchor: Decimal,
    lot_map: LotMap,
    levels: int | None = None,
    step: Decimal = STEP,
    sell_markup: Decimal = SELL_MARKUP,
) -> tuple[LadderRow, ...]:
    """Return the first ``levels`` rows (all of the map by default) of the grid anchored at ``anchor``."""
    count = len(lot_map) if levels is None else levels
    if type(count) is not int or not 1 <= count <= len(lot_map):
        raise ValueError(
            f"levels must be a whole number from 1 to {len(lot_map)} (the lot map's size), was {count!r}"
        )
    chain = trigger_chain(anchor, count, step)
    rows: list[LadderRow] = []
    cum_shares = 0
    cum_cost = Decimal(0)
    for level, price in enumerate(chain):
        shares = lot_map[level]
        cum_shares += shares
        # Level 0's price is the exact anchor (an average fill may have more decimals); the sum is rounded once.
        cum_cost += price * shares
        rows.append(
            LadderRow(
                level=level,
                shares=shares,
                trigger=to_cent(price),
                sell_target=sell_target(price, sell_markup),
                cum_shares=cum_shares,
                cum_cost=to_cent(cum_cost),
                drop_pct=to_cent((anchor - price) / anchor * 100),
            )
        )
    return tuple(rows)
