"""Test helpers for the feed: the sim's stream in a child process, a bus forwarder, a feed service process.

Every wait is bounded: a hang fails the test with a message instead of hanging the suite.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bus.forwarder import Forwarder

ROOT = Path(__file__).resolve().parents[3]
PYTHON = sys.executable
KEY, SECRET = "TESTKEY", "TESTSECRET"
T0 = 1_748_872_800_000_000_000  # 2025-06-02 14:00:00 UTC
MS = 1_000_000
# Waits cost time only when what they wait for never comes, so they are sized for a 2-core CI machine that runs
# other tests' processes at the same time: there a new Python process that imports alpaca-py, pydantic and pyzmq
# can take tens of seconds to say its first word, and a reply or a reconnect several seconds.
START_TIMEOUT = 60.0
EVENT_TIMEOUT = 20.0
LOG_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"  # gridbot.logs: the first 23 characters of every line


def _readline(proc: subprocess.Popen[str], timeout: float, what: str) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise AssertionError(f"no answer from {what} within {timeout} s")
    line = proc.stdout.readline()
    if not line:
        raise AssertionError(f"{what} exited (code {proc.poll()}) instead of answering")
    return line


class StreamProcess:
    """The sim's StreamServer in a child process (tests/services/feed/stream_process.py), driven over stdin."""

    def __init__(self, no_sip: bool = False, port: int = 0) -> None:
        args = [PYTHON, "-m", "tests.services.feed.stream_process", "--port", str(port)]
        args += ["--no-sip"] if no_sip else []
        self.proc = subprocess.Popen(
            args, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            bufsize=1,
        )
        self.port = json.loads(_readline(self.proc, START_TIMEOUT, "the stream process"))["port"]

    def url(self, feed: str = "iex") -> str:
        return f"ws://127.0.0.1:{self.port}/v2/{feed}"

    def call(self, timeout: float = EVENT_TIMEOUT, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        reply: dict[str, Any] = json.loads(_readline(self.proc, timeout, f"the stream process ({cmd['cmd']})"))
        return reply

    def prints(self, prices: list[str], ts_ns: int = T0, step_ns: int = MS, raw: bool = False) -> None:
        self.call(cmd="prints", prices=prices, ts_ns=ts_ns, step_ns=step_ns, raw=raw)

    def subscribed_clients(self) -> int:
        return sum("TQQQ" in c["subscriptions"].get("trades", []) for c in self.call(cmd="clients")["clients"])

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(condition: Any, timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll ``condition()`` (a blocking check, e.g. a question to the stream process) until true or fail."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class BusForwarder:
    """The bus's own forwarder (bus.forwarder) on random loopback ports, on its thread in this process."""

    def __init__(self) -> None:
        self._forwarder = Forwarder("tcp://127.0.0.1:*", "tcp://127.0.0.1:*")
        self._forwarder.start()
        self.xsub = self._forwarder.xsub_endpoint
        self.xpub = self._forwarder.xpub_endpoint

    def close(self) -> None:
        self._forwarder.stop()


def write_config(tmp_path: Path, forwarder: BusForwarder, url: str, **feed: Any) -> Path:
    """A user config for a feed process: sim mode with the test key pair, the given bus and stream URL."""
    settings = {"status_interval": 0.5, "stale_after": 1.0, "data_timeout": 30.0} | feed
    lines = [
        "[general]", f'run_dir = "{tmp_path}"', 'log_level = "INFO"',
        "[bus]", f'xsub = "{forwarder.xsub}"', f'xpub = "{forwarder.xpub}"', "heartbeat_interval = 0.2",
        "[sim]", f'api_key = "{KEY}"', f'api_secret = "{SECRET}"',
        "[feed]", f'url = "{url}"',
    ] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    path = tmp_path / "gridbot.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class FeedProcess:
    """``python -m services.feed --config PATH`` as a child process, its log kept in a file."""

    def __init__(self, config: Path) -> None:
        self.log_path = config.parent / "feed.log"
        self._log = self.log_path.open("w")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("GRIDBOT_CONFIG", None)
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "services.feed", "--config", str(config)],
            cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=env,
        )

    def log(self) -> str:
        return self.log_path.read_text()

    def terminate(self, timeout: float = EVENT_TIMEOUT) -> tuple[int, float]:
        """SIGTERM; return (exit code, seconds it took to exit)."""
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.wait(timeout)
        return code, time.monotonic() - start

    def stop_seconds(self) -> float:
        """How long the feed itself took to stop, by its own log: from "SIGTERM received" to "feed stopped".

        Unlike the time from the signal to the exit, this leaves out the waits for a CPU on a busy machine before
        the signal is handled and while the interpreter tears down, and keeps the part the feed is responsible for.
        """
        stamps = {}
        for line in self.log().splitlines():
            for marker in ("SIGTERM received", "feed stopped:"):
                if marker in line and marker not in stamps:
                    stamps[marker] = datetime.strptime(line[:23], LOG_TIME_FORMAT)
        assert len(stamps) == 2, f"the feed's log lacks the stop's start or end:\n{self.log()[-3000:]}"
        return (stamps["feed stopped:"] - stamps["SIGTERM received"]).total_seconds()

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the feed did not exit within {timeout} s; log:\n{self.log()[-3000:]}") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()
