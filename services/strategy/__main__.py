"""`python -m services.strategy [--config PATH]`: the strategy service (ticks and state in, commands out).

Exit codes: 0 after SIGTERM/SIGINT (replies to the commands already sent are awaited briefly first), 2 for a
configuration or lot-map error (named), 1 for anything unexpected. supervisord restarts it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import zmq.asyncio

from core.lotmap import LotMapError
from core.strategy import StrategyConfig
from gridbot import logs
from gridbot.config import Config, ConfigError, load
from services.strategy.service import StrategyService, log
from services.strategy.settings import strategy_config

EXIT_CONFIG = 2
EXIT_FATAL = 1


async def serve(cfg: Config, params: StrategyConfig) -> int:
    """Run the strategy until SIGTERM/SIGINT (exit 0)."""
    ctx = zmq.asyncio.Context()
    try:
        service = StrategyService(cfg, ctx, params)
        main_task = asyncio.create_task(service.run(), name="strategy")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, main_task.cancel)
        try:
            await main_task
        except asyncio.CancelledError:
            log.info("strategy: stopped by signal")
        return 0
    finally:
        ctx.term()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.strategy", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="config file (default: $GRIDBOT_CONFIG, else config/gridbot.toml)")
    args = parser.parse_args(argv)
    try:
        cfg = load(args.config)
        params = strategy_config(cfg)
    except (ConfigError, LotMapError, ValueError) as e:
        print(f"strategy: {e}", file=sys.stderr)
        return EXIT_CONFIG
    logs.setup("strategy", cfg.general.log_level)
    try:
        return asyncio.run(serve(cfg, params))
    except Exception:
        log.exception("strategy: fatal error")
        return EXIT_FATAL


if __name__ == "__main__":
    sys.exit(main())
