"""Serve commands: ROUTER side, one handler call per command however often it is retried."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import zmq
import zmq.asyncio

from bus.reply_cache import DEFAULT_CACHE_SIZE, ReplyCache
from bus.sockets import async_socket, send_nowait
from proto.codec import DecodeError, decode, encode
from proto.envelope import SCHEMA_VERSION, CommandHeader
from proto.messages import CommandRejected, Message

log = logging.getLogger(__name__)

Handler = Callable[[Message], Awaitable[Message]]

_encoder = msgspec.msgpack.Encoder()
_header_decoder = msgspec.msgpack.Decoder(CommandHeader)


class CommandServer:
    """A ROUTER socket bound to ``endpoint``, answering each command with ``await handler(msg)``.

    Requests are ``[identity, command_header, payload]``; replies ``[identity, reply_header, payload]`` with the
    request's ``command_id`` and ``attempt`` echoed. Commands are handled concurrently, each in its own task
    (a handler that needs an order of execution keeps its own queue, as the executor does).

    Idempotency: the reply of each (sender, command_id) is remembered in a bounded LRU cache (``cache_size``,
    default 10,000). A repeat (a client's retry) is answered from it without calling the handler; a repeat
    that arrives while the handler is still running waits for that same reply.

    Bad input never stops the server: a command whose header can be read but whose frames, schema or payload
    are wrong is answered with ``CommandRejected`` (``malformed`` counts it); one whose header cannot be read is
    dropped (``dropped``). A handler that raises is logged and answered with ``CommandRejected`` and the text.
    """

    def __init__(
        self,
        ctx: zmq.Context[Any] | None,
        endpoint: str,
        handler: Handler,
        *,
        name: str = "server",
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self.handler = handler
        self.name = name
        self.received = 0
        self.handled = 0
        self.repeats = 0
        self.malformed = 0
        self.dropped = 0
        self.handler_errors = 0
        self._cache: ReplyCache[tuple[str, str]] = ReplyCache(cache_size)
        self._tasks: set[asyncio.Task[None]] = set()
        self._reader: asyncio.Task[None] | None = None
        self._socket = async_socket(ctx, zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        try:
            self._socket.bind(endpoint)
        except zmq.ZMQError as e:
            self._socket.close(linger=0)
            raise OSError(
                f"command server {name}: cannot bind {endpoint!r}: {e}; is another copy running, "
                "or is the endpoint wrong (e.g. tcp://127.0.0.1:7922)?"
            ) from None
        # The endpoint actually bound (``tcp://127.0.0.1:*`` picks a free port).
        self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)

    async def start(self) -> None:
        """Start serving in a background task (idempotent)."""
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._serve(), name=f"command-server-{self.name}")

    async def close(self) -> None:
        """Stop serving: cancel the reader and the handlers still running, close the socket."""
        tasks = [t for t in (self._reader, *self._tasks) if t is not None]
        self._reader = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if not self._socket.closed:
            self._socket.close(linger=0)

    async def __aenter__(self) -> CommandServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _serve(self) -> None:
        while True:
            try:
                frames = await self._socket.recv_multipart()
            except zmq.ZMQError as e:
                log.error("command server %s: receiving failed: %s", self.name, e)
                return
            try:
                self._dispatch(frames)
            except Exception:
                log.exception("command server %s: failed to dispatch a command", self.name)

    def _dispatch(self, frames: list[bytes]) -> None:
        self.received += 1
        identity, body = frames[0], frames[1:]
        header = _read_header(body[0]) if body else None
        if header is None:
            self.dropped += 1
            log.warning(
                "command server %s: dropped a message without a readable command header (%d frames)",
                self.name,
                len(body),
            )
            return
        try:
            if len(body) != 2:
                raise DecodeError(f"expected 2 frames [command_header, payload], got {len(body)}")
            if header.schema != SCHEMA_VERSION:
                raise DecodeError(
                    f"sender {header.sender!r} speaks schema {header.schema}, this program {SCHEMA_VERSION}; "
                    "run one version everywhere"
                )
            msg = decode(body[1])
        except DecodeError as e:
            self.malformed += 1
            log.warning("command server %s: rejected command %s from %s: %s", self.name, header.command_id, header.sender, e)
            self._send_reply(identity, header, CommandRejected(ts_ns=time.time_ns(), reason=f"malformed command: {e}"))
            return
        key = (header.sender, header.command_id)
        future = self._cache.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._cache.put(key, future)
            self._spawn(self._execute(key, msg, future))
        else:
            self.repeats += 1
            log.info(
                "command server %s: %s %s (attempt %d) is a repeat; answering it from the cache",
                self.name,
                type(msg).__name__,
                header.command_id,
                header.attempt,
            )
        if future.done():
            self._send_reply(identity, header, future.result())
        else:
            self._spawn(self._reply_when_done(identity, header, future))

    async def _execute(self, key: tuple[str, str], msg: Message, future: asyncio.Future[Message]) -> None:
        self.handled += 1
        try:
            reply = await self.handler(msg)
            if not isinstance(reply, Message):
                raise TypeError(f"the handler returned {type(reply).__name__}, not a reply Message")
        except asyncio.CancelledError:
            # Closing: this command was not carried out to the end, so a repeat must not get a cached answer.
            self._cache.discard(key)
            future.cancel()
            raise
        except Exception as e:
            self.handler_errors += 1
            log.exception("command server %s: the handler failed on %s %s", self.name, type(msg).__name__, key[1])
            reply = CommandRejected(ts_ns=time.time_ns(), reason=f"{type(e).__name__}: {e}", key=getattr(msg, "key", ""))
        future.set_result(reply)

    async def _reply_when_done(self, identity: bytes, header: CommandHeader, future: asyncio.Future[Message]) -> None:
        try:
            reply = await asyncio.shield(future)
        except asyncio.CancelledError:
            return
        self._send_reply(identity, header, reply)

    def _send_reply(self, identity: bytes, request: CommandHeader, reply: Message) -> None:
        if self._socket.closed:
            return
        header = CommandHeader(self.name, request.command_id, SCHEMA_VERSION, time.time_ns(), request.attempt)
        try:
            send_nowait(self._socket, [identity, _encoder.encode(header), encode(reply)])
        except zmq.ZMQError as e:
            # The client is gone or its queue is full: its retry will be answered from the cache.
            log.warning("command server %s: could not reply to %s: %s", self.name, request.command_id, e)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _read_header(frame: bytes) -> CommandHeader | None:
    try:
        return _header_decoder.decode(frame)
    except msgspec.DecodeError:
        return None
