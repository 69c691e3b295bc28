"""The executor as a real process against the paper broker as a real process, on a real bus.

- the paper broker: ``python -m sim.broker --port 0`` (its port and control endpoint parsed from stdout), driven
  through its control endpoint (``price``, ``drop``, ``outage``, ``connectivity``, ``reject-next``, ``orders``,
  ``requests``);
- the bus: the real forwarder (bus.forwarder.Forwarder) on a thread of the test process, on free ports;
- the executor: ``python -m services.executor --lib <ib_insync|ib_async> --config <file>`` with its log in the
  test's tmp directory (printed when a test fails);
- the test speaks to it as the strategy and statekeeper do: a CommandClient (DEALER) to its ROUTER, a Subscriber
  to every event it publishes, a Publisher for halt notices.

Every wait is bounded; nothing sleeps where an event or a poll with a deadline will do.
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal
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

from bus import CommandClient, Publisher, Subscriber
from bus.forwarder import Forwarder
from proto import topics
from proto.envelope import Envelope
from proto.messages import (
    BrokerConnected,
    BrokerSnapshot,
    BrokerSnapshotRequest,
    Message,
    PlaceOrder,
    PriceCondition,
)
from sim.control import call_async

ROOT = Path(__file__).resolve().parents[3]
PYTHON = sys.executable
LIBS = ("ib_insync", "ib_async")
CLIENT_ID = 17
# A Tuesday in regular hours (US/Eastern): every order type fills.
START = "2025-06-03T10:00:00-04:00"
STARTUP_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Lines:
    """A subprocess's stdout, read line by line on a thread so that waiting for a line can time out."""

    def __init__(self, stream: Any, sink: Path) -> None:
        self._lines: queue.Queue[str] = queue.Queue()
        self._sink = sink
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: Any) -> None:
        with self._sink.open("a") as out:
            for line in stream:
                out.write(line)
                out.flush()
                self._lines.put(line)

    def wait_for(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no line starting {prefix!r} within {timeout} s (see {self._sink})")
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line.startswith(prefix):
                return line.strip().split("=", 1)[1]


class BrokerProcess:
    def __init__(self, state_dir: Path, log: Path, env: dict[str, str], extra: list[str]) -> None:
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "sim.broker", "--port", "0", "--state-dir", str(state_dir), "--control",
             "tcp://127.0.0.1:0", "--start", START, *extra],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        lines = _Lines(self.proc.stdout, log)
        self.port = int(lines.wait_for("PAPER_BROKER_PORT=", STARTUP_TIMEOUT))
        self.control = lines.wait_for("CONTROL_ENDPOINT=", STARTUP_TIMEOUT)

    def stop(self) -> None:
        stop(self.proc)


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return int(proc.returncode)


class FreezableProxy:
    """A TCP relay between the executor and the broker that can go silent, as a dead network path does.

    ``freeze()`` cuts every current connection in a way the executor cannot see: its socket stays open and
    nothing more arrives on it, while the broker's side is closed (the broker notices, as TWS eventually does).
    New connections relay normally.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter, list[bool]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        broker_r, broker_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        frozen = [False]
        self._pairs.append((client_w, broker_w, frozen))
        for reader, writer in ((client_r, broker_w), (broker_r, client_w)):
            task = asyncio.create_task(self._relay(reader, writer, frozen))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, frozen: list[bool]) -> None:
        try:
            while data := await reader.read(65536):
                if not frozen[0]:
                    writer.write(data)
        except (ConnectionError, OSError):
            pass
        if not frozen[0]:
            writer.close()

    def freeze(self) -> None:
        for _client_w, broker_w, frozen in self._pairs:
            frozen[0] = True
            broker_w.close()
        self._pairs.clear()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class Bench:
    """One broker, one bus, one executor (restartable), and the test's sockets; ``async with Bench(...)``."""

    def __init__(
        self,
        tmp: Path,
        lib: str,
        *,
        broker_args: list[str] | None = None,
        broker: dict[str, Any] | None = None,
        strategy: dict[str, Any] | None = None,
        proxy: bool = False,
    ) -> None:
        self.tmp = tmp
        self.lib = lib
        self.broker_args = broker_args or []
        self.broker_overrides = broker or {}
        self.strategy_overrides = strategy or {}
        self.events: list[Envelope] = []
        self.use_proxy = proxy
        self.proxy: FreezableProxy | None = None
        self.executor: subprocess.Popen[Any] | None = None
        self.executor_log = tmp / "executor.log"
        self.broker_log = tmp / "broker.log"
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.env.pop("GRIDBOT_IB_LIB", None)
        self.env.pop("GRIDBOT_EXECUTOR_FAULT", None)

    async def __aenter__(self) -> Bench:
        self.forwarder = Forwarder("tcp://127.0.0.1:*", "tcp://127.0.0.1:*")
        self.forwarder.start()
        self.command_endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.config_file = self.tmp / "gridbot.toml"
        self.ctx = zmq.asyncio.Context()
        self.sub = Subscriber(
            self.ctx,
            self.forwarder.xpub_endpoint,
            [topics.ORDER_EVENT, topics.BROKER_EVENT, topics.ALERT, topics.heartbeat("executor")],
        )
        self.client = CommandClient(self.ctx, self.command_endpoint, "strategy", timeout=10.0, retries=0)
        self.control_pub = Publisher(self.ctx, self.forwarder.xsub_endpoint, "statekeeper", heartbeat_interval=0.2)
        self._collector = asyncio.create_task(self._collect())
        self.broker = BrokerProcess(self.tmp / "broker-state", self.broker_log, self.env, self.broker_args)
        if self.use_proxy:
            self.proxy = FreezableProxy(self.broker.port)
            await self.proxy.start()
        self._write_config()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.executor is not None:
            stop(self.executor)
        self.broker.stop()
        if self.proxy is not None:
            await self.proxy.stop()
        self._collector.cancel()
        await asyncio.gather(self._collector, return_exceptions=True)
        await self.client.close()
        await self.sub.close()
        await self.control_pub.close()
        self.ctx.destroy(linger=0)
        self.forwarder.stop()
        print(f"----- executor log ({self.lib})\n{tail(self.executor_log)}")
        print(f"----- broker log\n{tail(self.broker_log)}")

    def _write_config(self) -> None:
        broker = {
            "port": self.proxy.port if self.proxy is not None else self.broker.port,
            "client_id": CLIENT_ID,
            "reconnect_initial": 0.2,
            "reconnect_max": 1.0,
            "connect_timeout": 5.0,
            "ack_timeout": 3.0,
            "immediate_order_timeout": 10.0,
            **self.broker_overrides,
        }
        sections = {
            "general": {"run_dir": str(self.tmp / "run"), "log_level": "INFO"},
            "bus": {
                "xsub": self.forwarder.xsub_endpoint,
                "xpub": self.forwarder.xpub_endpoint,
                "executor": self.command_endpoint,
                # Nobody serves it: the executor must cope with a statekeeper that is not up.
                "statekeeper": f"tcp://127.0.0.1:{free_port()}",
                "heartbeat_interval": 0.2,
                "command_timeout": 0.5,
                "command_retries": 0,
            },
            "broker": broker,
            "strategy": self.strategy_overrides,
        }
        text = ""
        for name, values in sections.items():
            if values:
                text += f"[{name}]\n" + "".join(f"{k} = {toml(v)}\n" for k, v in values.items())
        self.config_file.write_text(text)

    # ------------------------------------------------------------------------------------------ executor

    async def start_executor(self, *, fault: str = "", wait: bool = True) -> None:
        env = {**self.env, "GRIDBOT_CONFIG": str(self.config_file)}
        if fault:
            env["GRIDBOT_EXECUTOR_FAULT"] = fault
        with self.executor_log.open("a") as log:
            log.write(f"===== start ({self.lib}{', fault ' + fault if fault else ''})\n")
        out = self.executor_log.open("a")
        self.executor = subprocess.Popen(
            [PYTHON, "-m", "services.executor", "--lib", self.lib],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
        out.close()
        if wait:
            await self.wait_ready()

    async def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> BrokerSnapshot:
        """Wait until the executor answers a snapshot request as connected and synced."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.executor is not None and self.executor.poll() is None, "the executor died; see its log"
            try:
                reply = await self.client.request(BrokerSnapshotRequest(), timeout=0.5, retries=0)
            except Exception:
                await asyncio.sleep(0.05)
                continue
            if isinstance(reply, BrokerSnapshot) and reply.connected:
                return reply
            await asyncio.sleep(0.05)
        raise TimeoutError(f"the executor was not connected and synced within {timeout} s")

    async def wait_exit(self, timeout: float = 10.0) -> int:
        assert self.executor is not None
        deadline = time.monotonic() + timeout
        while self.executor.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError("the executor did not exit")
            await asyncio.sleep(0.02)
        return int(self.executor.returncode)

    # ------------------------------------------------------------------------------------------ commands

    async def request(self, msg: Message, timeout: float = 10.0) -> Message:
        try:
            return await self.client.request(msg, timeout=timeout, retries=0)
        except Exception as e:
            c = self.client
            raise AssertionError(
                f"{type(msg).__name__} got no reply ({e}); client sent {c.sent}, late {c.late_replies}, "
                f"bad {c.bad_replies}"
            ) from e

    async def snapshot(self, resync: bool = False) -> BrokerSnapshot:
        reply = await self.request(BrokerSnapshotRequest(resync=resync))
        assert isinstance(reply, BrokerSnapshot)
        return reply

    # ------------------------------------------------------------------------------------------ broker

    async def control(self, verb: str, *args: Any) -> Any:
        return await call_async(self.broker.control, verb, *args, timeout=5.0)

    async def broker_orders(self, ref: str | None = None) -> list[dict[str, Any]]:
        orders: list[dict[str, Any]] = await self.control("orders")
        return [o for o in orders if ref is None or o["order_ref"] == ref]

    async def broker_requests(self, name: str | None = None) -> list[dict[str, Any]]:
        reqs: list[dict[str, Any]] = await self.control("requests", CLIENT_ID)
        return [r for r in reqs if name is None or r["request"] == name]

    # ------------------------------------------------------------------------------------------ events

    async def _collect(self) -> None:
        while True:
            envelope = await self.sub.recv(timeout=0.5)
            if envelope is not None:
                self.events.append(envelope)

    def messages(self, kind: type[Message] | None = None, where: Callable[[Any], bool] = lambda m: True) -> list[Any]:
        return [e.msg for e in self.events if (kind is None or isinstance(e.msg, kind)) and where(e.msg)]

    async def wait_event(
        self, kind: type[Message], where: Callable[[Any], bool] = lambda m: True, timeout: float = 10.0, count: int = 1
    ) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            found = self.messages(kind, where)
            if len(found) >= count:
                return found[count - 1]
            if time.monotonic() > deadline:
                seen = [type(e.msg).__name__ for e in self.events]
                raise TimeoutError(f"no {kind.__name__} #{count} matching within {timeout} s; events seen: {seen}")
            await asyncio.sleep(0.02)

    async def wait_connected(self, count: int = 1, timeout: float = 15.0) -> BrokerConnected:
        event: BrokerConnected = await self.wait_event(BrokerConnected, timeout=timeout, count=count)
        return event


def toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def tail(path: Path, lines: int = 60) -> str:
    if not path.exists():
        return "(none)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def buy(key: str, limit: str, quantity: int = 94, *, immediate: bool = False, trigger: str | None = None) -> PlaceOrder:
    """A grid BUY as the strategy sends it: Level 0 immediate, or a queued level with its PriceCondition."""
    return PlaceOrder(
        key=key,
        symbol="TQQQ",
        side="BUY",
        quantity=quantity,
        limit=Decimal(limit),
        tif="GTC",
        outside_rth=True,
        condition=PriceCondition(price=Decimal(trigger)) if trigger else None,
        conditions_ignore_rth=trigger is not None,
        immediate=immediate,
    )


def sell(key: str, limit: str, quantity: int = 94) -> PlaceOrder:
    return PlaceOrder(key=key, symbol="TQQQ", side="SELL", quantity=quantity, limit=Decimal(limit), tif="GTC")


def run(coro: Any) -> Any:
    return asyncio.run(coro)
