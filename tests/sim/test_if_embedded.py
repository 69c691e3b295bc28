"""`python -m sim --if-embedded` (how supervisord starts it): exits 0 at once unless the config is the embedded sim."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def env_with(config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRIDBOT_", "APCA_"))}
    env["GRIDBOT_CONFIG"] = str(config)
    return env


def test_not_embedded_exits_0_at_once_with_a_log_line(tmp_path: Path) -> None:
    config = tmp_path / "paper.toml"
    config.write_text('[general]\nmode = "paper"\n[broker]\nport = 7497\n')

    result = subprocess.run([sys.executable, "-m", "sim", "--if-embedded"], cwd=REPO, env=env_with(config),
                            capture_output=True, text=True, timeout=20, check=False)

    assert result.returncode == 0, result.stderr
    assert "general.mode is 'paper', not 'sim'" in result.stdout
    assert "SIM_READY" not in result.stdout


def test_embedded_runs_the_sim(tmp_path: Path) -> None:
    config = tmp_path / "sim.toml"
    config.write_text(f'[general]\nrun_dir = "{tmp_path / "run"}"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim", "--if-embedded", "--broker-port", "0", "--stream-port", "0",
         "--control", "tcp://127.0.0.1:0"],
        cwd=REPO, env=env_with(config), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or []], daemon=True).start()
    try:
        deadline = time.monotonic() + 20
        ready = False
        while not ready and time.monotonic() < deadline:
            try:
                ready = lines.get(timeout=max(0.0, deadline - time.monotonic())).startswith("SIM_READY")
            except queue.Empty:
                break
        assert ready, "the sim never said SIM_READY"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
