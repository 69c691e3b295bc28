"""Send commands to a service and await its replies: DEALER side, with timeouts and idempotent retries."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec
import zmq
import zmq.asyncio

from bus.sockets import async_socket, send_nowait
from proto.codec import DecodeError, decode, encode
from proto.envelope import SCHEMA_VERSION, CommandHeader
from proto.messages import Message

log = logging.getLogger(__name__)

_encoder = msgspec.msgpack.Encoder()
_header_decoder = msgspec.msgpack.Decoder(CommandHeader)


class CommandError(Exception):
    """A command got no usable reply."""


class CommandTimeout(CommandError):
    """No reply after the first attempt and every retry; the server may be down, busy or unreachable."""

    def __init__(self, text: str, command_id: str, attempts: int) -> None:
        super().__init__(text)
        self.command_id = command_id
        self.attempts = attempts


class BadReply(CommandError):
    """The server replied with something this program cannot decode (a newer server, or a bug)."""


class CommandClient:
    """A DEALER socket connected to a command server (the executor's or the statekeeper's endpoint).

    ``await request(msg)`` sends ``[command_header, payload]`` and returns the reply message. If no reply comes
    within ``timeout`` seconds it re-sends the very same bytes (same ``command_id``, only ``attempt`` counts up),
    up to ``retries`` times after the first attempt; then it raises ``CommandTimeout``. The server answers a
    repeat from its cache, so a retry never executes a command twice. A reply to a command that is no longer
    awaited (it arrived after its request gave up, or answers a retry) is discarded and counted.

    Any number of coroutines may await requests at once: one reader task routes replies by ``command_id``.
    A server that restarts is reconnected to by ZeroMQ; a retry then reaches the new server. Messages are never
    queued for a server that is not connected (``IMMEDIATE``), so a request that gave up is not delivered later.
    """

    def __init__(
        self,
        ctx: zmq.Context[Any] | None,
        endpoint: str,
        sender: str,
        *,
        timeout: float = 5.0,
        retries: int = 3,
    ) -> None:
        if not sender:
            raise ValueError("CommandClient needs a sender name (the service's name, e.g. 'strategy')")
        _check_policy(timeout, retries)
        self.endpoint = endpoint
        self.sender = sender
        self.timeout = timeout
        self.retries = retries
        self.incarnation = time.time_ns()
        self.sent = 0
        self.retried = 0
        self.timeouts = 0
        self.late_replies = 0
        self.bad_replies = 0
        self._next_id = 0
        self._pending: dict[str, asyncio.Future[Message]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._socket = async_socket(ctx, zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.IMMEDIATE, 1)
        try:
            self._socket.connect(endpoint)
        except zmq.ZMQError as e:
            self._socket.close(linger=0)
            raise ValueError(f"command endpoint {endpoint!r}: {e}; use e.g. tcp://127.0.0.1:7922") from None

    async def request(
        self,
        msg: Message,
        timeout: float | None = None,
        retries: int | None = None,
        *,
        command_id: str | None = None,
    ) -> Message:
        """Send ``msg`` and return the reply; raise CommandTimeout after ``retries`` unanswered retries.

        ``timeout`` is per attempt (default: the client's); ``command_id`` defaults to a fresh unique id.
        """
        timeout = self.timeout if timeout is None else timeout
        retries = self.retries if retries is None else retries
        _check_policy(timeout, retries)
        if self._socket.closed:
            raise CommandError(f"command client {self.sender} to {self.endpoint} is closed")
        self._start_reader()
        if command_id is None:
            self._next_id += 1
            command_id = f"{self.sender}-{self.incarnation:x}-{self._next_id}"
        elif command_id in self._pending:
            raise ValueError(f"command id {command_id!r} is already awaiting a reply; use a new id per command")
        payload = encode(msg)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Message] = loop.create_future()
        self._pending[command_id] = future
        attempts = retries + 1
        try:
            for attempt in range(1, attempts + 1):
                if attempt > 1:
                    self.retried += 1
                    log.info(
                        "%s %s to %s: no reply within %.3gs, retry %d of %d",
                        type(msg).__name__,
                        command_id,
                        self.endpoint,
                        timeout,
                        attempt - 1,
                        retries,
                    )
                deadline = loop.time() + timeout
                header = CommandHeader(self.sender, command_id, SCHEMA_VERSION, time.time_ns(), attempt)
                await self._send([_encoder.encode(header), payload], deadline)
                try:
                    # shield: a timed-out attempt must not cancel the Future the next attempt waits on.
                    return await asyncio.wait_for(asyncio.shield(future), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    continue
            self.timeouts += 1
            raise CommandTimeout(
                f"{type(msg).__name__} {command_id} to {self.endpoint}: no reply after {attempts} attempts of "
                f"{timeout:g}s each; is the server running and listening there?",
                command_id,
                attempts,
            )
        finally:
            del self._pending[command_id]
            if not future.done():
                future.cancel()

    async def close(self) -> None:
        """Stop the reader and close the socket; requests still waiting fail with CommandError."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            try:
                await reader
            except asyncio.CancelledError:
                pass
        for command_id, future in self._pending.items():
            if not future.done():
                future.set_exception(CommandError(f"command {command_id}: the client was closed"))
        if not self._socket.closed:
            self._socket.close(linger=0)

    async def __aenter__(self) -> CommandClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _send(self, frames: list[bytes], deadline: float) -> None:
        """Send as soon as a server is connected, waiting for one until ``deadline`` (loop time) at most."""
        loop = asyncio.get_running_loop()
        while True:
            if self._socket.closed:
                raise CommandError(f"command client {self.sender} to {self.endpoint} is closed")
            try:
                send_nowait(self._socket, frames)
                self.sent += 1
                return
            except zmq.Again:
                # No connected server (IMMEDIATE): nothing is queued. Wait until one connects, within this attempt.
                remaining = deadline - loop.time()
                if remaining <= 0:
                    log.warning("command server %s is not connected; this attempt was not sent", self.endpoint)
                    return
                await self._socket.poll(max(1, int(remaining * 1000)), zmq.POLLOUT)  # type: ignore[call-arg]  # stub lacks flags

    def _start_reader(self) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_replies(), name=f"command-replies-{self.sender}")

    async def _read_replies(self) -> None:
        while True:
            try:
                frames = await self._socket.recv_multipart()
            except zmq.ZMQError as e:
                log.error("command client %s: reading replies failed: %s", self.sender, e)
                return
            try:
                self._route(frames)
            except Exception:
                # One bad reply must not stop the reader, or every later request would time out.
                log.exception("command client %s: failed to route a reply", self.sender)

    def _route(self, frames: list[bytes]) -> None:
        try:
            if len(frames) != 2:
                raise DecodeError(f"expected 2 frames [command_header, payload], got {len(frames)}")
            header = _header_decoder.decode(frames[0])
        except (DecodeError, msgspec.DecodeError) as e:
            self.bad_replies += 1
            log.warning("command client %s: skipped a bad reply from %s: %s", self.sender, self.endpoint, e)
            return
        future = self._pending.get(header.command_id)
        if future is None or future.done():
            self.late_replies += 1
            log.debug("discarded a late reply to %s (attempt %d)", header.command_id, header.attempt)
            return
        try:
            if header.schema != SCHEMA_VERSION:
                raise DecodeError(
                    f"server {header.sender!r} speaks schema {header.schema}, this program {SCHEMA_VERSION}"
                )
            future.set_result(decode(frames[1]))
        except DecodeError as e:
            self.bad_replies += 1
            future.set_exception(BadReply(f"reply to {header.command_id} from {self.endpoint}: {e}"))


def _check_policy(timeout: float, retries: int) -> None:
    if timeout <= 0:
        raise ValueError(f"command timeout must be positive seconds, was {timeout!r}")
    if retries < 0:
        raise ValueError(f"command retries must be 0 or more, was {retries!r}")
