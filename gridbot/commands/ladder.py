"""`gridbot ladder`: print the grid for an anchor price, with the shares and the capital every level needs.

A thin shell over core.ladder: it reads the config and the lot map, formats the rows as a table or JSON, and turns
bad input into one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from core.ladder import LadderRow, build_ladder
from core.lotmap import LotMapError, load_lot_map
from core.prices import parse_factor, parse_price
from gridbot import config

EXIT_USAGE = 2


class _InputError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "ladder",
        help="print the grid for an anchor price and the capital it needs",
        description="Print every level of the grid for an anchor price (Level 0's average fill): shares, BUY trigger, "
        "SELL target, cumulative shares and cost, and the drop from the anchor. Nothing is sent anywhere.",
    )
    parser.add_argument(
        "--anchor", required=True, metavar="PRICE", help="the anchor price, e.g. 100 or 97.0213"
    )
    parser.add_argument(
        "--lots", metavar="PATH", help="lot map CSV (default: general.lot_map from the config)"
    )
    parser.add_argument(
        "--levels", metavar="N", help="show only the first N levels (default: all of the lot map)"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        rows, title = _build(args)
    except _InputError as e:
        print(f"gridbot ladder: {e}", file=sys.stderr)
        return EXIT_USAGE
    text = json.dumps([_as_json(row) for row in rows], indent=2) if args.json else _as_table(rows, title)
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # `gridbot ladder ... | head`: the reader has what it wanted; silence the interpreter's own flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _build(args: argparse.Namespace) -> tuple[tuple[LadderRow, ...], str]:
    try:
        anchor = parse_price(args.anchor, "--anchor")
    except ValueError as e:
        raise _InputError(str(e)) from None
    cfg = config.load(getattr(args, "config", None))
    try:
        step = parse_factor(cfg.strategy.step, "strategy.step")
        markup = parse_factor(cfg.strategy.sell_markup, "strategy.sell_markup")
    except ValueError as e:
        raise _InputError(f"config file '{cfg.source or config.DEFAULTS_FILE}': {e}") from None
    lots_path = Path(args.lots).expanduser() if args.lots else cfg.path(cfg.general.lot_map)
    try:
        lot_map = load_lot_map(lots_path)
    except LotMapError as e:
        raise _InputError(str(e)) from None
    levels = _levels(args.levels, len(lot_map), lots_path)
    try:
        rows = build_ladder(anchor, lot_map, levels, step, markup)
    except ValueError as e:  # the checks above should leave nothing for the core to refuse; never a traceback
        raise _InputError(str(e)) from None
    title = (
        f"anchor {_exact(anchor)} | lot map '{lots_path}' ({len(lot_map)} levels) | "
        f"step {_pct(step)}, sell markup {_pct(markup)}"
    )
    return rows, title


def _levels(text: str | None, available: int, lots_path: Path) -> int | None:
    if text is None:
        return None
    if not text.strip().isdecimal() or not text.strip().isascii() or int(text) < 1:
        raise _InputError(f"--levels must be a whole number >= 1, was {text!r}")
    if int(text) > available:
        raise _InputError(f"--levels {int(text)}: the lot map '{lots_path}' has only {available} levels")
    return int(text)


def _as_json(row: LadderRow) -> dict[str, object]:
    return {
        "level": row.level,
        "shares": row.shares,
        "trigger": f"{row.trigger:.2f}",
        "sell_target": f"{row.sell_target:.2f}",
        "cum_shares": row.cum_shares,
        "cum_cost": f"{row.cum_cost:.2f}",
        "drop_pct": f"{row.drop_pct:.2f}",
    }


_COLUMNS = ("level", "shares", "buy at", "sell at", "cum shares", "cum cost", "drop")


def _as_table(rows: Sequence[LadderRow], title: str) -> str:
    cells = [
        (
            str(r.level),
            str(r.shares),
            _money(r.trigger),
            _money(r.sell_target),
            f"{r.cum_shares:,}",
            _money(r.cum_cost),
            f"{r.drop_pct:.2f}%",
        )
        for r in rows
    ]
    widths = [max(len(col), *(len(c[i]) for c in cells)) for i, col in enumerate(_COLUMNS)]
    lines = [title, "  ".join(col.rjust(w) for col, w in zip(_COLUMNS, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    last = rows[-1]
    lines.append(
        f"total: {len(rows)} level{'' if len(rows) == 1 else 's'}, {last.cum_shares:,} shares, capital {_money(last.cum_cost)} "
        f"to buy every level down to {_money(last.trigger)} ({last.drop_pct:.2f}% below the anchor)"
    )
    return "\n".join(lines)


def _money(value: Decimal) -> str:
    return f"{value:,.2f}"


def _exact(price: Decimal) -> str:
    """A price to the cent, or with all its decimals when it has more (an average fill)."""
    exponent = price.as_tuple().exponent
    return _money(price) if isinstance(exponent, int) and exponent >= -2 else f"{price:,f}"


def _pct(fraction: Decimal) -> str:
    return f"{(fraction * 100).normalize():f}%"
