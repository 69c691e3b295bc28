"""``python -m services.executor [--config PATH] [--lib ib_insync|ib_async]``: the executor service.

Config from gridbot.config (``--config`` or ``$GRIDBOT_CONFIG``); the IB client library from ``--lib``, else
``$GRIDBOT_IB_LIB``, else ib_insync. SIGTERM stops it (exit 0); a fatal error exits 1 so supervisord restarts it;
a bad config exits 2 with one line naming the file and key.
"""

from __future__ import annotations

import argparse
import os
import sys

import zmq.asyncio

import bus.service
from gridbot.config import ConfigError, load
from services.executor import ib_api
from services.executor.service import Executor
from services.executor.state import SERVICE
from services.executor.submissions import FAULT_ENV


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.executor", description="the executor: the IB client")
    parser.add_argument("--config", help="config file (default: $GRIDBOT_CONFIG, else config/gridbot.toml)")
    parser.add_argument(
        "--lib", choices=ib_api.SUPPORTED, help=f"IB client library (default: ${ib_api.LIB_ENV}, else ib_insync)"
    )
    args = parser.parse_args(argv)
    try:
        cfg = load(args.config)
        lib = ib_api.load(args.lib)
    except (ConfigError, ValueError) as e:
        print(f"executor: {e}", file=sys.stderr)
        return 2
    fault = os.environ.get(FAULT_ENV, "")

    async def serve() -> None:
        ctx = zmq.asyncio.Context()
        try:
            await Executor(cfg, lib, ctx, fault=fault).run()
        finally:
            ctx.destroy(linger=0)

    bus.service.run(SERVICE, serve, log_level=cfg.general.log_level)


if __name__ == "__main__":
    sys.exit(main())
