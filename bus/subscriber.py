"""Receive messages from the bus: topic filtering, gap and restart detection, peer liveness, bad input survived."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import msgspec
import zmq
import zmq.asyncio

from bus.liveness import PeerTable
from bus.sequence import SequenceTracker
from bus.sockets import DEFAULT_HWM, async_socket, sync_view
from proto import topics as topic_names
from proto.codec import DecodeError, UnknownMessageType, decode
from proto.envelope import SCHEMA_VERSION, Envelope, Header
from proto.messages import Heartbeat

log = logging.getLogger(__name__)

# on_gap(sender, expected, got); may return an awaitable, which recv() awaits before it returns the message.
GapCallback = Callable[[str, int, int], Awaitable[Any] | None]
# on_restart(sender, old_incarnation, new_incarnation); same rules.
RestartCallback = Callable[[str, int, int], Awaitable[Any] | None]

# Messages moved from ZeroMQ's queue to ours per non-blocking drain: large enough to make a burst cheap, small
# enough that liveness timestamps stay close to the arrival time.
_DRAIN_BATCH = 1024

_header_decoder = msgspec.msgpack.Decoder(Header)


class Subscriber:
    """A SUB socket connected to the bus's XPUB endpoint, receiving ``topics`` (prefixes; ``""`` = all).

    ``await recv(timeout)`` returns the next ``Envelope`` of a subscribed topic, or None when ``timeout`` seconds
    pass first (None = wait for ever). Along the way, for every message:

    - liveness: each sender's last-seen time (any message counts; heartbeats on ``hb.*`` are always received
      for this even when not subscribed, and are then not returned). ``peer_alive(sender)`` is False once the
      sender was silent for ``heartbeat_interval * heartbeat_misses`` seconds; ``peers()`` gives the ages.
    - gaps: a jump in a sender's sequence on a topic within one incarnation calls ``on_gap(sender, expected,
      got)`` and counts ``gaps`` (and ``lost`` messages). A heartbeat saying the sender published more on a
      topic than we saw reveals lost latest messages the same way (``got`` is then the next number to come). A new incarnation (the sender restarted) is not a gap:
      it calls ``on_restart(sender, old, new)`` and counts ``restarts``. A repeated sequence number is skipped.
    - bad input: a message with wrong frames, a bad header, a foreign schema version or an undecodable payload is
      logged, counted (``decode_errors``; ``unknown_types`` too for a newer sender's message type) and skipped.

    A callback may be a coroutine function: recv() awaits it before returning the message that triggered it, so
    a resynchronisation finishes before the next update is applied. A callback that raises is logged.
    """

    def __init__(
        self,
        ctx: zmq.Context[Any] | None,
        endpoint: str,
        topics: Iterable[str],
        on_gap: GapCallback | None = None,
        heartbeat_interval: float = 1.0,
        heartbeat_misses: int = 3,
        *,
        on_restart: RestartCallback | None = None,
        hwm: int = DEFAULT_HWM,
    ) -> None:
        if isinstance(topics, str | bytes):
            # A bare string would subscribe to each of its characters.
            raise TypeError(f"topics must be a list of topic prefixes, e.g. [{topics!r}], not a string")
        self._prefixes = tuple(topics)
        if not self._prefixes:
            raise ValueError("Subscriber needs at least one topic prefix ('' subscribes to everything)")
        if heartbeat_misses < 1:
            raise ValueError(f"heartbeat_misses must be at least 1, was {heartbeat_misses!r}")
        self.endpoint = endpoint
        self.on_gap = on_gap
        self.on_restart = on_restart
        self.received = 0
        self.decode_errors = 0
        self.unknown_types = 0
        self.gaps = 0
        self.lost = 0
        self.restarts = 0
        self.duplicates = 0
        self._sequences = SequenceTracker()
        self._peers = PeerTable(heartbeat_interval * heartbeat_misses)
        self._buffer: deque[list[bytes]] = deque()
        self._callbacks_due: list[Awaitable[Any]] = []
        self._socket = async_socket(ctx, zmq.SUB)
        self._socket.setsockopt(zmq.RCVHWM, hwm)
        self._socket.setsockopt(zmq.LINGER, 0)
        subscriptions = set(self._prefixes)
        if not any(topic_names.HEARTBEAT_PREFIX.startswith(p) for p in self._prefixes):
            subscriptions.add(topic_names.HEARTBEAT_PREFIX)
        for prefix in sorted(subscriptions):
            self._socket.setsockopt(zmq.SUBSCRIBE, prefix.encode())
        self._drain_socket = sync_view(self._socket)
        try:
            self._socket.connect(endpoint)
        except zmq.ZMQError as e:
            self._socket.close(linger=0)
            raise ValueError(f"bus endpoint {endpoint!r}: {e}; use e.g. tcp://127.0.0.1:7921 (config bus.xpub)") from None

    # ----------------------------------------------------------------------------------------- receiving

    async def recv(self, timeout: float | None = None) -> Envelope | None:
        """Return the next message of a subscribed topic, or None after ``timeout`` seconds."""
        if self._socket.closed:
            raise RuntimeError(f"the subscriber to {self.endpoint} is closed")
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            while self._buffer:
                envelope = self._process(self._buffer.popleft())
                if self._callbacks_due:
                    await self._run_callbacks()
                if envelope is not None:
                    return envelope
            if self._drain():
                continue
            if deadline is None:
                await self._socket.poll(None, zmq.POLLIN)  # type: ignore[call-arg]  # pyzmq's stub lacks flags
            else:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                await self._socket.poll(max(1, int(remaining * 1000)), zmq.POLLIN)  # type: ignore[call-arg]
            self._drain()
            if not self._buffer and deadline is not None and loop.time() >= deadline:
                return None

    def _drain(self) -> bool:
        """Move what ZeroMQ has queued into our buffer without waiting; True if anything came."""
        moved = 0
        if self._socket.closed:  # closed by another task while we waited
            return False
        try:
            while moved < _DRAIN_BATCH:
                self._buffer.append(self._drain_socket.recv_multipart(flags=zmq.NOBLOCK))
                moved += 1
        except zmq.Again:
            pass
        return moved > 0

    def _process(self, frames: list[bytes]) -> Envelope | None:
        """Account for one message; return it if the caller subscribed to its topic and it is sound."""
        if len(frames) != 3:
            self._bad(f"expected 3 frames [topic, header, payload], got {len(frames)}")
            return None
        topic_b, header_b, payload = frames
        try:
            topic = topic_b.decode()
            header = _header_decoder.decode(header_b)
        except (UnicodeDecodeError, msgspec.DecodeError) as e:
            self._bad(f"bad topic or header on topic {topic_b[:60]!r}: {e}")
            return None
        if header.schema != SCHEMA_VERSION:
            self._bad(
                f"sender {header.sender!r} speaks schema {header.schema}, this program {SCHEMA_VERSION} "
                f"(topic {topic!r}); run one version everywhere"
            )
            return None
        self._peers.seen(header.sender, time.monotonic())
        wanted = topic.startswith(self._prefixes)
        check = self._sequences.observe(header.sender, header.incarnation, topic, header.seq, track=wanted)
        if check.restarted_from is not None:
            self.restarts += 1
            log.info("%s restarted (incarnation %d -> %d)", header.sender, check.restarted_from, header.incarnation)
            self._call(self.on_restart, header.sender, check.restarted_from, header.incarnation)
        is_heartbeat = topic.startswith(topic_names.HEARTBEAT_PREFIX)
        if not wanted and not is_heartbeat:
            return None
        if check.duplicate:
            self.duplicates += 1
            log.warning("skipped a repeat of %s's message %d on %r", header.sender, header.seq, topic)
            return None
        if check.gap is not None:
            self._gap(header.sender, topic, *check.gap)
        try:
            msg = decode(payload)
        except UnknownMessageType as e:
            self.unknown_types += 1
            self._bad(f"from {header.sender!r} on {topic!r}: {e}")
            return None
        except DecodeError as e:
            self._bad(f"from {header.sender!r} on {topic!r}: {e}")
            return None
        if is_heartbeat and isinstance(msg, Heartbeat):
            self._check_tails(header, msg)
        if not wanted:
            return None
        self.received += 1
        return Envelope(topic, header, msg)

    def _check_tails(self, header: Header, beat: Heartbeat) -> None:
        """Find the topics whose latest messages we lost, from the last numbers the heartbeat carries."""
        for topic, last_published in beat.last_seq.items():
            if topic.startswith(self._prefixes):
                hole = self._sequences.check_tail(header.sender, header.incarnation, topic, last_published)
                if hole is not None:
                    self._gap(header.sender, topic, *hole)

    def _gap(self, sender: str, topic: str, expected: int, got: int) -> None:
        self.gaps += 1
        self.lost += got - expected
        log.warning("gap from %s on %r: expected message %d, got %d (%d lost)", sender, topic, expected, got, got - expected)
        self._call(self.on_gap, sender, expected, got)

    def _bad(self, why: str) -> None:
        self.decode_errors += 1
        log.warning("skipped a bad bus message %s", why)

    def _call(self, callback: Callable[..., Awaitable[Any] | None] | None, *args: Any) -> None:
        if callback is None:
            return
        try:
            result = callback(*args)
        except Exception:
            log.exception("the %s callback failed on %r", getattr(callback, "__name__", "bus"), args)
            return
        if inspect.isawaitable(result):
            self._callbacks_due.append(result)

    async def _run_callbacks(self) -> None:
        due, self._callbacks_due = self._callbacks_due, []
        for awaitable in due:
            try:
                await awaitable
            except Exception:
                log.exception("a bus callback failed")

    # ----------------------------------------------------------------------------------------- peers

    def peer_alive(self, sender: str) -> bool:
        """True if ``sender`` was heard from within the last ``heartbeat_interval * heartbeat_misses`` seconds."""
        return self._peers.alive(sender, time.monotonic())

    def peers(self) -> dict[str, float]:
        """Every sender heard from, with seconds since its last message (down once above ``down_after``)."""
        return self._peers.ages(time.monotonic())

    @property
    def down_after(self) -> float:
        return self._peers.down_after

    def counters(self) -> dict[str, int]:
        return {
            "received": self.received,
            "decode_errors": self.decode_errors,
            "unknown_types": self.unknown_types,
            "gaps": self.gaps,
            "lost": self.lost,
            "restarts": self.restarts,
            "duplicates": self.duplicates,
        }

    # ----------------------------------------------------------------------------------------- lifetime

    async def close(self) -> None:
        """Close the socket; callbacks still due are dropped."""
        for awaitable in self._callbacks_due:
            if inspect.iscoroutine(awaitable):
                awaitable.close()
        self._callbacks_due.clear()
        if not self._socket.closed:
            self._socket.close(linger=0)

    async def __aenter__(self) -> Subscriber:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
