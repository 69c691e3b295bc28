"""Bar files: every layout of ../shared/data and Alpaca's fields, time zones, bar lengths, and clear refusals."""

from __future__ import annotations

import gzip
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from gridbot.backtest.bars import BarDataError, load
from sim.market.timefmt import parse_start

D = Decimal
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def write(tmp_path: Path, text: str, name: str = "bars.csv") -> Path:
    path = tmp_path / name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def test_the_minute_sample_layout_naive_utc(tmp_path: Path) -> None:
    path = write(tmp_path, "Datetime,Symbol,Open,High,Low,Close,Volume\n"
                           "2025-04-30 14:16:00,TQQQ,51.62,51.63,51.47,51.52,443724.0\n"
                           "2025-04-30 14:17:00,TQQQ,51.52,51.52,51.4135,51.43,291336.0\n", "m.csv.gz")

    data = load(path)

    assert data.timeframe == "1Min" and not data.daily
    assert data.bars[0].ts_ns == parse_start("2025-04-30T14:16:00+00:00")
    assert (data.bars[1].low, data.bars[1].volume) == (D("51.4135"), 291336)
    assert data.days == [date(2025, 4, 30)] * 2


def test_naive_times_in_another_zone_with_tz(tmp_path: Path) -> None:
    path = write(tmp_path, "datetime,open,high,low,close,volume\n2025-06-02 09:30:00,1,1,1,1,1\n"
                           "2025-06-02 09:31:00,1,1,1,1,1\n")

    data = load(path, tz="America/New_York")

    assert data.bars[0].ts_ns == parse_start("2025-06-02T09:30:00-04:00")
    with pytest.raises(BarDataError, match="time zone 'Mars/Olympus' is unknown"):
        load(path, tz="Mars/Olympus")


def test_the_shared_hourly_layout_with_offsets() -> None:
    data = load(SHARED / "TQQQ_60m_splitadj_2010-02-11_2026-02-27.csv")

    assert data.timeframe == "1Hour"
    assert data.bars[0].ts_ns == parse_start("2010-02-11T10:00:00-05:00")
    assert data.days[0] == date(2010, 2, 11)


def test_the_shared_daily_layout_is_daily() -> None:
    data = load(SHARED / "TQQQ_daily_splitadj_2010-02-11_2026-07-23.csv")

    assert data.daily and data.timeframe == "1Day"
    assert (data.days[0], data.bars[0].open) == (date(2010, 2, 11), D("0.203438"))


def test_alpacas_bar_fields_and_rfc3339_times(tmp_path: Path) -> None:
    path = write(tmp_path, "t,o,h,l,c,v,n,vw\n2024-01-02T14:30:00Z,50.1,50.3,50.0,50.2,1200,30,50.15\n"
                           "2024-01-02T15:30:00Z,50.2,50.4,50.1,50.3,900,20,50.25\n")

    data = load(path)

    assert data.timeframe == "1Hour"
    assert data.bars[0].ts_ns == parse_start("2024-01-02T14:30:00+00:00")


def test_alpaca_daily_bars_stamped_at_midnight_eastern_are_daily(tmp_path: Path) -> None:
    path = write(tmp_path, "timestamp,open,high,low,close,volume,trade_count,vwap\n"
                           "2024-01-02T05:00:00Z,50,51,49,50.5,1000,10,50\n"
                           "2024-01-03T05:00:00Z,50.5,51,50,50.8,1000,10,50\n")

    data = load(path)

    assert data.daily and data.days == [date(2024, 1, 2), date(2024, 1, 3)]


def test_epoch_milliseconds_and_a_forced_timeframe(tmp_path: Path) -> None:
    path = write(tmp_path, "timestamp,open,high,low,close,volume\n1748872800000,1,1,1,1,1\n")

    data = load(path, timeframe="1Min")

    assert data.bars[0].ts_ns == parse_start("2025-06-02T10:00:00-04:00") and data.timeframe == "1Min"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "is empty"),
        ("Datetime,Open,High,Low,Close\n", "missing volume"),
        ("when,open,high,low,close,volume\n", r"missing datetime \(or timestamp, t, date\)"),
        ("date,open,high,low,close,volume\n", "has a header but no bars"),
        ("date,open,high,low,close,volume\n2025-06-02,1,2,0.5,x,1\n", "line 2: open, high, low, close and volume must"),
        ("date,open,high,low,close,volume\n2025-06-02,1,2,1.5,1.8,1\n", "line 2: low must be <= open"),
        ("date,open,high,low,close,volume\n2025-06-03,1,1,1,1,1\n2025-06-02,1,1,1,1,1\n", "line 3: times must increase"),
        ("date,open,high,low,close,volume\nyesterday,1,1,1,1,1\n", "line 2: the time must be ISO 8601"),
    ],
)
def test_bad_files_are_refused_naming_the_file_and_line(tmp_path: Path, text: str, match: str) -> None:
    path = write(tmp_path, text)

    with pytest.raises(BarDataError, match=match) as err:
        load(path)
    assert str(path) in str(err.value)


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(BarDataError, match="does not exist"):
        load(tmp_path / "nope.csv")
