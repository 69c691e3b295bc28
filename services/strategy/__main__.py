"""`python -m services.strategy [--config PATH]`: the strategy service (ticks and state in, commands out).

Exit codes: 0 after SIGTERM/SIGINT (replies to the commands already sent are awaited briefly first), 2 for a
configuration or lot-map error (named on stderr), 1 for anything unexpected (bus.service logs it). supervisord
restarts it.
"""

from __future__ import annotations

import argparse
import sys

import zmq.asyncio

from bus import service as bus_service
from core.lotmap import LotMapError
from core.strategy import StrategyConfig
from gridbot.config import Config, ConfigError, load
from services.strategy.service import SENDER, StrategyService
from services.strategy.settings import strategy_config

EXIT_CONFIG = 2


async def serve(cfg: Config, params: StrategyConfig) -> None:
    """Run the strategy until cancelled (SIGTERM / SIGINT through bus.service)."""
    ctx = zmq.asyncio.Context()
    try:
        await StrategyService(cfg, ctx, params).run()
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
    bus_service.run(SENDER, lambda: serve(cfg, params), log_level=cfg.general.log_level)


if __name__ == "__main__":
    sys.exit(main())
