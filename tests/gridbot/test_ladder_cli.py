"""`gridbot ladder` through the real console script in a subprocess: output, exit codes, bad input."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

GRIDBOT = Path(sys.executable).parent / "gridbot"
REPO = Path(__file__).resolve().parents[2]
USER_FILE = REPO.parent / "shared" / "data" / "tqqq_trading_strategy - lots.csv.csv"
TIMEOUT = 30


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment whose config is an empty user file: the tracked defaults and nothing else."""
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("GRIDBOT_", "APCA_"))}
    environ["GRIDBOT_CONFIG"] = str(empty)
    return environ


def gridbot(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GRIDBOT), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def assert_refused(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gridbot ladder: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_text_output_for_the_users_map(env: dict[str, str]) -> None:
    result = gridbot(env, "ladder", "--anchor", "100")

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].startswith("anchor 100.00 | lot map ") and "(88 levels)" in lines[0]
    assert lines[1].split() == [
        "level",
        "shares",
        "buy",
        "at",
        "sell",
        "at",
        "cum",
        "shares",
        "cum",
        "cost",
        "drop",
    ]
    body = [line.split() for line in lines[2:-1]]
    assert len(body) == 88
    assert [row[:4] for row in body[:6]] == [
        ["0", "94", "100.00", "101.00"],
        ["1", "88", "99.00", "99.99"],
        ["2", "82", "98.01", "98.99"],
        ["3", "77", "97.03", "98.00"],
        ["4", "72", "96.06", "97.02"],
        ["5", "67", "95.10", "96.05"],
    ]
    assert body[1][4:] == ["182", "18,112.00", "1.00%"]
    assert body[-1][:3] == ["87", "1", "41.71"]
    assert lines[-1].startswith("total: 88 levels, 1,478 shares, capital 128,447.94 ")


def test_json_output(env: dict[str, str]) -> None:
    result = gridbot(env, "ladder", "--anchor", "100", "--json")

    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == 88
    assert rows[1] == {
        "level": 1,
        "shares": 88,
        "trigger": "99.00",
        "sell_target": "99.99",
        "cum_shares": 182,
        "cum_cost": "18112.00",
        "drop_pct": "1.00",
    }
    assert [r["shares"] for r in rows[:6]] == [94, 88, 82, 77, 72, 67]
    assert [r["trigger"] for r in rows[:6]] == ["100.00", "99.00", "98.01", "97.03", "96.06", "95.10"]
    assert rows[-1]["cum_shares"] == 1478 and rows[-1]["cum_cost"] == "128447.94"
    for row in rows:
        for key in ("trigger", "sell_target", "cum_cost", "drop_pct"):
            assert isinstance(row[key], str) and len(row[key].split(".")[1]) == 2


def test_levels_and_the_users_file_by_its_own_name(env: dict[str, str]) -> None:
    result = gridbot(
        env, "ladder", "--anchor", "97.0213", "--levels", "3", "--lots", str(USER_FILE), "--json"
    )

    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["level"], r["trigger"], r["sell_target"]) for r in rows] == [
        (0, "97.02", "97.99"),
        (1, "96.05", "97.01"),
        (2, "95.09", "96.04"),
    ]


def test_the_lot_map_and_factors_come_from_the_config(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "mine.csv").write_text("level,shares_to_buy\n0,10\n1,20\n")
    user = tmp_path / "gridbot.toml"
    user.write_text(f'[general]\nlot_map = "{tmp_path / "mine.csv"}"\n[strategy]\nstep = "0.02"\n')
    env["GRIDBOT_CONFIG"] = str(user)

    result = gridbot(env, "ladder", "--anchor", "100", "--json")

    assert result.returncode == 0, result.stderr
    assert [(r["shares"], r["trigger"]) for r in json.loads(result.stdout)] == [(10, "100.00"), (20, "98.00")]

    # the same file through gridbot's own --config option
    env["GRIDBOT_CONFIG"] = str(tmp_path / "absent.toml")
    result = gridbot(env, "--config", str(user), "ladder", "--anchor", "100", "--json")
    assert result.returncode == 0, result.stderr
    assert [r["trigger"] for r in json.loads(result.stdout)] == ["100.00", "98.00"]


def test_a_relative_lots_path_is_from_the_working_directory(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "small.csv").write_text("0,5\n")
    result = gridbot(env, "ladder", "--anchor", "50", "--lots", "small.csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith("total: 1 level, 5 shares, capital 250.00 ")


@pytest.mark.parametrize(
    ("anchor", "problem"),
    [("abc", "--anchor must be a number like 97.02, was 'abc'"), ("0", "positive price"), ("-5", "was '-5'")],
)
def test_bad_anchor(env: dict[str, str], anchor: str, problem: str) -> None:
    assert_refused(gridbot(env, "ladder", f"--anchor={anchor}"), problem)


def test_bad_levels(env: dict[str, str]) -> None:
    assert_refused(
        gridbot(env, "ladder", "--anchor", "100", "--levels", "0"), "--levels must be a whole number"
    )
    assert_refused(gridbot(env, "ladder", "--anchor", "100", "--levels", "two"), "was 'two'")
    assert_refused(gridbot(env, "ladder", "--anchor", "100", "--levels", "89"), "has only 88 levels")


def test_missing_anchor_is_a_usage_error(env: dict[str, str]) -> None:
    result = gridbot(env, "ladder")
    assert result.returncode == 2
    assert "--anchor" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "does not exist"),
        ("", "is empty"),
        ("0,94\r\n1,-3", "line 2: shares must be a positive whole number, was '-3'"),
        ("0,94\r\n1,8.5", "line 2: shares must be a positive whole number, was '8.5'"),
        ("0,94\r\n1,88\r\n1,82", "line 3: level 1 appears twice (first on line 2)"),
        ("0,94\r\n2,88", "line 2: level 1 is missing"),
        ("1,94\r\n2,88", "line 1: levels must start at 0"),
        ("0,94,1\r\n", "line 1: expected 2 columns"),
    ],
)
def test_bad_lot_maps_are_one_line_and_exit_2(
    env: dict[str, str], tmp_path: Path, content: str | None, problem: str
) -> None:
    path = tmp_path / "my lots.csv"
    if content is not None:
        path.write_bytes(content.encode())

    result = gridbot(env, "ladder", "--anchor", "100", "--lots", str(path))

    assert_refused(result, f"lot map '{path}'", problem)


def test_a_bad_config_is_refused_naming_the_key(env: dict[str, str], tmp_path: Path) -> None:
    user = tmp_path / "gridbot.toml"
    user.write_text('[strategy]\nstep = "a lot"\n')
    env["GRIDBOT_CONFIG"] = str(user)
    assert_refused(gridbot(env, "ladder", "--anchor", "100"), f"config file '{user}'", "strategy.step")

    user.write_text("[strategy]\nstepp = 1\n")
    result = gridbot(env, "ladder", "--anchor", "100")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"gridbot: config file '{user}': unknown key 'strategy.stepp'; see config/gridbot.example.toml"
    ]


def test_a_closed_pipe_is_not_an_error(env: dict[str, str]) -> None:
    # `gridbot ladder ... | head -1`: a small pipe makes the writer block until the reader has gone.
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    proc = subprocess.Popen(
        [str(GRIDBOT), "ladder", "--anchor", "100", "--json"],
        env=env,
        stdout=write_end,
        stderr=subprocess.PIPE,
    )
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        assert reader.read(16).startswith(b"[")
    try:
        _, stderr = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert stderr == b""
