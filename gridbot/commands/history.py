"""`gridbot history [--csv] [--cycle N]`: the closed round trips (lots bought and sold by their own SELL).

Read from the statekeeper's journal (statekeeper.journal under general.run_dir), read-only: it works whether the
statekeeper runs or not, and never changes anything. The table ends with a total line (round trips, shares, fees,
realized P&L); ``--csv`` prints the same rows as CSV with a header, prices and money as exact decimals, times in
UTC ISO 8601. Exit codes: 0 (also with no round trips yet), 2 a missing or unreadable journal, or bad config.
"""

from __future__ import annotations

import argparse
import csv
import sqlite3
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from gridbot import config
from proto.messages import RoundTrip
from services.statekeeper.journal import select_round_trips

EXIT_INPUT = 2
COLUMNS = (
    "closed_at",
    "cycle",
    "level",
    "quantity",
    "buy_price",
    "sell_price",
    "fees",
    "realized_pnl",
    "opened_at",
    "buy_key",
    "sell_key",
)


class HistoryError(Exception):
    """The journal cannot be read; the message names it."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "history",
        help="print the closed round trips (buy, sell, fees, realized P&L)",
        description="Print every closed round trip from the statekeeper's journal: when, which cycle and level, "
        "shares, buy and sell prices, fees and realized P&L, with a total line. Read-only.",
    )
    parser.add_argument("--csv", action="store_true", help="print CSV (with a header) instead of a table")
    parser.add_argument("--cycle", type=int, metavar="N", help="only the round trips of cycle N")
    parser.add_argument(
        "--journal", metavar="PATH", help="the journal (default: statekeeper.journal in run_dir)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = config.load(getattr(args, "config", None))
    path = Path(args.journal) if args.journal else cfg.run_path(cfg.statekeeper.journal)
    try:
        trips = read_round_trips(path)
    except HistoryError as e:
        print(f"gridbot history: {e}", file=sys.stderr)
        return EXIT_INPUT
    if args.cycle is not None:
        trips = [t for t in trips if t.cycle == args.cycle]
    try:
        if args.csv:
            write_csv(trips, sys.stdout)
        else:
            print(table(trips))
        sys.stdout.flush()
    except BrokenPipeError:
        sys.stderr.close()  # `gridbot history | head` is fine
    return 0


def read_round_trips(path: Path) -> list[RoundTrip]:
    """The journal's round trips, oldest first, read without taking any lock a running statekeeper needs."""
    if not path.exists():
        raise HistoryError(
            f"journal '{path}' does not exist: the statekeeper has not run with this config yet "
            "(or statekeeper.journal / general.run_dir point elsewhere)"
        )
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return select_round_trips(db)
    except sqlite3.DatabaseError as e:
        raise HistoryError(f"journal '{path}' cannot be read: {e}") from None


def _when(ts_ns: int) -> str:
    """UTC ISO 8601 with microseconds and a Z (the state file's format); empty when unknown."""
    if not ts_ns:
        return ""
    return datetime.fromtimestamp(ts_ns / 1e9, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _row(trip: RoundTrip) -> list[str]:
    return [
        _when(trip.closed_ts_ns),
        str(trip.cycle),
        str(trip.level),
        str(trip.quantity),
        str(trip.buy_price),
        str(trip.sell_price),
        str(trip.fees),
        str(trip.realized_pnl),
        _when(trip.opened_ts_ns),
        trip.buy_key,
        trip.sell_key,
    ]


def write_csv(trips: Sequence[RoundTrip], out: Any) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for trip in trips:
        writer.writerow(_row(trip))


def table(trips: Sequence[RoundTrip]) -> str:
    """A fixed-width table, newest last, with a total line."""
    if not trips:
        return "no closed round trips yet"
    header = ("closed (UTC)", "cycle", "level", "shares", "buy", "sell", "fees", "P&L")
    rows = [
        (
            _when(t.closed_ts_ns)[:19].replace("T", " "),
            str(t.cycle),
            str(t.level),
            str(t.quantity),
            f"{t.buy_price:.4f}",
            f"{t.sell_price:.4f}",
            f"{t.fees:.2f}",
            f"{t.realized_pnl:.2f}",
        )
        for t in trips
    ]
    total_fees = sum((t.fees for t in trips), Decimal(0))
    total_pnl = sum((t.realized_pnl for t in trips), Decimal(0))
    shares = sum(t.quantity for t in trips)
    total = ("total", f"{len(trips)} trips", "", str(shares), "", "", f"{total_fees:.2f}", f"{total_pnl:.2f}")
    widths = [max(len(r[i]) for r in [header, *rows, total]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows), rule, line(total)])
