"""Read bar files for a backtest: minute, hourly or daily OHLCV in the layouts of ../shared/data and Alpaca's.

The layout is detected from the header (names matched case-insensitively):

- time: ``Datetime``/``datetime``, ``timestamp``, ``t``, ``date`` (first found in that order). ISO 8601 times (a
  date alone means a daily bar), or epoch seconds / milliseconds. A time without an offset is in ``tz`` (UTC unless
  the caller says otherwise); one with an offset is converted;
- prices: ``open``/``o``, ``high``/``h``, ``low``/``l``, ``close``/``c``; volume: ``volume``/``v`` (fractions, as split-
  adjusted files have, are rounded); any other column (symbol, vwap, trade_count, ...) is ignored.

The bar length is the shortest gap between two bars (60 s minute bars, 3600 s hourly bars, a day or more for daily
bars) unless given. Files may be plain or gzipped (``.gz``). Prices are kept exactly as written here; the backtest
rounds them to the cent after any split adjustment.
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core import sessions
from sim.market.intrabar import Bar

TIME_COLUMNS = ("datetime", "timestamp", "t", "date")
COLUMNS = {
    "open": ("open", "o"),
    "high": ("high", "h"),
    "low": ("low", "l"),
    "close": ("close", "c"),
    "volume": ("volume", "v"),
}
TIMEFRAMES = {"1Min": 60, "1Hour": 3600, "1Day": 86_400}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NS = 1_000_000_000


class BarDataError(ValueError):
    """A bar file is missing or malformed; the message names the file, the line and the fix."""


@dataclass(frozen=True, slots=True)
class BarData:
    """The bars of one file: ``bars[i].ts_ns`` is the bar's start (UTC ns), ``days[i]`` its US/Eastern date."""

    source: str
    bars: list[Bar]
    days: list[date]
    bar_seconds: int

    @property
    def daily(self) -> bool:
        return self.bar_seconds >= 86_400

    @property
    def timeframe(self) -> str:
        if self.daily:
            return "1Day"
        if self.bar_seconds >= 3600:
            return "1Hour" if self.bar_seconds == 3600 else f"{self.bar_seconds // 60}Min"
        return "1Min" if self.bar_seconds == 60 else f"{self.bar_seconds}s"

    def select(self, first: date | None, last: date | None, regular_only: bool) -> BarData:
        """The bars dated ``first`` .. ``last`` (US/Eastern, inclusive); only regular-hours bars if asked."""
        keep = [
            i
            for i, day in enumerate(self.days)
            if (first is None or day >= first)
            and (last is None or day <= last)
            and (self.daily or not regular_only or _regular(self.bars[i].ts_ns))
        ]
        return BarData(self.source, [self.bars[i] for i in keep], [self.days[i] for i in keep], self.bar_seconds)


def _regular(ts_ns: int) -> bool:
    return sessions.session_at(ts_ns) is sessions.Session.REGULAR


def zone(name: str) -> tzinfo:
    """The time zone ``name`` (an IANA name like America/New_York, or UTC)."""
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BarDataError(f"time zone {name!r} is unknown; use an IANA name like America/New_York or UTC") from None


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115 - closed by the caller's with


def _pick(names: list[str], choices: tuple[str, ...]) -> int | None:
    return next((names.index(c) for c in choices if c in names), None)


def _layout(header: list[str], where: str) -> tuple[int, list[int]]:
    names = [h.strip().lower() for h in header]
    time_col = _pick(names, TIME_COLUMNS)
    cols = {key: _pick(names, choices) for key, choices in COLUMNS.items()}
    missing = [key for key, col in cols.items() if col is None]
    if time_col is None or missing:
        need = (["datetime (or timestamp, t, date)"] if time_col is None else []) + missing
        raise BarDataError(
            f"{where} line 1: the header must name a time column and open, high, low, close, volume (or Alpaca's "
            f"t, o, h, l, c, v); missing {', '.join(need)} (header was {','.join(header)!r})"
        )
    return time_col, [c for c in cols.values() if c is not None]


def _parse_time(text: str, tz: tzinfo) -> tuple[int, date, bool]:
    """UTC ns, the US/Eastern date and whether the value was a date alone."""
    text = text.strip()
    if text.isdigit():
        value = int(text)
        # Epoch milliseconds (13 digits today) or seconds (10 digits).
        ns = value * 1_000_000 if value > 10**11 else value * _NS
        return ns, sessions.eastern_date(ns), False
    if len(text) == 10:
        day = date.fromisoformat(text)
        return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * _NS, day, True
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    delta = dt - _EPOCH
    ns = (delta.days * 86_400 + delta.seconds) * _NS + delta.microseconds * 1000
    return ns, _eastern_date(ns // _HOUR_NS), False


_HOUR_NS = 3600 * _NS


@functools.lru_cache(maxsize=4096)
def _eastern_date(hour: int) -> date:
    # US/Eastern's offset is whole hours and changes on the hour: one lookup per UTC hour serves its minutes.
    return sessions.eastern_date(hour * _HOUR_NS)


def _rows(path: Path, tz: tzinfo) -> Iterator[tuple[int, date, bool, Bar, str]]:
    with _open_text(path) as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise BarDataError(f"bar file '{path}' is empty; it needs a header and at least one bar") from None
        time_col, (o_col, h_col, l_col, c_col, v_col) = _layout(header, f"bar file '{path}'")
        for row in reader:
            if not row or not any(cell.strip() for cell in row):
                continue
            where = f"bar file '{path}' line {reader.line_num}"
            try:
                ts, day, date_only = _parse_time(row[time_col], tz)
            except (ValueError, IndexError):
                raise BarDataError(
                    f"{where}: the time must be ISO 8601 like 2025-04-30 14:16:00 (or a date, or epoch "
                    f"seconds/milliseconds), row was {row!r}"
                ) from None
            try:
                o, h, low, c = (Decimal(row[i]) for i in (o_col, h_col, l_col, c_col))
                volume = Decimal(row[v_col])
            except (InvalidOperation, IndexError):
                raise BarDataError(f"{where}: open, high, low, close and volume must be numbers, row was {row!r}") from None
            if not (o > 0 and h > 0 and low > 0 and c > 0 and o.is_finite() and h.is_finite()):
                raise BarDataError(f"{where}: prices must be positive numbers, row was {row!r}")
            if not (low <= o <= h and low <= c <= h):
                raise BarDataError(f"{where}: low must be <= open and close <= high, row was {row!r}")
            if not (volume.is_finite() and volume >= 0):
                raise BarDataError(f"{where}: volume must be a number of shares >= 0, was {row[v_col]!r}")
            # Split-adjusted files have fractional volumes; the backtest only shares a bar's volume out over prints.
            shares = int(volume.to_integral_value(rounding=ROUND_HALF_UP))
            yield ts, day, date_only, Bar(ts, o, h, low, c, shares), where


def load(path: Path | str, tz: str = "UTC", timeframe: str | None = None) -> BarData:
    """Read every bar of ``path``; times must increase. ``timeframe`` (1Min, 1Hour, 1Day) overrides detection."""
    path = Path(path)
    if not path.is_file():
        raise BarDataError(f"bar file '{path}' does not exist; give a CSV of bars (see docs/backtest.md)")
    if timeframe is not None and timeframe not in TIMEFRAMES:
        raise BarDataError(f"timeframe must be one of {', '.join(TIMEFRAMES)}, was {timeframe!r}")
    bars: list[Bar] = []
    days: list[date] = []
    all_dates = True
    last_ts: int | None = None
    try:
        for ts, day, date_only, bar, where in _rows(path, zone(tz)):
            if last_ts is not None and ts <= last_ts:
                raise BarDataError(f"{where}: times must increase; this bar is not after the previous one")
            last_ts = ts
            all_dates = all_dates and date_only
            bars.append(bar)
            days.append(day)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as e:
        raise BarDataError(f"bar file '{path}' cannot be read: {e}") from None
    if not bars:
        raise BarDataError(f"bar file '{path}' has a header but no bars")
    if timeframe is not None:
        seconds = TIMEFRAMES[timeframe]
    elif all_dates:
        seconds = 86_400
    else:
        gaps = [b.ts_ns - a.ts_ns for a, b in zip(bars, bars[1:], strict=False)]
        seconds = min(gaps) // _NS if gaps else 60
        seconds = 86_400 if seconds >= 86_400 else seconds
    return BarData(str(path), bars, days, int(seconds))
