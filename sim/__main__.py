"""``python -m sim``: the embedded simulated exchange (paper broker + Alpaca stream + control, one clock).

Addresses come from the config ([sim] broker_port, stream_port, control); the flags override them, and a port of 0
picks a free one. Once everything listens, one line ``SIM_READY {json}`` on stdout gives the real addresses (for
scripts and tests). SIGTERM or Ctrl-C stops it cleanly (exit 0); a bad config or data file exits 2 with a message
that names it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path

from gridbot import config as gconfig
from gridbot import logs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sim", description="the simulated exchange (see docs/sim.md)")
    p.add_argument("--config", help="config file (default: $GRIDBOT_CONFIG, else config/gridbot.toml)")
    p.add_argument(
        "--broker-port", type=int, help="paper broker port; 0 = a free one (default: sim.broker_port)"
    )
    p.add_argument(
        "--stream-port", type=int, help="market stream port; 0 = a free one (default: sim.stream_port)"
    )
    p.add_argument("--control", help="control endpoint, e.g. tcp://127.0.0.1:0 (default: sim.control)")
    p.add_argument(
        "--state-dir", type=Path, help="the paper broker's state directory (default: <run_dir>/sim)"
    )
    p.add_argument(
        "--paused", action="store_true", help="start with the market paused (`gridbot sim resume`)"
    )
    p.add_argument(
        "--if-embedded",
        action="store_true",
        help="run only when general.mode is 'sim' (the embedded default); otherwise log why and exit 0 "
        "(deploy/supervisord.conf starts it this way)",
    )
    p.add_argument(
        "--from-start",
        action="store_true",
        help="play the source from sim.start even if the broker's state holds a later print (default: resume)",
    )
    return p


async def serve(args: argparse.Namespace, cfg: gconfig.Config) -> int:
    # Imported here so that `--help` and config errors stay fast.
    from sim.program import SimProgram

    log = logs.setup("sim", cfg.general.log_level)
    state_dir = args.state_dir or cfg.run_dir / "sim"
    program = SimProgram(
        cfg, state_dir, args.broker_port, args.stream_port, args.control, args.paused, args.from_start
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        addresses = await program.start()
    except BaseException:
        await program.stop()
        raise
    print("SIM_READY " + json.dumps(addresses), flush=True)
    log.info(
        "sim ready: %s source, broker %s, stream %s, control %s",
        cfg.sim.source,
        addresses["broker"],
        addresses["stream"],
        addresses["control"],
    )
    await stop.wait()
    log.info("stopping")
    await program.stop()
    log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = gconfig.load(args.config)
        if args.if_embedded and cfg.general.mode != "sim":
            log = logs.setup("sim", cfg.general.log_level)
            log.info(
                "general.mode is %r, not 'sim': the simulated exchange is not needed; exiting",
                cfg.general.mode,
            )
            return 0
        return asyncio.run(serve(args, cfg))
    except (gconfig.ConfigError, ValueError) as e:  # bad config, data file or argument: the message names it
        print(f"sim: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"sim: cannot start: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
