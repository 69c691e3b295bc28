"""`gridbot reset --yes [--cancel-orders] [--flatten] [--resume]`: the operator's manual reset, each step confirmed.

The user's procedure (cancel every order of the symbol, close the position, clear the state), done safely:

1. halt trading (statekeeper), so nothing new is placed while the reset runs;
2. ``--cancel-orders``: CancelAll with foreign orders included (executor), then wait until the broker lists no open
   order of the symbol;
3. ``--flatten``: close the position (less ``statekeeper.external_shares``) with one LMT order a little through the
   last price (``strategy.level0_buffer``, or ``--limit``), then wait until the broker shows the position closed;
4. clear the state (statekeeper ``ResetState``: no lots, no orders, the next cycle) and check it is empty;
5. ``--resume``: lift the halt; otherwise trading stays halted until ``gridbot resume``.

A step that fails stops the reset there, says what was done and what was not, and leaves trading halted. Without
``--yes`` nothing is sent. Exit codes: 0 done, 1 a step failed, 2 refused (no --yes, bad input), 3 a service did
not answer.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import zmq.asyncio

from core.prices import parse_factor, parse_price, to_cent
from gridbot import config, probe
from gridbot.config import Config
from proto import topics
from proto.messages import (
    BrokerSnapshot,
    BrokerSnapshotRequest,
    CancelAll,
    ClosePosition,
    CommandAccepted,
    Halt,
    Message,
    OpenOrderInfo,
    ResetState,
    Resume,
    Side,
    StateSnapshot,
    StateSnapshotRequest,
    Tick,
)

EXIT_FAILED = 1
EXIT_REFUSED = 2
EXIT_UNREACHABLE = 3
SOURCE = "operator"
# Seconds between looks at the broker while waiting for it to confirm a step.
POLL_INTERVAL = 0.5
# Seconds the close order may take beyond broker.immediate_order_timeout (the executor cancels it at that time).
CLOSE_MARGIN = 15.0
FINAL_STATUSES = frozenset({"Filled", "Cancelled", "ApiCancelled", "Inactive"})


class StepFailed(Exception):
    """A step of the reset did not complete; the message says which and why."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "reset",
        help="halt, cancel every order, close the position, clear the state (each step confirmed by the broker)",
        description="The manual reset: halt; with --cancel-orders cancel every order of the symbol (the grid's and "
        "others') and wait for the broker to confirm; with --flatten close the position and wait for the fill; "
        "then clear the grid's state (no lots, no orders, a new cycle). Trading stays halted unless --resume.",
    )
    parser.add_argument("--yes", action="store_true", help="really do it (without it nothing is sent)")
    parser.add_argument("--cancel-orders", action="store_true", help="cancel every open order of the symbol")
    parser.add_argument("--flatten", action="store_true", help="close the position with one LMT order")
    parser.add_argument("--limit", metavar="PRICE", help="the closing order's limit (default: the last price "
                        "moved by strategy.level0_buffer towards a fill)")
    parser.add_argument("--resume", action="store_true", help="resume trading at the end (default: stay halted)")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="S",
                        help="seconds to wait for the broker to confirm the cancels (default 30)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = config.load(getattr(args, "config", None))
    probe.quiet_bus_logs()
    if not args.yes:
        print(
            "gridbot reset: refusing without --yes. It would halt trading"
            + (", cancel every open order of the symbol" if args.cancel_orders else "")
            + (", close the position" if args.flatten else "")
            + ", and clear the grid's state (lots, working orders, anchor); run again with --yes to do it.",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    limit = None
    if args.limit is not None:
        try:
            limit = to_cent(parse_price(args.limit, "--limit"))
        except ValueError as e:
            print(f"gridbot reset: {e}", file=sys.stderr)
            return EXIT_REFUSED
    reset = Reset(cfg, say=print, cancel_orders=args.cancel_orders, flatten=args.flatten, limit=limit,
                  resume=args.resume, confirm_timeout=args.timeout)
    try:
        asyncio.run(reset.run())
    except probe.Unreachable as e:
        _report_stop(reset, str(e))
        return EXIT_UNREACHABLE
    except StepFailed as e:
        _report_stop(reset, str(e))
        return EXIT_FAILED
    return 0


def _report_stop(reset: Reset, why: str) -> None:
    print(f"gridbot reset: stopped: {why}", file=sys.stderr)
    done = ", ".join(reset.done) or "nothing"
    print(f"gridbot reset: done so far: {done}. Trading stays halted"
          + ("" if "halted" in reset.done else " (if the halt went through)")
          + "; fix the cause and run the reset again.", file=sys.stderr)


def open_orders(snapshot: BrokerSnapshot, symbol: str) -> list[OpenOrderInfo]:
    """The symbol's orders the broker still lists as open."""
    return [o for o in snapshot.orders if o.symbol == symbol and o.status not in FINAL_STATUSES]


def position(snapshot: BrokerSnapshot, symbol: str) -> int:
    return sum(p.quantity for p in snapshot.positions if p.symbol == symbol)


def closing_order(shares: int, price: Decimal, buffer: Decimal) -> tuple[Side, int, Decimal]:
    """The order that closes ``shares`` (negative = short): its side, quantity and a limit through ``price``."""
    if shares > 0:
        return "SELL", shares, to_cent(price * (1 - buffer))
    return "BUY", -shares, to_cent(price * (1 + buffer))


class Reset:
    """The steps, in order; ``done`` names those completed (for the report when one fails)."""

    def __init__(
        self,
        cfg: Config,
        say: Callable[[str], None],
        *,
        cancel_orders: bool,
        flatten: bool,
        limit: Decimal | None = None,
        resume: bool = False,
        confirm_timeout: float = 30.0,
    ) -> None:
        self.cfg = cfg
        self.say = say
        self.symbol = cfg.general.symbol
        self.cancel_orders = cancel_orders
        self.flatten = flatten
        self.limit = limit
        self.resume = resume
        self.confirm_timeout = confirm_timeout
        self.done: list[str] = []
        self._ctx: zmq.asyncio.Context | None = None

    async def run(self) -> None:
        self._ctx = zmq.asyncio.Context()
        try:
            await self._halt()
            snapshot = await self._broker()
            if self.cancel_orders:
                snapshot = await self._cancel_all(snapshot)
            elif open_orders(snapshot, self.symbol):
                self.say(f"note: {len(open_orders(snapshot, self.symbol))} open order(s) of {self.symbol} stay at "
                         "the broker (no --cancel-orders); reconciliation will adopt grid SELLs among them as lots")
            if self.flatten:
                await self._flatten(snapshot)
            await self._clear_state()
            if self.resume:
                await self._ask("statekeeper", Resume(ts_ns=time.time_ns(), reason="after reset", source=SOURCE))
                self.done.append("resumed")
                self.say("resumed: the next fresh tick starts a new Level 0")
            else:
                self.say("trading stays halted: `gridbot resume` starts a new cycle")
        finally:
            self._ctx.destroy(linger=0)
            self._ctx = None

    async def _ask(self, target: probe.Target, msg: Message, timeout: float | None = None) -> Message:
        reply = await probe.ask(self.cfg, target, msg, timeout=timeout, ctx=self._ctx)
        if isinstance(reply, CommandAccepted | BrokerSnapshot | StateSnapshot):
            return reply
        reason = getattr(reply, "reason", None) or type(reply).__name__
        raise StepFailed(f"the {target} refused {type(msg).__name__}: {reason}")

    async def _halt(self) -> None:
        await self._ask("statekeeper", Halt(ts_ns=time.time_ns(), reason="operator reset in progress", source=SOURCE))
        self.done.append("halted")
        self.say("halted: nothing new is placed while the reset runs")

    async def _broker(self) -> BrokerSnapshot:
        reply = await self._ask("executor", BrokerSnapshotRequest(ts_ns=time.time_ns(), resync=True))
        assert isinstance(reply, BrokerSnapshot)
        if (self.cancel_orders or self.flatten) and not reply.connected:
            raise StepFailed("the executor is not connected to the broker: no cancel or close could be confirmed")
        self.say(f"broker: {len(open_orders(reply, self.symbol))} open order(s) of {self.symbol}, "
                 f"position {position(reply, self.symbol)}")
        return reply

    async def _cancel_all(self, snapshot: BrokerSnapshot) -> BrokerSnapshot:
        before = len(open_orders(snapshot, self.symbol))
        reply = await self._ask("executor", CancelAll(ts_ns=time.time_ns(), reason="operator reset",
                                                      include_foreign=True), timeout=self.confirm_timeout)
        detail = reply.detail if isinstance(reply, CommandAccepted) else ""
        self.say(f"cancel all: sent ({detail or 'accepted'}); waiting for the broker to confirm")
        snapshot = await self._until(lambda s: not open_orders(s, self.symbol), self.confirm_timeout,
                                     "every open order cancelled")
        self.done.append(f"cancelled {before} order(s)")
        self.say(f"cancel all: confirmed, the broker lists no open order of {self.symbol}")
        return snapshot

    async def _flatten(self, snapshot: BrokerSnapshot) -> None:
        held = position(snapshot, self.symbol)
        shares = held - self.cfg.statekeeper.external_shares if held > 0 else held
        if shares == 0:
            self.say(f"flatten: nothing to close (position {held}, {self.cfg.statekeeper.external_shares} held "
                     "outside the grid)")
            return
        if open_orders(snapshot, self.symbol):
            raise StepFailed(f"{len(open_orders(snapshot, self.symbol))} order(s) of {self.symbol} are still open: "
                             "cancel them first (--cancel-orders), or a live SELL could sell the same shares twice")
        price = self.limit if self.limit is not None else await self._last_price()
        buffer = parse_factor(self.cfg.strategy.level0_buffer, "strategy.level0_buffer")
        side, quantity, limit = closing_order(shares, price, buffer)
        if self.limit is not None:
            limit = self.limit
        self.say(f"flatten: {side} {quantity} {self.symbol} LMT {limit}; waiting for the fill")
        close_timeout = self.cfg.broker.immediate_order_timeout + CLOSE_MARGIN
        await self._ask("executor", ClosePosition(ts_ns=time.time_ns(), symbol=self.symbol, side=side,
                                                  quantity=quantity, limit=limit, reason="operator reset"),
                        timeout=close_timeout)
        expected = held - shares
        await self._until(lambda s: position(s, self.symbol) == expected, self.confirm_timeout,
                          f"the position to be {expected}")
        self.done.append(f"closed {quantity} shares")
        self.say(f"flatten: confirmed, position {expected}")

    async def _last_price(self) -> Decimal:
        """The last price on the bus (the feed's ticks), waiting up to feed.stale_after for one."""
        sub = probe.watcher(self.cfg, self._ctx, [topics.tick(self.symbol)])
        try:
            envelope = await sub.recv(timeout=self.cfg.feed.stale_after)
        finally:
            await sub.close()
        if envelope is None or not isinstance(envelope.msg, Tick):
            raise StepFailed(f"no price from the feed within {self.cfg.feed.stale_after:g} s to set the closing "
                             "order's limit; give one with --limit PRICE")
        return envelope.msg.price

    async def _clear_state(self) -> None:
        await self._ask("statekeeper", ResetState(ts_ns=time.time_ns(), reason="operator reset", source=SOURCE))
        reply = await self._ask("statekeeper", StateSnapshotRequest(ts_ns=time.time_ns()))
        assert isinstance(reply, StateSnapshot)
        state = reply.state
        if state.lots or state.orders:
            raise StepFailed(f"the statekeeper accepted ResetState but still holds {len(state.lots)} lot(s) and "
                             f"{len(state.orders)} working order(s)")
        self.done.append("state cleared")
        self.say(f"state: cleared (cycle {state.cycle}, no lots, no working orders)")

    async def _until(self, condition: Callable[[BrokerSnapshot], bool], timeout: float, what: str) -> BrokerSnapshot:
        """Ask the broker until ``condition`` holds; StepFailed naming ``what`` after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            reply = await self._ask("executor", BrokerSnapshotRequest(ts_ns=time.time_ns(), resync=True))
            assert isinstance(reply, BrokerSnapshot)
            if condition(reply):
                return reply
            if loop.time() >= deadline:
                left = open_orders(reply, self.symbol)
                listed = "; ".join(f"{o.key or 'orderId ' + str(o.order_id)} ({o.status}, clientId {o.client_id})"
                                   for o in left[:10])
                raise StepFailed(f"the broker did not confirm {what} within {timeout:g} s (position "
                                 f"{position(reply, self.symbol)}, open orders: {listed or 'none'})")
            await asyncio.sleep(POLL_INTERVAL)
