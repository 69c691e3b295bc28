"""`python -m services.feed [--config PATH]`: the feed service (Alpaca trades -> Tick / FeedStatus on the bus).

Exit codes (bus.service): 0 after SIGTERM/SIGINT (the prints in hand are published first), 1 for a fatal stream
fault (e.g. 409 insufficient subscription; an alert and the log say which), 2 for a configuration error (named).
supervisord restarts it.
"""

from __future__ import annotations

import argparse
import sys

import zmq.asyncio

from bus import Publisher, service
from gridbot.config import Config, ConfigError, load
from services.feed.service import SENDER, FeedService, check_settings, stream_keys

EXIT_CONFIG = 2


async def serve(cfg: Config, key_id: str, secret: str) -> None:
    """Run the feed until cancelled (SIGTERM) or a fatal fault (FeedFatal)."""
    ctx = zmq.asyncio.Context()
    publisher = Publisher(ctx, cfg.bus.xsub, SENDER, cfg.bus.heartbeat_interval)
    try:
        await publisher.start()
        await FeedService(cfg, publisher, key_id, secret).run()
    finally:
        await publisher.close()
        ctx.term()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.feed", description="the feed service")
    parser.add_argument("--config", help="config file (default: $GRIDBOT_CONFIG, else config/gridbot.toml)")
    args = parser.parse_args(argv)
    try:
        cfg = load(args.config)
        check_settings(cfg)
        key_id, secret = stream_keys(cfg)
    except ConfigError as e:
        print(f"feed: {e}", file=sys.stderr)
        return EXIT_CONFIG
    service.run(SENDER, lambda: serve(cfg, key_id, secret), log_level=cfg.general.log_level)


if __name__ == "__main__":
    sys.exit(main())
