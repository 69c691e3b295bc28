"""The broker's nightly outage (`gridbot sim outage 60`) in the middle of a session: trading resumes by itself, the
fills made while the executor was cut off are recovered, and the state agrees with the broker."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.system import checks
from tests.system.harness import System, wait_until
from tests.system.sessions import Settled, write_path, zigzag

OUTAGE_S = 60


def fill_ns(fill: dict[str, Any]) -> int:
    """A fill's time (ISO 8601 in the broker's log) as UTC nanoseconds."""
    moment = datetime.fromisoformat(fill["time"].replace("Z", "+00:00"))
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


@pytest.mark.timeout(300)
def test_the_nightly_outage_mid_session(tmp_path: Path) -> None:
    # Long enough to trade before, through and after the outage (about 0.4 s of wall time a step); the test holds
    # the market once trading has resumed, so the rest is never played.
    session = zigzag("outage", "100.00", swings=18)
    system = System(tmp_path, sim=session.sim_keys(write_path(tmp_path, session)))
    try:
        system.start()
        wait_until(lambda: system.sim_or_none("pause") is not None, 20, "the sim's control endpoint")
        wait_until(system.ready, 60, "the system ready to trade", interval=0.3, explain=system.explain)
        system.sim("resume")
        wait_until(lambda: len(system.status().get("lots", [])) >= 2, 30, "a few lots", interval=0.3,
                   explain=system.explain)

        outage_from = system.sim("status")["clock"]["ts_ns"]
        result = system.gridbot("sim", "outage", str(OUTAGE_S))
        assert result.returncode == 0, result.stdout + result.stderr
        outage_ends = time.monotonic() + OUTAGE_S
        wait_until(lambda: system.status().get("broker", {}).get("connected") is False, 15,
                   "the executor to notice the outage", interval=0.3, explain=system.explain)
        time.sleep(max(0.0, outage_ends - time.monotonic()))
        orders_at_outage_end = len(system.sim("orders"))
        outage_to = system.sim("status")["clock"]["ts_ns"]

        wait_until(lambda: system.status().get("broker", {}).get("connected") is True, 30,
                   "the executor to reconnect by itself", interval=0.3, explain=system.explain)
        # Trading resumes by itself: new orders reach the broker and fill.
        wait_until(lambda: any(o["filled"] for o in system.sim("orders")[orders_at_outage_end:]), 40,
                   "a new order filled after the outage", interval=0.5, explain=system.explain)
        assert not system.sim("status")["market"]["finished"], "the session ended too soon to show trading resume"
        # Trading has resumed; what matters now is only that the state agrees with the broker. Hold the market
        # (playing the rest of the session would prove nothing more) and let what is in flight settle.
        system.sim("pause")
        settled = Settled(system)
        status, orders = wait_until(settled, 60, "the state to agree with the broker", interval=0.5,
                                    explain=settled.explain)
        during = [f for o in orders for f in o["fills"] if outage_from <= fill_ns(f) <= outage_to]
        assert during, "no fill happened during the outage: the test would not show their recovery"
        assert checks.duplicates(orders) == []
        assert checks.disagreements(status, orders) == []
        reconciled = system.reconcile()
        assert reconciled.returncode == 0 and "consistent: the state and the broker agree" in reconciled.stdout, (
            reconciled.stdout + reconciled.stderr)
        system.stop_all()
    finally:
        system.close()
    assert system.our_processes() == []
