"""Crash consistency: the real statekeeper process SIGKILLed at random instants during a burst of order events.

The test plays the executor on a real bus (a forwarder on loopback): it publishes a generated grid history (fills
in pieces, commissions, cancels, cycles) as fast as the statekeeper takes it, and answers snapshot requests with
the broker's truth so far. A killer task SIGKILLs ``python -m services.statekeeper`` at random moments (events keep
flowing while it is dead and are lost to it) and starts it again. At the end the statekeeper must hold exactly the
lots, round trips (its journal's history), realized P&L and counters that an independent model computes from the
history, in its state, in ``bot_state.json`` and in its journal, and stop cleanly on SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
import zmq.asyncio

from bus import CommandClient, CommandError
from bus.forwarder import Forwarder
from proto.messages import GridState, Message, OrderFilled, StateSnapshot, StateSnapshotRequest
from services.statekeeper import statefile
from tests.core.test_ledger_properties import Generator, History, events_of
from tests.services.statekeeper.harness import TruthExecutor, free_port, overrides, write_config

PROJECT_ROOT = Path(__file__).resolve().parents[3]
# Seconds each history's events take to publish (the statekeeper, up in about 0.5 s, is killed within 0.4 s of
# being up, again and again, meanwhile).
BURST_SECONDS = 5.0
# Kills that must have landed before the burst's second and last thirds are published: a loaded machine can take
# seconds to start a statekeeper, and a burst timed by the clock alone would then end before the second kill.
KILLS_BEFORE_THIRD = (1, 2)
# The longest the burst waits for one of those kills (a statekeeper that never comes up fails the test here).
KILL_WAIT_SECONDS = 15.0


def canonical_stream(history: History) -> list[Message]:
    """The executor's events in the order they happen, executions stamped with increasing times."""
    stream: list[Message] = []
    clock = 1_763_700_000_000_000_000
    for order in history.orders:
        loose, fills, final = events_of(order)
        accepted, reports = loose[0], loose[1:]
        stream.append(accepted)
        for event in fills:
            assert isinstance(event, OrderFilled)
            clock += 1_000_000
            stream.append(msgspec.structs.replace(event, exec_ts_ns=clock))
        stream.extend(reports)
        stream.extend(final)
    return stream


class StatekeeperProcess:
    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0

    def start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("GRIDBOT_CONFIG", None)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.statekeeper", "--config", str(self.config)],
                cwd=PROJECT_ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)
        self.kills += 1

    def ready(self) -> int:
        """How many times a statekeeper has come up (logged its state) in this test."""
        return self.log.read_text().count("statekeeper for ") if self.log.exists() else 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(10)


async def killer(process: StatekeeperProcess, rng: random.Random, published: asyncio.Event) -> None:
    """SIGKILL the statekeeper at random instants while events flow; restart it after a random outage.

    Most kills come at a random moment after the process is up (applying events, writing, reconciling); some
    while it is still starting.
    """
    while not published.is_set():
        if rng.random() < 0.8:
            while process.ready() < process.starts and not published.is_set():
                await asyncio.sleep(0.01)
            await asyncio.sleep(rng.uniform(0.0, 0.4))
        else:
            await asyncio.sleep(rng.uniform(0.0, 0.3))
        if published.is_set():
            return
        process.kill()
        await asyncio.sleep(rng.uniform(0.0, 0.1))
        process.start()


async def settled_state(client: CommandClient, history: History, timeout: float) -> GridState:
    """The statekeeper's state once it is in sync and holds the history's lots (or the last one seen)."""
    deadline = time.monotonic() + timeout
    expected = {key for key in history.lots}
    state: GridState | None = None
    while time.monotonic() < deadline:
        try:
            reply = await client.request(StateSnapshotRequest(), timeout=1.0, retries=0)
        except CommandError:
            continue
        assert isinstance(reply, StateSnapshot)
        state = reply.state
        if state.in_sync and {lot.buy_key for lot in state.lots} == expected and state.cycle == history.cycle:
            # One more look after a pause: nothing may still be on its way.
            await asyncio.sleep(0.3)
            again = await client.request(StateSnapshotRequest(), timeout=1.0, retries=0)
            assert isinstance(again, StateSnapshot)
            if again.state == state:
                return state
        await asyncio.sleep(0.1)
    assert state is not None, "the statekeeper never answered a snapshot request"
    return state


async def wait_for_kills(process: StatekeeperProcess, kills: int, log: Path) -> None:
    """Hold the burst until the killer has SIGKILLed the statekeeper ``kills`` times (events stay in flight)."""
    deadline = time.monotonic() + KILL_WAIT_SECONDS
    while process.kills < kills:
        if time.monotonic() > deadline:
            raise AssertionError(f"only {process.kills} of {kills} kills within {KILL_WAIT_SECONDS} s; "
                                 f"did the statekeeper come up?\n{log.read_text()[-3000:]}")
        await asyncio.sleep(0.01)


def journal_round_trips(path: Path) -> Counter[tuple[str, int, Decimal, Decimal]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT buy_key, quantity, fees, realized_pnl FROM round_trips").fetchall()
    return Counter((key, qty, Decimal(fees), Decimal(pnl)) for key, qty, fees, pnl in rows)


async def crash_run(tmp_path: Path, seed: int, steps: int) -> tuple[StatekeeperProcess, History, GridState]:
    rng = random.Random(seed)
    history = Generator(random.Random(seed)).run(steps)
    stream = canonical_stream(history)
    forwarder = Forwarder("tcp://127.0.0.1:*", "tcp://127.0.0.1:*")
    forwarder.start()
    ctx = zmq.asyncio.Context()
    executor = TruthExecutor(ctx, forwarder.xsub_endpoint)
    await executor.start()
    statekeeper_endpoint = f"tcp://127.0.0.1:{free_port()}"
    config = write_config(
        tmp_path / "gridbot.toml",
        overrides(
            tmp_path,
            forwarder.xsub_endpoint,
            forwarder.xpub_endpoint,
            executor.endpoint,
            statekeeper_endpoint,
        ),
    )
    process = StatekeeperProcess(config, tmp_path / "statekeeper.log")
    client = CommandClient(ctx, statekeeper_endpoint, "test", timeout=1.0, retries=0)
    try:
        process.start()
        done = asyncio.Event()
        kills = asyncio.create_task(killer(process, rng, done))
        # The burst is spread over BURST_SECONDS so that the kills land before, during and after it.
        pause = BURST_SECONDS / len(stream)
        thirds = {len(stream) * (n + 1) // 3: kills for n, kills in enumerate(KILLS_BEFORE_THIRD)}
        for index, event in enumerate(stream):
            if index in thirds:
                await wait_for_kills(process, thirds[index], log=tmp_path / "statekeeper.log")
            executor.publish(event)
            await asyncio.sleep(rng.uniform(0, 2 * pause))
        done.set()
        await kills
        if not process.alive():
            process.start()
        state = await settled_state(client, history, timeout=15)
        return process, history, state
    finally:
        await client.close()
        await executor.close()
        ctx.term()
        forwarder.stop()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 29, 47])
def test_sigkill_at_random_instants_loses_nothing_and_doubles_nothing(tmp_path: Path, seed: int) -> None:
    process, history, state = asyncio.run(asyncio.wait_for(crash_run(tmp_path, seed, steps=45), 80))

    try:
        log = (tmp_path / "statekeeper.log").read_text()
        assert process.kills >= 2, f"only {process.kills} kills happened; the burst was too short"
        expected_lots = {
            key: (lot.quantity, lot.cost, lot.purchase, lot.sold, lot.sold_value, lot.fees)
            for key, lot in history.lots.items()
        }
        actual_lots = {
            lot.buy_key: (lot.quantity, lot.cost, lot.purchase_price, lot.sold, lot.sold_value, lot.fees)
            for lot in state.lots
        }
        assert actual_lots == expected_lots, log[-3000:]
        assert (state.cycle, state.level0_attempt, state.buy_attempts) == (
            history.cycle,
            history.level0_attempt,
            history.buy_attempts,
        )
        assert state.realized_pnl == sum((p for _, _, _, p in history.trips), Decimal(0))
        assert not state.halted, state.halt_reason
        assert {o.key for o in state.orders} == history.live_keys
    finally:
        assert process.stop() == 0
    loaded = statefile.read(tmp_path / "bot_state.json")
    assert loaded is not None and loaded.state == msgspec.structs.replace(state, in_sync=False)
    assert journal_round_trips(tmp_path / "journal.sqlite") == Counter(history.trips)
