"""The backtest's picture (``--plot FILE.png``): the price with the buys and sells, the lots held, the equity.

Three panels over one time axis, drawn with matplotlib's Agg canvas (no display, no pyplot global state). Long runs
are thinned to a few thousand points per line, keeping each slice's lowest and highest value so spikes survive.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from core import sessions
from gridbot.backtest.report import Report, money
from gridbot.backtest.tracker import Series

MAX_POINTS = 4000
# Intraday marks further apart than this (a night, a weekend) are not joined by a line.
GAP_S = 4 * 3600.0
BUY_COLOR = "#1a9850"
SELL_COLOR = "#d73027"


def _thin(xs: Sequence[float], ys: Sequence[float], limit: int = MAX_POINTS) -> tuple[list[float], list[float]]:
    """At most about ``limit`` points: each slice of the input keeps its lowest and highest point, in time order."""
    n = len(xs)
    if n <= limit:
        return list(xs), list(ys)
    step = -(-2 * n // limit)
    out_x: list[float] = []
    out_y: list[float] = []
    for start in range(0, n, step):
        stop = min(start + step, n)
        lo = min(range(start, stop), key=ys.__getitem__)
        hi = max(range(start, stop), key=ys.__getitem__)
        for i in sorted({lo, hi}):
            out_x.append(xs[i])
            out_y.append(ys[i])
    return out_x, out_y


def _dates(seconds: Sequence[float]) -> list[datetime]:
    return [datetime.fromtimestamp(s, tz=UTC).astimezone(sessions.EASTERN) for s in seconds]


def _broken(xs: list[float], ys: list[float], gap_s: float | None) -> tuple[list[float], list[float]]:
    """Insert a break (NaN) where the marks are more than ``gap_s`` apart: nights and weekends of intraday data
    are not drawn as a straight line."""
    if gap_s is None or len(xs) < 2:
        return xs, ys
    out_x, out_y = [xs[0]], [ys[0]]
    for x0, x, y in zip(xs, xs[1:], ys[1:], strict=False):
        if x - x0 > gap_s:
            out_x.append((x0 + x) / 2)
            out_y.append(float("nan"))
        out_x.append(x)
        out_y.append(y)
    return out_x, out_y


def write_png(report: Report, series: Series, path: Path | str, title: str = "") -> Path:
    """Draw the report's three panels into ``path`` (PNG) and return the path."""
    path = Path(path)
    fig = Figure(figsize=(12, 8.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    price_ax, lots_ax, equity_ax = fig.subplots(
        3, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.2, 1.8]}
    )
    tz = sessions.EASTERN
    gap = None if report.timeframe == "1Day" else GAP_S

    x, y = _broken(*_thin(series.ts, series.price), gap)
    price_ax.plot(_dates(x), y, color="#4d4d4d", linewidth=0.7, label="price")
    for side, color, marker, label in (("BOT", BUY_COLOR, "^", "buys"), ("SLD", SELL_COLOR, "v", "sells")):
        fills = [ex for ex in report.executions if ex.side == side]
        if fills:
            price_ax.scatter(
                _dates([ex.ts_ns / 1e9 for ex in fills]),
                [float(ex.price) for ex in fills],
                s=14 if len(fills) < 500 else 5,
                color=color,
                marker=marker,
                label=f"{label} ({len(fills)})",
                zorder=3,
                linewidths=0,
            )
    price_ax.set_ylabel("price (US$, as traded)")
    price_ax.legend(loc="upper left", fontsize=8)
    price_ax.grid(alpha=0.3)
    roc = report.return_on_capital
    price_ax.set_title(
        title
        or (
            f"{Path(report.source).name}: realized {money(report.realized_pnl)} US$ in {len(report.round_trips)} "
            f"round trips, max capital {money(report.max_capital)}, "
            f"return on it {f'{roc * 100:.1f} %' if roc is not None else '-'}"
        ),
        fontsize=10,
    )

    x, lots = _thin(series.ts, [float(n) for n in series.lots])
    lots_ax.step(_dates(x), lots, where="post", color="#2166ac", linewidth=0.8)
    lots_ax.set_ylabel("lots held")
    lots_ax.grid(alpha=0.3)

    x, equity = _broken(*_thin(series.ts, series.equity), gap)
    equity_ax.plot(_dates(x), equity, color="#762a83", linewidth=0.8, label="equity (realized + open lots at market)")
    equity_ax.axhline(0, color="black", linewidth=0.5)
    equity_ax.set_ylabel("P&L (US$)")
    equity_ax.legend(loc="upper left", fontsize=8)
    equity_ax.grid(alpha=0.3)

    locator = AutoDateLocator(tz=tz)  # type: ignore[no-untyped-call]
    equity_ax.xaxis.set_major_locator(locator)
    equity_ax.xaxis.set_major_formatter(ConciseDateFormatter(locator, tz=tz))  # type: ignore[no-untyped-call]
    fig.savefig(path, format="png")
    return path
