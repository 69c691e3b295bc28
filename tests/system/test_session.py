"""From a clean directory: supervisord brings the system up on the sim, a scripted session runs at high speed to
its end, the state agrees with the broker, and `supervisorctl stop all` leaves nothing running."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest

from tests.system import checks
from tests.system.harness import System, wait_until
from tests.system.sessions import CYCLE_SESSION, Settled, write_path


# Waits on the system, mostly idle; a loaded machine (a parallel test run) makes it slower.
@pytest.mark.timeout(300)
def test_a_scripted_session_from_a_clean_directory(tmp_path: Path) -> None:
    system = System(tmp_path, sim=CYCLE_SESSION.sim_keys(write_path(tmp_path, CYCLE_SESSION)))
    try:
        started = time.monotonic()
        system.start()
        # Hold the market until the system can trade (the lead-in prints before this are flat).
        wait_until(lambda: system.sim_or_none("pause") is not None, 20, "the sim's control endpoint")
        wait_until(system.ready, 60, "the system ready to trade", interval=0.3, explain=system.explain)

        system.sim("resume")
        wait_until(lambda: system.sim("status")["market"]["finished"], 120, "the session to play to its end",
                   interval=0.3, explain=system.explain)
        settled = Settled(system, cycle=2)
        status, orders = wait_until(settled, 30, "the state to settle in cycle 2", interval=0.3,
                                    explain=settled.explain)
        assert checks.duplicates(orders) == []
        assert checks.disagreements(status, orders) == []
        # The whole cycle ran: levels 0-3 bought and sold at their targets, then cycle 2's Level 0.
        sold = {o["order_ref"] for o in orders if o["action"] == "SELL" and o["status"] == "Filled"}
        assert {"tqgrid1 c1 L0 SELL 100.00", "tqgrid1 c1 L1 SELL 99.00", "tqgrid1 c1 L2 SELL 98.01",
                "tqgrid1 c1 L3 SELL 97.03"} <= sold, sold
        assert Decimal(status["realized_pnl"]) > 0
        assert [lot["level"] for lot in status["lots"]] == [0] and status["lots"][0]["cycle"] == 2
        report = system.reconcile()
        assert report.consistent, report

        # The operator's commands on the real system: halt, see it, resume; one frame of the dashboard.
        halted = system.gridbot("halt", "system", "test")
        assert halted.returncode == 0, halted.stdout + halted.stderr
        assert system.status()["halt_reason"] == "system test"
        frame = system.gridbot("monitor", "--once", "--width", "120")
        assert frame.returncode == 0 and "HALTED: system test" in frame.stdout, frame.stdout + frame.stderr
        assert "lots 1 (1 SELLs live, 0 parked)" in frame.stdout
        resumed = system.gridbot("resume")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert system.status()["halted"] is False
        system.stop_all()
        print(f"session test took {time.monotonic() - started:.1f} s")
    finally:
        system.close()
    assert system.our_processes() == []

