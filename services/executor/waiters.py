"""Commands waiting for IB: a PlaceOrder's reply by key, and cancels waiting for an order to become final.

The command handler registers what it waits for; IB's events (and the submission queue, when it gives an order
up) settle it. No I/O: asyncio futures only.
"""

from __future__ import annotations

import asyncio

from proto.messages import Message
from services.executor.rules import OrderRecord


class Waiters:
    """The futures commands wait on, settled by events."""

    def __init__(self) -> None:
        # The reply a PlaceOrder is waiting for (acknowledged, rejected, ...), by key.
        self._outcomes: dict[str, asyncio.Future[Message]] = {}
        # Commands waiting for an order to become final (CancelOrder, CancelAll, ClosePosition), by record.
        self._finals: dict[int, list[asyncio.Future[None]]] = {}

    def expect_outcome(self, key: str) -> asyncio.Future[Message]:
        """Register a PlaceOrder waiting for its key's outcome."""
        outcome: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._outcomes[key] = outcome
        return outcome

    def forget_outcome(self, key: str, outcome: asyncio.Future[Message]) -> None:
        if self._outcomes.get(key) is outcome:
            del self._outcomes[key]

    def waiting_keys(self) -> list[str]:
        """The keys whose PlaceOrder still waits for an outcome."""
        return list(self._outcomes)

    def settle(self, key: str, reply: Message) -> None:
        """Answer the PlaceOrder waiting for the key, if any (the first answer wins)."""
        outcome = self._outcomes.get(key)
        if outcome is not None and not outcome.done():
            outcome.set_result(reply)

    def watch_final(self, record: OrderRecord) -> asyncio.Future[None]:
        """A future done when the order is final."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if record.final:
            future.set_result(None)
        else:
            self._finals.setdefault(id(record), []).append(future)
        return future

    def release_finals(self, record: OrderRecord) -> None:
        """Wake whoever waits for the order to be final (it is, or it never reached IB)."""
        for future in self._finals.pop(id(record), []):
            if not future.done():
                future.set_result(None)
