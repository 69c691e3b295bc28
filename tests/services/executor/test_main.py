"""``python -m services.executor``: bad input is refused with one line and exit 2, before anything connects."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.services.executor.harness import PYTHON, ROOT


def executor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "services.executor", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, env=env
    )


def test_a_missing_config_file_is_named_with_exit_2(tmp_path: Path) -> None:
    done = executor("--config", str(tmp_path / "nope.toml"))
    assert done.returncode == 2
    assert f"'{tmp_path / 'nope.toml'}' does not exist" in done.stderr


def test_a_bad_key_is_named_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "gridbot.toml"
    config.write_text("[broker]\nprobe_interval = \"often\"\n")
    done = executor("--config", str(config))
    assert done.returncode == 2 and "broker.probe_interval" in done.stderr


def test_an_unknown_library_is_refused(tmp_path: Path) -> None:
    done = executor(env={**os.environ, "GRIDBOT_IB_LIB": "ibapi"})
    assert done.returncode == 2 and "GRIDBOT_IB_LIB='ibapi'" in done.stderr
    assert executor("--lib", "ibapi").returncode == 2
