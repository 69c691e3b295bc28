"""Services restarted (`supervisorctl restart`) and killed (SIGKILL) in the middle of a session: afterwards the
broker's order log shows no duplicate, no fill is lost, and the state agrees with the broker (reconciliation
consistent)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.system import checks
from tests.system.harness import System, wait_until
from tests.system.sessions import Settled, write_path, zigzag

# The bus is a program too: restarting it loses whatever was in flight on pub/sub.
SERVICES = ("statekeeper", "executor", "strategy", "feed", "bus")


def trading_again(system: System, after: str) -> None:
    """Wait until the broker receives a new order (its order log only grows)."""
    placed = len(system.sim("orders"))
    wait_until(lambda: len(system.sim("orders")) > placed, 30, f"a new order at the broker after {after}",
               interval=0.2, explain=system.explain)


def restart(system: System, name: str) -> None:
    result = system.ctl("restart", name)
    assert result.returncode == 0 and "started" in result.stdout, result.stdout + result.stderr


def kill(system: System, name: str) -> None:
    old = system.pids()[name]
    module = "bus" if name == "bus" else f"services.{name}"
    assert f"-m {module}" in Path(f"/proc/{old}/cmdline").read_text().replace("\0", " "), f"pid {old} is not {name}"
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: system.states().get(name) == "RUNNING" and system.pids().get(name, old) != old, 30,
               f"supervisord to restart {name} after SIGKILL", interval=0.2, explain=system.explain)


@pytest.mark.timeout(300)
def test_restarts_and_kills_of_every_service_mid_session(tmp_path: Path) -> None:
    # Longer than the faults take even on a loaded machine; the rest is played faster once they are done.
    session = zigzag("faults", "100.00", swings=12)
    system = System(tmp_path, sim=session.sim_keys(write_path(tmp_path, session)))
    try:
        system.start()
        wait_until(lambda: system.sim_or_none("pause") is not None, 20, "the sim's control endpoint")
        wait_until(system.ready, 60, "the system ready to trade", interval=0.3, explain=system.explain)
        system.sim("resume")
        # Trading first: Level 0 is bought before the first fault.
        wait_until(lambda: system.status().get("lots"), 30, "the first lot", interval=0.3, explain=system.explain)

        faults = [(restart, name) for name in SERVICES] + [(kill, name) for name in SERVICES]
        for fault, name in faults:
            fault(system, name)
            # The next fault only once the whole chain (prints, strategy, executor, broker) has placed an order
            # again: every fault strikes a system that is trading, with no fixed wait.
            trading_again(system, f"the {fault.__name__} of {name}")
        # The faults alone may take less than three cycles on a quick machine: trade on until the session has
        # completed a few (each swing of the path ends one), so the state checked below has history behind it.
        wait_until(lambda: (system.status().get("cycle") or 0) >= 3, 120, "the session's third cycle",
                   interval=0.5, explain=system.explain)
        assert not system.sim("status")["market"]["finished"], "the session ended before the faults did: slow it"
        # What is left to prove is that the state agrees with the broker: hold the market and let it settle.
        system.sim("pause")
        settled = Settled(system)
        status, orders = wait_until(settled, 60, "the state to agree with the broker", interval=0.5,
                                    explain=settled.explain)
        assert checks.duplicates(orders) == []
        assert checks.disagreements(status, orders) == []
        assert status["cycle"] >= 3, "the session should have completed a few cycles"
        reconciled = system.reconcile()
        assert reconciled.returncode == 0 and "consistent: the state and the broker agree" in reconciled.stdout, (
            reconciled.stdout + reconciled.stderr)
        system.stop_all()
    finally:
        system.close()
    assert system.our_processes() == []
