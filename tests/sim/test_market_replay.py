"""The replay source: the shipped TQQQ sample, seeking with `start`, looping, and bad bar files."""

from __future__ import annotations

import gzip
import itertools
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gridbot.config import PROJECT_ROOT, load
from sim.market import open_source
from sim.market.barfile import BarFileError, load_bars
from sim.market.intrabar import Bar
from sim.market.replay import WEEK_NS, ReplaySource
from sim.market.timefmt import parse_start

SAMPLE = PROJECT_ROOT / "sim" / "data" / "TQQQ_1min_sample.csv.gz"
ORIGINAL = Path("/work/shared/data/TQQQ_1min_2025-04-30_2025-07-03_utc.csv")
NY = ZoneInfo("America/New_York")


@pytest.fixture(scope="module")
def sample() -> list[Bar]:
    return load_bars(SAMPLE)


def test_the_shipped_sample_is_the_real_tqqq_minute_file(sample: list[Bar]) -> None:
    if ORIGINAL.exists():  # the reference copy outside the repository, when this machine has it
        assert gzip.decompress(SAMPLE.read_bytes()) == ORIGINAL.read_bytes()
    assert len(sample) == 42_228
    assert sample[0] == Bar(
        1_746_022_560_000_000_000,
        Decimal("51.62"),
        Decimal("51.63"),
        Decimal("51.47"),
        Decimal("51.52"),
        443_724,
    )
    sessions = {datetime.fromtimestamp(b.ts_ns / 1e9, tz=UTC).astimezone(NY).date() for b in sample}
    assert len(sessions) == 45


def test_the_default_config_replays_the_shipped_sample_from_its_first_bar(sample: list[Bar]) -> None:
    cfg = load()
    opened = open_source(cfg.sim, cfg.path)
    first = next(iter(opened.source))
    assert opened.source.name == "replay" and opened.driven
    assert first.ts_ns == opened.start_ns == sample[0].ts_ns
    assert first.price == sample[0].open


def test_start_seeks_to_the_first_print_at_or_after_it(sample: list[Bar]) -> None:
    start = parse_start("2025-06-02T10:00:00-04:00")
    replay = ReplaySource(sample, 10, start_ns=start)
    first = next(iter(replay))
    bar = next(b for b in sample if b.ts_ns == start)
    assert first.ts_ns == start and first.price == bar.open
    assert replay.progress()["bar_time"] == "2025-06-02T14:00:00.000000Z"


def test_a_start_inside_a_minute_skips_that_minutes_earlier_prints(sample: list[Bar]) -> None:
    start = parse_start("2025-06-02T10:00:30-04:00")
    first = next(iter(ReplaySource(sample, 10, start_ns=start)))
    assert first.ts_ns == start  # prints fall every 6 s, 10:00:30 is one of them


def test_a_start_after_the_file_is_refused_naming_the_key(sample: list[Bar]) -> None:
    with pytest.raises(ValueError, match=r"sim\.start .* after the last bar"):
        ReplaySource(sample, 10, start_ns=parse_start("2026-01-05T10:00:00-05:00"), label="x.csv")


def three_bars() -> list[Bar]:
    t = 1_748_872_800_000_000_000  # Monday 2025-06-02 14:00 UTC
    return [
        Bar(t, Decimal("10.00"), Decimal("10.10"), Decimal("9.90"), Decimal("10.05"), 400),
        Bar(t + 60 * 10**9, Decimal("10.05"), Decimal("10.20"), Decimal("10.00"), Decimal("10.20"), 400),
        Bar(t + 120 * 10**9, Decimal("10.20"), Decimal("10.40"), Decimal("10.10"), Decimal("12.50"), 400),
    ]


def test_without_loop_the_replay_ends_after_the_last_bar() -> None:
    prints = list(ReplaySource(three_bars(), 4))
    assert len(prints) == 12 and prints[-1].price == Decimal("12.50")


def test_a_looped_replay_moves_by_whole_weeks_and_opens_where_it_closed() -> None:
    bars = three_bars()
    replay = ReplaySource(bars, 4, loop=True)
    prints = list(itertools.islice(replay, 24))
    first_pass, second_pass = prints[:12], prints[12:]
    assert second_pass[0].ts_ns - first_pass[0].ts_ns == WEEK_NS  # same weekday, same time of day
    assert second_pass[0].price == first_pass[-1].price == Decimal("12.50")  # no jump at the seam
    assert second_pass[-1].price == Decimal("15.63")  # 12.50 x 12.50 / 10.00, half-up to the cent
    assert all(a.ts_ns < b.ts_ns for a, b in itertools.pairwise(prints))
    assert replay.progress()["pass"] == 2


def test_sub_penny_prices_in_the_file_are_printed_to_the_cent() -> None:
    t = 1_748_872_800_000_000_000
    bar = Bar(t, Decimal("51.42"), Decimal("51.555"), Decimal("51.4135"), Decimal("51.525"), 400)
    prices = [p.price for p in ReplaySource([bar], 4)]
    assert prices == [Decimal("51.42"), Decimal("51.41"), Decimal("51.56"), Decimal("51.53")]


def test_the_same_file_replays_to_the_same_prints() -> None:
    assert list(ReplaySource(three_bars(), 10)) == list(ReplaySource(three_bars(), 10))


def write(tmp_path: Path, text: str, name: str = "bars.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_a_plain_csv_with_offset_times_and_lowercase_names_loads(tmp_path: Path) -> None:
    p = write(tmp_path, "timestamp,open,high,low,close,volume\n2025-06-02T10:00:00-04:00,1,2,0.5,1.5,100.0\n")
    assert load_bars(p) == [
        Bar(
            parse_start("2025-06-02T10:00:00-04:00"),
            Decimal(1),
            Decimal(2),
            Decimal("0.5"),
            Decimal("1.5"),
            100,
        )
    ]


HEADER = "Datetime,Symbol,Open,High,Low,Close,Volume\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        (HEADER, "no bars"),
        ("Datetime,Open,High,Close,Volume\n", r"line 1: .*missing Low"),
        (HEADER + "2025-06-02 14:00:00,TQQQ,1,x,1,1,10\n", "line 2: .*must be numbers"),
        (HEADER + "yesterday,TQQQ,1,1,1,1,10\n", "line 2: time must be ISO 8601"),
        (
            HEADER + "2025-06-02 14:00:00,TQQQ,1,0.9,0.8,1,10\n",
            "line 2: low must be <= open and close <= high",
        ),
        (HEADER + "2025-06-02 14:00:00,TQQQ,-1,1,-2,1,10\n", "line 2: prices must be positive"),
        (HEADER + "2025-06-02 14:00:00,TQQQ,1,1,1,1,10.5\n", "line 2: volume must be a whole number"),
        (
            HEADER + "2025-06-02 14:01:00,TQQQ,1,1,1,1,10\n2025-06-02 14:00:00,TQQQ,1,1,1,1,10\n",
            "line 3: times must increase",
        ),
    ],
)
def test_a_bad_bar_file_is_refused_naming_the_file_and_the_line(
    tmp_path: Path, text: str, message: str
) -> None:
    p = write(tmp_path, text)
    with pytest.raises(BarFileError, match=message) as e:
        load_bars(p)
    assert str(p) in str(e.value)


def test_a_missing_bar_file_names_the_config_key(tmp_path: Path) -> None:
    with pytest.raises(BarFileError, match=r"does not exist; set sim\.file"):
        load_bars(tmp_path / "nope.csv.gz")


def test_a_corrupt_gzip_is_refused_naming_the_file(tmp_path: Path) -> None:
    p = tmp_path / "bars.csv.gz"
    p.write_bytes(b"not gzip at all")
    with pytest.raises(BarFileError, match="cannot be read"):
        load_bars(p)


def test_resuming_after_a_time_continues_with_the_next_print_of_the_same_pass_and_scale() -> None:
    full = list(itertools.islice(ReplaySource(three_bars(), 4, loop=True), 40))
    for cut in (0, 5, 11, 12, 17, 30):
        resumed = ReplaySource(three_bars(), 4, loop=True)
        resumed.resume_after(full[cut].ts_ns)
        assert list(itertools.islice(resumed, 40 - cut - 1)) == full[cut + 1 :]


def test_resuming_after_the_end_of_an_unlooped_replay_plays_nothing() -> None:
    replay = ReplaySource(three_bars(), 4)
    replay.resume_after(three_bars()[-1].ts_ns + 59 * 10**9)
    assert list(replay) == []
