"""`python -m services.statekeeper [--config PATH]`: the statekeeper (order events in, state out, reconciliation).

Exit codes: 0 after SIGTERM/SIGINT (the message in hand is finished and persisted first); 2 for a configuration,
lot-map, state-file or journal problem (named on stderr; a corrupt state file is never overwritten); 1 for anything
unexpected (bus.service logs it). supervisord restarts it.
"""

from __future__ import annotations

import argparse
import sys

import zmq.asyncio

from bus import service as bus_service
from core.lotmap import LotMap, LotMapError, load_lot_map
from gridbot.config import Config, ConfigError, load
from services.statekeeper.journal import JournalError
from services.statekeeper.service import SENDER, StatekeeperService
from services.statekeeper.statefile import StateFileError
from services.statekeeper.store import Store

EXIT_CONFIG = 2


async def serve(cfg: Config, store: Store, lot_map: LotMap) -> None:
    """Run the statekeeper until cancelled (SIGTERM / SIGINT through bus.service)."""
    ctx = zmq.asyncio.Context()
    try:
        await StatekeeperService(cfg, ctx, store, lot_map).run()
    finally:
        ctx.term()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.statekeeper", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--config", help="config file (default: $GRIDBOT_CONFIG, else config/gridbot.toml)")
    args = parser.parse_args(argv)
    try:
        cfg = load(args.config)
        lot_map = load_lot_map(cfg.path(cfg.general.lot_map))
        store = Store.open(
            cfg.run_path(cfg.statekeeper.state_file),
            cfg.run_path(cfg.statekeeper.journal),
            cfg.general.symbol,
        )
    except (ConfigError, LotMapError, StateFileError, JournalError) as e:
        print(f"statekeeper: {e}", file=sys.stderr)
        return EXIT_CONFIG
    bus_service.run(SENDER, lambda: serve(cfg, store, lot_map), log_level=cfg.general.log_level)


if __name__ == "__main__":
    sys.exit(main())
