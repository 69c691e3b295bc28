"""`gridbot data fetch`: download bars from Alpaca into the backtest's CSV layout (resumable).

A thin shell over gridbot/datafetch.py: keys come from the environment (APCA_API_KEY_ID / APCA_API_SECRET_KEY, or
``.env``) through gridbot.config.alpaca_keys() and are never printed. One line per chunk written goes to stderr;
bad input or a refusal by Alpaca is one line and exit code 2 (the bars already saved stay: run it again to resume).
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path
from typing import Any

from gridbot import config

EXIT_USAGE = 2


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "data", help="market data for backtests: `gridbot data fetch` downloads bars from Alpaca"
    )
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True
    fetch = sub.add_parser(
        "fetch",
        help="download bars from Alpaca into a CSV (resumable)",
        description="Download bars with alpaca-py's StockHistoricalDataClient (keys from APCA_API_KEY_ID and "
        "APCA_API_SECRET_KEY) into Datetime,Symbol,Open,High,Low,Close,Volume rows (naive UTC). Run it again after "
        "an interruption: it continues after the last bar in the file.",
    )
    fetch.add_argument("--symbol", default=None, help="symbol (default: general.symbol)")
    fetch.add_argument("--from", dest="first", required=True, metavar="DATE", help="first day (YYYY-MM-DD)")
    fetch.add_argument("--to", dest="last", required=True, metavar="DATE", help="last day, inclusive")
    fetch.add_argument("--timeframe", default="1Min", choices=("1Min", "1Hour", "1Day"), help="bar length")
    fetch.add_argument("--out", metavar="PATH", help="CSV to write or resume (default: SYMBOL_TF_FROM_TO_utc.csv)")
    fetch.add_argument("--feed", default="sip", choices=("iex", "sip", "delayed_sip"),
                       help="Alpaca's data feed (sip: every US venue; the free plan has it for history)")
    fetch.add_argument("--adjustment", default="raw", choices=("raw", "split", "all"),
                       help="raw = as traded (the backtest's split table handles splits), split = split-adjusted")
    fetch.add_argument("--url", help="market-data base URL (default: Alpaca's; a test server or proxy)")
    fetch.set_defaults(func=run_fetch)


def _day(text: str, flag: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{flag} must be a date like 2025-05-01, was {text!r}") from None


def run_fetch(args: argparse.Namespace) -> int:
    from gridbot import datafetch  # alpaca-py is slow to import; only this command needs it

    cfg = config.load(getattr(args, "config", None))
    symbol = (args.symbol or cfg.general.symbol).upper()
    try:
        request = datafetch.Request(
            symbol=symbol,
            first=_day(args.first, "--from"),
            last=_day(args.last, "--to"),
            timeframe=args.timeframe,
            feed=args.feed,
            adjustment=args.adjustment,
        )
    except (ValueError, datafetch.FetchError) as e:
        print(f"gridbot data fetch: {e}", file=sys.stderr)
        return EXIT_USAGE
    keys = config.alpaca_keys()
    if keys is None:
        print(
            "gridbot data fetch: no Alpaca keys: set APCA_API_KEY_ID and APCA_API_SECRET_KEY in the environment "
            "(or in .env at the project root)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    out = Path(args.out or f"{symbol}_{request.timeframe}_{request.first}_{request.last}_utc.csv").expanduser()

    def progress(p: datafetch.Progress) -> None:
        print(
            f"{p.chunk_start:%Y-%m-%d %H:%M} .. {p.chunk_end:%Y-%m-%d %H:%M} UTC: {p.added} bars ({p.total} in {out})",
            file=sys.stderr,
        )

    try:
        added = datafetch.fetch(request, out, keys, url=args.url, on_progress=progress)
    except datafetch.FetchError as e:
        print(f"gridbot data fetch: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{out}: {added} bars added" if added else f"{out}: nothing new for {request.first} .. {request.last}")
    return 0
