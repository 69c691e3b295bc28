"""The path source: scripted `seconds,price[,size]` files."""

from __future__ import annotations

import itertools
from decimal import Decimal
from pathlib import Path

import pytest

from gridbot.config import load
from sim.market import open_source
from sim.market.path import DEFAULT_SIZE, PathFileError, PathSource, load_path
from sim.market.prints import NS_PER_SECOND, Print
from sim.market.timefmt import parse_start

START = "2025-06-02T10:00:00-04:00"
S = NS_PER_SECOND


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "path.csv"
    p.write_text(text)
    return p


def test_a_path_file_plays_from_start_with_prices_rounded_to_the_cent(tmp_path: Path) -> None:
    p = write(tmp_path, "seconds,price,size\n0,100.00,5\n1.5,99.005,7\n1.5,98.01,1\n")
    cfg = load(overrides={"sim": {"source": "path", "file": str(p), "start": START, "loop": False}}).sim
    opened = open_source(cfg)
    t0 = parse_start(START)
    assert opened.driven and opened.start_ns == t0
    assert list(opened.source) == [
        Print(t0, Decimal("100.00"), 5),
        Print(t0 + 3 * S // 2, Decimal("99.01"), 7),
        Print(t0 + 3 * S // 2, Decimal("98.01"), 1),
    ]


def test_the_header_is_optional_and_size_defaults_to_a_round_lot(tmp_path: Path) -> None:
    rows = load_path(write(tmp_path, "0,50\n\n2,51\n"))
    assert rows == [(0, Decimal(50), DEFAULT_SIZE), (2 * S, Decimal(51), DEFAULT_SIZE)]


def test_a_looped_path_repeats_one_step_after_its_end(tmp_path: Path) -> None:
    source = PathSource(load_path(write(tmp_path, "0,10\n2,11\n3,12\n")), 0, loop=True)
    times = [p.ts_ns // S for p in itertools.islice(source, 7)]
    assert times == [0, 2, 3, 4, 6, 7, 8]
    assert source.progress()["pass"] == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "has no rows"),
        ("0,100,5,6\n", "line 1: expected seconds,price"),
        ("0,abc\n", "line 1: seconds and price must be numbers"),
        ("0,100\n-1,100\n", "line 2: seconds must be >= 0"),
        ("0,100\n1,0.004\n", "line 2: price must be at least 0.01"),
        ("0,100\n1,100,0\n", "line 2: size must be a positive"),
        ("5,100\n4,100\n", "line 2: seconds must not decrease"),
    ],
)
def test_a_bad_path_file_is_refused_naming_the_file_and_the_line(
    tmp_path: Path, text: str, message: str
) -> None:
    p = write(tmp_path, text)
    with pytest.raises(PathFileError, match=message) as e:
        load_path(p)
    assert str(p) in str(e.value)


def test_a_missing_path_file_names_the_config_key(tmp_path: Path) -> None:
    with pytest.raises(PathFileError, match=r"set sim\.file"):
        load_path(tmp_path / "missing.csv")


def test_a_start_without_an_offset_is_refused_naming_the_key(tmp_path: Path) -> None:
    p = write(tmp_path, "0,1\n")
    cfg = load(overrides={"sim": {"source": "path", "file": str(p), "start": "2025-06-02T10:00:00"}}).sim
    with pytest.raises(ValueError, match=r"sim\.start needs a UTC offset"):
        open_source(cfg)


def test_resuming_a_path_continues_after_the_given_time(tmp_path: Path) -> None:
    rows = load_path(write(tmp_path, "0,10\n2,11\n2,11.5\n3,12\n"))
    full = list(itertools.islice(PathSource(rows, 0, loop=True), 12))
    for cut in (0, 1, 3, 4, 9):
        resumed = PathSource(rows, 0, loop=True)
        resumed.resume_after(full[cut].ts_ns)
        expected = [p for p in full if p.ts_ns > full[cut].ts_ns]
        assert list(itertools.islice(resumed, len(expected))) == expected
