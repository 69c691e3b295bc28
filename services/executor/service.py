"""The executor service: the single owner of the IB connection (DESIGN sections 3 and 7; docs/executor.md).

The I/O shell around rules.py, wired here from parts with one job each: one asyncio loop holds the IB client
(ib_insync or ib_async, chosen in ib_api.py), the command server (ROUTER on ``bus.executor``), the publisher
(``order.event``, ``broker.event``, ``alert``) and these tasks:

- connection.py: connect, ``reqMarketDataType(3)``, qualify, sync (sync.py), reconnect with backoff, probe;
- submissions.py: the one queue every placeOrder / cancelOrder goes through, at IB's pace;
- monitor.py: cancels orders not acknowledged, or immediate orders not final, in time;
- halt.py: the halt flag from the statekeeper.

IB's order reports become events in events.py; commands are answered by commands.py; state.py is what they share.
Only the client library's blocking-free ``...Async`` methods and events are used: never ``ib.sleep``/``ib.run``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import zmq.asyncio

import bus
from gridbot.config import Config
from services.executor.commands import CommandHandler
from services.executor.connection import Connection
from services.executor.events import IbEvents
from services.executor.halt import HaltListener
from services.executor.ib_api import IbLib
from services.executor.monitor import Monitor
from services.executor.state import SERVICE, ExecutorState
from services.executor.submissions import SubmissionQueue
from services.executor.sync import Syncer
from services.executor.waiters import Waiters

log = logging.getLogger("executor")


class Executor:
    """The executor's shell; ``await run()`` until cancelled."""

    def __init__(
        self,
        cfg: Config,
        lib: IbLib,
        ctx: zmq.asyncio.Context,
        *,
        fault: str = "",
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.cfg = cfg
        self.lib = lib
        self._tasks: list[asyncio.Task[Any]] = []
        self.publisher = bus.Publisher(ctx, cfg.bus.xsub, SERVICE, cfg.bus.heartbeat_interval)
        self.state = ExecutorState(cfg, lib, self.publisher, monotonic_ns=monotonic_ns)
        self.halt = HaltListener(self.state, ctx, self._spawn)
        self.waiters = Waiters()
        self.queue = SubmissionQueue(self.state, self.waiters, fault=fault)
        self.events = IbEvents(self.state, self.waiters)
        self.syncer = Syncer(self.state, self.events, self.waiters, self.queue)
        self.connection = Connection(self.state, self.syncer, self.queue, self.halt.subscriber, self._spawn)
        self.monitor = Monitor(self.state, self.queue, self.connection.on_disconnected)
        self.commands = CommandHandler(self.state, self.queue, self.waiters, self.syncer)
        self.server = bus.CommandServer(ctx, cfg.bus.executor, self.commands.handle, name=SERVICE)
        self._wire_events()

    async def run(self) -> None:
        """Serve until cancelled (SIGTERM), then disconnect and close the sockets."""
        await self.publisher.start()
        await self.server.start()
        self.state.set_status()
        log.info(
            "executor: commands on %s, IB %s:%d clientId %d via %s",
            self.server.endpoint,
            self.cfg.broker.host,
            self.cfg.broker.port,
            self.state.client_id,
            self.lib.name,
        )
        self._tasks = [
            asyncio.create_task(self.connection.run(), name="executor-connection"),
            asyncio.create_task(self.queue.run(), name="executor-submissions"),
            asyncio.create_task(self.monitor.run(), name="executor-monitor"),
            asyncio.create_task(self.halt.run(), name="executor-control"),
            asyncio.create_task(self.halt.ask_halt_flag(), name="executor-halt-flag"),
        ]
        try:
            # A task that dies of a bug is fatal (supervisord restarts the program); the others run for ever.
            done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            await self.close()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.state.ib.isConnected():
            self.connection.close_connection("the executor is stopping")
        await self.server.close()
        await self.halt.close()
        await self.publisher.close()

    def _wire_events(self) -> None:
        # The library holds its handlers weakly: the parts live as long as this Executor.
        ib = self.state.ib
        ib.orderStatusEvent += self.events.on_trade
        ib.openOrderEvent += self.events.on_trade
        ib.execDetailsEvent += self.events.on_execution
        ib.commissionReportEvent += self.events.on_commission
        ib.errorEvent += self.connection.on_error
        ib.disconnectedEvent += self.connection.on_disconnected
        ib.positionEvent += self.events.on_position
        ib.client.apiStart += self.connection.on_api_start

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a side task (a resync, a halt-flag request) that close() cancels with the others."""
        task = asyncio.ensure_future(coro)
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)
