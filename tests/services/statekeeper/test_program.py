"""`python -m services.statekeeper` as a program: refuses a damaged state file (exit 2, file untouched), and stops
cleanly on SIGTERM (exit 0) with its state persisted."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from services.statekeeper import statefile
from tests.services.statekeeper.harness import free_port, overrides, write_config

PROJECT_ROOT = Path(__file__).resolve().parents[3]


def start(config: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("GRIDBOT_CONFIG", None)
    return subprocess.Popen(
        [sys.executable, "-m", "services.statekeeper", "--config", str(config)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def config_for(tmp_path: Path) -> Path:
    ports = [free_port() for _ in range(4)]
    endpoints = [f"tcp://127.0.0.1:{port}" for port in ports]
    return write_config(tmp_path / "gridbot.toml", overrides(tmp_path, *endpoints))


def test_a_truncated_state_file_is_refused_with_its_name_and_left_as_it_is(tmp_path: Path) -> None:
    state_file = tmp_path / "bot_state.json"
    damaged = b'{"version": 1, "symbol": "TQQQ", "cycle": 4, "lots": [{"level": 0, "quant'
    state_file.write_bytes(damaged)

    proc = start(config_for(tmp_path))
    out, err = proc.communicate(timeout=30)

    assert proc.returncode == 2, out + err
    assert f"statekeeper: state file '{state_file}' is not valid JSON" in err
    assert state_file.read_bytes() == damaged


def test_sigterm_stops_it_with_exit_0_and_its_state_on_disk(tmp_path: Path) -> None:
    proc = start(config_for(tmp_path))
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or []], daemon=True)
    reader.start()
    seen = ""
    deadline = time.monotonic() + 20
    while "statekeeper for TQQQ" not in seen:  # serving: the signal handlers are in place
        assert time.monotonic() < deadline, f"the statekeeper never came up: {seen}"
        with contextlib.suppress(queue.Empty):
            seen += lines.get(timeout=0.1)

    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=20)

    reader.join(timeout=10)  # it ends at the end of the output: every last line is in the queue
    assert not reader.is_alive(), "the statekeeper's output did not end after it exited"
    while not lines.empty():
        seen += lines.get()
    assert code == 0, seen
    assert "statekeeper stopped" in seen
    loaded = statefile.read(tmp_path / "bot_state.json")
    assert loaded is not None and loaded.state.lots == [] and loaded.state.in_sync is False
