"""Standalone paper broker: ``python -m sim.broker --port PORT --state-dir DIR [--control ENDPOINT]``.

The clock runs free (simulated time = wall time, or --start and on from there); prices come only from the
control endpoint's ``price`` verb. With ``--port 0`` the bound port is printed as ``PAPER_BROKER_PORT=<port>``
(and the control endpoint as ``CONTROL_ENDPOINT=<endpoint>``) on stdout for scripts and tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

from gridbot import config as gconfig
from gridbot import logs
from sim.broker.server import PaperBroker, parse_time
from sim.broker.store import StateError
from sim.broker.verbs import register_broker_verbs
from sim.clock import SimClock
from sim.control import ControlServer


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sim.broker", description="simulated TWS paper broker")
    p.add_argument("--config", help="config file (default: the usual lookup)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port; 0 = a free one (default: config sim.broker_port)")
    p.add_argument("--state-dir", required=True, type=Path, help="directory for the broker's persistent state")
    p.add_argument("--control", help="control endpoint (default: config sim.control; 'none' = no endpoint)")
    p.add_argument("--account", help="paper account id (default: config sim.account)")
    p.add_argument("--starting-cash", help="cash of a fresh account (default: config sim.starting_cash)")
    p.add_argument("--start", help="simulated start time, ISO 8601 with offset (default: now)")
    p.add_argument("--partial-fills", action="store_true", help="size fills by the prints' sizes")
    return p


async def serve(args: argparse.Namespace) -> int:
    cfg = gconfig.load(args.config)
    log = logs.setup("sim.broker", cfg.general.log_level)
    start_ns = parse_time(args.start) if args.start else None
    broker = PaperBroker(
        SimClock(start_ns),
        args.state_dir,
        account=args.account or cfg.sim.account,
        starting_cash=args.starting_cash or str(cfg.sim.starting_cash),
        partial_fills=args.partial_fills or cfg.sim.partial_fills,
    )
    port = await broker.start(args.host, cfg.sim.broker_port if args.port is None else args.port)
    print(f"PAPER_BROKER_PORT={port}", flush=True)
    control: ControlServer | None = None
    endpoint = args.control or cfg.sim.control
    if endpoint.lower() != "none":
        control = ControlServer(endpoint)
        register_broker_verbs(control, broker)
        control.register("status", broker.status, "status", "the broker's address, clock, clients and account")
        print(f"CONTROL_ENDPOINT={await control.start()}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    if control is not None:
        await control.stop()
    await broker.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(serve(args))
    except (gconfig.ConfigError, StateError, ValueError) as e:
        print(f"sim.broker: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"sim.broker: cannot listen: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
