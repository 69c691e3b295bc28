"""PeerTable (liveness from last-seen times) and ReplyCache (the server's bounded LRU of replies): pure units."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest

from bus.liveness import PeerTable
from bus.reply_cache import ReplyCache
from proto.messages import CommandAccepted, Message


def test_a_peer_is_alive_until_it_was_silent_for_down_after_seconds() -> None:
    peers = PeerTable(down_after=3.0)
    peers.seen("executor", now=100.0)

    assert peers.alive("executor", now=102.9)
    assert not peers.alive("executor", now=103.0)
    assert not peers.alive("feed", now=100.0)  # never heard from
    assert peers.age("feed", now=100.0) is None
    assert peers.ages(now=104.5) == {"executor": 4.5}


def test_peer_table_refuses_a_non_positive_window() -> None:
    with pytest.raises(ValueError, match="down_after"):
        PeerTable(down_after=0)


@pytest.fixture
def future() -> Iterator[Callable[[str | None], asyncio.Future[Message]]]:
    """Make Futures of replies: done with CommandAccepted(detail) or, for None, still pending."""
    loop = asyncio.new_event_loop()

    def make(detail: str | None) -> asyncio.Future[Message]:
        f: asyncio.Future[Message] = loop.create_future()
        if detail is not None:
            f.set_result(CommandAccepted(detail=detail))
        return f

    yield make
    loop.close()


def test_reply_cache_evicts_the_least_recently_used_finished_entry(future) -> None:
    cache: ReplyCache[str] = ReplyCache(size=2)
    cache.put("a", future("a"))
    cache.put("b", future("b"))
    assert cache.get("a") is not None  # "a" is now the most recently used

    cache.put("c", future("c"))

    assert cache.get("b") is None
    assert cache.get("a") is not None and cache.get("c") is not None
    assert len(cache) == 2


def test_reply_cache_keeps_entries_still_being_handled(future) -> None:
    cache: ReplyCache[str] = ReplyCache(size=1)
    in_flight = future(None)
    cache.put("slow", in_flight)

    cache.put("fast", future("fast"))

    # Over its size for a while rather than forget a command whose handler is still running.
    assert cache.get("slow") is in_flight and cache.get("fast") is not None
    in_flight.set_result(CommandAccepted())
    cache.put("next", future("next"))
    assert len(cache) == 1 and cache.get("next") is not None


def test_reply_cache_refuses_a_size_below_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ReplyCache(size=0)
