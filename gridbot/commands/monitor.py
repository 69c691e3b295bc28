"""`gridbot monitor`: the live dashboard (rich): the ladder around the price, lots, orders, P&L, health, alerts.

It fetches the state from the statekeeper and the broker's connection from the executor, then follows the bus:
every ``state.update`` replaces the state (each carries the whole state), and heartbeats, the feed's status,
ticks, broker events and alerts update the rest. A hole in the state updates, or a statekeeper that restarted,
fetches the state again. A critical alert rings the terminal bell. Ctrl-C ends it (exit 0); nothing it does
changes the system.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import zmq.asyncio
from rich.console import Console
from rich.live import Live

from core.lotmap import LotMapError, load_lot_map
from core.prices import parse_factor
from gridbot import config, dashboard, probe
from gridbot.config import Config
from proto.messages import (
    BrokerSnapshot,
    BrokerSnapshotRequest,
    StateSnapshot,
    StateSnapshotRequest,
    StateUpdate,
)

# Redraws per second.
REFRESH_PER_SECOND = 4
# Seconds between attempts to fetch the state while the statekeeper does not answer.
STATE_RETRY = 2.0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "monitor",
        help="live dashboard: ladder, lots, orders, P&L, health, alerts",
        description="A live terminal dashboard of the running system. Read-only; Ctrl-C leaves it.",
    )
    parser.add_argument("--once", action="store_true", help="print one frame (after a short listen) and exit")
    parser.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: run until Ctrl-C)")
    parser.add_argument("--no-bell", action="store_true", help="do not ring the terminal bell on critical alerts")
    parser.add_argument("--width", type=int, metavar="N", help="columns for --once (default: the terminal's)")
    parser.add_argument("--stop-hint", metavar="COMMAND", default="",
                        help="the command that stops the system, shown under the dashboard (`make run` passes "
                        "'make stop')")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = config.load(getattr(args, "config", None))
    probe.quiet_bus_logs()
    console = Console(width=args.width) if args.width else Console()
    monitor = Monitor(cfg, console, bell=not args.no_bell)
    stop = f"; stop it with: {args.stop_hint}" if args.stop_hint else ""
    if not args.once:
        monitor.view.footer = f"Ctrl-C leaves the dashboard (the system keeps running{stop})"
    try:
        if args.once:
            asyncio.run(monitor.once())
        else:
            asyncio.run(monitor.live(args.duration))
    except KeyboardInterrupt:
        console.print()
        console.print(f"left the dashboard; the system keeps running{stop}")
    return 0


def new_view(cfg: Config) -> dashboard.View:
    try:
        lot_map = load_lot_map(cfg.path(cfg.general.lot_map))
    except LotMapError as e:
        print(f"gridbot monitor: {e} (the ladder shows no shares)", file=sys.stderr)
        lot_map = None
    return dashboard.View(
        symbol=cfg.general.symbol,
        step=parse_factor(cfg.strategy.step, "strategy.step"),
        down_after_s=cfg.bus.heartbeat_interval * cfg.bus.heartbeat_misses,
        lot_map=lot_map,
    )


class Monitor:
    """The dashboard's I/O shell: fills a dashboard.View from the system and draws it."""

    def __init__(self, cfg: Config, console: Console, *, bell: bool = True) -> None:
        self.cfg = cfg
        self.console = console
        self.bell = bell
        self.view = new_view(cfg)
        self.bells = 0
        self._alerts_seen = 0
        self._state_wanted = True
        self._fetching: asyncio.Task[None] | None = None
        self._stop_requested = False

    def request_stop(self) -> None:
        """Make ``live`` return within a quarter of a second (from any thread)."""
        self._stop_requested = True

    def frame(self) -> Any:
        return dashboard.render(self.view, time.time_ns())

    async def once(self) -> None:
        """Fetch, listen one heartbeat interval and a half, print one frame."""
        ctx = zmq.asyncio.Context()
        try:
            self._state_wanted = False
            await asyncio.gather(
                self._fetch(ctx, retry=False), self._follow(ctx, probe.default_listen_seconds(self.cfg))
            )
        finally:
            ctx.destroy(linger=0)
        self.console.print(self.frame())

    async def live(self, duration: float | None) -> None:
        """Redraw until Ctrl-C or ``duration`` seconds."""
        ctx = zmq.asyncio.Context()
        try:
            with Live(self.frame(), console=self.console, refresh_per_second=REFRESH_PER_SECOND,
                      screen=False, transient=False, get_renderable=self.frame):
                await self._follow(ctx, duration)
        finally:
            if self._fetching is not None:
                self._fetching.cancel()
            ctx.destroy(linger=0)

    async def _follow(self, ctx: zmq.asyncio.Context, duration: float | None) -> None:
        sub = probe.watcher(self.cfg, ctx)
        sub.on_restart = self._on_restart
        loop = asyncio.get_running_loop()
        deadline = None if duration is None else loop.time() + duration
        try:
            while (deadline is None or loop.time() < deadline) and not self._stop_requested:
                if self._state_wanted and (self._fetching is None or self._fetching.done()):
                    self._state_wanted = False
                    self._fetching = asyncio.create_task(self._fetch(ctx))
                wait = 0.25 if deadline is None else max(0.0, min(0.25, deadline - loop.time()))
                envelope = await sub.recv(timeout=wait)
                if envelope is None:
                    continue
                msg = envelope.msg
                if isinstance(msg, StateUpdate):
                    self._take_update(msg)
                self.view.observed.update(envelope)
                self._ring_on_critical()
        finally:
            await sub.close()

    def _take_update(self, update: StateUpdate) -> None:
        seq = self.view.state_seq
        if seq is not None and update.seq != seq + 1 and update.seq != 1:
            if update.seq <= seq:
                return  # older than the snapshot already shown
            # A hole in the numbering: a snapshot puts the whole state right (this update is whole too, meanwhile).
            self._state_wanted = True
        self.view.state = update.state
        self.view.state_seq = update.seq

    def _on_restart(self, sender: str, old: int, new: int) -> None:
        if sender == "statekeeper":
            # Its numbering starts again at 1: whatever snapshot comes next is the truth.
            self._state_wanted = True
            self.view.state_seq = None

    def _ring_on_critical(self) -> None:
        critical, self._alerts_seen = dashboard.new_critical(self._alerts_seen, self.view.observed.alerts)
        if critical and self.bell:
            self.bells += 1
            self.console.bell()

    async def _fetch(self, ctx: zmq.asyncio.Context, retry: bool = True) -> None:
        """Ask for the state (and the broker's connection); on no answer say so, and (``retry``) ask again later."""
        timeout = self.cfg.bus.command_timeout
        state_reply, broker_reply = await asyncio.gather(
            probe.ask(self.cfg, "statekeeper", StateSnapshotRequest(ts_ns=time.time_ns()), timeout=timeout, ctx=ctx),
            probe.ask(self.cfg, "executor", BrokerSnapshotRequest(ts_ns=time.time_ns()), timeout=timeout, ctx=ctx),
            return_exceptions=True,
        )
        if isinstance(broker_reply, BrokerSnapshot) and self.view.observed.broker is None:
            self.view.broker_connected = broker_reply.connected
        if isinstance(state_reply, StateSnapshot):
            # An update newer than the snapshot may have come while it travelled: keep the newer.
            if self.view.state_seq is None or state_reply.seq >= self.view.state_seq:
                self.view.state = state_reply.state
                self.view.state_seq = state_reply.seq
            self.view.state_error = ""
            return
        if isinstance(state_reply, probe.Unreachable):
            self.view.state_error = str(state_reply)
        elif isinstance(state_reply, BaseException):
            raise state_reply
        else:
            self.view.state_error = f"unexpected answer from the statekeeper: {type(state_reply).__name__}"
        if retry:
            await asyncio.sleep(STATE_RETRY)
            self._state_wanted = True
