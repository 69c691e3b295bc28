"""From a clean directory: supervisord brings the system up on the sim, a scripted session runs at high speed to
its end, the state agrees with the broker, and `supervisorctl stop all` leaves nothing running."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from tests.system import checks
from tests.system.harness import BIN, System, T, wait_until
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
        reconciled = system.reconcile()
        assert reconciled.returncode == 0 and "consistent: the state and the broker agree" in reconciled.stdout, (
            reconciled.stdout + reconciled.stderr)

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

        reset_mid_session(system)
        system.stop_all()
        print(f"session test took {time.monotonic() - started:.1f} s")
    finally:
        system.close()
    assert system.our_processes() == []



CLOSE_REF = "gridbot reset: close position"  # the executor's order_ref for ClosePosition


def print_until(system: System, price: str, done: Callable[[], T | None], timeout: float, what: str) -> T:
    """Trade prints at ``price`` (the scripted path has ended) until ``done`` holds: the feed's ticks give the
    reset its closing limit and the strategy its fresh price."""

    def step() -> T | None:
        system.sim("price", price)
        return done()

    return wait_until(step, timeout, what, interval=0.3, explain=system.explain)


def reset_mid_session(system: System) -> None:
    """`gridbot reset --yes --cancel-orders --flatten` with a lot and live orders: every order cancelled at the
    broker, the position closed by a filled order, the state cleared into the next cycle, trading halted until
    `gridbot resume`, and then a new cycle's Level 0 is bought."""
    before = system.status()
    live_before = [o for o in system.sim("orders") if o["status"] in checks.LIVE]
    assert before["lots"] and live_before, (before["lots"], live_before)
    assert before["position"]["broker"] > 0, before["position"]
    orders_before = len(system.sim("orders"))

    reset = subprocess.Popen([str(BIN / "gridbot"), "reset", "--yes", "--cancel-orders", "--flatten"],
                             cwd=system.root, env=system.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    try:
        print_until(system, "101.20", lambda: reset.poll() is not None, 60, "gridbot reset to finish")
    finally:
        if reset.poll() is None:
            reset.kill()
        output = reset.communicate(timeout=10)[0]
    assert reset.returncode == 0, output
    assert "state: cleared" in output and "`gridbot resume` starts a new cycle" in output, output

    orders = system.sim("orders")
    assert [o for o in orders if o["status"] in checks.LIVE] == [], "orders left open at the broker"
    for order in live_before:
        final = next(o for o in orders if o["perm_id"] == order["perm_id"])
        assert final["status"] in ("Cancelled", "ApiCancelled"), final
    closes = [o for o in orders if o["order_ref"] == CLOSE_REF]
    assert len(closes) == 1 and closes[0]["status"] == "Filled" and closes[0]["action"] == "SELL", closes
    assert closes[0]["filled"] == before["position"]["broker"], closes
    after = system.status()
    assert after["position"]["broker"] == 0 and after["lots"] == [] and after["orders"] == {}, after
    assert after["cycle"] == before["cycle"] + 1, (before["cycle"], after["cycle"])
    assert after["halted"] is True, after

    # Halted: fresh prints place nothing until `gridbot resume`.
    system.sim("price", "101.20")
    time.sleep(1.0)
    assert len(system.sim("orders")) == orders_before + 1, "an order was placed while halted after the reset"
    reconciled = system.reconcile()
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr

    resumed = system.gridbot("resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    new_cycle = after["cycle"]
    lots = print_until(system, "101.20", lambda: system.status().get("lots"), 30, "a new cycle's Level 0 bought")
    assert [(lot["cycle"], lot["level"]) for lot in lots] == [(new_cycle, 0)], lots
    reconciled = system.reconcile()
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
