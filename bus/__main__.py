"""``python -m bus``: run the bus forwarder until SIGTERM or SIGINT (then exit 0).

Endpoints come from the config (bus.xsub, bus.xpub); ``--xsub`` / ``--xpub`` override them. On start it logs the
bound endpoints on one line (``bus: forwarding publishers <xsub> -> subscribers <xpub>``), which tests parse
when they bind ``tcp://127.0.0.1:*``. Exit codes: 0 stopped by a signal, 1 the switch failed, 2 bad config or an
endpoint that cannot be bound.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from bus.forwarder import Forwarder
from gridbot import logs
from gridbot.config import ConfigError, load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bus", description="the bus: XSUB/XPUB forwarder")
    parser.add_argument("--config", help="config file (default: $GRIDBOT_CONFIG, else config/gridbot.toml)")
    parser.add_argument("--xsub", help="endpoint publishers connect to (default: config bus.xsub)")
    parser.add_argument("--xpub", help="endpoint subscribers connect to (default: config bus.xpub)")
    args = parser.parse_args(argv)
    try:
        cfg = load(args.config)
    except ConfigError as e:
        print(f"bus: {e}", file=sys.stderr)
        return 2
    log = logs.setup("bus", cfg.general.log_level)
    xsub = args.xsub or cfg.bus.xsub
    xpub = args.xpub or cfg.bus.xpub

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    try:
        forwarder = Forwarder(xsub, xpub)
    except OSError as e:
        log.error("%s", e)
        return 2
    forwarder.start()
    log.info("forwarding publishers %s -> subscribers %s", forwarder.xsub_endpoint, forwarder.xpub_endpoint)
    # Wake up now and then to notice a switch that died on its own (the signal handler sets `stop` otherwise).
    while not stop.wait(0.5):
        if not forwarder.running:
            log.error("the forwarder stopped unexpectedly: %s", forwarder.error or "no error given")
            forwarder.stop()
            return 1
    stats = forwarder.stop()
    if stats is not None:
        log.info(
            "stopped after forwarding %d frames from publishers to subscribers (%d bytes)",
            stats.to_subscribers,
            stats.to_subscribers_bytes,
        )
    else:
        log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
