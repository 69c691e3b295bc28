"""Test helpers for the bus: programs in subprocesses read with timeouts, asyncio runs with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import zmq
import zmq.asyncio

from proto.messages import Tick

PROJECT_ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T], timeout: float = 15.0) -> T:
    """Run ``coro`` on a fresh loop; fail instead of hanging after ``timeout`` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def tick(seq: int, price: str = "50.12") -> Tick:
    return Tick(
        ts_ns=time.time_ns(),
        symbol="TQQQ",
        price=Decimal(price),
        size=100,
        exchange_ts_ns=seq,
        receive_ts_ns=seq,
        seq=seq,
    )


async def eventually(condition: Callable[[], bool], timeout: float, what: str, poll: Callable[[], Awaitable[Any]]) -> None:
    """Call ``poll`` until ``condition()`` holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await poll()


class Program:
    """A Python program in a subprocess whose stdout+stderr lines are read by a thread into a queue."""

    def __init__(self, *args: str) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("GRIDBOT_CONFIG", None)
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Return the match of the first new output line matching ``pattern``; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._queue.get(timeout=max(0.0, remaining))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} within {timeout} s; output:\n{self.output()}") from None
            if line is None:
                raise AssertionError(f"the program ended before printing {pattern!r}; output:\n{self.output()}")
            self.lines.append(line)
            match = regex.search(line)
            if match:
                return match

    def output(self) -> str:
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return "\n".join(self.lines)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 10.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"the program did not exit within {timeout} s; output:\n{self.output()}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class BusProgram(Program):
    """``python -m bus`` on the given endpoints (``*`` = a free port); the bound endpoints are parsed from its log."""

    def __init__(self, xsub: str = "tcp://127.0.0.1:*", xpub: str = "tcp://127.0.0.1:*") -> None:
        super().__init__("-m", "bus", "--xsub", xsub, "--xpub", xpub)
        match = self.wait_for(r"forwarding publishers (\S+) -> subscribers (\S+)")
        self.xsub, self.xpub = match.group(1), match.group(2)

    def stop(self) -> int:
        self.signal(signal.SIGTERM)
        return self.wait()


@contextlib.contextmanager
def zmq_context() -> Iterator[zmq.asyncio.Context]:
    """An asyncio ZeroMQ context whose sockets are all closed at exit, even when a test fails half-way."""
    ctx = zmq.asyncio.Context()
    try:
        yield ctx
    finally:
        ctx.destroy(linger=0)


@contextlib.contextmanager
def raw_socket(socket_type: int, connect: str | None = None) -> Iterator[zmq.Socket[bytes]]:
    """A plain (blocking) socket on its own context, for sending hand-made frames; closed at exit."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(socket_type)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        if connect is not None:
            sock.connect(connect)
        yield sock
    finally:
        sock.close(linger=0)
        ctx.term()
