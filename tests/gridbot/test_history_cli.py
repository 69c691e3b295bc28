"""`gridbot history`: the real console script reading a real journal (read-only)."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from core.ledger import FeeAmendment
from gridbot.commands.history import table
from proto.messages import GridState, RoundTrip
from services.statekeeper.journal import Journal

PROJECT_ROOT = Path(__file__).resolve().parents[2]
GRIDBOT = str(Path(sys.executable).with_name("gridbot"))
D = Decimal


def trip(cycle: int, level: int, quantity: int, buy: str, sell: str, fees: str, pnl: str) -> RoundTrip:
    return RoundTrip(
        cycle=cycle,
        level=level,
        quantity=quantity,
        buy_price=D(buy),
        sell_price=D(sell),
        fees=D(fees),
        realized_pnl=D(pnl),
        opened_ts_ns=1_763_700_000_000_000_000,
        closed_ts_ns=1_763_703_600_000_000_000,
        buy_key=f"tqgrid1 c{cycle} L{level} BUY",
        sell_key=f"tqgrid1 c{cycle} L{level} SELL {buy}",
    )


TRIPS = [
    trip(1, 1, 88, "99.00", "99.99", "2.00", "85.12"),
    trip(1, 0, 94, "100.0115", "101.02", "2.10", "92.7090"),
    trip(2, 0, 94, "90.00", "90.90", "1.90", "82.70"),
]


def gridbot(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("GRIDBOT_CONFIG", None)
    return subprocess.run(
        [GRIDBOT, *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=30
    )


def journal_with_trips(tmp_path: Path) -> Path:
    path = tmp_path / "journal.sqlite"
    journal = Journal(path)
    for t in TRIPS:
        journal.record("OrderFilled", GridState(symbol="TQQQ"), closed=[t])
    journal.close()
    return path


def test_the_table_lists_every_round_trip_and_a_total(tmp_path: Path) -> None:
    path = journal_with_trips(tmp_path)

    result = gridbot("history", "--journal", str(path))

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["closed", "(UTC)", "cycle", "level", "shares", "buy", "sell", "fees", "P&L"]
    assert lines[2].split() == [
        "2025-11-21",
        "05:40:00",
        "1",
        "1",
        "88",
        "99.0000",
        "99.9900",
        "2.00",
        "85.12",
    ]
    assert lines[3].split()[-4:] == ["100.0115", "101.0200", "2.10", "92.71"]
    assert lines[-1].split() == ["total", "3", "trips", "276", "6.00", "260.53"]


def test_csv_has_a_header_exact_decimals_and_late_fee_amendments(tmp_path: Path) -> None:
    path = journal_with_trips(tmp_path)
    journal = Journal(path)
    late_fee = FeeAmendment("tqgrid1 c2 L0 BUY", "x", D("0.5"))
    journal.record("CommissionReported", GridState(symbol="TQQQ"), amended=[late_fee])
    journal.close()

    result = gridbot("history", "--csv", "--journal", str(path))

    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["realized_pnl"] for r in rows] == ["85.12", "92.7090", "82.20"]
    assert rows[2]["fees"] == "2.40"
    assert rows[0]["closed_at"] == "2025-11-21T05:40:00.000000Z"
    assert rows[1]["buy_key"] == "tqgrid1 c1 L0 BUY"


def test_no_round_trips_yet_is_said_plainly() -> None:
    assert table([]) == "no closed round trips yet"


def test_a_missing_journal_is_one_clear_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "journal.sqlite"

    result = gridbot("history", "--journal", str(path))

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"gridbot history: journal '{path}' does not exist: the statekeeper has not run with this config yet "
        "(or statekeeper.journal / general.run_dir point elsewhere)"
    ]


def test_the_default_journal_comes_from_the_config_and_a_cycle_can_be_picked(tmp_path: Path) -> None:
    journal_with_trips(tmp_path)
    config = tmp_path / "gridbot.toml"
    config.write_text(f'[general]\nrun_dir = "{tmp_path}"\n')

    result = gridbot("--config", str(config), "history", "--csv", "--cycle", "2")

    assert result.returncode == 0, result.stderr
    assert [(r["cycle"], r["level"]) for r in csv.DictReader(io.StringIO(result.stdout))] == [("2", "0")]
