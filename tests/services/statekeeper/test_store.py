"""The journal (SQLite) and the store that keeps it in step with bot_state.json."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from core.ledger import FeeAmendment, apply_all, step
from proto.messages import GridState, RoundTrip
from services.statekeeper import statefile
from services.statekeeper.journal import Journal, JournalError
from services.statekeeper.statefile import StateFileError
from services.statekeeper.store import Store
from tests.core.ledger_events import buy_key, fill

D = Decimal
L0 = buy_key(1, 0)


def holding() -> GridState:
    return apply_all(GridState(symbol="TQQQ"), [fill(L0, "BUY", 94, "100.00", 94, order_id=1, exec_id="b1")])


def trip(**changes: object) -> RoundTrip:
    base = RoundTrip(
        cycle=1,
        level=0,
        quantity=94,
        buy_price=D("100.00"),
        sell_price=D("101.00"),
        fees=D("1.00"),
        realized_pnl=D("93.00"),
        opened_ts_ns=1,
        closed_ts_ns=2,
        buy_key=L0,
        sell_key="tqgrid1 c1 L0 SELL 100.00",
    )
    return msgspec.structs.replace(base, **changes)


# --------------------------------------------------------------------------------------------- journal


def test_a_record_is_durable_and_read_back_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    journal = Journal(path)
    event = fill(L0, "BUY", 94, "100.00", 94, exec_id="e1")
    seq = journal.record("OrderFilled", holding(), event, key=L0, exec_id="e1", closed=[trip()])
    journal.close()

    again = Journal(path)

    assert again.last() == (seq, holding())
    assert again.has_exec("e1") and not again.has_exec("e2")
    assert again.round_trips() == [trip()]
    assert again.count_events() == 1
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_an_execution_is_recorded_once_and_a_failed_record_leaves_nothing(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite")
    journal.record("OrderFilled", holding(), exec_id="e1")

    with pytest.raises(sqlite3.IntegrityError):
        journal.record("OrderFilled", GridState(symbol="TQQQ", cycle=9), exec_id="e1", closed=[trip()])

    assert journal.count_events() == 1
    assert journal.last() == (1, holding())
    assert journal.round_trips() == []


def test_a_late_fee_amends_the_latest_round_trip_with_that_key(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite")
    journal.record("a", holding(), closed=[trip(cycle=1)])
    journal.record("b", holding(), closed=[trip(cycle=1, closed_ts_ns=9)])

    journal.record(
        "c", holding(), amended=[FeeAmendment(key="tqgrid1 c1 L0 SELL 100.00", exec_id="x", fee=D("0.5"))]
    )

    first, second = journal.round_trips()
    assert (first.fees, first.realized_pnl) == (D("1.00"), D("93.00"))
    assert (second.fees, second.realized_pnl) == (D("1.50"), D("92.50"))


def test_a_file_that_is_not_a_journal_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    path.write_bytes(b"this is not a database, it is a text file that happens to be long enough" * 20)

    with pytest.raises(JournalError, match=f"journal '{path}' cannot be used"):
        Journal(path)


def test_a_journal_of_another_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    Journal(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '9' WHERE key = 'format'")

    with pytest.raises(JournalError, match="has format '9'"):
        Journal(path)


# --------------------------------------------------------------------------------------------- store


def open_store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "bot_state.json", tmp_path / "journal.sqlite", "TQQQ")


def test_a_fresh_store_starts_empty_and_commits_to_both_files(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    assert (store.state, store.seq) == (GridState(symbol="TQQQ"), 1)
    assert statefile.read(tmp_path / "bot_state.json") is not None

    seq = store.commit("OrderFilled", holding())
    store.close()

    loaded = statefile.read(tmp_path / "bot_state.json")
    assert loaded is not None and (loaded.state, loaded.journal_seq) == (holding(), seq)
    reopened = open_store(tmp_path)
    assert (reopened.state, reopened.seq) == (holding(), seq)


def test_a_stop_between_the_journal_and_the_file_is_healed_from_the_journal(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    first = store.commit("first", GridState(symbol="TQQQ"))
    # What a crash after the journal's commit and before the file's rename leaves behind:
    second = store.journal.record("second", holding())
    store.close()
    loaded = statefile.read(tmp_path / "bot_state.json")
    assert loaded is not None and loaded.journal_seq == first < second

    healed = open_store(tmp_path)

    assert (healed.state, healed.seq) == (holding(), second)
    loaded = statefile.read(tmp_path / "bot_state.json")
    assert loaded is not None and (loaded.state, loaded.journal_seq) == (holding(), second)


def test_a_deleted_state_file_is_rewritten_from_the_journal(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.commit("x", holding())
    store.close()
    (tmp_path / "bot_state.json").unlink()

    assert open_store(tmp_path).state == holding()
    assert (tmp_path / "bot_state.json").exists()


def test_a_deleted_journal_starts_again_from_the_state_file(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.commit("a", GridState(symbol="TQQQ"))
    store.commit("b", holding())
    store.close()
    for name in ("journal.sqlite", "journal.sqlite-wal", "journal.sqlite-shm"):
        (tmp_path / name).unlink(missing_ok=True)

    again = open_store(tmp_path)

    assert again.state == holding()
    assert again.journal.last() == (1, holding())


def test_a_state_file_edited_by_hand_while_stopped_wins_and_is_journalled(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    seq = store.commit("a", holding())
    store.close()
    edited = msgspec.structs.replace(holding(), anchor_price=D("99.50"))
    statefile.write(tmp_path / "bot_state.json", edited, journal_seq=seq, now_ns=0)

    again = open_store(tmp_path)

    assert again.state.anchor_price == D("99.50")
    assert again.seq == seq + 1 and again.journal.last() == (seq + 1, again.state)


def test_a_corrupt_state_file_stops_the_start_and_stays_as_it_is(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.commit("a", holding())
    store.close()
    path = tmp_path / "bot_state.json"
    damaged = path.read_bytes()[:50]
    path.write_bytes(damaged)

    with pytest.raises(StateFileError, match="not valid JSON"):
        open_store(tmp_path)

    assert path.read_bytes() == damaged


def test_a_state_file_of_another_symbol_is_refused(tmp_path: Path) -> None:
    statefile.write(tmp_path / "bot_state.json", GridState(symbol="QQQ"), journal_seq=0, now_ns=0)

    with pytest.raises(StateFileError, match="is for 'QQQ' but general.symbol is 'TQQQ'"):
        open_store(tmp_path)


def test_the_ledger_result_and_its_round_trips_go_into_one_record(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    state = holding()
    store.commit("x", state)
    sell = fill("tqgrid1 c1 L0 SELL 100.00", "SELL", 94, "101.00", 94, order_id=2, exec_id="s1")
    result = step(state, sell)

    store.commit("OrderFilled", result.state, sell, closed=result.closed)

    assert store.has_exec("s1")
    assert [t.realized_pnl for t in store.journal.round_trips()] == [D("94.00")]
