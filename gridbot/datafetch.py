"""Download bars from Alpaca's market-data REST API into the backtest's CSV layout, resumably.

The only module besides services/feed that imports alpaca-py (its ``StockHistoricalDataClient``, which follows
``next_page_token`` itself). The layout is the shipped sample's: ``Datetime,Symbol,Open,High,Low,Close,Volume``, one
bar a row, ``Datetime`` naive UTC (``2025-04-30 14:16:00``), prices as Alpaca sends them.

Resumable: the range is fetched in chunks (a few days of minute bars, a year of hourly or daily ones), and each chunk
is appended and flushed to disk before the next is asked for. Run the same command again after an interruption and
it asks only for what comes after the last bar in the file (a file whose range is done gets one empty answer).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from alpaca.common.exceptions import APIError
from alpaca.data.enums import Adjustment, DataFeed
from alpaca.data.historical.stock import StockHistoricalDataClient
from alpaca.data.requests import StockBarsRequest
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

from core import sessions

HEADER = ["Datetime", "Symbol", "Open", "High", "Low", "Close", "Volume"]
TIMEFRAMES = {
    "1Min": (TimeFrame(1, TimeFrameUnit.Minute), timedelta(minutes=1), timedelta(days=7)),
    "1Hour": (TimeFrame(1, TimeFrameUnit.Hour), timedelta(hours=1), timedelta(days=366)),
    "1Day": (TimeFrame(1, TimeFrameUnit.Day), timedelta(days=1), timedelta(days=366 * 5)),
}
FEEDS = {"iex": DataFeed.IEX, "sip": DataFeed.SIP, "delayed_sip": DataFeed.DELAYED_SIP}
ADJUSTMENTS = {"raw": Adjustment.RAW, "split": Adjustment.SPLIT, "all": Adjustment.ALL}
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


class FetchError(RuntimeError):
    """A download cannot be done or go on; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Request:
    symbol: str
    first: date
    last: date
    timeframe: str = "1Min"
    feed: str = "sip"
    adjustment: str = "raw"

    def __post_init__(self) -> None:
        if self.timeframe not in TIMEFRAMES:
            raise FetchError(f"--timeframe must be one of {', '.join(TIMEFRAMES)}, was {self.timeframe!r}")
        if self.feed not in FEEDS:
            raise FetchError(f"--feed must be one of {', '.join(FEEDS)}, was {self.feed!r}")
        if self.adjustment not in ADJUSTMENTS:
            raise FetchError(f"--adjustment must be one of {', '.join(ADJUSTMENTS)}, was {self.adjustment!r}")
        if self.first > self.last:
            raise FetchError(f"--from {self.first} is after --to {self.last}")

    @property
    def start(self) -> datetime:
        """Midnight US/Eastern of the first day (pre-market bars start at 04:00 ET)."""
        return datetime.combine(self.first, time(0), tzinfo=sessions.EASTERN).astimezone(UTC)

    @property
    def end(self) -> datetime:
        """Midnight US/Eastern after the last day (after-hours bars end at 20:00 ET, past midnight UTC)."""
        return datetime.combine(self.last + timedelta(days=1), time(0), tzinfo=sessions.EASTERN).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Progress:
    """One chunk written: its range, the bars it added, the file's bar count so far."""

    chunk_start: datetime
    chunk_end: datetime
    added: int
    total: int


def last_bar_time(path: Path) -> datetime | None:
    """The time of the file's last bar (UTC), or None for a missing or empty file; a foreign layout is refused."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    with path.open(newline="") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header != HEADER:
            raise FetchError(
                f"'{path}' exists but is not a bar file of this layout (header {header!r}, expected "
                f"{','.join(HEADER)}); choose another --out or move it away"
            )
        last = None
        for row in rows:
            if row:
                last = row
    if last is None:
        return None
    try:
        return datetime.strptime(last[0], TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise FetchError(f"'{path}': the last row's time {last[0]!r} is not like 2025-04-30 14:16:00") from None


def chunks(start: datetime, end: datetime, size: timedelta) -> Iterator[tuple[datetime, datetime]]:
    """``[start, end)`` cut into pieces of at most ``size``."""
    while start < end:
        stop = min(start + size, end)
        yield start, stop
        start = stop


def _row(symbol: str, bar: dict[str, Any]) -> list[str]:
    ts = bar["t"]
    when = datetime.fromisoformat(ts.replace("Z", "+00:00")) if isinstance(ts, str) else ts
    return [
        when.astimezone(UTC).strftime(TIME_FORMAT),
        symbol,
        *(repr(float(bar[k])) for k in ("o", "h", "l", "c")),
        str(int(bar["v"])),
    ]


def fetch(
    request: Request,
    out: Path,
    keys: tuple[str, str],
    url: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> int:
    """Download ``request`` into ``out`` (appending after its last bar); return the number of bars added."""
    timeframe, step, chunk = TIMEFRAMES[request.timeframe]
    resume = last_bar_time(out)
    start = request.start if resume is None else max(request.start, resume + step)
    if start >= request.end:
        return 0
    client = StockHistoricalDataClient(keys[0], keys[1], raw_data=True, url_override=url)
    out.parent.mkdir(parents=True, exist_ok=True)
    new_file = resume is None
    total = 0 if new_file else sum(1 for _ in out.open()) - 1
    added = 0
    with out.open("a", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        if new_file:
            writer.writerow(HEADER)
        for lo, hi in chunks(start, request.end, chunk):
            params = StockBarsRequest(
                symbol_or_symbols=request.symbol,
                timeframe=timeframe,
                start=lo,
                # Alpaca's end is inclusive: stop a second before the next chunk begins.
                end=hi - timedelta(seconds=1),
                feed=FEEDS[request.feed],
                adjustment=ADJUSTMENTS[request.adjustment],
            )
            try:
                data = client.get_stock_bars(params)
            except APIError as e:
                raise FetchError(
                    f"Alpaca refused the bars of {request.symbol} {lo:%Y-%m-%d %H:%M}..{hi:%Y-%m-%d %H:%M} UTC: {e}; "
                    f"{added} bars were saved, run the same command again to resume"
                ) from None
            except OSError as e:
                raise FetchError(
                    f"cannot reach Alpaca's market data ({e}); {added} bars were saved, run the same command again "
                    "to resume"
                ) from None
            assert isinstance(data, dict)  # raw_data=True: {symbol: [bar dicts]}
            bars = sorted(data.get(request.symbol, []), key=lambda b: b["t"])
            rows = [_row(request.symbol, b) for b in bars]
            writer.writerows(rows)
            f.flush()
            os.fsync(f.fileno())
            added += len(rows)
            total += len(rows)
            if on_progress is not None:
                on_progress(Progress(lo, hi, len(rows), total))
    return added
