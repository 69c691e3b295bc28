"""`gridbot backtest DATA`: play bars through the very cores that trade and report what the grid would have done.

A thin shell over gridbot/backtest/: it reads the config, the lot map, the bars and the split table, runs the loop,
prints the report (text or ``--json``), and writes ``--plot`` (PNG) and ``--trades`` (CSV). Bad input gives one
line on stderr naming the input and the fix, and exit code 2. docs/backtest.md explains the model.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from datetime import date
from pathlib import Path
from typing import Any

from core.ledger import LedgerRules
from core.lotmap import LotMapError, load_lot_map
from core.prices import parse_factor
from gridbot import config
from gridbot.backtest import bars as barfiles
from gridbot.backtest.broker import Limits
from gridbot.backtest.engine import EXEC_MEMORY, BacktestError, Settings
from gridbot.backtest.paths import PathModel
from gridbot.backtest.report import TRADE_COLUMNS, Report, as_json, as_text, build, trade_rows
from gridbot.backtest.runner import Plan, play
from gridbot.backtest.splits import PRICE_KINDS, TQQQ_SPLITS, SplitError, load_splits
from gridbot.backtest.tracker import Series
from services.strategy.settings import strategy_config

EXIT_USAGE = 2
NS_PER_SECOND = 1_000_000_000


class _InputError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "backtest",
        help="play minute, hourly or daily bars through the grid's own cores and report the result",
        description="Play bars (CSV: the layouts of ../shared/data and Alpaca's bar fields) through the strategy core, "
        "the ledger and the paper broker's matching, with no processes and no sockets, and report realized P&L, "
        "round trips, fees, lots held, capital, drawdown and the P&L under specific-lot and average-cost accounting. "
        "See docs/backtest.md.",
    )
    parser.add_argument("data", metavar="DATA", help="bar file (CSV, optionally .gz)")
    parser.add_argument("--lots", metavar="PATH", help="lot map CSV (default: general.lot_map from the config)")
    parser.add_argument("--from", dest="first", metavar="DATE", help="first day to play (YYYY-MM-DD, US/Eastern)")
    parser.add_argument("--to", dest="last", metavar="DATE", help="last day to play (YYYY-MM-DD, inclusive)")
    parser.add_argument(
        "--sessions",
        choices=("rth", "extended"),
        default="extended",
        help="play only regular-hours bars (rth) or every bar of the file (extended, the default)",
    )
    parser.add_argument("--tz", default="UTC", help="time zone of times written without an offset (default UTC)")
    parser.add_argument(
        "--timeframe", choices=tuple(barfiles.TIMEFRAMES), help="bar length (default: detected from the times)"
    )
    parser.add_argument(
        "--prices",
        choices=PRICE_KINDS,
        default="auto",
        help="the file's prices: as-traded, split-adjusted, or auto (what they show at the table's splits)",
    )
    parser.add_argument("--splits", metavar="PATH", help="split table CSV (default: backtest.splits, else TQQQ's)")
    parser.add_argument("--seed", type=int, help="seed of the daily bars' extreme order (default: backtest.seed)")
    parser.add_argument(
        "--extremes", choices=("auto", "rule", "seeded"), help="which extreme of a bar comes first (docs/backtest.md)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON (the same numbers)")
    parser.add_argument("--plot", metavar="FILE.png", help="draw price with buys and sells, lots held and equity")
    parser.add_argument("--trades", metavar="FILE.csv", help="write every round trip as a CSV row")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        report, series = _backtest(args)
    except _InputError as e:
        print(f"gridbot backtest: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.trades:
        _write_trades(Path(args.trades), trade_rows(report))
    if args.plot:
        from gridbot.backtest.plot import write_png  # matplotlib is slow to import; only when asked

        write_png(report, series, Path(args.plot))
    try:
        print(json.dumps(as_json(report), indent=2) if args.json else as_text(report))
        sys.stdout.flush()
    except BrokenPipeError:
        # `gridbot backtest ... | head`: the reader has what it wanted; silence the interpreter's flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _backtest(args: argparse.Namespace) -> tuple[Report, Series]:
    cfg = config.load(getattr(args, "config", None))
    lots_path = Path(args.lots).expanduser() if args.lots else cfg.path(cfg.general.lot_map)
    try:
        lot_map = load_lot_map(lots_path)
        strategy = strategy_config(cfg, lot_map)
        markup = parse_factor(cfg.strategy.sell_markup, "strategy.sell_markup")
        model = PathModel(
            minute_prints=cfg.backtest.minute_prints,
            hour_prints=cfg.backtest.hour_prints,
            day_prints=cfg.backtest.day_prints,
            extremes=args.extremes or cfg.backtest.extremes,
            seed=cfg.backtest.seed if args.seed is None else args.seed,
        )
    except (LotMapError, ValueError) as e:
        raise _InputError(str(e)) from None
    settings = Settings(
        strategy=strategy,
        limits=Limits(
            max_live_buys=cfg.broker.max_live_buys,
            max_live_sells=cfg.strategy.max_live_sells,
            immediate_timeout_ns=int(cfg.broker.immediate_order_timeout * NS_PER_SECOND),
        ),
        ledger=LedgerRules(sell_markup=markup, exec_memory=EXEC_MEMORY),
        partial_fills=False,
    )
    plan = Plan(
        first=_day(args.first, "--from"),
        last=_day(args.last, "--to"),
        regular_only=args.sessions == "rth",
        prices=args.prices,
    )
    if plan.first and plan.last and plan.first > plan.last:
        raise _InputError(f"--from {plan.first} is after --to {plan.last}")
    splits_path = Path(args.splits or cfg.backtest.splits or TQQQ_SPLITS)
    if not splits_path.is_absolute() and not args.splits:
        splits_path = cfg.path(str(splits_path))
    try:
        data = barfiles.load(Path(args.data).expanduser(), tz=args.tz, timeframe=args.timeframe)
        splits = load_splits(splits_path)
        played = play(data, splits, plan, settings, model)
    except (barfiles.BarDataError, SplitError, BacktestError, ValueError) as e:
        raise _InputError(str(e)) from None
    report = build(
        played.outcome, data.source, played.data.timeframe, played.prices, len(played.data.bars), played.splits
    )
    return report, played.outcome.tracker.series


def _day(text: str | None, flag: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise _InputError(f"{flag} must be a date like 2025-05-01, was {text!r}") from None


def _write_trades(path: Path, rows: list[list[str]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(TRADE_COLUMNS)
        writer.writerows(rows)
