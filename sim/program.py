"""The whole simulated exchange in one asyncio loop: market source -> driver -> (paper broker, Alpaca stream),
one SimClock, and the control endpoint with every verb. ``python -m sim`` (sim/__main__.py) runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import zmq

from gridbot.config import Config
from sim.broker import PaperBroker
from sim.broker.verbs import register_broker_verbs
from sim.clock import SimClock
from sim.control import ControlServer, Handler, UsageError
from sim.driver import Driver
from sim.market import OpenedSource, open_source
from sim.market.timefmt import iso_utc
from sim.stream.server import StreamServer

log = logging.getLogger("sim")

LOOPBACK = "127.0.0.1"


async def _listening(what: str, key: str, starting: Awaitable[Any]) -> None:
    """Await a server's start; a port in use becomes one line naming the server and the setting to change."""
    try:
        await starting
    except (OSError, zmq.ZMQError) as e:
        raise OSError(f"the {what} cannot listen ({e}); is another sim running? change {key}") from None


class _AllBut:
    """Register every verb on ``server`` except ``skip`` (the program supplies its own version of those)."""

    def __init__(self, server: ControlServer, skip: set[str]) -> None:
        self.server = server
        self.skip = skip

    def register(self, verb: str, handler: Handler, usage: str = "", help: str = "") -> None:
        if verb not in self.skip:
            self.server.register(verb, handler, usage, help)


class SimProgram:
    """Build, start, describe and stop the simulated exchange from a :class:`gridbot.config.Config`."""

    def __init__(
        self,
        cfg: Config,
        state_dir: Path,
        broker_port: int | None = None,
        stream_port: int | None = None,
        control: str | None = None,
        paused: bool = False,
        from_start: bool = False,
    ) -> None:
        sim = cfg.sim
        self.cfg = cfg
        self.broker_port = sim.broker_port if broker_port is None else broker_port
        self.stream_port = sim.stream_port if stream_port is None else stream_port
        opened = open_source(sim, cfg.path)
        self.clock = SimClock(start_ns=opened.start_ns, driven=opened.driven)
        self.broker = PaperBroker(
            self.clock,
            state_dir,
            account=sim.account,
            starting_cash=str(sim.starting_cash),
            partial_fills=sim.partial_fills,
        )
        self.resumed_after = None if from_start else self._resume(opened, state_dir)
        self.stream = StreamServer(
            self.clock.now_ns, cfg.general.symbol, sim.api_key, sim.api_secret, sip_entitled=sim.sip_entitled
        )
        self.driver = Driver(
            opened.source,
            self.clock,
            sim.speed,
            sim.max_wait,
            publish=self.stream.publish,
            on_print=self.broker.on_print,
            backlog=self.stream.backlog,
        )
        if paused:
            self.driver.pause()
        self.control = ControlServer(control or sim.control)
        self._register_verbs()
        self._driver_task: asyncio.Task[None] | None = None

    def _resume(self, opened: OpenedSource, state_dir: Path) -> str | None:
        """A restarted sim carries on where its broker last saw the market, instead of rewinding it (a rewound
        replay would show a bot prices it left weeks ago, all at once). Returns the time resumed after."""
        last = self.broker.engine.last
        if not opened.driven or last is None or last.ts_ns < opened.start_ns:
            return None
        opened.source.resume_after(last.ts_ns)
        self.clock.set(last.ts_ns)
        when = iso_utc(last.ts_ns)
        log.warning(
            "resuming the market after %s, the last print the broker in %s saw; "
            "use --from-start (or a fresh --state-dir) to play from sim.start instead",
            when,
            state_dir,
        )
        return when

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> dict[str, Any]:
        """Open the broker, the stream and the control endpoint, then start the market; return the addresses."""
        await _listening(
            "paper broker", "sim.broker_port / --broker-port", self.broker.start(LOOPBACK, self.broker_port)
        )
        await _listening(
            "market stream", "sim.stream_port / --stream-port", self.stream.start(LOOPBACK, self.stream_port)
        )
        await _listening("control endpoint", "sim.control / --control", self.control.start())
        self._driver_task = asyncio.create_task(self._run_driver(), name="sim-driver")
        return self.addresses()

    async def _run_driver(self) -> None:
        try:
            await self.driver.run()
        except Exception:  # the market stopping must not take the broker and its clients down with it
            log.exception("the market driver stopped on an error; the broker and the stream stay up")

    async def stop(self) -> None:
        """Stop the market, then the control endpoint, the stream and the broker (its state is saved)."""
        self.driver.stop()
        if self._driver_task is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._driver_task, 2.0)
        await self.control.stop()
        await self.stream.stop()
        await self.broker.stop()

    def addresses(self) -> dict[str, Any]:
        return {
            "broker": f"{LOOPBACK}:{self.broker.port}",
            "broker_port": self.broker.port,
            "stream": self.stream.url(self.cfg.feed.feed),
            "stream_port": self.stream.port,
            "control": self.control.endpoint,
        }

    # -- control verbs -----------------------------------------------------------------------------------------

    def _register_verbs(self) -> None:
        c = self.control
        # The broker's own `price` would reach only the broker; here a price goes through the driver, so the
        # stream publishes it too (one market).
        register_broker_verbs(_AllBut(c, {"price"}), self.broker)  # type: ignore[arg-type]
        c.register("price", self.price, "price P [SIZE]", "a trade print at P now (size 100 unless given)")
        c.register("pause", self.pause, "pause", "hold the market (the clock stops with a driven source)")
        c.register("resume", self.resume, "resume", "carry on after pause")
        c.register(
            "speed",
            self.speed,
            "speed [X]",
            "show or set the speed: 1-1000 x real time, 0 = fast as possible",
        )
        c.register(
            "stream-drop", self.stream.drop, "stream-drop", "abort every stream connection (no close frame)"
        )
        c.register(
            "stream-silence", self.stream_silence, "stream-silence SECONDS", "keep connections, send no data"
        )
        c.register(
            "stream-garbage", self.stream.garbage, "stream-garbage", "send every client malformed frames"
        )
        c.register("status", self.status, "status [--json]", "clock, source progress, addresses and clients")

    def price(self, p: Any, size: Any = 100) -> dict[str, Any]:
        try:
            price = Decimal(str(p))
            shares = int(size)
        except (InvalidOperation, ValueError):
            raise UsageError(
                f"price must be a number and size a whole number of shares, got {p!r} {size!r}"
            ) from None
        printed = self.driver.inject(price, shares)
        return {"price": str(printed.price), "size": printed.size, "time": iso_utc(printed.ts_ns)}

    def pause(self) -> dict[str, Any]:
        self.driver.pause()
        return {"paused": True, "clock": iso_utc(self.clock.now_ns())}

    def resume(self) -> dict[str, Any]:
        self.driver.resume()
        return {"paused": False, "clock": iso_utc(self.clock.now_ns())}

    def speed(self, x: Any = None) -> float:
        if x is None:
            return self.driver.speed
        try:
            value = float(x)
        except ValueError:
            raise UsageError(f"speed must be a number, was {x!r}") from None
        return self.driver.set_speed(value)

    def stream_silence(self, seconds: Any) -> float:
        try:
            value = float(seconds)
        except ValueError:
            raise UsageError(f"SECONDS must be a number, was {seconds!r}") from None
        return self.stream.silence(value)

    def status(self, *flags: Any) -> dict[str, Any]:
        """Everything an operator asks first (the CLI's --json prints it raw)."""
        unknown = [f for f in flags if f != "--json"]
        if unknown:
            raise UsageError(f"unknown option {unknown[0]!r}")
        stream = self.stream.status()
        broker = self.broker.status()
        return {
            "clock": {
                "time": iso_utc(self.clock.now_ns()),
                "ts_ns": self.clock.now_ns(),
                "mode": "driven by the prints" if self.clock.driven else "free-running",
                "resumed_after": self.resumed_after,
            },
            "market": self.driver.status(),
            "broker": {"host": broker["host"], "port": broker["port"], "account": broker["account"]},
            "stream": {
                "url": stream["urls"][self.cfg.feed.feed],
                "urls": stream["urls"],
                "silent_for_s": stream["silent_for_s"],
                "faults": stream["faults"],
            },
            "control": self.control.endpoint,
            "clients": {
                "stream": stream["clients"],
                "broker": broker["clients"],
            },
            "account": {k: broker[k] for k in ("session", "open_orders", "position", "cash", "last_price")},
        }
