"""The whole system as real processes on loopback, for the strategy's integration tests.

``python -m bus``, ``python -m sim`` (manual prices, a regular-hours start time), the executor, the statekeeper,
the feed and the strategy, each a subprocess reading one temporary config file. The test drives prices through the
sim's control endpoint and watches the bus (``state.update``) and the broker (the sim's ``orders`` report).
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import zmq.asyncio

from bus import CommandClient, Subscriber
from core.strategy import Market, StrategyConfig, decide
from gridbot.config import PROJECT_ROOT, load
from proto import topics
from proto.messages import GridState, StateSnapshot, StateSnapshotRequest, StateUpdate, Tick
from services.strategy.settings import strategy_config
from sim.control import call

SERVICES = ("statekeeper", "executor", "feed", "strategy")
# A Monday morning in regular hours: the paper broker fills only in a session the order may trade in.
SIM_START = "2025-06-02T10:00:00-04:00"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Process:
    """A program whose output lines are collected by a thread (so a full pipe never blocks it)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, *args], cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._log.write(line)
            self._log.flush()
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{self.name}: no line matching {pattern!r} within {timeout} s") from None
            if line is None:
                raise AssertionError(f"{self.name} ended before printing {pattern!r}:\n{self.log_path.read_text()}")
            match = regex.search(line)
            if match:
                return match

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


class System:
    """Start everything with ``async with System(tmp_path) as system``; every process is stopped on exit."""

    def __init__(self, tmp_path: Path, **sections: dict[str, Any]) -> None:
        self.dir = tmp_path
        # The bus and the sim bind free ports themselves and say which (no race with other programs for a port
        # picked in advance); the config the services read is written once those are known.
        self.config: dict[str, dict[str, Any]] = {
            "general": {"run_dir": str(tmp_path / "run"), "log_level": "INFO"},
            "bus": {
                "heartbeat_interval": 0.2,
                "heartbeat_misses": 10,
                "command_timeout": 1.0,
                "command_retries": 3,
            },
            "broker": {"reconnect_initial": 0.2, "reconnect_max": 1.0},
            "feed": {"status_interval": 1.0},
            "sim": {"source": "manual", "start": SIM_START},
        }
        for section, values in sections.items():
            self.config.setdefault(section, {}).update(values)
        self.config_path = tmp_path / "gridbot.toml"
        self._write_config()
        self.control = ""
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", GRIDBOT_CONFIG=str(self.config_path))
        (tmp_path / "run").mkdir(exist_ok=True)
        self.logs = tmp_path / "logs"
        self.logs.mkdir(exist_ok=True)
        self.processes: dict[str, Process] = {}
        self.ctx = zmq.asyncio.Context()
        self.subscriber: Subscriber | None = None
        self.statekeeper: CommandClient | None = None
        self.state: GridState | None = None
        self.state_seq = 0
        self.last_price: Decimal | None = None
        self.printed_at = 0
        # When the state last showed a new cycle or Level-0 attempt: the strategy then waits for a newer tick.
        self.level0_reset_at = 0
        self._watcher: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------------------------------- life

    def start_process(self, name: str, *args: str) -> Process:
        proc = Process(name, list(args), self.env, self.logs)
        self.processes[name] = proc
        return proc

    async def restart(self, name: str) -> None:
        """SIGKILL one service and start it again (what supervisord does after a crash)."""
        self.processes[name].proc.kill()
        self.processes[name].proc.wait(5)
        self.start_process(name, "-m", f"services.{name}")

    def _write_config(self) -> None:
        self.config_path.write_text(_toml(self.config))
        self.cfg = load(self.config_path)
        self.params: StrategyConfig = strategy_config(self.cfg)

    async def __aenter__(self) -> System:
        try:
            # The bus and the sim need nothing from each other: both start at once (each takes a second or more
            # to come up on a loaded machine).
            bus = self.start_process("bus", "-m", "bus", "--xsub", "tcp://127.0.0.1:*", "--xpub", "tcp://127.0.0.1:*")
            sim = self.start_process("sim", "-m", "sim", "--state-dir", str(self.dir / "sim"), "--broker-port", "0",
                                     "--stream-port", "0", "--control", "tcp://127.0.0.1:0")
            xsub, xpub = bus.wait_for(r"forwarding publishers (\S+) -> subscribers (\S+)").groups()
            ready = json.loads(sim.wait_for(r"SIM_READY (\{.*\})").group(1))
            self.control = ready["control"]
            self.config["bus"].update(xsub=xsub, xpub=xpub, executor=f"tcp://127.0.0.1:{free_port()}",
                                      statekeeper=f"tcp://127.0.0.1:{free_port()}")
            self.config["broker"]["port"] = ready["broker_port"]
            self.config["feed"]["url"] = ready["stream"]
            self._write_config()
            self.subscriber = Subscriber(self.ctx, self.cfg.bus.xpub, [topics.STATE_UPDATE],
                                         heartbeat_interval=0.2, heartbeat_misses=10)
            self.statekeeper = CommandClient(self.ctx, self.cfg.bus.statekeeper, "test", timeout=2.0, retries=5)
            for name in SERVICES:
                self.start_process(name, "-m", f"services.{name}")
            # The stream sends prints only to subscribed clients: a print before this would never become a tick.
            self.processes["feed"].wait_for(r"subscribed to trades", 20)
            self._watcher = asyncio.create_task(self._watch())
            snapshot = await self.statekeeper.request(StateSnapshotRequest())
            assert isinstance(snapshot, StateSnapshot)
            if self.state is None:
                self.state, self.state_seq = snapshot.state, snapshot.seq
            await self.until(lambda: self.state is not None and self.state.in_sync, "the state in sync", 20)
            await self.until(lambda: all(self.subscriber is not None and self.subscriber.peer_alive(p)
                                         for p in ("executor", "feed", "strategy")), "every service's heartbeat", 20)
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        # SIGTERM to all at once, then wait for each: stopping them one by one would add up their shutdowns.
        for proc in self.processes.values():
            if proc.proc.poll() is None:
                proc.proc.terminate()
        for proc in self.processes.values():
            proc.stop()
        if self.statekeeper is not None:
            await self.statekeeper.close()
        if self.subscriber is not None:
            await self.subscriber.close()
        self.ctx.term()

    async def _watch(self) -> None:
        assert self.subscriber is not None
        while True:
            env = await self.subscriber.recv(timeout=1.0)
            if env is not None and isinstance(env.msg, StateUpdate) and env.msg.seq > self.state_seq:
                old, new = self.state, env.msg.state
                if old is not None and (old.cycle, old.level0_attempt) != (new.cycle, new.level0_attempt):
                    self.level0_reset_at = time.time_ns()
                self.state, self.state_seq = new, env.msg.seq

    def logs_text(self) -> str:
        return "\n".join(f"===== {p.name}\n{p.log_path.read_text()[-6000:]}" for p in self.processes.values())

    # ----------------------------------------------------------------------------------------- driving

    async def price(self, price: str | Decimal, size: int = 100) -> None:
        """One trade print at the sim (the broker matches it, the stream sends it to the feed)."""
        await asyncio.to_thread(call, self.control, "price", str(price), size)
        self.last_price = Decimal(price)
        self.printed_at = time.time_ns()

    async def until(self, condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; state: {self.state}\n"
                                     f"{self.logs_text()}")
            await asyncio.sleep(0.02)

    def settled(self) -> bool:
        """True when the strategy has nothing left to do on the state as it is (its own rule, checked here)."""
        if self.state is None:
            return False
        now = time.time_ns()
        tick = None
        if self.last_price is not None:
            tick = Tick(symbol=self.params.symbol, price=self.last_price, size=1, exchange_ts_ns=self.printed_at,
                        receive_ts_ns=self.printed_at, seq=1)
        market = Market(now_ns=now, tick=tick, broker_connected=True, level0_not_before_ns=self.level0_reset_at)
        decision = decide(self.state, market, self.params)
        # Blocked, or a Level 0 given up because its tick went stale, is a stuck system, not a settled one.
        stuck = decision.blocked is not None or (decision.level0_blocked or "").startswith(("tick stale", "no tick"))
        return not decision.commands and not decision.held_back and not stuck

    async def settle(self, what: str = "the strategy to settle", timeout: float = 10.0) -> None:
        """Wait until the strategy has nothing left to do and the broker's live orders are the state's."""
        deadline = time.monotonic() + timeout
        while True:
            if self.settled():
                live = {o["order_ref"] for o in await self.live_orders()}
                if self.state is not None and {o.key for o in self.state.orders} == live and self.settled():
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; state: {self.state}\n"
                                     f"{self.logs_text()}")
            await asyncio.sleep(0.02)

    async def walk(self, start: str, end: str, step: str) -> None:
        """Print from ``start`` to ``end`` in ``step`` increments, letting the system settle after each print."""
        price, stop, inc = Decimal(start), Decimal(end), Decimal(step)
        inc = inc if stop >= price else -inc
        while (price <= stop) if inc > 0 else (price >= stop):
            await self.price(price)
            await self.settle(f"the strategy to settle after a print at {price}")
            price += inc

    # ----------------------------------------------------------------------------------------- the broker

    async def orders(self) -> list[dict[str, Any]]:
        """Every order the paper broker ever received (the sim's `orders` report)."""
        report: list[dict[str, Any]] = await asyncio.to_thread(call, self.control, "orders")
        return report

    async def live_orders(self) -> list[dict[str, Any]]:
        return [o for o in await self.orders() if _is_live(o)]


def _is_live(order: dict[str, Any]) -> bool:
    return str(order.get("status")) in ("PreSubmitted", "Submitted", "PendingSubmit", "PendingCancel")


def _toml(config: dict[str, dict[str, Any]]) -> str:
    lines: list[str] = []
    for section, values in config.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    return "\n".join(lines)
