"""The Alpaca-protocol market-data stream: a websockets server that the unmodified alpaca-py StockDataStream accepts.

Paths are Alpaca's: ``/v2/iex`` (exchange code V), ``/v2/sip`` (Q) and ``/v2/delayed_sip`` (Q, every print 15
simulated minutes late); any other path is refused with HTTP 404. The conversation rules live in
:mod:`sim.stream.session`, the wire format in :mod:`sim.stream.wire`, the fan-out in :mod:`sim.stream.channel`;
this module owns the sockets and the faults an operator can inject (drop, silence, garbage).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import msgpack
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from sim.market.prints import NS_PER_SECOND, Print
from sim.stream.channel import Channel, Client
from sim.stream.session import FEEDS, Outcome, Policy, Session, handle
from sim.stream.wire import CONNECTED, error_message, pack_messages

log = logging.getLogger("sim.stream")

AUTH_TIMEOUT_S = 10.0  # Alpaca closes a connection that has not authenticated within 10 s (error 404)
DELAY_NS = 15 * 60 * NS_PER_SECOND  # delayed_sip is 15 minutes late
EXCHANGE = {"iex": "V", "sip": "Q", "delayed_sip": "Q"}
MAX_BUFFER_BYTES = 32 * 2**20  # unsent bytes after which a client is "slow" (407)
RELEASE_INTERVAL_S = 0.5  # how often the delayed feed checks the clock when no print arrives


def _garbage_frames(symbol: str) -> list[tuple[bytes, bool]]:
    """Frames a real stream should never send, each survivable by a correct client: (data, is_text)."""
    return [
        (b"\xc1\xc1 not msgpack", False),  # 0xc1 is never used by msgpack: unpacking fails
        (b"not msgpack, a text frame", True),  # Alpaca never sends text frames
        (msgpack.packb({"T": "t", "S": symbol}), False),  # a map, not an array of maps
        (msgpack.packb([{"T": "t", "S": symbol, "p": "x", "s": -1, "t": "yesterday"}]), False),  # a bad trade
        (msgpack.packb([{"T": "zz", "S": symbol, "what": "an unknown message type"}]), False),
    ]


class StreamServer:
    """Serve Alpaca's stream protocol on ``host:port``; :meth:`publish` streams prints to every subscriber."""

    def __init__(
        self,
        clock_ns: Callable[[], int],
        symbol: str,
        api_key: str,
        api_secret: str,
        sip_entitled: bool = True,
        max_buffer: int = MAX_BUFFER_BYTES,
        auth_timeout: float = AUTH_TIMEOUT_S,
    ) -> None:
        self.clock_ns = clock_ns
        self.symbol = symbol
        self.policy = Policy(api_key, api_secret, sip_entitled)
        self.auth_timeout = auth_timeout
        self.channels = {
            feed: Channel(feed, symbol, EXCHANGE[feed], max_buffer, DELAY_NS if feed == "delayed_sip" else 0)
            for feed in FEEDS.values()
        }
        self.host = ""
        self.port = 0
        self._server: Server | None = None
        self._silent_until = 0.0
        self._release_task: asyncio.Task[None] | None = None
        self.faults = {"drops": 0, "silences": 0, "garbage": 0}

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on ``host:port`` (0 = any free port); return the bound port."""
        self._server = await serve(
            self._handle,
            host,
            port,
            process_request=self._check_path,
            compression=None,  # prints are small; deflate would cost more CPU than it saves on loopback
            max_size=2**20,
        )
        self.host = host
        self.port = self._server.sockets[0].getsockname()[1]
        self._release_task = asyncio.create_task(self._release_delayed(), name="stream-delayed-release")
        log.info("stream: listening on %s", self.url("iex"))
        return self.port

    async def stop(self) -> None:
        """Close every connection (1001 going away) and stop listening."""
        if self._release_task is not None:
            self._release_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._release_task
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def url(self, feed: str = "iex") -> str:
        path = next(p for p, f in FEEDS.items() if f == feed)
        return f"ws://{self.host}:{self.port}{path}"

    # -- the market --------------------------------------------------------------------------------------------

    @property
    def silent(self) -> bool:
        return time.monotonic() < self._silent_until

    def publish(self, prints: Sequence[Print], first_id: int) -> None:
        """Stream ``prints`` (in time order; trade ids ``first_id``, ``first_id + 1``...) to every subscriber."""
        now = self.clock_ns()
        silent = self.silent
        for channel in self.channels.values():
            channel.publish(prints, first_id, now, silent)

    def backlog(self) -> int:
        """Return the largest number of bytes waiting to be sent to any one client."""
        return max(ch.backlog() for ch in self.channels.values())

    async def _release_delayed(self) -> None:
        channel = self.channels["delayed_sip"]
        while True:
            await asyncio.sleep(RELEASE_INTERVAL_S)
            channel.release(self.clock_ns(), self.silent)

    # -- faults ------------------------------------------------------------------------------------------------

    def drop(self) -> int:
        """Abort every client's TCP connection without a close frame (a network drop); return how many."""
        clients = self.clients()
        for c in clients:
            if c.conn.transport is not None:
                c.conn.transport.abort()
        self.faults["drops"] += 1
        log.warning("stream: dropped %d connection(s)", len(clients))
        return len(clients)

    def silence(self, seconds: float) -> float:
        """Send no market data for ``seconds`` (connections stay open, pings are answered); prints are lost."""
        if not seconds >= 0:
            raise ValueError(f"stream-silence SECONDS must be >= 0, was {seconds}")
        self._silent_until = time.monotonic() + seconds
        self.faults["silences"] += 1
        log.warning("stream: silent for %.1f s", seconds)
        return seconds

    def garbage(self) -> int:
        """Send every client a few malformed frames (bad msgpack, a text frame, a bad trade...); return how many."""
        clients = self.clients()
        frames = _garbage_frames(self.symbol)
        for c in clients:
            channel = self.channels[c.session.feed]
            for data, text in frames:
                channel.send_raw(c, data, text=text)
        self.faults["garbage"] += 1
        log.warning("stream: sent %d garbage frames to %d client(s)", len(frames), len(clients))
        return len(clients)

    # -- status ------------------------------------------------------------------------------------------------

    def clients(self) -> list[Client]:
        return [c for ch in self.channels.values() for c in ch.clients]

    def status(self) -> dict[str, Any]:
        return {
            "url": self.url("iex"),
            "urls": {feed: self.url(feed) for feed in self.channels},
            "silent_for_s": round(max(0.0, self._silent_until - time.monotonic()), 3),
            "faults": dict(self.faults),
            "prints_sent": {feed: ch.prints_sent for feed, ch in self.channels.items()},
            "delayed_pending": len(self.channels["delayed_sip"].pending),
            "clients": [c.describe() for c in self.clients()],
        }

    # -- connections -------------------------------------------------------------------------------------------

    def _check_path(self, conn: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path not in FEEDS:
            known = ", ".join(FEEDS)
            return conn.respond(HTTPStatus.NOT_FOUND, f"unknown stream path {path!r}; use one of {known}\n")
        return None

    async def _handle(self, conn: ServerConnection) -> None:
        feed = FEEDS[conn.request.path.split("?", 1)[0]] if conn.request else "iex"
        headers = conn.request.headers if conn.request else Headers()
        host, port = conn.remote_address[:2]
        peer = f"{host}:{port}"
        client = Client(
            conn,
            Session(feed),
            peer,
            headers.get("User-Agent", ""),
            datetime.now(UTC).isoformat(timespec="seconds"),
        )
        channel = self.channels[feed]
        log.info("stream: %s connected to %s (%s)", peer, feed, client.user_agent)
        channel.clients.add(client)
        try:
            await conn.send(CONNECTED)
            deadline = time.monotonic() + self.auth_timeout
            while True:
                try:
                    if client.session.authenticated:
                        raw = await conn.recv()
                    else:
                        raw = await asyncio.wait_for(conn.recv(), max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    await conn.send(pack_messages(error_message(404)))
                    log.info("stream: %s did not authenticate in %.0f s (404)", peer, self.auth_timeout)
                    return
                was_authenticated = client.session.authenticated
                outcome = self._answer(client, raw)
                await conn.send(pack_messages(*outcome.replies))
                if client.session.authenticated and not was_authenticated:
                    log.info("stream: %s authenticated on %s", peer, feed)
                if outcome.close:
                    log.info("stream: %s refused: %s", peer, outcome.replies[0].get("msg"))
                    return
        except ConnectionClosed:
            pass
        finally:
            channel.clients.discard(client)
            log.info("stream: %s disconnected from %s", peer, feed)

    def _answer(self, client: Client, raw: bytes | str) -> Outcome:
        if isinstance(raw, str):
            return Outcome([error_message(400)])
        try:
            request = msgpack.unpackb(raw)
        except Exception:  # any undecodable frame is the client's syntax error, never the server's end
            return Outcome([error_message(400)])
        return handle(
            client.session, request, self.policy, lambda key: self._key_in_use_by_other(client, key)
        )

    def _key_in_use_by_other(self, client: Client, key: str) -> bool:
        return any(
            c is not client and c.session.authenticated and c.session.key == key for c in self.clients()
        )
