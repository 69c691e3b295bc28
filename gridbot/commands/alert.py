"""`gridbot alert [TEXT]`: send a test alert through the whole path, to check that alerts reach you.

The alert goes through the same sink the services use (gridbot.alerts): the log, the bus (the dashboard shows it)
and, for a critical one (the default), the configured ``alerts.command`` (a desktop notification, a phone push).
It waits for the command and says how it went. Exit codes: 0 the command ran and exited 0 (or none is
configured), 1 it failed (the reason is printed), 2 bad config.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import zmq.asyncio

from bus.publisher import Publisher
from gridbot import config, probe
from gridbot.alerts import AlertSink, CommandOutcome, describe
from gridbot.config import Config
from proto import topics
from proto.messages import Alert, Severity

SOURCE = "operator"
DEFAULT_TEXT = "test alert from gridbot: if you can read this, critical alerts reach you"
# Seconds to wait for the bus to carry the alert back to us.
BUS_WAIT = 2.0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "alert",
        help="send a test alert (log, bus, dashboard and the configured alerts.command)",
        description="Send an alert through the same path the services use, to check alerts.command works.",
    )
    parser.add_argument("text", nargs="*", help=f"the alert's text (default: {DEFAULT_TEXT!r})")
    parser.add_argument(
        "--severity", choices=("critical", "warning", "info"), default="critical",
        help="only critical alerts run alerts.command (default: critical)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = config.load(getattr(args, "config", None))
    probe.quiet_bus_logs()
    text = " ".join(args.text).strip() or DEFAULT_TEXT
    outcomes: list[CommandOutcome] = []
    on_bus = asyncio.run(_send(cfg, args.severity, text, outcomes))
    print("bus: the alert went out on topic 'alert'" if on_bus else
          f"bus: nothing came back within {BUS_WAIT:g} s (is the system running? bus.xpub = {cfg.bus.xpub})")
    if args.severity != "critical":
        print("command: not run (only critical alerts run alerts.command)")
        return 0
    if not cfg.alerts.command:
        print("command: alerts.command is empty; critical alerts go to the logs, the bus and the dashboard only")
        return 0
    if not outcomes:
        print(f"command: {cfg.alerts.command[0]} did not finish within its timeout")
        return 1
    outcome = outcomes[0]
    print(f"command: {' '.join(outcome.argv[:-1])} ... -> {describe(outcome)}")
    return 0 if outcome.ok else 1


async def _send(cfg: Config, severity: Severity, text: str, outcomes: list[CommandOutcome]) -> bool:
    """Publish the alert once the bus is seen to carry our messages; True if it came back to us."""
    ctx = zmq.asyncio.Context()
    publisher = Publisher(ctx, cfg.bus.xsub, SOURCE, heartbeat_interval=0.1)
    watch = probe.watcher(cfg, ctx, [topics.ALERT])
    sink = AlertSink.from_config(cfg, SOURCE, publisher, on_command_done=outcomes.append)
    loop = asyncio.get_running_loop()
    try:
        await publisher.start()
        deadline = loop.time() + BUS_WAIT
        # Our own heartbeat coming back means the bus has passed our subscription to our publisher.
        while not watch.peer_alive(SOURCE) and loop.time() < deadline:
            await watch.recv(timeout=0.05)
        sent = sink.alert(severity, "test", text)
        came_back = False
        while not came_back and (remaining := deadline + BUS_WAIT - loop.time()) > 0:
            envelope = await watch.recv(timeout=remaining)
            came_back = envelope is not None and isinstance(envelope.msg, Alert) and envelope.msg.ts_ns == sent.ts_ns
        await asyncio.to_thread(sink.wait, cfg.alerts.command_timeout + 1)
        return came_back
    finally:
        await watch.close()
        await publisher.close()
        ctx.destroy(linger=0)
