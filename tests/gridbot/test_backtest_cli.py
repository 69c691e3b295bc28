"""`gridbot backtest`: the report as text and as JSON (the same numbers), the plot, the round trips, bad input."""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gridbot.cli import main
from gridbot.config import PROJECT_ROOT

SAMPLE = PROJECT_ROOT / "sim" / "data" / "TQQQ_1min_sample.csv.gz"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    """A config file of defaults only (whatever config/gridbot.toml the machine has)."""
    path = tmp_path / "gridbot.toml"
    path.write_text("")
    return path


@pytest.fixture(scope="module")
def two_days(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample's first two sessions (2025-04-30 and 05-01) as a plain CSV."""
    path = tmp_path_factory.mktemp("bars") / "two_days.csv"
    with gzip.open(SAMPLE, "rt") as src:
        lines = [line for line in src if line.startswith(("Datetime", "2025-04-30", "2025-05-01"))]
    path.write_text("".join(lines))
    return path


def _line(text: str, label: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(label)).split()[len(label.split())]


def test_text_and_json_give_the_same_numbers(cfg: Path, two_days: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(cfg), "backtest", str(two_days)]) == 0
    text = capsys.readouterr().out
    assert main(["--config", str(cfg), "backtest", str(two_days), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)

    assert report["data"]["bars"] > 1000 and report["data"]["timeframe"] == "1Min"
    assert _line(text, "Realized P&L") == report["realized_pnl"]
    assert _line(text, "Fees") == report["fees"]
    assert _line(text, "Unrealized P&L") == report["unrealized_pnl"]
    assert _line(text, "Equity (total P&L)") == report["equity"]
    assert _line(text, "Max capital deployed") == report["capital"]["max_deployed"]
    assert _line(text, "Max drawdown (MTM)") == report["drawdown"]["max"]
    assert int(_line(text, "Max lots held")) == report["lots"]["max"]
    assert f"({report['round_trips']} round trips)" in text
    acc = report["accounting"]
    assert acc["specific_lot"]["realized"] == report["realized_pnl"]
    assert acc["specific_lot"]["total"] == acc["average_cost"]["total"] == report["equity"]
    assert report["round_trips"] > 5


def test_plot_and_trades_files(cfg: Path, two_days: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plot, trades = tmp_path / "run.png", tmp_path / "trades.csv"

    code = main(["--config", str(cfg), "backtest", str(two_days), "--json", "--plot", str(plot), "--trades",
                 str(trades)])

    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert plot.read_bytes()[:8] == PNG_MAGIC and plot.stat().st_size > 20_000
    rows = list(csv.DictReader(trades.open()))
    assert len(rows) == report["round_trips"]
    assert sum(float(r["realized_pnl"]) for r in rows) == pytest.approx(float(report["realized_pnl"]), abs=0.005)
    assert {r["level"] for r in rows} >= {"0"}


def test_the_range_and_the_sessions_choose_the_bars(cfg: Path, two_days: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--config", str(cfg), "backtest", str(two_days), "--json", "--from", "2025-05-01", "--sessions", "rth"])
    report = json.loads(capsys.readouterr().out)

    assert report["data"]["first"].startswith("2025-05-01 09:30")
    assert report["data"]["last"].startswith("2025-05-01 15:5")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.csv"], "bar file 'missing.csv' does not exist"),
        (["{two_days}", "--from", "May 1"], "--from must be a date like 2025-05-01, was 'May 1'"),
        (["{two_days}", "--from", "2025-05-02", "--to", "2025-05-01"], "--from 2025-05-02 is after --to 2025-05-01"),
        (["{two_days}", "--from", "2026-01-01"], "has no bars between 2026-01-01 and its end"),
        (["{two_days}", "--lots", "nope.csv"], "nope.csv"),
        (["{two_days}", "--splits", "nope.csv"], "split table 'nope.csv' does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(
    cfg: Path, two_days: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    argv = [a.format(two_days=two_days) for a in args]

    assert main(["--config", str(cfg), "backtest", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gridbot backtest: ") and message in err and err.count("\n") == 1


def test_done_when_the_shipped_sample_prints_the_report_and_writes_the_plot(cfg: Path, tmp_path: Path) -> None:
    plot = tmp_path / "sample.png"

    proc = subprocess.run(
        [sys.executable, "-m", "gridbot.cli", "--config", str(cfg), "backtest", str(SAMPLE), "--plot", str(plot)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )

    assert proc.returncode == 0, proc.stderr
    assert "42228 1Min bars (as-traded prices)" in proc.stdout
    for label in ("Realized P&L", "Max capital deployed", "Max drawdown (MTM)", "specific lot (US)",
                  "average cost (ACB)", "Time at each depth", "Open lots at the end"):
        assert label in proc.stdout
    assert plot.read_bytes()[:8] == PNG_MAGIC
