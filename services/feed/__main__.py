"""`python -m services.feed [--config PATH]`: the feed service (Alpaca trades -> Tick / FeedStatus on the bus).

Exit codes: 0 after SIGTERM/SIGINT (the prints in hand are published first), 2 for a configuration error (named),
3 for a fatal stream fault (e.g. 409 insufficient subscription; an alert says which). supervisord restarts it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import zmq.asyncio

from bus.publisher import Publisher
from gridbot import logs
from gridbot.config import Config, ConfigError, load
from services.feed.service import SENDER, FeedFatal, FeedService, log, stream_keys

EXIT_CONFIG = 2
EXIT_FATAL = 3


async def serve(cfg: Config) -> int:
    """Run the feed until SIGTERM/SIGINT (exit 0) or a fatal fault (EXIT_FATAL)."""
    key_id, secret = stream_keys(cfg)
    ctx = zmq.asyncio.Context()
    publisher = Publisher(ctx, cfg.bus.xsub, SENDER, cfg.bus.heartbeat_interval)
    try:
        service = FeedService(cfg, publisher, key_id, secret)
        await publisher.start()
        main = asyncio.create_task(service.run(), name="feed")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, main.cancel)
        try:
            await main
        except asyncio.CancelledError:
            log.info("feed: stopped by signal")
            return 0
        except FeedFatal as e:
            log.error("feed: fatal: %s", e)
            return EXIT_FATAL
        return 0
    finally:
        publisher.status = "stopped"
        await publisher.close()
        ctx.term()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.feed", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="config file (default: $GRIDBOT_CONFIG, else config/gridbot.toml)")
    args = parser.parse_args(argv)
    try:
        cfg = load(args.config)
        logs.setup("feed", cfg.general.log_level)
        return asyncio.run(serve(cfg))
    except ConfigError as e:
        print(f"feed: {e}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
