"""The halt flag: PlaceOrder is refused while trading is halted (cancels still go).

Learned from the statekeeper: its snapshot at start (if it is up), every ``state.update``, and ``TradingHalted`` /
``TradingResumed`` on ``control``; a sequence gap on ``state.update`` asks for the snapshot again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import zmq.asyncio

import bus
from proto import topics
from proto.messages import StateSnapshot, StateSnapshotRequest, StateUpdate, TradingHalted, TradingResumed
from services.executor.state import SERVICE, ExecutorState

log = logging.getLogger("executor")


class HaltListener:
    """Owns the subscriber to ``state.update`` / ``control`` and the statekeeper client; ``await run()``."""

    def __init__(
        self,
        state: ExecutorState,
        ctx: zmq.asyncio.Context,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        cfg = state.cfg
        self.state = state
        self.spawn = spawn
        self.subscriber = bus.Subscriber(
            ctx,
            cfg.bus.xpub,
            [topics.STATE_UPDATE, topics.CONTROL],
            on_gap=self._on_state_gap,
            heartbeat_interval=cfg.bus.heartbeat_interval,
            heartbeat_misses=cfg.bus.heartbeat_misses,
        )
        self.statekeeper = bus.CommandClient(
            ctx,
            cfg.bus.statekeeper,
            SERVICE,
            timeout=cfg.bus.command_timeout,
            retries=cfg.bus.command_retries,
        )

    async def close(self) -> None:
        await self.statekeeper.close()
        await self.subscriber.close()

    async def run(self) -> None:
        while True:
            envelope = await self.subscriber.recv(timeout=1.0)
            if envelope is None:
                continue
            match envelope.msg:
                case StateUpdate(state=state):
                    self._set_halt(state.halted, state.halt_reason)
                case TradingHalted(reason=reason):
                    self._set_halt(True, reason)
                case TradingResumed():
                    self._set_halt(False, "")

    async def ask_halt_flag(self) -> None:
        """Learn the halt flag at start from the statekeeper (it may not be up: updates will tell us then)."""
        try:
            reply = await self.statekeeper.request(StateSnapshotRequest(ts_ns=time.time_ns()))
        except bus.CommandError as e:
            log.info(
                "statekeeper did not answer a snapshot request (%s); the halt flag comes with its updates", e
            )
            return
        except Exception:  # best effort: the flag also comes with every state update
            log.exception("asking the statekeeper for the halt flag failed; the flag comes with its updates")
            return
        if isinstance(reply, StateSnapshot):
            self._set_halt(reply.state.halted, reply.state.halt_reason)

    def _on_state_gap(self, sender: str, expected: int, got: int) -> None:
        self.spawn(self.ask_halt_flag())

    def _set_halt(self, halted: bool, reason: str) -> None:
        state = self.state
        if halted != state.halted:
            log.warning("trading %s%s", "halted" if halted else "resumed", f": {reason}" if reason else "")
        state.halted = halted
        state.halt_reason = reason
        state.set_status()
