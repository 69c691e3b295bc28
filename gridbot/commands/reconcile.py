"""`gridbot reconcile [--json] [--apply]`: compare the grid's state with the broker, print the report and the plan.

Asks the running statekeeper (ReconcileRequest over its command socket); it fetches a fresh snapshot from the
executor, repairs what is explained (fills while away, SELLs to adopt, orders that ended), and reports what is not,
with a repair plan: "apply:" steps are carried out by ``--apply`` (e.g. adopting the older bot's SELLs whose quantity
several levels share, by price order), "operator:" steps only by you. A consistent result lifts a halt that
reconciliation had set. Exit codes: 0 consistent, 1 not consistent (trading halted), 3 the statekeeper did not answer
(or the executor was unreachable from it), 2 bad config.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import msgspec

from gridbot import config, probe
from proto.messages import CommandRejected, ReconcileReport, ReconcileRequest

EXIT_INCONSISTENT = 1
EXIT_UNREACHABLE = 3
# The statekeeper waits up to bus.command_timeout for the executor's snapshot; give it that and this much more.
EXTRA_WAIT = 10.0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "reconcile",
        help="compare the state with the broker; print findings and the repair plan (--apply carries it out)",
        description="Reconcile the grid's state with the broker now: the statekeeper catches up on what happened "
        "while it was away, adopts grid SELLs it lacks, and reports what it cannot explain with a repair plan. "
        "Exit 0 when consistent, 1 when not (trading is then halted), 3 when the statekeeper does not answer.",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--apply", action="store_true", help="carry out the plan's 'apply:' steps")
    parser.add_argument("--timeout", type=float, metavar="S", help="seconds to wait for the statekeeper")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = config.load(getattr(args, "config", None))
    probe.quiet_bus_logs()
    timeout = args.timeout if args.timeout is not None else cfg.bus.command_timeout + EXTRA_WAIT
    request = ReconcileRequest(ts_ns=time.time_ns(), apply=args.apply)
    try:
        reply = asyncio.run(probe.ask(cfg, "statekeeper", request, timeout=timeout))
    except probe.Unreachable as e:
        print(f"gridbot reconcile: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if isinstance(reply, CommandRejected):
        print(f"gridbot reconcile: refused by the statekeeper: {reply.reason}", file=sys.stderr)
        return EXIT_INCONSISTENT
    if not isinstance(reply, ReconcileReport):
        print(
            f"gridbot reconcile: unexpected answer from the statekeeper: {type(reply).__name__}",
            file=sys.stderr,
        )
        return EXIT_INCONSISTENT
    try:
        print(as_json(reply) if args.json else as_text(reply))
        sys.stdout.flush()
    except BrokenPipeError:
        sys.stderr.close()
    if reply.consistent:
        return 0
    unavailable = any(f.kind == "broker_unavailable" for f in reply.findings)
    return EXIT_UNREACHABLE if unavailable else EXIT_INCONSISTENT


def as_json(report: ReconcileReport) -> str:
    data = msgspec.to_builtins(report)
    return json.dumps(data, indent=2)


def as_text(report: ReconcileReport) -> str:
    lines = [
        "consistent: the state and the broker agree" + (" (plan applied)" if report.applied else "")
        if report.consistent
        else "NOT consistent: trading is halted until this is resolved"
        + (" (plan applied)" if report.applied else "")
    ]
    explained = [f for f in report.findings if f.explained]
    unexplained = [f for f in report.findings if not f.explained]
    if unexplained:
        lines.append("")
        lines.append("unexplained:")
        lines.extend(f"  - {f.kind}: {f.detail}" for f in unexplained)
    if explained:
        lines.append("")
        lines.append("explained (repaired or left to the strategy):")
        lines.extend(f"  - {f.kind}: {f.detail}" for f in explained)
    if report.plan:
        lines.append("")
        lines.append("repair plan (`gridbot reconcile --apply` carries out the 'apply:' steps):")
        lines.extend(f"  {n}. {step}" for n, step in enumerate(report.plan, start=1))
    return "\n".join(lines)
