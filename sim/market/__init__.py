"""Market sources of the simulated exchange: where the prints come from.

Every source is an iterable of :class:`~sim.market.prints.Print` in time order plus a ``progress()`` dict for
`status`; :func:`open_source` builds the one the config names (``[sim] source``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Protocol

from gridbot.config import Sim
from sim.market.barfile import load_bars
from sim.market.manual import ManualSource
from sim.market.path import PathSource, load_path
from sim.market.prints import Print
from sim.market.replay import ReplaySource
from sim.market.timefmt import parse_start
from sim.market.walk import WalkSource


class MarketSource(Protocol):
    name: str

    def __iter__(self) -> Iterator[Print]: ...

    def progress(self) -> dict[str, Any]: ...

    def resume_after(self, ts_ns: int) -> None:
        """Skip to the first print later than ``ts_ns`` (a restarted sim resuming its market)."""
        ...


@dataclass(frozen=True)
class OpenedSource:
    """A source and how the clock must run for it: driven from its first print, or free-running from ``start_ns``."""

    source: MarketSource
    start_ns: int
    driven: bool


def open_source(cfg: Sim, resolve: Any = Path) -> OpenedSource:
    """Build the source ``cfg.source`` names; ``resolve`` turns ``cfg.file`` into a path (Config.path)."""
    start_ns = parse_start(cfg.start) if cfg.start.strip() else None
    if cfg.source == "replay":
        path = resolve(cfg.file)
        bars = load_bars(Path(path))
        replay = ReplaySource(bars, cfg.prints_per_bar, start_ns, cfg.loop, label=str(cfg.file))
        first = max(bars[replay.first_index].ts_ns, start_ns or 0)
        return OpenedSource(replay, first, driven=True)
    now = start_ns if start_ns is not None else time.time_ns()
    if cfg.source == "path":
        path = resolve(cfg.file)
        return OpenedSource(
            PathSource(load_path(Path(path)), now, cfg.loop, label=str(cfg.file)), now, driven=True
        )
    if cfg.source == "walk":
        try:
            price = Decimal(cfg.walk_price)
        except InvalidOperation:
            raise ValueError(f'sim.walk_price must be a price like "60.00", was {cfg.walk_price!r}') from None
        walk = WalkSource(now, price, cfg.walk_volatility, cfg.walk_interval, cfg.seed)
        return OpenedSource(walk, now, driven=True)
    return OpenedSource(ManualSource(), now, driven=False)


__all__ = ["MarketSource", "OpenedSource", "Print", "open_source"]
