"""Send the strategy's commands to the executor: at most one in flight per intent key, and no chatter.

Every decision re-derives the whole command list from the state, and the state learns of an order only when the
executor's event has gone through the statekeeper. Between the executor's answer and that state update the same
command would be derived again, on every tick. Re-sending it is safe (the executor answers a known key with the
existing order), but pointless, so an answered command is remembered:

- accepted (or a duplicate): not sent again until the state shows its effect (a placed key among the working
  orders, a cancelled key gone from them), which ends the memory, or for ``settle_accepted`` seconds at most
  (if the state never shows it, asking again costs one Duplicate reply);
- rejected: not sent again for ``settle`` seconds unless a newer state arrived (the reason may have passed: a
  disconnect, a full side).

A command that got no answer (after the bus client's own retries under the same command id) is free to go again at
the next decision, under the same intent key.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass

from bus.command_client import CommandError
from core.strategy import Command
from proto.messages import (
    CancelOrder,
    CommandAccepted,
    CommandDuplicate,
    CommandRejected,
    Message,
    PlaceOrder,
)

log = logging.getLogger("strategy")

Send = Callable[[Command], Awaitable[Message]]
# Called with every command and its reply (None when it timed out or failed): for alerts and tests.
OnReply = Callable[[Command, Message | None], None]


# Seconds an accepted command is not repeated while the state has not moved on.
SETTLE_ACCEPTED = 60.0


@dataclass(frozen=True, slots=True)
class _Answered:
    kind: type
    state_seq: int
    until: float
    rejected: bool


class Dispatcher:
    def __init__(
        self,
        send: Send,
        settle: float,
        on_reply: OnReply | None = None,
        clock: Callable[[], float] = time.monotonic,
        settle_accepted: float = SETTLE_ACCEPTED,
    ) -> None:
        self._send = send
        self._settle = settle
        self._settle_accepted = settle_accepted
        self._on_reply = on_reply
        self._clock = clock
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._answered: dict[str, _Answered] = {}
        self.sent = 0
        self.skipped_in_flight = 0
        self.skipped_settling = 0

    def in_flight(self) -> set[str]:
        return set(self._in_flight)

    def submit(self, commands: Iterable[Command], state_seq: int, live: Collection[str] = ()) -> list[Command]:
        """Start sending each command that is not in flight or settling; return those started.

        ``state_seq`` numbers the state the commands were derived from, ``live`` is its working orders' keys.
        """
        started: list[Command] = []
        now = self._clock()
        self._forget_shown(live)
        for cmd in commands:
            if cmd.key in self._in_flight:
                self.skipped_in_flight += 1
                continue
            answered = self._answered.get(cmd.key)
            if (
                answered is not None
                and answered.kind is type(cmd)
                and now < answered.until
                and (not answered.rejected or answered.state_seq >= state_seq)
            ):
                self.skipped_settling += 1
                continue
            self._in_flight[cmd.key] = asyncio.create_task(self._run(cmd, state_seq), name=f"command {cmd.key}")
            self.sent += 1
            started.append(cmd)
        return started

    def _forget_shown(self, live: Collection[str]) -> None:
        """Drop the memory of accepted commands whose effect the state now shows."""
        for key, answered in list(self._answered.items()):
            shown = (answered.kind is PlaceOrder and key in live) or (answered.kind is CancelOrder and key not in live)
            if shown and not answered.rejected:
                del self._answered[key]

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the commands in flight (shutdown: finish what is in hand)."""
        tasks = list(self._in_flight.values())
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def close(self) -> None:
        for task in list(self._in_flight.values()):
            task.cancel()
        await asyncio.gather(*self._in_flight.values(), return_exceptions=True)

    async def _run(self, cmd: Command, state_seq: int) -> None:
        reply: Message | None = None
        try:
            reply = await self._send(cmd)
        except CommandError as e:
            log.warning("%s %s: %s", type(cmd).__name__, cmd.key, e)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s %s failed", type(cmd).__name__, cmd.key)
        finally:
            del self._in_flight[cmd.key]
        if reply is not None:
            rejected = isinstance(reply, CommandRejected)
            settle = self._settle if rejected else self._settle_accepted
            self._answered[cmd.key] = _Answered(type(cmd), state_seq, self._clock() + settle, rejected)
            _log_reply(cmd, reply)
        if self._on_reply is not None:
            try:
                self._on_reply(cmd, reply)
            except Exception:
                log.exception("the reply callback failed for %s", cmd.key)


def _log_reply(cmd: Command, reply: Message) -> None:
    what = type(cmd).__name__
    match reply:
        case CommandAccepted():
            log.info("%s %s accepted (orderId %d, permId %d)", what, cmd.key, reply.order_id, reply.perm_id)
        case CommandDuplicate():
            log.info("%s %s: the executor already has it (%s, permId %d)", what, cmd.key, reply.status, reply.perm_id)
        case CommandRejected():
            log.warning("%s %s rejected: %s%s", what, cmd.key, reply.reason, f" (IB {reply.code})" if reply.code else "")
        case _:
            log.warning("%s %s: unexpected reply %s", what, cmd.key, type(reply).__name__)
