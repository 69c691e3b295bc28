"""The lot-map loader: the user's own file as it is, header/BOM variants, and every refusal naming file and line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.lotmap import LotMap, LotMapError, load_lot_map, parse_lot_map

USER_FILE = Path(__file__).resolve().parents[3] / "shared" / "data" / "tqqq_trading_strategy - lots.csv.csv"
SHIPPED = Path(__file__).resolve().parents[2] / "config" / "lots.csv"


def write(tmp_path: Path, content: bytes | str, name: str = "lots.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def refused(path: Path) -> str:
    with pytest.raises(LotMapError) as caught:
        load_lot_map(path)
    message = str(caught.value)
    assert "\n" not in message
    assert f"'{path}'" in message
    return message


# --- accepted -------------------------------------------------------------------------------------------------


def test_the_users_own_file_loads_exactly_as_it_is() -> None:
    raw = USER_FILE.read_bytes()
    assert b"\r\n" in raw and not raw.endswith(b"\n") and not raw.startswith(b"level")
    path = USER_FILE

    lots = load_lot_map(path)

    assert len(lots) == 88
    assert lots.deepest == 87
    assert lots.shares[:6] == (94, 88, 82, 77, 72, 67)
    assert lots[87] == 1
    assert lots.source == str(path)


def test_the_shipped_map_is_a_byte_copy_of_the_users_file() -> None:
    assert SHIPPED.read_bytes() == USER_FILE.read_bytes()
    assert load_lot_map(SHIPPED).shares == load_lot_map(USER_FILE).shares


def test_header_row_bom_lf_and_final_newline_are_accepted(tmp_path: Path) -> None:
    variants = [
        "level,shares_to_buy\n0,94\n1,88\n2,82\n",
        "\ufefflevel,shares_to_buy\r\n0,94\r\n1,88\r\n2,82",
        "\ufeff0,94\r\n1,88\r\n2,82\r\n",
        "Level , Shares_To_Buy\n0, 94\n1 ,88\n\n2,82\n\n",
        '"level","shares_to_buy"\n"0","94"\n1,88\n2,82\n',
        "0,94\r1,88\r2,82",
        "0,94\n,\n1,88\n2,82\n",  # a spreadsheet's blank row
    ]
    for i, text in enumerate(variants):
        lots = load_lot_map(write(tmp_path, text, f"v{i}.csv"))
        assert lots.shares == (94, 88, 82), text


def test_lookup_and_membership() -> None:
    lots = parse_lot_map("0,5\n1,3\n")
    assert 0 in lots and 1 in lots and 2 not in lots and -1 not in lots
    assert list(lots) == [5, 3]
    assert lots.total_shares == 8
    with pytest.raises(IndexError, match="levels 0..1, not 2"):
        lots[2]
    with pytest.raises(IndexError):
        lots[-1]


@settings(deadline=None)  # a per-example time limit fails on a loaded CI machine, not on a bug
@given(
    st.lists(st.integers(min_value=1, max_value=10**6), min_size=1, max_size=120),
    st.booleans(),
    st.booleans(),
)
def test_any_valid_map_round_trips(shares: list[int], header: bool, crlf: bool) -> None:
    end = "\r\n" if crlf else "\n"
    rows = [f"{level},{qty}" for level, qty in enumerate(shares)]
    text = end.join((["level,shares_to_buy"] if header else []) + rows)
    assert parse_lot_map(text).shares == tuple(shares)


# --- refused --------------------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    message = refused(tmp_path / "nope.csv")
    assert "does not exist" in message and "general.lot_map" in message


def test_a_directory_is_refused(tmp_path: Path) -> None:
    assert "is a directory" in refused(tmp_path)


def test_empty_file_and_blank_file_and_header_only(tmp_path: Path) -> None:
    assert "is empty" in refused(write(tmp_path, b"", "a.csv"))
    assert "is empty" in refused(write(tmp_path, "\r\n\r\n  \n", "b.csv"))
    assert "is empty" in refused(write(tmp_path, b"\xef\xbb\xbf", "c.csv"))
    assert "header but no rows" in refused(write(tmp_path, "level,shares_to_buy\r\n", "d.csv"))


@pytest.mark.parametrize(
    ("content", "line", "problem"),
    [
        ("0,94\n1,abc\n", 2, "shares must be a positive whole number, was 'abc'"),
        ("0,94\n1,-3\n", 2, "was '-3'"),
        ("0,94\n1,0\n", 2, "was '0'"),
        ("0,94\n1,8.5\n", 2, "was '8.5'"),
        ("0,94\n1,88.0\n", 2, "was '88.0'"),
        ("0,94\n1,\n", 2, "was ''"),
        ("0,94\n1,+5\n", 2, "was '+5'"),
        ("0,94\n1,1_000\n", 2, "was '1_000'"),
        ("0,94\n1,88\n1,82\n", 3, "level 1 appears twice (first on line 2)"),
        ("0,94\n1,88\n0,82\n", 3, "level 0 appears twice (first on line 1)"),
        ("0,94\n1,88\n3,82\n", 3, "level 2 is missing (this row has level 3)"),
        ("1,94\n2,88\n", 1, "levels must start at 0, the first level is 1"),
        ("level,shares_to_buy\n5,94\n", 2, "levels must start at 0"),
        ("0,94\n1,88,7\n", 2, "expected 2 columns 'level,shares_to_buy', found 3"),
        ("0,94\n188\n", 2, "expected 2 columns"),
        ("0;94\n1;88\n", 1, "found 1"),
        ("0,94\nx,88\n", 2, "level must be a whole number"),
        ("0,94\n-1,88\n", 2, "level must be a whole number"),
        ("lvl,qty\n0,94\n", 1, "a header row must be exactly 'level,shares_to_buy'"),
        ("0,94\nlevel,shares_to_buy\n", 2, "level must be a whole number"),
    ],
)
def test_malformed_rows_name_the_line_and_the_problem(
    tmp_path: Path, content: str, line: int, problem: str
) -> None:
    path = write(tmp_path, content.replace("\n", "\r\n"))

    message = refused(path)

    assert f"line {line}: " in message
    assert problem in message


def test_line_numbers_count_blank_lines_and_the_header(tmp_path: Path) -> None:
    path = write(tmp_path, "level,shares_to_buy\n\n0,94\n\n1,-2\n")
    assert "line 5: " in refused(path)


def test_non_utf8_bytes_name_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, b"0,94\r\n1,8\xff8\r\n")
    message = refused(path)
    assert "line 2: not UTF-8" in message


def test_a_bad_row_in_the_users_file_is_found(tmp_path: Path) -> None:
    raw = SHIPPED.read_bytes().replace(b"\r\n40,", b"\r\n40,-", 1)
    path = write(tmp_path, raw, "tqqq_trading_strategy - lots.csv.csv")
    message = refused(path)
    assert "line 41: shares must be a positive whole number" in message


def test_lotmap_itself_refuses_bad_shares() -> None:
    with pytest.raises(LotMapError, match="level 1: shares must be a positive whole number"):
        LotMap((3, 0))
    with pytest.raises(LotMapError, match="empty"):
        LotMap(())


def test_the_loader_reads_a_copy_not_a_cache(tmp_path: Path) -> None:
    path = tmp_path / "lots.csv"
    shutil.copyfile(SHIPPED, path)
    assert len(load_lot_map(path)) == 88
    path.write_text("0,1\n")
    assert load_lot_map(path).shares == (1,)
