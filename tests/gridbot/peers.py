"""Peers of the operator's CLI on real sockets: the bus forwarder, command servers and heartbeating publishers.

``Peers`` runs, on a thread with its own event loop, a bus forwarder on free loopback ports, a command server on
the statekeeper's and the executor's endpoints answering with the test's handler functions, and publishers that
heartbeat as the named services (and publish what the test asks). ``config_file`` writes a config pointing at them,
for the real ``gridbot`` console script in a subprocess.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import zmq.asyncio

from bus.command_server import CommandServer
from bus.forwarder import Forwarder
from bus.publisher import Publisher
from proto.messages import Message

GRIDBOT = Path(sys.executable).parent / "gridbot"
Handler = Callable[[Message], Awaitable[Message]]


class Peers:
    def __init__(
        self,
        statekeeper: Handler | None = None,
        executor: Handler | None = None,
        heartbeats: Iterable[str] = (),
        heartbeat_interval: float = 0.2,
    ) -> None:
        self.forwarder = Forwarder("tcp://127.0.0.1:*", "tcp://127.0.0.1:*")
        self.forwarder.start()
        self.received: list[Message] = []
        self.publishers: dict[str, Publisher] = {}
        self._handlers = {"statekeeper": statekeeper, "executor": executor}
        self._names = list(heartbeats)
        self._interval = heartbeat_interval
        self.endpoints: dict[str, str] = {}
        self._loop = asyncio.new_event_loop()
        self._ready: Future[None] = Future()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.result(timeout=10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        ctx = zmq.asyncio.Context()
        servers: list[CommandServer] = []
        try:
            self._stop = asyncio.Event()
            for name, handler in self._handlers.items():
                if handler is None:
                    # A port nobody listens on: requests to it time out.
                    self.endpoints[name] = f"tcp://127.0.0.1:{_free_port()}"
                    continue
                server = CommandServer(ctx, "tcp://127.0.0.1:*", self._recording(handler), name=name)
                await server.start()
                servers.append(server)
                self.endpoints[name] = server.endpoint
            for name in self._names:
                publisher = Publisher(ctx, self.forwarder.xsub_endpoint, name, self._interval)
                await publisher.start()
                self.publishers[name] = publisher
            self._ready.set_result(None)
            await self._stop.wait()
        except BaseException as e:
            if not self._ready.done():
                self._ready.set_exception(e)
            raise
        finally:
            for publisher in self.publishers.values():
                await publisher.close()
            for server in servers:
                await server.close()
            ctx.destroy(linger=0)

    def _recording(self, handler: Handler) -> Handler:
        async def record(msg: Message) -> Message:
            self.received.append(msg)
            return await handler(msg)

        return record

    def publish(self, sender: str, topic: str, msg: Message) -> None:
        """Publish ``msg`` as ``sender`` (one of the heartbeat names) from the peers' thread."""
        done: Future[None] = Future()

        def send() -> None:
            self.publishers[sender].publish(topic, msg)
            done.set_result(None)

        self._loop.call_soon_threadsafe(send)
        done.result(timeout=5)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the peers' loop and return its result."""
        done: Future[Any] = Future()
        self._loop.call_soon_threadsafe(lambda: done.set_result(fn()))
        return done.result(timeout=5)

    def close(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)
        self.forwarder.stop()

    def config_file(self, directory: Path, extra: str = "") -> Path:
        """A config pointing the CLI at these peers (and a run_dir inside ``directory``)."""
        path = directory / "gridbot.toml"
        path.write_text(
            f"""
[general]
run_dir = "{directory / 'run'}"

[bus]
xsub = "{self.forwarder.xsub_endpoint}"
xpub = "{self.forwarder.xpub_endpoint}"
executor = "{self.endpoints['executor']}"
statekeeper = "{self.endpoints['statekeeper']}"
heartbeat_interval = {self._interval}
command_timeout = 2.0
{extra}
"""
        )
        return path


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gridbot(config: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run the real ``gridbot`` console script with ``config`` (no other config or keys leak in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRIDBOT_", "APCA_"))}
    env["GRIDBOT_CONFIG"] = str(config)
    return subprocess.run(
        [str(GRIDBOT), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
