"""Socket options shared by the bus's sockets: high-water marks and linger, in one place.

High-water marks bound every queue on the path publisher -> bus -> subscriber. ZeroMQ's PUB and XPUB sockets drop
what does not fit instead of blocking, so a slow subscriber never slows a publisher down: it loses messages, and its
Subscriber sees the jump in sequence numbers and resynchronises (docs/bus.md, "What is dropped where").
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import zmq
import zmq.asyncio

# Messages each queue holds (per peer and direction). 100,000 small messages is about 20 s of the simulated
# exchange's fastest tick rate and a few tens of MB at most; ZeroMQ's default of 1,000 is a fraction of a second.
DEFAULT_HWM = 100_000

# Milliseconds a closing publisher keeps trying to deliver what it has queued (its last events on shutdown).
PUBLISHER_LINGER_MS = 500

# Milliseconds between reconnection attempts to a peer that went away (ZeroMQ's default is 100 too; said here
# because a restarted bus or command server is found again within this).
RECONNECT_INTERVAL_MS = 100


def async_socket(ctx: zmq.Context[Any] | None, socket_type: int) -> zmq.asyncio.Socket:
    """Create an asyncio socket from ``ctx`` (an asyncio or a plain Context; None = the shared asyncio one)."""
    if ctx is None:
        ctx = zmq.asyncio.Context.instance()
    sock = ctx.socket(socket_type)
    if not isinstance(sock, zmq.asyncio.Socket):
        sock = zmq.asyncio.Socket.from_socket(sock)
    sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_INTERVAL_MS)
    return sock


def sync_view(sock: zmq.asyncio.Socket) -> zmq.Socket[bytes]:
    """A plain socket sharing ``sock``'s ZeroMQ socket, for non-blocking sends and drains without a Future each.

    It is the same socket, so it must be used on the thread of the event loop, like ``sock`` itself. Never send
    through it on a socket that a coroutine is also awaiting a receive on: see :func:`send_nowait`.
    """
    return zmq.Socket.shadow(sock.underlying)


def send_nowait(sock: zmq.asyncio.Socket, frames: list[bytes]) -> None:
    """Send ``frames`` without blocking through the asyncio socket; raise zmq.Again / ZMQError as a plain send would.

    ZeroMQ's file descriptor is edge-triggered: any operation on the socket may consume the wake-up that a pending
    ``await recv_multipart()`` is waiting for. A send through the asyncio socket re-checks the socket's events for
    waiting receivers afterwards; a send through :func:`sync_view` does not, and replies that had already arrived
    sat unread for seconds (seen in the executor under load). So DEALER/ROUTER sockets send through here.
    """
    # pyzmq returns an asyncio Future, already resolved unless earlier sends are still waiting (never, here).
    future = cast("asyncio.Future[object]", sock.send_multipart(frames, flags=zmq.NOBLOCK))
    if future.done():
        error = future.exception()
        if error is not None:
            raise error
