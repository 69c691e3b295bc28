"""The operator's window on the running system: ask a service over its command socket, listen to the bus.

Used by ``gridbot status``, ``halt``, ``resume``, ``reset`` and ``monitor``. Every wait has a timeout: a system
that is down gives an answer that says so (None, or an error naming the service and its endpoint), never a hang.
The CLI speaks as sender ``gridbot`` on the bus.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import zmq.asyncio

from bus.command_client import CommandClient, CommandError, CommandTimeout
from bus.subscriber import Subscriber
from gridbot.config import Config
from proto import topics
from proto.envelope import Envelope
from proto.messages import (
    Alert,
    BrokerConnected,
    BrokerConnectivity,
    BrokerDisconnected,
    FeedStatus,
    Heartbeat,
    Message,
    StateUpdate,
    Tick,
)

SENDER = "gridbot"
# Seconds a status listens to the bus at least, however fast the heartbeats (a busy machine delays them).
MIN_LISTEN = 1.0
# Seconds between re-sends of a command still unanswered (see ask).
RESEND_INTERVAL = 0.25
Target = Literal["statekeeper", "executor"]
# Services that send heartbeats on hb.<name>, in the order status and the dashboard show them.
HEARTBEAT_SERVICES = ("statekeeper", "executor", "strategy", "feed")
# What the operator's views listen to: everything but the order flow's raw events is small.
WATCH_TOPICS = (
    topics.HEARTBEAT_PREFIX,
    topics.FEED_STATUS,
    topics.MD_TICK_PREFIX,
    topics.BROKER_EVENT,
    topics.ALERT,
    topics.CONTROL,
    topics.STATE_UPDATE,
    topics.ORDER_EVENT,
)


def quiet_bus_logs() -> None:
    """For a CLI command: the bus runtime's retry warnings are noise there; the command says what failed."""
    logging.getLogger("bus").setLevel(logging.ERROR)


class Unreachable(Exception):
    """A service did not answer its command socket; the message names it, its endpoint and what to check."""


def endpoint_of(cfg: Config, target: Target) -> str:
    return cfg.bus.statekeeper if target == "statekeeper" else cfg.bus.executor


async def ask(
    cfg: Config,
    target: Target,
    msg: Message,
    *,
    timeout: float | None = None,
    ctx: zmq.asyncio.Context | None = None,
) -> Message:
    """Send one command to ``target`` and return its reply within ``timeout`` seconds; else raise Unreachable.

    The command is re-sent every ``RESEND_INTERVAL`` seconds under the same command id until the reply comes: the
    first send may go out before the connection is up (the client never queues for an absent server), and the
    server answers a repeat from its cache, so re-sending never runs a command twice.
    """
    endpoint = endpoint_of(cfg, target)
    timeout = cfg.bus.command_timeout if timeout is None else timeout
    if timeout <= 0:
        raise ValueError(f"timeout must be positive seconds, was {timeout!r}")
    interval = min(timeout, RESEND_INTERVAL)
    retries = max(0, math.ceil(timeout / interval - 1e-9) - 1)
    client = CommandClient(ctx, endpoint, SENDER, timeout=interval, retries=retries)
    try:
        return await client.request(msg)
    except CommandTimeout:
        raise Unreachable(
            f"the {target} did not answer {type(msg).__name__} at {endpoint} within {timeout:g} s; "
            "is the system running? (supervisorctl -c deploy/supervisord.conf status)"
        ) from None
    except CommandError as e:
        raise Unreachable(f"the {target} at {endpoint}: {e}") from None
    finally:
        await client.close()


@dataclass
class ServiceHealth:
    name: str
    alive: bool
    # Seconds since its last heartbeat was sent (None: none heard).
    age_s: float | None = None
    status: str = ""
    pid: int = 0
    # Seconds the service has been running, from its heartbeat's start time.
    uptime_s: float | None = None


@dataclass(frozen=True)
class StreamFromHeartbeat:
    """The feed's stream state as its heartbeat's status says it (services/feed/service.py, heartbeat_status)."""

    connected: bool
    stale: bool
    reason: str


def stream_from_heartbeat(status: str) -> StreamFromHeartbeat | None:
    """``ok`` / ``stale: <why>`` / ``down: <why>`` as a stream state; None for anything else."""
    if status == "ok":
        return StreamFromHeartbeat(True, False, "")
    kind, sep, why = status.partition(": ")
    if sep and kind == "stale":
        return StreamFromHeartbeat(True, True, why)
    if sep and kind == "down":
        return StreamFromHeartbeat(False, True, why)
    return None


@dataclass
class Observed:
    """What the bus carried while we listened (the latest of each kind); ``update`` folds one more message in."""

    heartbeats: dict[str, Heartbeat] = field(default_factory=dict)
    feed: FeedStatus | None = None
    tick: Tick | None = None
    # The latest broker event (connected / disconnected / connectivity code).
    broker: BrokerConnected | BrokerDisconnected | BrokerConnectivity | None = None
    state: StateUpdate | None = None
    alerts: list[Alert] = field(default_factory=list)
    messages: int = 0
    last_message_ns: int = 0
    max_alerts: int = 50

    def update(self, envelope: Envelope, now_ns: int | None = None) -> None:
        self.messages += 1
        self.last_message_ns = time.time_ns() if now_ns is None else now_ns
        msg = envelope.msg
        match msg:
            case Heartbeat():
                self.heartbeats[msg.service] = msg
            case FeedStatus():
                self.feed = msg
            case Tick():
                self.tick = msg
            case BrokerConnected() | BrokerDisconnected() | BrokerConnectivity():
                self.broker = msg
            case StateUpdate():
                if self.state is None or msg.seq >= self.state.seq or msg.ts_ns > self.state.ts_ns:
                    self.state = msg
            case Alert():
                self.alerts.append(msg)
                del self.alerts[: -self.max_alerts]
            case _:
                pass

    def services(self, now_ns: int, down_after_s: float, names: Iterable[str] = HEARTBEAT_SERVICES) -> list[ServiceHealth]:
        """Each service's heartbeat age; alive when its last heartbeat is younger than ``down_after_s``."""
        rows = []
        for name in names:
            hb = self.heartbeats.get(name)
            if hb is None:
                rows.append(ServiceHealth(name, alive=False))
                continue
            age = max(0.0, (now_ns - hb.ts_ns) / 1e9)
            rows.append(
                ServiceHealth(
                    name,
                    alive=age <= down_after_s,
                    age_s=age,
                    status=hb.status,
                    pid=hb.pid,
                    uptime_s=max(0.0, (now_ns - hb.started_ts_ns) / 1e9) if hb.started_ts_ns else None,
                )
            )
        return rows


def watcher(cfg: Config, ctx: zmq.asyncio.Context | None = None, topic_list: Iterable[str] = WATCH_TOPICS) -> Subscriber:
    """A subscriber to the operator's topics on the bus (close it when done)."""
    return Subscriber(
        ctx,
        cfg.bus.xpub,
        list(topic_list),
        heartbeat_interval=cfg.bus.heartbeat_interval,
        heartbeat_misses=cfg.bus.heartbeat_misses,
    )


async def listen(cfg: Config, seconds: float, ctx: zmq.asyncio.Context | None = None) -> Observed:
    """Listen to the bus for ``seconds`` and return what it carried."""
    observed = Observed()
    sub = watcher(cfg, ctx)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (remaining := deadline - loop.time()) > 0:
            envelope = await sub.recv(timeout=remaining)
            if envelope is not None:
                observed.update(envelope)
    finally:
        await sub.close()
    return observed


def default_listen_seconds(cfg: Config) -> float:
    """Long enough to hear one heartbeat of every running service (they beat every bus.heartbeat_interval)."""
    return max(cfg.bus.heartbeat_interval * 1.5, MIN_LISTEN)


async def gather(cfg: Config, requests: dict[str, tuple[Target, Message]], listen_s: float,
                 timeout: float) -> tuple[dict[str, Message | Unreachable], Observed]:
    """Send ``requests`` (name -> (target, message)) and listen to the bus, all at once."""
    ctx = zmq.asyncio.Context()
    try:

        async def one(target: Target, msg: Message) -> Message | Unreachable:
            try:
                return await ask(cfg, target, msg, timeout=timeout, ctx=ctx)
            except Unreachable as e:
                return e

        names = list(requests)
        results: list[Any] = await asyncio.gather(
            listen(cfg, listen_s, ctx), *(one(*requests[n]) for n in names)
        )
        observed: Observed = results[0]
        return dict(zip(names, results[1:], strict=True)), observed
    finally:
        ctx.destroy(linger=0)
