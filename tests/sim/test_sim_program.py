"""`python -m sim` as a user runs it: a subprocess with the real alpaca-py and ib_insync clients talking to it."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ib_insync import IB, LimitOrder, Stock

from gridbot import cli
from gridbot.config import PROJECT_ROOT
from sim.control import call
from tests.sim.stream_helpers import EVENT_TIMEOUT, AlpacaClient, take_sync

SIM_KEY, SIM_SECRET = "SIMKEY", "SIMSECRET"  # the defaults' test key pair
READY_TIMEOUT = 60.0  # a new Python process on a 2-core CI machine running other tests too can be slow to start
SUPERVISORD_STOPWAITSECS = 10.0  # deploy/supervisord.conf: the sim is killed if still running after this


@dataclass
class Sim:
    proc: subprocess.Popen[str]
    addresses: dict[str, Any]
    output: queue.Queue[str]

    def call(self, verb: str, *args: Any) -> Any:
        return call(self.addresses["control"], verb, *args, timeout=EVENT_TIMEOUT)

    def terminate(self, timeout: float = EVENT_TIMEOUT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop_seconds(self) -> float:
        """How long the sim itself took to stop, by its log ("stopping" to "stopped"), once it has exited.

        Unlike the time from the signal to the exit, this leaves out the waits for a CPU on a busy machine before
        the signal is handled and while the interpreter tears down.
        """
        stamps: dict[str, datetime] = {}
        while True:
            try:
                line = self.output.get(timeout=EVENT_TIMEOUT)
            except queue.Empty:
                break
            for marker in ("sim: stopping", "sim: stopped"):
                if line.rstrip().endswith(marker):
                    stamps[marker] = datetime.strptime(line[:23], "%Y-%m-%dT%H:%M:%S.%f")
            if "sim: stopped" in stamps:
                break
        assert len(stamps) == 2, "the sim's log lacks the stop's start or end"
        return (stamps["sim: stopped"] - stamps["sim: stopping"]).total_seconds()


def _pump(stream: Any, out: queue.Queue[str]) -> None:
    for line in stream:
        out.put(line)


def start_sim(tmp_path: Path, toml: str = "", *flags: str) -> Sim:
    """Start `python -m sim` on free ports with ``toml`` as the user's config; wait for its ready line."""
    cfg = tmp_path / "gridbot.toml"
    cfg.write_text(toml)
    env = {**os.environ, "GRIDBOT_CONFIG": str(cfg), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sim",
            "--broker-port",
            "0",
            "--stream-port",
            "0",
            "--control",
            "tcp://127.0.0.1:0",
            "--state-dir",
            str(tmp_path / "state"),
            *flags,
        ],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, output), daemon=True).start()
    deadline = time.monotonic() + READY_TIMEOUT
    seen = []
    while time.monotonic() < deadline:
        try:
            line = output.get(timeout=0.1)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        if line.startswith("SIM_READY "):
            return Sim(proc, json.loads(line.removeprefix("SIM_READY ")), output)
    proc.kill()
    raise AssertionError("python -m sim did not get ready:\n" + "".join(seen))


def subscribed(sim: Sim) -> bool:
    """True once a stream client has subscribed to TQQQ trades (seen in `status`)."""
    clients = sim.call("status")["clients"]["stream"]
    return any("TQQQ" in c["subscriptions"].get("trades", []) for c in clients)


@pytest.fixture
def ib_loop() -> Iterator[None]:
    """ib_insync's sync API runs the thread's current loop; an earlier asyncio.run() in this thread unset it."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()


@pytest.fixture
def sims() -> Iterator[list[Sim]]:
    started: list[Sim] = []
    yield started
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait(5)


def test_the_defaults_replay_the_shipped_session_and_status_tells_all(
    tmp_path: Path, sims: list[Sim], capsys: pytest.CaptureFixture[str]
) -> None:
    sim = start_sim(tmp_path, "", "--paused")
    sims.append(sim)
    with AlpacaClient(sim.addresses["stream"], SIM_KEY, SIM_SECRET) as client:
        deadline = time.monotonic() + EVENT_TIMEOUT
        while not subscribed(sim):
            assert time.monotonic() < deadline, "the alpaca-py client never subscribed"
            time.sleep(0.02)
        sim.call("resume")
        trades = take_sync(client.trades, 5)

        status = sim.call("status", "--json")
        assert status["market"]["source"] == "replay"
        assert status["market"]["progress"]["file"] == "sim/data/TQQQ_1min_sample.csv.gz"
        assert status["market"]["speed"] == 60.0 and not status["market"]["paused"]
        # The replay goes on at 60x while the test looks: the clock is at or after the last print it streamed.
        clock_time = datetime.fromisoformat(status["clock"]["time"].replace("Z", "+00:00"))
        assert clock_time.date() == trades[-1].timestamp.date() and clock_time >= trades[-1].timestamp
        assert status["broker"]["port"] == sim.addresses["broker_port"]
        assert status["stream"]["url"] == sim.addresses["stream"].replace("/v2/iex", "/v2/iex")
        assert status["control"] == sim.addresses["control"]
        (client_status,) = status["clients"]["stream"]
        assert client_status["user_agent"].startswith("APCA-PY/") and client_status["subscriptions"][
            "trades"
        ] == ["TQQQ"]
        # The operator's text form: one labelled line per section, no Python dict text.
        assert cli.main(["sim", "--control", sim.addresses["control"], "status"]) == 0
        text = capsys.readouterr().out
        assert text.startswith("clock     2025-04-30T") and "{" not in text
        assert "market    replay: sim/data/TQQQ_1min_sample.csv.gz, pass 1, bar " in text
        assert f"broker    127.0.0.1:{sim.addresses['broker_port']}, account " in text
        assert f"stream    {sim.addresses['stream']}\n" in text
        assert f"control   {sim.addresses['control']}\n" in text
        assert "clients   stream: 1\n" in text and " on iex, trades TQQQ, " in text and "APCA-PY/" in text

        assert sim.call("speed", "1000") == 1000.0
        assert sim.call("stream-garbage") == 1
        assert sim.call("stream-silence", "0") == 0.0
        assert sim.call("pause")["paused"] is True
    # The shipped file's first bar: 2025-04-30 14:16 UTC, open 51.62, high 51.63 (an up-then-down path).
    assert [t.id for t in trades] == [1, 2, 3, 4, 5]
    assert trades[0].timestamp == datetime(2025, 4, 30, 14, 16, tzinfo=UTC) and trades[0].price == 51.62
    assert max(t.price for t in trades) == 51.63
    assert trades[1].timestamp == datetime(2025, 4, 30, 14, 16, 6, tzinfo=UTC)

    started = time.monotonic()
    assert sim.terminate() == 0
    took = time.monotonic() - started
    own = sim.stop_seconds()
    assert own < 3, f"the sim took {own:.2f} s to stop (its log)"
    assert took < SUPERVISORD_STOPWAITSECS, f"SIGTERM took {took:.2f} s to end the process"


PATH = "".join(f"{i},{100 - 0.05 * i:.2f}\n" for i in range(41))  # 100.00 down to 98.00, a print a second


def test_the_broker_fills_against_the_same_prints_the_stream_sent(
    tmp_path: Path, sims: list[Sim], ib_loop: None
) -> None:
    (tmp_path / "path.csv").write_text("seconds,price\n" + PATH)
    toml = f"""
[sim]
source = "path"
file = "{tmp_path / "path.csv"}"
start = "2025-06-02T10:00:00-04:00"
speed = 40.0
loop = false
"""
    sim = start_sim(tmp_path, toml, "--paused")
    sims.append(sim)
    ib = IB()
    with AlpacaClient(sim.addresses["stream"], SIM_KEY, SIM_SECRET) as client:
        ib.connect("127.0.0.1", sim.addresses["broker_port"], clientId=7, timeout=EVENT_TIMEOUT)
        try:
            contract = ib.qualifyContracts(Stock("TQQQ", "SMART", "USD"))[0]
            trade = ib.placeOrder(contract, LimitOrder("BUY", 10, 99.02, tif="GTC", outsideRth=True))
            deadline = time.monotonic() + EVENT_TIMEOUT
            while trade.orderStatus.status not in ("Submitted", "PreSubmitted"):
                assert time.monotonic() < deadline, f"order not acknowledged: {trade.log}"
                ib.sleep(0.02)
            while not subscribed(sim):
                assert time.monotonic() < deadline, "the alpaca-py client never subscribed"
                ib.sleep(0.02)

            sim.call("resume")
            deadline = time.monotonic() + EVENT_TIMEOUT
            while trade.orderStatus.status != "Filled":
                assert time.monotonic() < deadline, f"never filled: {trade.log}"
                ib.sleep(0.02)
            fill = trade.fills[0]
            streamed = take_sync(client.trades, 21)  # 100.00 ... 99.00: the 21st print crosses 99.02

            rest = take_sync(client.trades, 41 - 21)  # the path runs to its end
            # The `price` verb is one market too: the stream and the broker both get the print.
            sim.call("price", "98.50", "5")
            (injected,) = take_sync(client.trades, 1)
            last_price = sim.call("status")["account"]["last_price"]
        finally:
            ib.disconnect()

    crossing = streamed[-1]
    assert [t.price for t in streamed[-2:]] == [99.05, 99.00]
    assert fill.execution.price == crossing.price == 99.00  # better than the limit: the print's price
    assert fill.execution.shares == 10
    # One clock: the fill happened at the simulated time of the print the stream sent.
    assert fill.execution.time == crossing.timestamp == datetime(2025, 6, 2, 14, 0, 20, tzinfo=UTC)
    assert rest[-1].price == 98.00 and rest[-1].id == 41
    assert injected.price == 98.50 and injected.size == 5 and injected.id == 42 and last_price == "98.50"
    assert sim.terminate() == 0


def test_a_missing_data_file_exits_2_naming_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "gridbot.toml"
    cfg.write_text('[sim]\nfile = "no/such/bars.csv.gz"\n')
    done = subprocess.run(
        [sys.executable, "-m", "sim", "--state-dir", str(tmp_path / "state")],
        cwd=PROJECT_ROOT,
        env={**os.environ, "GRIDBOT_CONFIG": str(cfg)},
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 2
    assert "no/such/bars.csv.gz" in done.stderr and "sim.file" in done.stderr


def test_a_restarted_sim_resumes_its_market_after_the_brokers_last_print(
    tmp_path: Path, sims: list[Sim]
) -> None:
    # Ten minutes of prints (30 s at 20x): the first run is paused long before the end, however busy the machine.
    long_path = "".join(f"{i},{100 - 0.05 * i:.2f}\n" for i in range(601))
    (tmp_path / "path.csv").write_text("seconds,price\n" + long_path)
    toml = f"""
[sim]
source = "path"
file = "{tmp_path / "path.csv"}"
start = "2025-06-02T10:00:00-04:00"
speed = 20.0
loop = false
"""
    first = start_sim(tmp_path, toml)
    sims.append(first)
    deadline = time.monotonic() + EVENT_TIMEOUT
    while first.call("status")["market"]["prints"] < 5:
        assert time.monotonic() < deadline, "the first run never got going"
        time.sleep(0.02)
    first.call("pause")
    last = first.call("status")["market"]["last_print"]
    assert first.terminate() == 0  # the broker saves its state, with the last print it saw

    second = start_sim(tmp_path, toml, "--paused")
    sims.append(second)
    status = second.call("status")
    assert status["clock"]["resumed_after"] == last["time"]
    with AlpacaClient(second.addresses["stream"], SIM_KEY, SIM_SECRET) as client:
        deadline = time.monotonic() + EVENT_TIMEOUT
        while not subscribed(second):
            assert time.monotonic() < deadline, "the alpaca-py client never subscribed"
            time.sleep(0.02)
        second.call("resume")
        (resumed,) = take_sync(client.trades, 1)
    last_time = datetime.fromisoformat(last["time"].replace("Z", "+00:00"))
    assert last_time < datetime(2025, 6, 2, 14, 10, tzinfo=UTC), "the first run played its whole path"
    assert resumed.timestamp == last_time + timedelta(seconds=1)  # the path prints once a second
    assert second.terminate() == 0

    third = start_sim(tmp_path, toml, "--paused", "--from-start")
    sims.append(third)
    assert third.call("status")["clock"]["resumed_after"] is None
    assert third.call("status")["clock"]["time"] == "2025-06-02T14:00:00.000000Z"
    assert third.terminate() == 0
