"""Splits: a table of them, how data are checked against it, and what a split does to the grid's lots.

The backtest trades **as-traded prices** (what the broker saw that day), because the lot map is in shares at those
prices: TQQQ's split-adjusted history starts at $0.20, where a 1% step is less than a cent and the user's share
counts mean nothing. So:

- **As-traded data** (the minute sample) are played as they are. At each split of the table inside the data the
  backtest does what the broker does: every open order is cancelled (IB cancels GTC orders on a corporate action and
  does not adjust their prices), each lot is rescaled (shares x ratio; the cost stays, so the purchase price and the
  SELL target are recomputed from it; the SELL key carries the new purchase price), the anchor is the rescaled
  Level-0 lot's purchase price, and the strategy places the orders again at the next print.
- **Split-adjusted data** (the shared daily and hourly files) are first turned back into as-traded prices with the
  table: a bar before a split is multiplied by the ratios of every split after it up to the end of the data (volumes
  divided), then rounded to the cent; and played as above.
- **Mixed data are refused.** At each split inside the data, the close before and the open after show whether the
  file jumps by the ratio (as-traded) or not (adjusted). ``prices="auto"`` takes what the data show; a declared
  kind that the data contradict, or data that jump at one split and not at another, are refused with the split named.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path

import msgspec

from core.intent import IntentKey, parse
from core.ledger import PRICE_QUANTUM, LedgerRules, make_lot
from gridbot.backtest.bars import BarData
from proto.messages import GridState, Lot
from sim.market.intrabar import Bar
from sim.market.prints import to_cent

TQQQ_SPLITS = Path(__file__).with_name("tqqq_splits.csv")
PRICE_KINDS = ("auto", "as-traded", "adjusted")


class SplitError(ValueError):
    """A split table is malformed, or the data and the table disagree; the message says which and the fix."""


@dataclass(frozen=True, slots=True)
class Split:
    """On ``day`` (the first session at post-split prices) every share became ``ratio`` shares."""

    day: date
    ratio: Decimal

    @property
    def label(self) -> str:
        r = self.ratio
        return f"{r.normalize():f}:1" if r >= 1 else f"1:{(1 / r).normalize():f}"


def parse_ratio(text: str) -> Decimal:
    """``"3:1"`` or ``"3"`` (3 new shares per old one), ``"1:2"`` or ``"0.5"`` (a reverse split)."""
    try:
        if ":" in text:
            new, old = (Decimal(part.strip()) for part in text.split(":", 1))
            ratio = new / old
        else:
            ratio = Decimal(text.strip())
    except (InvalidOperation, ZeroDivisionError):
        raise ValueError(f"a split ratio looks like 2:1 or 3:1 (new:old shares), was {text!r}") from None
    if not ratio.is_finite() or ratio <= 0 or ratio == 1:
        raise ValueError(f"a split ratio must be positive and not 1:1, was {text!r}")
    return ratio


def load_splits(path: Path | str) -> list[Split]:
    """Read a split table: ``date,ratio`` rows (``2018-05-24,3:1``), a header and ``#`` comments allowed."""
    path = Path(path)
    if not path.is_file():
        raise SplitError(f"split table '{path}' does not exist; give a CSV of date,ratio rows like 2018-05-24,3:1")
    splits: list[Split] = []
    with path.open(encoding="utf-8-sig", newline="") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            cells = [c.strip() for c in row]
            if not cells or not cells[0] or cells[0].startswith("#") or cells[0].lower() == "date":
                continue
            where = f"split table '{path}' line {line_no}"
            if len(cells) < 2:
                raise SplitError(f"{where}: expected date,ratio like 2018-05-24,3:1, got {row!r}")
            try:
                day = date.fromisoformat(cells[0])
                ratio = parse_ratio(cells[1])
            except ValueError as e:
                raise SplitError(f"{where}: {e}") from None
            if splits and day <= splits[-1].day:
                raise SplitError(f"{where}: dates must increase ({day} is not after {splits[-1].day})")
            splits.append(Split(day, ratio))
    return splits


def inside(splits: Sequence[Split], data: BarData) -> list[Split]:
    """The splits that happen between the first and the last bar of ``data``."""
    first, last = data.days[0], data.days[-1]
    return [s for s in splits if first < s.day <= last]


@dataclass(frozen=True, slots=True)
class Evidence:
    split: Split
    close_before: Decimal
    open_after: Decimal

    @property
    def looks(self) -> str:
        """"as-traded" when the price jumps by about the ratio, "adjusted" when it does not (nearer in log terms)."""
        jump = math.log(float(self.close_before / self.open_after))
        return "as-traded" if abs(jump - math.log(float(self.split.ratio))) < abs(jump) else "adjusted"


def evidence(data: BarData, splits: Sequence[Split]) -> list[Evidence]:
    """For each split inside the data: the last close before it and the first open on or after its day."""
    found: list[Evidence] = []
    for split in inside(splits, data):
        after = next(i for i, day in enumerate(data.days) if day >= split.day)
        found.append(Evidence(split, data.bars[after - 1].close, data.bars[after].open))
    return found


def price_kind(data: BarData, splits: Sequence[Split], declared: str) -> str:
    """The kind of prices ``data`` holds ("as-traded" or "adjusted"), checked against what is ``declared``."""
    if declared not in PRICE_KINDS:
        raise SplitError(f"prices must be one of {', '.join(PRICE_KINDS)}, was {declared!r}")
    seen = evidence(data, splits)
    kinds = {e.looks for e in seen}
    if len(kinds) > 1:
        detail = "; ".join(f"{e.split.day} {e.split.label}: {e.close_before} -> {e.open_after} ({e.looks})" for e in seen)
        raise SplitError(
            f"'{data.source}' mixes split-adjusted and as-traded prices ({detail}); fix the file or the split table"
        )
    shown = kinds.pop() if kinds else None
    if declared == "auto":
        return shown or "as-traded"
    if shown is not None and shown != declared:
        e = seen[0]
        raise SplitError(
            f"'{data.source}' was declared {declared} but its prices look {shown} at the {e.split.label} split of "
            f"{e.split.day} ({e.close_before} -> {e.open_after}); use --prices {shown} or check the split table"
        )
    return declared


def as_traded(data: BarData, splits: Sequence[Split]) -> BarData:
    """Turn split-adjusted bars back into as-traded ones with the splits inside the data, rounded to the cent."""
    within = inside(splits, data)
    bars: list[Bar] = []
    k = 0
    factor = math.prod((s.ratio for s in within), start=Decimal(1))
    for bar, day in zip(data.bars, data.days, strict=True):
        while k < len(within) and day >= within[k].day:
            factor /= within[k].ratio
            k += 1
        bars.append(
            Bar(
                bar.ts_ns,
                to_cent(bar.open * factor),
                to_cent(bar.high * factor),
                to_cent(bar.low * factor),
                to_cent(bar.close * factor),
                int(bar.volume / factor),
            )
        )
    return BarData(data.source, bars, list(data.days), data.bar_seconds)


def rescale(state: GridState, ratio: Decimal, rules: LedgerRules) -> GridState:
    """The grid's state after a split of ``ratio`` (its orders already cancelled): every lot in the new shares."""
    lots: list[Lot] = []
    for lot in state.lots:
        quantity, sold = lot.quantity * ratio, lot.sold * ratio
        if quantity != quantity.to_integral_value() or sold != sold.to_integral_value():
            raise SplitError(
                f"a {ratio}:1 split leaves lot {lot.buy_key!r} with {quantity} shares; only splits that give whole "
                "shares are supported (a broker pays cash for the fraction)"
            )
        key = parse(lot.buy_key)
        fresh = make_lot(IntentKey.buy(key.cycle, key.level, key.attempt), int(quantity), lot.cost, rules)
        lots.append(
            msgspec.structs.replace(
                lot,
                quantity=int(quantity),
                sold=int(sold),
                purchase_price=fresh.purchase_price,
                sell_target_price=fresh.sell_target_price,
                sell_key=fresh.sell_key,
                sell="parked",
                sell_order_id=None,
                sell_perm_id=None,
            )
        )
    anchor = state.anchor_price
    level0 = next((lot for lot in lots if lot.level == 0 and lot.cycle == state.cycle), None)
    if level0 is not None:
        anchor = level0.purchase_price
    elif anchor is not None:
        anchor = (anchor / ratio).quantize(PRICE_QUANTUM, rounding=ROUND_HALF_UP)
    live = [order for order in state.orders if order.status not in ("Cancelled", "ApiCancelled", "Inactive")]
    if live:
        raise SplitError(f"orders still live at a split: {[o.key for o in live]} (they must be cancelled first)")
    return msgspec.structs.replace(state, lots=lots, anchor_price=anchor, orders=[])
