"""`gridbot halt [REASON]` / `gridbot resume`: stop placing new orders, or start again, through the statekeeper.

A halt is persisted by the statekeeper (it survives restarts) and published on the bus; the strategy places
nothing new and the executor refuses new orders while it holds. Orders already at IB stay there: a halt is not a
cancel (use ``gridbot reset`` for that). Exit codes: 0 done, 1 refused (the reason is printed), 3 the statekeeper
did not answer, 2 bad config.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from gridbot import config, probe
from proto.messages import CommandAccepted, CommandRejected, Halt, Message, Resume

EXIT_REFUSED = 1
EXIT_UNREACHABLE = 3
SOURCE = "operator"


def register(subparsers: Any) -> None:
    halt = subparsers.add_parser(
        "halt",
        help="stop placing new orders (live orders stay at IB)",
        description="Halt trading: no new orders until `gridbot resume`. Orders already at IB stay live; the halt "
        "is persisted and survives restarts.",
    )
    halt.add_argument("reason", nargs="*", help="why (shown by status and the dashboard); default: 'operator halt'")
    halt.add_argument("--timeout", type=float, metavar="S", help="seconds to wait for the statekeeper")
    halt.set_defaults(func=run_halt)
    resume = subparsers.add_parser(
        "resume",
        help="lift a halt",
        description="Resume trading after a halt: the strategy places what the grid needs again.",
    )
    resume.add_argument("reason", nargs="*", help="why (kept in the log)")
    resume.add_argument("--timeout", type=float, metavar="S", help="seconds to wait for the statekeeper")
    resume.set_defaults(func=run_resume)


def run_halt(args: argparse.Namespace) -> int:
    reason = " ".join(args.reason).strip() or "operator halt"
    return _send(args, Halt(ts_ns=time.time_ns(), reason=reason, source=SOURCE), f"halted: {reason}")


def run_resume(args: argparse.Namespace) -> int:
    reason = " ".join(args.reason).strip()
    return _send(args, Resume(ts_ns=time.time_ns(), reason=reason, source=SOURCE), "resumed: trading again")


def _send(args: argparse.Namespace, msg: Message, done: str) -> int:
    cfg = config.load(getattr(args, "config", None))
    probe.quiet_bus_logs()
    name = type(msg).__name__.lower()
    try:
        reply = asyncio.run(probe.ask(cfg, "statekeeper", msg, timeout=args.timeout))
    except probe.Unreachable as e:
        print(f"gridbot {name}: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if isinstance(reply, CommandAccepted):
        print(done + (f" ({reply.detail})" if reply.detail else ""))
        return 0
    if isinstance(reply, CommandRejected):
        print(f"gridbot {name}: refused by the statekeeper: {reply.reason}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"gridbot {name}: unexpected answer from the statekeeper: {type(reply).__name__}", file=sys.stderr)
    return EXIT_REFUSED
