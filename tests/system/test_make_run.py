"""`make run` on a fresh directory: starts the system on the embedded default, shows the dashboard and says how to
stop; Ctrl-C leaves the dashboard with the system still running; `make stop` stops everything."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from tests.system.harness import System, wait_until


class Make:
    """`make TARGET` in the system's directory, in its own process group (as a terminal's foreground job)."""

    def __init__(self, system: System, target: str) -> None:
        self.proc = subprocess.Popen(["make", target], cwd=system.root, env=system.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(self.proc.stdout or []), daemon=True).start()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def ctrl_c(self) -> int:
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise AssertionError(f"make did not end on Ctrl-C; output:\n{self.output}") from None


# Waits on the system, mostly idle; a loaded machine (a parallel test run) makes it slower.
@pytest.mark.timeout(300)
def test_make_run_then_make_stop(tmp_path: Path) -> None:
    # The embedded default (the shipped replay), only on ports of its own.
    system = System(tmp_path, with_makefile=True)
    try:
        run = Make(system, "run")
        system.started = True
        system.supervisord = wait_until(system.supervisord_pid, 30, "supervisord started by make run",
                                        explain=lambda: run.output)
        wait_until(system.ready, 60, "the system ready to trade", interval=0.5, explain=system.explain)
        wait_until(lambda: "Stop it with: make stop" in run.output, 10, "the hint on how to stop")
        assert "gridbot started under supervisord" in run.output

        run.ctrl_c()
        wait_until(lambda: "left the dashboard; the system keeps running; stop it with: make stop" in run.output,
                   10, "the dashboard's goodbye", explain=lambda: run.output)
        # The dashboard's last frame was drawn, and Ctrl-C stopped only the dashboard.
        assert "TRADING" in run.output and "health" in run.output, run.output
        assert set(system.states().values()) == {"RUNNING"}, system.states()

        again = Make(system, "run")
        wait_until(lambda: "gridbot is already running" in again.output, 20, "make run to find it running",
                   explain=lambda: again.output)
        again.ctrl_c()

        stop = subprocess.run(["make", "stop"], cwd=system.root, env=system.env, capture_output=True, text=True,
                              timeout=90, check=False)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert "Shut down" in stop.stdout
        wait_until(lambda: not system.our_processes(), 30, "every process of the system to end",
                   explain=lambda: str(system.our_processes()))
        stopped = subprocess.run(["make", "stop"], cwd=system.root, env=system.env, capture_output=True,
                                 text=True, timeout=30, check=False)
        assert stopped.returncode == 0 and "gridbot is not running" in stopped.stdout
    finally:
        system.close()
    assert system.our_processes() == []
