"""`python -m services.feed [--config PATH]`: the feed service (Alpaca trades -> Tick / FeedStatus on the bus).

Exit codes (bus.service): 0 after SIGTERM/SIGINT (the prints in hand are published first), 1 for a fatal stream
fault (e.g. 409 insufficient subscription; an alert and the log say which), 2 for a configuration error (named).
supervisord restarts it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import zmq.asyncio

from bus import Publisher, Subscriber, service
from gridbot.config import Config, ConfigError, load
from proto import topics
from services.feed.service import SENDER, FeedService, check_settings, log, stream_keys

EXIT_CONFIG = 2


async def serve(cfg: Config, key_id: str, secret: str) -> None:
    """Run the feed until cancelled (SIGTERM) or a fatal fault (FeedFatal)."""
    ctx = zmq.asyncio.Context()
    publisher = Publisher(ctx, cfg.bus.xsub, SENDER, cfg.bus.heartbeat_interval)
    try:
        await publisher.start()
        await wait_for_bus(ctx, cfg, publisher)
        await FeedService(cfg, publisher, key_id, secret).run()
    finally:
        await publisher.close()
        ctx.term()


async def wait_for_bus(ctx: zmq.asyncio.Context, cfg: Config, publisher: Publisher) -> bool:
    """Wait until our own heartbeat comes back through the bus, at most ``heartbeat_interval * heartbeat_misses``.

    A ZeroMQ PUB socket drops what it publishes before the subscriptions have reached it (the "slow joiner"), and a
    refused login (402, 409) is reported within milliseconds of the start: its alert would be lost. Once our own
    heartbeat has made the round trip, the bus has handed our publisher every subscription it holds (it sends them
    all on connect), so the first alerts and ticks reach whoever is listening. If the bus is not up, go on anyway.
    """
    wait = cfg.bus.heartbeat_interval * cfg.bus.heartbeat_misses
    sub = Subscriber(ctx, cfg.bus.xpub, [topics.heartbeat(SENDER)], heartbeat_interval=cfg.bus.heartbeat_interval)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    try:
        while (remaining := deadline - loop.time()) > 0:
            envelope = await sub.recv(remaining)
            if envelope is not None and envelope.header.incarnation == publisher.incarnation:
                return True
    finally:
        await sub.close()
    log.warning("the bus (%s -> %s) did not echo our heartbeat within %g s; starting anyway",
                cfg.bus.xsub, cfg.bus.xpub, wait)
    return False


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
