"""bot_state.json: the user's format, exact numbers, atomic replacement, and refusal of anything damaged."""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path

import pytest

from core.ledger import apply_all
from proto.messages import GridState
from services.statekeeper import statefile
from services.statekeeper.statefile import StateFileError
from tests.core.ledger_events import accepted, buy_key, commission, fill

D = Decimal


def busy_state() -> GridState:
    l0, l1 = buy_key(3, 0), buy_key(3, 1)
    first = fill(l0, "BUY", 40, "100.00", 94, order_id=1, ts=1_763_700_000_000_000_000)
    state = apply_all(
        GridState(symbol="TQQQ", cycle=3),
        [
            first,
            fill(l0, "BUY", 54, "100.02", 94, order_id=1, ts=1_763_700_000_500_000_000),
            commission(first.exec_id, l0, "1.00"),
            fill(l1, "BUY", 88, "99.01", 88, order_id=2),
            accepted("tqgrid1 c3 L0 SELL 100.0115", "SELL", 94, "101.01", order_id=3, perm_id=1631716614),
            accepted(buy_key(3, 2), "BUY", 82, "98.02", order_id=4),
        ],
    )
    return state


def test_a_state_written_and_read_back_is_the_same_state(tmp_path: Path) -> None:
    state = busy_state()
    path = tmp_path / "bot_state.json"

    statefile.write(path, state, journal_seq=17, now_ns=1_763_700_001_000_000_000)
    loaded = statefile.read(path)

    assert loaded is not None
    assert loaded.state == state
    assert loaded.journal_seq == 17
    assert loaded.saved_at == "2025-11-21T04:40:01.000000Z"


def test_the_file_has_the_users_fields_with_prices_as_exact_numbers(tmp_path: Path) -> None:
    path = tmp_path / "bot_state.json"
    statefile.write(path, busy_state(), journal_seq=1, now_ns=0)

    text = path.read_text()
    data = json.loads(text, parse_float=Decimal)

    assert (data["version"], data["symbol"], data["cycle"], data["halted"]) == (1, "TQQQ", 3, False)
    assert data["anchor_price"] == D("100.0115")
    lot = data["lots"][0]
    assert list(lot)[:5] == ["level", "quantity", "purchase_price", "sell_target_price", "sell_order_id"]
    assert (lot["level"], lot["quantity"], lot["sell_order_id"], lot["sell_perm_id"], lot["sell"]) == (
        0,
        94,
        3,
        1631716614,
        "live",
    )
    assert '"purchase_price": 100.0115' in text and '"sell_target_price": 101.01' in text
    assert lot["fees"] == D("1.00") and lot["cost"] == D("9401.08")
    assert lot["opened_at"] == "2025-11-21T04:40:00.500000Z"
    assert data["lots"][1]["sell"] == "parked" and data["lots"][1]["sell_order_id"] is None
    assert [o["key"] for o in data["orders"]] == ["tqgrid1 c3 L2 BUY", "tqgrid1 c3 L0 SELL 100.0115"]


def test_numbers_are_read_back_exactly_never_through_a_float(tmp_path: Path) -> None:
    path = tmp_path / "bot_state.json"
    statefile.write(path, busy_state(), journal_seq=1, now_ns=0)
    text = path.read_text().replace(
        '"purchase_price": 100.0115', '"purchase_price": 100.01150000000000000001', 1
    )
    path.write_text(text)

    loaded = statefile.read(path)

    assert loaded is not None
    assert loaded.state.lots[0].purchase_price == D("100.01150000000000000001")


def test_a_hand_written_minimal_file_in_the_users_format_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bot_state.json"
    path.write_text(
        json.dumps(
            {
                "version": 1,
                "symbol": "TQQQ",
                "cycle": 2,
                "anchor_price": 50,
                "halted": False,
                "lots": [
                    {
                        "level": 0,
                        "quantity": 94,
                        "purchase_price": 50,
                        "sell_target_price": 50.5,
                        "sell_order_id": None,
                        "cycle": 2,
                        "buy_key": "tqgrid1 c2 L0 BUY",
                        "sell_key": "tqgrid1 c2 L0 SELL 50.00",
                    }
                ],
            }
        )
    )

    loaded = statefile.read(path)

    assert loaded is not None
    (lot,) = loaded.state.lots
    assert (lot.level, lot.cost, lot.sell, loaded.state.in_sync) == (0, D(4700), "parked", False)


def test_the_write_is_atomic_a_new_file_renamed_over_the_old_with_no_temporary_left(tmp_path: Path) -> None:
    path = tmp_path / "run" / "bot_state.json"
    statefile.write(path, GridState(symbol="TQQQ"), journal_seq=1, now_ns=0)
    before = os.stat(path).st_ino

    statefile.write(path, busy_state(), journal_seq=2, now_ns=0)

    assert os.stat(path).st_ino != before  # replaced by rename, never rewritten in place
    assert sorted(p.name for p in path.parent.iterdir()) == ["bot_state.json"]
    loaded = statefile.read(path)
    assert loaded is not None and loaded.journal_seq == 2


def test_a_missing_file_is_no_state_yet(tmp_path: Path) -> None:
    assert statefile.read(tmp_path / "bot_state.json") is None


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "is empty"),
        (b"   \n", "is empty"),
        (b'{"version": 1, "symbol": "TQQQ", "cyc', "is not valid JSON"),
        (b"\x00\x01garbage", "is not valid JSON"),
        (b"[1, 2, 3]", "holds a JSON list"),
        (b'{"symbol": "TQQQ", "cycle": 1}', "has no 'version'"),
        (b'{"version": 2, "symbol": "TQQQ", "cycle": 1}', "has version 2; this program reads version 1"),
        (
            b'{"version": 1, "symbol": "TQQQ", "cycle": "one"}',
            "is invalid: Expected `int`, got `str` - at `cycle`",
        ),
        (b'{"version": 1, "symbol": "TQQQ", "cycle": 1, "anchor_price": "abc"}', "is invalid"),
    ],
)
def test_a_damaged_file_is_refused_naming_the_file_and_is_left_untouched(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "bot_state.json"
    path.write_bytes(content)

    with pytest.raises(StateFileError) as error:
        statefile.read(path)

    message = str(error.value)
    assert f"state file '{path}'" in message and problem in message
    assert "gridbot reconcile" in message
    assert path.read_bytes() == content


def test_a_truncated_copy_of_a_real_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bot_state.json"
    statefile.write(path, busy_state(), journal_seq=1, now_ns=0)
    whole = path.read_bytes()

    for cut in (len(whole) // 3, len(whole) // 2, len(whole) - 3):
        path.write_bytes(whole[:cut])
        with pytest.raises(StateFileError, match="not valid JSON"):
            statefile.read(path)


def test_an_inconsistent_lot_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bot_state.json"
    statefile.write(path, busy_state(), journal_seq=1, now_ns=0)
    data = json.loads(path.read_text(), parse_float=Decimal)
    data["lots"][0]["sold"] = 94
    path.write_text(json.dumps(data, default=str))

    with pytest.raises(StateFileError, match=r"lots\[0\] \(level 0\): needs .* 0 <= sold < quantity"):
        statefile.read(path)


def test_a_directory_where_the_file_should_be_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StateFileError, match="is a directory"):
        statefile.read(tmp_path)
