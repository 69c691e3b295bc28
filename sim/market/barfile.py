"""Read a minute-bar CSV (plain or .gz) into bars: the replay source's input.

The layout is the shipped sample's: a header naming the columns (``Datetime,Symbol,Open,High,Low,Close,Volume``;
names are matched case-insensitively, ``timestamp``/``time``/``t`` also accepted for the time, the symbol column is
optional), one row per minute, times in ISO 8601. A time without an offset is UTC (as in the sample); one with an
offset is converted. Prices are kept exactly as written (Decimal); volumes must be whole numbers ("443724.0" is).
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

from sim.market.intrabar import Bar
from sim.market.timefmt import datetime_ns

TIME_COLUMNS = ("datetime", "timestamp", "time", "t")
PRICE_COLUMNS = ("open", "high", "low", "close")


class BarFileError(ValueError):
    """A bar file is missing or malformed; the message names the file, the line and the fix."""


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115 - closed by the caller's with


def parse_time(text: str) -> int:
    """Return UTC nanoseconds for an ISO 8601 time; a naive time is taken as UTC."""
    dt = datetime.fromisoformat(text.strip())
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return datetime_ns(dt)


def _columns(header: list[str], where: str) -> tuple[int, list[int], int]:
    names = [h.strip().lower() for h in header]
    time_col = next((names.index(c) for c in TIME_COLUMNS if c in names), None)
    missing = [c for c in (*PRICE_COLUMNS, "volume") if c not in names]
    if time_col is None or missing:
        need = (["Datetime"] if time_col is None else []) + [m.capitalize() for m in missing]
        raise BarFileError(
            f"{where} line 1: the header must name the columns Datetime,Open,High,Low,Close,Volume; "
            f"missing {', '.join(need)} (header was {','.join(header)!r})"
        )
    return time_col, [names.index(c) for c in PRICE_COLUMNS], names.index("volume")


def _bar(row: list[str], cols: tuple[int, list[int], int], where: str) -> Bar:
    time_col, price_cols, volume_col = cols
    try:
        ts = parse_time(row[time_col])
    except (ValueError, IndexError):
        raise BarFileError(f"{where}: time must be ISO 8601 like 2025-04-30 14:16:00, was {row!r}") from None
    try:
        o, h, low, c = (Decimal(row[i].strip()) for i in price_cols)
        volume_dec = Decimal(row[volume_col].strip())
    except (InvalidOperation, IndexError):
        raise BarFileError(
            f"{where}: open, high, low, close and volume must be numbers, row was {row!r}"
        ) from None
    if not all(p.is_finite() and p > 0 for p in (o, h, low, c)):
        raise BarFileError(f"{where}: prices must be positive, row was {row!r}")
    if not (volume_dec.is_finite() and volume_dec >= 0 and volume_dec == volume_dec.to_integral_value()):
        raise BarFileError(f"{where}: volume must be a whole number of shares >= 0, was {row[volume_col]!r}")
    if not (low <= min(o, c) and h >= max(o, c)):
        raise BarFileError(f"{where}: low must be <= open and close <= high, row was {row!r}")
    return Bar(ts, o, h, low, c, int(volume_dec))


def iter_bars(path: Path) -> Iterator[Bar]:
    """Yield the bars of ``path`` in file order, checking that times strictly increase."""
    if not path.is_file():
        raise BarFileError(f"bar file '{path}' does not exist; set sim.file to a minute-bar CSV")
    with _open_text(path) as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise BarFileError(
                f"bar file '{path}' is empty; it needs a header and at least one bar"
            ) from None
        cols = _columns(header, f"bar file '{path}'")
        last_ts: int | None = None
        for row in reader:
            if not row or not any(cell.strip() for cell in row):
                continue
            where = f"bar file '{path}' line {reader.line_num}"
            bar = _bar(row, cols, where)
            if last_ts is not None and bar.ts_ns <= last_ts:
                raise BarFileError(
                    f"{where}: times must increase, {row[cols[0]]!r} is not after the previous bar"
                )
            last_ts = bar.ts_ns
            yield bar


def load_bars(path: Path) -> list[Bar]:
    """Return every bar of ``path`` (see :func:`iter_bars`); an empty file is an error."""
    try:
        bars = list(iter_bars(path))
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as e:
        raise BarFileError(f"bar file '{path}' cannot be read: {e}") from None
    if not bars:
        raise BarFileError(f"bar file '{path}' has a header but no bars")
    return bars
