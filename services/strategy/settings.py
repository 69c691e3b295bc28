"""The strategy's parameters from the loaded configuration (the core itself never reads config files)."""

from __future__ import annotations

from decimal import Decimal

from core.lotmap import LotMap, load_lot_map
from core.prices import parse_factor
from core.strategy import NS_PER_SECOND, StrategyConfig
from gridbot.config import Config


def strategy_config(cfg: Config, lot_map: LotMap | None = None) -> StrategyConfig:
    """Build the core's StrategyConfig; the lot map is read from general.lot_map unless given."""
    s = cfg.strategy
    return StrategyConfig(
        lot_map=lot_map if lot_map is not None else load_lot_map(cfg.path(cfg.general.lot_map)),
        symbol=cfg.general.symbol,
        level0_buffer=parse_factor(s.level0_buffer, "strategy.level0_buffer"),
        step=parse_factor(s.step, "strategy.step"),
        sell_markup=parse_factor(s.sell_markup, "strategy.sell_markup"),
        queued_levels=s.queued_levels,
        max_live_sells=s.max_live_sells,
        max_live_buys=cfg.broker.max_live_buys,
        max_tick_age_ns=int(s.max_tick_age * NS_PER_SECOND),
        # str() first: the band is a float in the config file; its shortest repr is the number the user wrote.
        jump_band=Decimal(str(cfg.feed.jump_band)),
    )
