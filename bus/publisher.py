"""Publish messages to the bus, numbered per topic, with a heartbeat; never blocks, never raises on a full queue."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import zmq
import zmq.asyncio

from bus.sockets import DEFAULT_HWM, PUBLISHER_LINGER_MS, async_socket, sync_view
from proto import topics
from proto.envelope import SCHEMA_VERSION, Header, pack
from proto.messages import Heartbeat, Message

log = logging.getLogger(__name__)


class Publisher:
    """A PUB socket connected to the bus's XSUB endpoint, publishing as ``sender``.

    Frames are ``[topic, header, payload]`` (proto.envelope). The header's ``seq`` counts this sender's messages
    per topic, 1, 2, 3 ..., and ``incarnation`` is this publisher's creation time (ns), so a restarted sender,
    which starts again at 1, is told apart from a gap. A message the queue cannot take is dropped and counted
    (``dropped``); its sequence number is spent anyway, so subscribers see the loss as a gap.

    ``await start()`` begins the heartbeat (a ``Heartbeat`` on ``hb.<sender>`` every ``heartbeat_interval``
    seconds, the first at once, with the last seq of every other topic so a subscriber notices a lost last message); ``await close()`` stops it and closes the socket. ``publish`` works before
    ``start``. Use it from the event loop's thread only (ZeroMQ sockets are not thread-safe).
    """

    def __init__(
        self,
        ctx: zmq.Context[Any] | None,
        endpoint: str,
        sender: str,
        heartbeat_interval: float = 1.0,
        *,
        hwm: int = DEFAULT_HWM,
    ) -> None:
        if not sender:
            raise ValueError("Publisher needs a sender name (the service's name, e.g. 'executor')")
        if heartbeat_interval <= 0:
            raise ValueError(f"heartbeat_interval must be positive seconds, was {heartbeat_interval!r}")
        self.endpoint = endpoint
        self.sender = sender
        self.heartbeat_interval = heartbeat_interval
        self.incarnation = time.time_ns()
        # Reported in every heartbeat; a service sets it to say it is degraded ("no broker", "stale feed", ...).
        self.status = "ok"
        self.sent = 0
        self.dropped = 0
        self._seq: dict[str, int] = {}
        self._dropping = False
        self._dropped_at_streak_start = 0
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._socket = async_socket(ctx, zmq.PUB)
        self._socket.setsockopt(zmq.SNDHWM, hwm)
        self._socket.setsockopt(zmq.LINGER, PUBLISHER_LINGER_MS)
        # Without it a PUB socket drops silently at its high-water mark; with it a non-blocking send says so,
        # and the drop is counted.
        self._socket.setsockopt(zmq.XPUB_NODROP, 1)
        self._send = sync_view(self._socket)
        try:
            self._socket.connect(endpoint)
        except zmq.ZMQError as e:
            self._socket.close(linger=0)
            raise ValueError(f"bus endpoint {endpoint!r}: {e}; use e.g. tcp://127.0.0.1:7920 (config bus.xsub)") from None

    def publish(self, topic: str, msg: Message) -> bool:
        """Queue ``msg`` on ``topic`` without waiting; return False (and count it) if it had to be dropped."""
        if self._socket.closed:
            self._count_drop("the publisher is closed")
            return False
        seq = self._seq.get(topic, 0) + 1
        # Spent even if the send fails: a subscriber must see the hole where this message would have been.
        self._seq[topic] = seq
        frames = pack(topic, Header(self.sender, seq, SCHEMA_VERSION, time.time_ns(), self.incarnation), msg)
        try:
            self._send.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.Again:
            self._count_drop("the queue to the bus is full (bus down or slow)")
            return False
        except zmq.ZMQError as e:
            self._count_drop(f"the socket failed: {e}")
            return False
        self.sent += 1
        if self._dropping:
            self._dropping = False
            log.warning(
                "publisher %s: sending again after dropping %d messages",
                self.sender,
                self.dropped - self._dropped_at_streak_start,
            )
        return True

    async def start(self) -> None:
        """Start the heartbeat task (idempotent)."""
        if self._heartbeat_task is None or self._heartbeat_task.done():
            self._heartbeat_task = asyncio.create_task(self._beat(), name=f"heartbeat-{self.sender}")

    async def close(self) -> None:
        """Stop the heartbeat and close the socket (queued messages get PUBLISHER_LINGER_MS to leave)."""
        task, self._heartbeat_task = self._heartbeat_task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if not self._socket.closed:
            self._socket.close()

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def seq(self, topic: str) -> int:
        """The last sequence number used on ``topic`` (0 if none)."""
        return self._seq.get(topic, 0)

    async def _beat(self) -> None:
        topic = topics.heartbeat(self.sender)
        pid = os.getpid()
        while True:
            self.publish(
                topic,
                Heartbeat(
                    ts_ns=time.time_ns(),
                    service=self.sender,
                    pid=pid,
                    started_ts_ns=self.incarnation,
                    status=self.status,
                    last_seq={t: n for t, n in self._seq.items() if t != topic},
                ),
            )
            await asyncio.sleep(self.heartbeat_interval)

    def _count_drop(self, why: str) -> None:
        self.dropped += 1
        if not self._dropping:
            # One line per streak of drops, not one per message: a flood of log lines would make it worse.
            self._dropping = True
            self._dropped_at_streak_start = self.dropped - 1
            log.warning("publisher %s: dropping messages: %s", self.sender, why)
