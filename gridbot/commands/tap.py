"""`gridbot tap [--topic PREFIX] [--count N] [--json]`: watch the bus, one line per message.

It subscribes to the bus's subscriber endpoint (config bus.xpub) like any service does (bus.Subscriber), so what it
prints is what the services see. Heartbeats (``hb.*``, every service every second) are left out unless asked for
with ``--heartbeats`` or ``--topic hb.``. Gaps in a sender's sequence and unreadable messages are reported on
stderr and skipped.

Text lines read ``time topic sender#seq Type field=value ...`` (the time is the sender's, local); ``--json`` prints
one object per line: ``{"topic", "sender", "seq", "type", "msg"}`` with the message's fields in ``msg`` (prices as
decimal strings, times as UTC nanoseconds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from datetime import datetime
from typing import Any, TextIO

import zmq.asyncio

from bus import Subscriber
from gridbot import config
from proto import topics
from proto.codec import to_builtins
from proto.envelope import Envelope

EXIT_TIMEOUT = 1
EXIT_USAGE = 2


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "tap",
        help="print the messages on the bus, one line each",
        description="Subscribe to the bus and print one line per message (ticks, feed status, order and broker "
        "events, state updates, alerts, halts). E.g. `gridbot tap --topic md.tick`, `gridbot tap --topic alert "
        "--topic order.`, `gridbot tap --count 5 --json`.",
    )
    parser.add_argument(
        "--topic", action="append", metavar="PREFIX",
        help="show topics starting with PREFIX (repeatable; default: all but heartbeats), e.g. md.tick, "
        "md.status, order.event, broker.event, state.update, alert, control, hb.",
    )
    parser.add_argument("--count", type=int, metavar="N", help="exit after N messages")
    parser.add_argument("--json", action="store_true", help="one JSON object per line: topic, sender, seq, type, msg")
    parser.add_argument("--heartbeats", action="store_true", help="show heartbeats (hb.*) too")
    parser.add_argument("--bus", metavar="ENDPOINT", help="the bus's subscriber endpoint (default: config bus.xpub)")
    parser.add_argument(
        "--timeout", type=float, metavar="SECONDS",
        help=f"exit with status {EXIT_TIMEOUT} when no message comes for this long (default: wait for ever)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 1:
        print(f"gridbot tap: --count must be at least 1, was {args.count}", file=sys.stderr)
        return EXIT_USAGE
    if args.timeout is not None and not args.timeout > 0:
        print(f"gridbot tap: --timeout must be a positive number of seconds, was {args.timeout}", file=sys.stderr)
        return EXIT_USAGE
    cfg = config.load(args.config)
    endpoint = args.bus or cfg.bus.xpub
    prefixes = args.topic or [""]
    show_heartbeats = args.heartbeats or any(p.startswith(topics.HEARTBEAT_PREFIX) for p in prefixes)
    # The subscriber's own warnings (gaps, bad messages) go to stderr, apart from the data on stdout.
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="gridbot tap: %(message)s")
    try:
        return asyncio.run(
            tap(endpoint, prefixes, show_heartbeats, args.count, args.json, args.timeout, cfg.bus.heartbeat_interval)
        )
    except ValueError as e:
        print(f"gridbot tap: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # `gridbot tap | head`: the reader left; stop quietly (and keep Python from complaining at exit).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


async def tap(
    endpoint: str,
    prefixes: list[str],
    show_heartbeats: bool,
    count: int | None,
    as_json: bool,
    timeout: float | None,
    heartbeat_interval: float,
    out: TextIO | None = None,
) -> int:
    """Print messages from ``endpoint`` until ``count`` were shown (0) or none came for ``timeout`` s (1)."""
    out = out or sys.stdout
    ctx = zmq.asyncio.Context()
    sub = Subscriber(ctx, endpoint, prefixes, heartbeat_interval=heartbeat_interval)
    shown = 0
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while count is None or shown < count:
            remaining = None if deadline is None else deadline - time.monotonic()
            envelope = None if remaining is not None and remaining <= 0 else await sub.recv(remaining)
            if envelope is None:
                print(
                    f"gridbot tap: no message within {timeout:g} s on {endpoint}; is the bus running "
                    "(`supervisorctl status`, or `python -m bus`) and is anything publishing?",
                    file=sys.stderr,
                )
                return EXIT_TIMEOUT
            if envelope.topic.startswith(topics.HEARTBEAT_PREFIX) and not show_heartbeats:
                continue
            out.write((format_json(envelope) if as_json else format_line(envelope)) + "\n")
            out.flush()
            shown += 1
            if timeout is not None:
                deadline = time.monotonic() + timeout
    finally:
        await sub.close()
        ctx.term()
    return 0


def message_fields(envelope: Envelope) -> dict[str, Any]:
    """The message's fields as JSON-able data, without the type tag (it travels separately)."""
    fields = to_builtins(envelope.msg)
    fields.pop("type", None)
    return fields


def format_json(envelope: Envelope) -> str:
    """One JSON object: topic, sender, seq, type and the message's fields."""
    return json.dumps(
        {
            "topic": envelope.topic,
            "sender": envelope.header.sender,
            "seq": envelope.header.seq,
            "type": type(envelope.msg).__name__,
            "msg": message_fields(envelope),
        },
        separators=(",", ":"),
    )


def format_line(envelope: Envelope) -> str:
    """A readable line: sender's time, topic, sender#seq, type, then field=value pairs."""
    header = envelope.header
    when = datetime.fromtimestamp(header.ts_ns / 1e9).strftime("%H:%M:%S.%f")[:-3]
    fields = message_fields(envelope)
    fields.pop("ts_ns", None)
    pairs = " ".join(f"{key}={_compact(value)}" for key, value in fields.items())
    return f"{when} {envelope.topic} {header.sender}#{header.seq} {type(envelope.msg).__name__} {pairs}".rstrip()


def _compact(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value) if (not value or " " in value) else value
    return json.dumps(value, separators=(",", ":"))
