"""The backtest's report: the numbers, as text for a terminal and as JSON (the same numbers), and the round trips.

Two accountings of the same fills (the user's earlier project compared them):

- **Specific lot** (US): each SELL closes its own lot, as the grid trades; a lot's P&L is its SELL proceeds less its
  cost and both commissions. This is the ledger's own ``realized_pnl`` and round trips.
- **Average cost** (Canada's adjusted cost base, ACB): all shares held share one average cost (BUY commissions
  included); a SELL realizes its proceeds, less its commission, less the average cost of the shares sold.
  Superficial-loss rules and currency conversion are not applied (everything is in US dollars).

Both give the same total (realized + unrealized) at every instant; they split it between realized and unrealized
differently, and so between tax years. A split multiplies the shares held and keeps the cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from core import sessions
from gridbot.backtest.engine import Outcome
from gridbot.backtest.tracker import Drawdown
from proto.messages import Lot, RoundTrip
from sim.broker.orders import Execution

CENT = Decimal("0.01")
ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class SplitApplied:
    ts_ns: int
    day: str
    ratio: Decimal


@dataclass(frozen=True, slots=True)
class OpenLot:
    cycle: int
    level: int
    shares: int
    purchase_price: Decimal
    sell_target: Decimal
    sell: str
    unrealized_pnl: Decimal


@dataclass
class Accounting:
    realized: Decimal = ZERO
    unrealized: Decimal = ZERO
    by_year: dict[int, Decimal] = field(default_factory=dict)

    def book(self, year: int, amount: Decimal) -> None:
        self.realized += amount
        self.by_year[year] = self.by_year.get(year, ZERO) + amount


@dataclass
class Report:
    source: str
    timeframe: str
    prices: str
    bars: int
    first_ns: int
    last_ns: int
    last_price: Decimal
    realized_pnl: Decimal
    round_trips: list[RoundTrip]
    fees: Decimal
    buys: int
    sells: int
    max_lots: int
    max_lots_ns: int
    time_at_depth_ns: dict[int, int]
    max_capital: Decimal
    max_capital_ns: int
    drawdown: Drawdown
    equity: Decimal
    open_lots: list[OpenLot]
    unrealized_pnl: Decimal
    specific_lot: Accounting
    average_cost: Accounting
    splits: list[SplitApplied]
    orders: dict[str, int]
    prints_seen: int
    prints_processed: int
    executions: list[Execution]

    @property
    def return_on_capital(self) -> Decimal | None:
        """Total P&L (realized and unrealized) over the most capital the lots ever held; None if none was."""
        if not self.max_capital:
            return None
        return (self.equity / self.max_capital).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


def build(
    outcome: Outcome, source: str, timeframe: str, prices: str, bars: int, splits: list[SplitApplied]
) -> Report:
    """The report of a finished backtest."""
    tracker = outcome.tracker
    state = outcome.state
    mark = tracker.last_price if tracker.last_price is not None else ZERO
    open_lots = [_open_lot(lot, mark) for lot in sorted(state.lots, key=lambda lot: (lot.cycle, lot.level))]
    unrealized = sum((lot.unrealized_pnl for lot in open_lots), ZERO)
    executions = list(outcome.broker.engine.executions)
    specific = Accounting(realized=ZERO)
    for trip in outcome.round_trips:
        specific.book(_year(trip.closed_ts_ns), trip.realized_pnl)
    # Round trips already carry the commissions that came after they closed (the engine amends them as the
    # statekeeper's journal does); an amendment of a round trip before this run would be the only rest.
    booked = {t.buy_key for t in outcome.round_trips} | {t.sell_key for t in outcome.round_trips}
    for amendment in outcome.amendments:
        if amendment.key not in booked:
            specific.book(_year(tracker.last_ns), -amendment.fee)
    specific.unrealized = unrealized
    counters = outcome.broker.counters
    return Report(
        source=source,
        timeframe=timeframe,
        prices=prices,
        bars=bars,
        first_ns=tracker.first_ns or 0,
        last_ns=tracker.last_ns,
        last_price=mark,
        realized_pnl=state.realized_pnl,
        round_trips=list(outcome.round_trips),
        fees=sum((ex.commission for ex in executions), ZERO),
        buys=sum(1 for ex in executions if ex.side == "BOT"),
        sells=sum(1 for ex in executions if ex.side == "SLD"),
        max_lots=tracker.max_lots,
        max_lots_ns=tracker.max_lots_ns,
        time_at_depth_ns=tracker.finish(),
        max_capital=tracker.max_capital,
        max_capital_ns=tracker.max_capital_ns,
        drawdown=tracker.drawdown,
        equity=tracker.equity_at(mark),
        open_lots=open_lots,
        unrealized_pnl=unrealized,
        specific_lot=specific,
        average_cost=average_cost(executions, splits, mark),
        splits=splits,
        orders={
            "placed": counters.placed,
            "cancelled": counters.cancelled,
            "duplicates": counters.duplicates,
            "refused": counters.refused,
            "level0_timeouts": counters.timed_out,
        },
        prints_seen=outcome.prints_seen,
        prints_processed=outcome.prints_processed,
        executions=executions,
    )


def _open_lot(lot: Lot, mark: Decimal) -> OpenLot:
    remaining = lot.quantity - lot.sold
    return OpenLot(
        cycle=lot.cycle,
        level=lot.level,
        shares=remaining,
        purchase_price=lot.purchase_price,
        sell_target=lot.sell_target_price,
        sell=lot.sell,
        unrealized_pnl=mark * remaining + lot.sold_value - lot.cost - lot.fees,
    )


def _year(ts_ns: int) -> int:
    return sessions.eastern_date(ts_ns).year


def average_cost(executions: list[Execution], splits: list[SplitApplied], mark: Decimal) -> Accounting:
    """Canada's ACB over the fills in time order (a split multiplies the shares, the cost base stays)."""
    acc = Accounting()
    shares = 0
    cost = ZERO
    pending = sorted(splits, key=lambda s: s.ts_ns)
    k = 0
    for ex in executions:
        while k < len(pending) and pending[k].ts_ns <= ex.ts_ns:
            shares = int(shares * pending[k].ratio)
            k += 1
        if ex.side == "BOT":
            shares += ex.shares
            cost += ex.price * ex.shares + ex.commission
            continue
        base = cost * ex.shares / shares if shares else ZERO
        acc.book(_year(ex.ts_ns), ex.price * ex.shares - ex.commission - base)
        cost -= base
        shares -= ex.shares
    for split in pending[k:]:
        shares = int(shares * split.ratio)
    acc.unrealized = mark * shares - cost
    return acc


# --------------------------------------------------------------------------------------------- output


def money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=UTC).astimezone(sessions.EASTERN).strftime(
        "%Y-%m-%d %H:%M %Z"
    )


def as_json(report: Report) -> dict[str, Any]:
    """The report's numbers for ``--json`` (money as strings with cents, times in ISO 8601 US/Eastern)."""
    roc = report.return_on_capital
    return {
        "data": {
            "source": report.source,
            "timeframe": report.timeframe,
            "prices": report.prices,
            "bars": report.bars,
            "first": iso(report.first_ns),
            "last": iso(report.last_ns),
            "last_price": str(report.last_price),
            "splits": [{"day": s.day, "ratio": str(s.ratio)} for s in report.splits],
        },
        "realized_pnl": str(money(report.realized_pnl)),
        "round_trips": len(report.round_trips),
        "fees": str(money(report.fees)),
        "fills": {"buys": report.buys, "sells": report.sells},
        "lots": {
            "max": report.max_lots,
            "max_at": iso(report.max_lots_ns) if report.max_lots else None,
            "time_at_depth_hours": {
                str(depth): round(ns / 3.6e12, 2) for depth, ns in report.time_at_depth_ns.items()
            },
        },
        "capital": {
            "max_deployed": str(money(report.max_capital)),
            "max_at": iso(report.max_capital_ns) if report.max_capital else None,
            "return_on_max": str(roc) if roc is not None else None,
        },
        "drawdown": {
            "max": str(money(report.drawdown.amount)),
            "peak": iso(report.drawdown.peak_ns) if report.drawdown.amount else None,
            "trough": iso(report.drawdown.trough_ns) if report.drawdown.amount else None,
        },
        "equity": str(money(report.equity)),
        "open_lots": [
            {
                "cycle": lot.cycle,
                "level": lot.level,
                "shares": lot.shares,
                "purchase_price": str(lot.purchase_price),
                "sell_target": str(lot.sell_target),
                "sell": lot.sell,
                "unrealized_pnl": str(money(lot.unrealized_pnl)),
            }
            for lot in report.open_lots
        ],
        "unrealized_pnl": str(money(report.unrealized_pnl)),
        "accounting": {
            name: {
                "realized": str(money(acc.realized)),
                "unrealized": str(money(acc.unrealized)),
                "total": str(money(acc.realized + acc.unrealized)),
                "realized_by_year": {str(y): str(money(v)) for y, v in sorted(acc.by_year.items())},
            }
            for name, acc in (("specific_lot", report.specific_lot), ("average_cost", report.average_cost))
        },
        "orders": report.orders,
        "prints": {"seen": report.prints_seen, "processed": report.prints_processed},
    }


def as_text(report: Report) -> str:
    """The report for a terminal."""
    roc = report.return_on_capital
    dd = report.drawdown
    lines = [
        f"Backtest of {report.source}",
        f"  {report.bars} {report.timeframe} bars ({report.prices} prices), {iso(report.first_ns)} .. "
        f"{iso(report.last_ns)}; last price {report.last_price}",
    ]
    for s in report.splits:
        lines.append(f"  split {s.ratio}:1 on {s.day}: orders cancelled, lots rescaled")
    lines += [
        "",
        f"Realized P&L           {money(report.realized_pnl):>14}   ({len(report.round_trips)} round trips)",
        f"Fees                   {money(report.fees):>14}   ({report.buys} buys, {report.sells} sells)",
        f"Unrealized P&L         {money(report.unrealized_pnl):>14}   ({len(report.open_lots)} open lots at "
        f"{report.last_price})",
        f"Equity (total P&L)     {money(report.equity):>14}",
        f"Max capital deployed   {money(report.max_capital):>14}"
        + (f"   at {iso(report.max_capital_ns)}" if report.max_capital else ""),
        f"Return on max capital  {(f'{roc * 100:.2f} %' if roc is not None else '-'):>14}",
        f"Max drawdown (MTM)     {money(dd.amount):>14}"
        + (f"   {iso(dd.peak_ns)} -> {iso(dd.trough_ns)}" if dd.amount else ""),
        f"Max lots held          {report.max_lots:>14}"
        + (f"   at {iso(report.max_lots_ns)}" if report.max_lots else ""),
        "",
        "Accounting              realized     unrealized          total",
    ]
    for name, acc in (("specific lot (US)", report.specific_lot), ("average cost (ACB)", report.average_cost)):
        lines.append(
            f"  {name:<19} {money(acc.realized):>12} {money(acc.unrealized):>14} "
            f"{money(acc.realized + acc.unrealized):>14}"
        )
    years = sorted(set(report.specific_lot.by_year) | set(report.average_cost.by_year))
    if years:
        lines.append("  realized by year    specific lot   average cost")
        for year in years:
            lines.append(
                f"    {year}            {money(report.specific_lot.by_year.get(year, ZERO)):>12} "
                f"{money(report.average_cost.by_year.get(year, ZERO)):>14}"
            )
    total_ns = sum(report.time_at_depth_ns.values()) or 1
    lines += ["", "Time at each depth (lots held: share of the time)"]
    depth_cells = [
        f"{depth}: {100 * ns / total_ns:.1f}%" for depth, ns in report.time_at_depth_ns.items() if ns
    ]
    for i in range(0, len(depth_cells), 8):
        lines.append("  " + "  ".join(depth_cells[i : i + 8]))
    if report.open_lots:
        lines += ["", "Open lots at the end", "  cycle level shares   purchase     target  sell     unrealized"]
        for lot in report.open_lots:
            lines.append(
                f"  {lot.cycle:>5} {lot.level:>5} {lot.shares:>6} {lot.purchase_price:>10} {lot.sell_target:>10}  "
                f"{lot.sell:<6} {money(lot.unrealized_pnl):>12}"
            )
    o = report.orders
    lines += [
        "",
        f"Orders: {o['placed']} placed, {o['cancelled']} cancelled, {o['level0_timeouts']} Level-0 timeouts, "
        f"{o['duplicates']} duplicates, {o['refused']} refused; prints: {report.prints_seen} played, "
        f"{report.prints_processed} looked at",
    ]
    return "\n".join(lines)


TRADE_COLUMNS = (
    "cycle", "level", "shares", "buy_time", "buy_price", "sell_time", "sell_price", "fees", "realized_pnl",
    "held_hours", "buy_key", "sell_key",
)


def trade_rows(report: Report) -> list[list[str]]:
    """Every round trip as a CSV row (``TRADE_COLUMNS``), in the order they closed."""
    rows = []
    for t in report.round_trips:
        rows.append(
            [
                str(t.cycle),
                str(t.level),
                str(t.quantity),
                iso(t.opened_ts_ns),
                str(t.buy_price),
                iso(t.closed_ts_ns),
                str(t.sell_price),
                str(money(t.fees)),
                str(money(t.realized_pnl)),
                f"{(t.closed_ts_ns - t.opened_ts_ns) / 3.6e12:.2f}",
                t.buy_key,
                t.sell_key,
            ]
        )
    return rows
