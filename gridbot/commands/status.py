"""`gridbot status [--json]`: the grid (cycle, anchor, next level, lots, working orders, P&L) and the system's health.

It asks the statekeeper for its state and the executor for the broker's view, and listens to the bus for a moment
(heartbeats, the feed's status, the last tick), all at once and each with a timeout; whatever did not answer is
named. Exit codes: 0 the statekeeper answered, 3 it did not (the system is down or unreachable), 2 bad config.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from core.lotmap import LotMap, LotMapError, load_lot_map
from core.prices import parse_factor
from gridbot import config, probe, statusview
from gridbot.config import Config
from proto.messages import BrokerSnapshot, BrokerSnapshotRequest, StateSnapshot, StateSnapshotRequest

EXIT_UNREACHABLE = 3


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status",
        help="the grid's state and the health of every service",
        description="Show the cycle, anchor, next level, lots (live and parked SELLs), working orders, realized P&L, "
        "position, feed and broker health, each service's heartbeat age, and whether trading is halted and why.",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object (prices as exact strings)")
    parser.add_argument(
        "--timeout", type=float, metavar="S", help="seconds to wait for each answer (default: bus.command_timeout)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = config.load(getattr(args, "config", None))
    probe.quiet_bus_logs()
    timeout = args.timeout if args.timeout is not None else cfg.bus.command_timeout
    report = asyncio.run(collect(cfg, timeout))
    print(json.dumps(report, indent=2) if args.json else statusview.render(report))
    return 0 if report["cycle"] is not None else EXIT_UNREACHABLE


async def collect(cfg: Config, timeout: float, listen_s: float | None = None) -> dict[str, Any]:
    """Ask and listen, then build the status report."""
    listen_s = probe.default_listen_seconds(cfg) if listen_s is None else listen_s
    answers, observed = await probe.gather(
        cfg,
        {
            "state": ("statekeeper", StateSnapshotRequest(ts_ns=time.time_ns())),
            "broker": ("executor", BrokerSnapshotRequest(ts_ns=time.time_ns())),
        },
        # Listen at least as long as the slowest answer may take, so heartbeats are heard either way.
        listen_s=listen_s,
        timeout=timeout,
    )
    errors = [str(a) for a in answers.values() if isinstance(a, probe.Unreachable)]
    state_reply, broker_reply = answers["state"], answers["broker"]
    snapshot = state_reply if isinstance(state_reply, StateSnapshot) else None
    broker = broker_reply if isinstance(broker_reply, BrokerSnapshot) else None
    for name, reply in answers.items():
        if not isinstance(reply, probe.Unreachable | StateSnapshot | BrokerSnapshot):
            errors.append(f"unexpected answer to the {name} request: {type(reply).__name__} {reply}")
    lot_map = _lot_map(cfg, errors)
    inputs = statusview.Inputs(
        now_ns=time.time_ns(),
        symbol=cfg.general.symbol,
        step=parse_factor(cfg.strategy.step, "strategy.step"),
        down_after_s=cfg.bus.heartbeat_interval * cfg.bus.heartbeat_misses,
        state=None if snapshot is None else snapshot.state,
        state_seq=None if snapshot is None else snapshot.seq,
        broker=broker,
        observed=observed,
        lot_map=lot_map,
        mode=cfg.general.mode,
        errors=tuple(errors),
    )
    return statusview.build(inputs)


def _lot_map(cfg: Config, errors: list[str]) -> LotMap | None:
    try:
        return load_lot_map(cfg.path(cfg.general.lot_map))
    except LotMapError as e:
        errors.append(str(e))
        return None
