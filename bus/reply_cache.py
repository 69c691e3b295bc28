"""The command server's memory of replies, so a repeated command is answered instead of executed again."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Generic, TypeVar

from proto.messages import Message

K = TypeVar("K")

# Commands remembered. The strategy sends a few commands a minute and retries within seconds, so 10,000 covers
# hours of traffic; a repeat older than that (a client retrying for hours) would be executed again, which the
# executor's own rule (one live order per intent key, DESIGN section 3) still makes harmless.
DEFAULT_CACHE_SIZE = 10_000


class ReplyCache(Generic[K]):
    """A bounded LRU map from a command's key to the Future of its reply.

    The Future is stored as soon as the first copy of a command arrives, so a repeat that arrives while the
    handler is still running waits for that same reply. Only finished entries are evicted, oldest first.
    """

    def __init__(self, size: int = DEFAULT_CACHE_SIZE) -> None:
        if size < 1:
            raise ValueError(f"reply cache size must be at least 1, was {size!r}")
        self.size = size
        self._entries: OrderedDict[K, asyncio.Future[Message]] = OrderedDict()

    def get(self, key: K) -> asyncio.Future[Message] | None:
        future = self._entries.get(key)
        if future is not None:
            self._entries.move_to_end(key)
        return future

    def put(self, key: K, future: asyncio.Future[Message]) -> None:
        self._entries[key] = future
        self._entries.move_to_end(key)
        self._evict()

    def discard(self, key: K) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)

    def _evict(self) -> None:
        excess = len(self._entries) - self.size
        if excess <= 0:
            return
        doomed: list[K] = []
        newest = next(reversed(self._entries))
        for key, future in self._entries.items():
            if len(doomed) == excess or key == newest:
                break
            # A command still being handled stays (the cache grows past its size for a while rather than let a
            # repeat run the handler twice).
            if future.done():
                doomed.append(key)
        for key in doomed:
            del self._entries[key]
