"""The walk source: an endless seeded random walk with TQQQ-like volatility."""

from __future__ import annotations

import itertools
import math
import statistics
from decimal import Decimal

import pytest

from gridbot.config import load
from sim.market import open_source
from sim.market.prints import NS_PER_SECOND
from sim.market.walk import MAX_SIZE, TRADING_SECONDS_PER_YEAR, WalkSource

T0 = 1_748_872_800_000_000_000


def walk(seed: int = 7, vol: float = 0.65) -> WalkSource:
    return WalkSource(T0, Decimal("60.00"), vol, 5.0, seed)


def test_the_same_seed_gives_the_same_walk_and_another_seed_another() -> None:
    a = list(itertools.islice(walk(7), 500))
    assert a == list(itertools.islice(walk(7), 500))
    assert a != list(itertools.islice(walk(8), 500))


def test_prints_are_cents_every_interval_with_sizes_in_range() -> None:
    prints = list(itertools.islice(walk(), 2000))
    assert prints[0].price == Decimal("60.00") and prints[0].ts_ns == T0
    assert all(b.ts_ns - a.ts_ns == 5 * NS_PER_SECOND for a, b in itertools.pairwise(prints))
    assert all(p.price == p.price.quantize(Decimal("0.01")) and p.price > 0 for p in prints)
    assert all(1 <= p.size <= MAX_SIZE for p in prints)


def test_the_volatility_is_the_configured_annual_figure() -> None:
    prices = [float(p.price) for p in itertools.islice(walk(seed=3), 20_001)]
    returns = [math.log(b / a) for a, b in itertools.pairwise(prices)]
    annualised = statistics.stdev(returns) * math.sqrt(TRADING_SECONDS_PER_YEAR / 5.0)
    assert annualised == pytest.approx(0.65, rel=0.1)


def test_the_config_builds_a_walk_from_start() -> None:
    cfg = load(
        overrides={"sim": {"source": "walk", "start": "2025-06-02T10:00:00-04:00", "walk_price": "45.5"}}
    )
    opened = open_source(cfg.sim)
    first = next(iter(opened.source))
    assert opened.driven and first.ts_ns == opened.start_ns == T0 and first.price == Decimal("45.50")


@pytest.mark.parametrize(
    ("override", "message"),
    [({"walk_price": "abc"}, r"sim\.walk_price"), ({"walk_interval": 0.0}, r"sim\.walk_interval")],
)
def test_bad_walk_settings_are_refused_naming_the_key(override: dict[str, object], message: str) -> None:
    cfg = load(overrides={"sim": {"source": "walk", **override}})
    with pytest.raises(ValueError, match=message):
        open_source(cfg.sim)


def test_the_manual_source_prints_nothing_and_runs_the_clock_free() -> None:
    opened = open_source(load(overrides={"sim": {"source": "manual"}}).sim)
    assert list(opened.source) == [] and not opened.driven


def test_resuming_a_walk_gives_the_same_walk_from_the_next_step() -> None:
    full = list(itertools.islice(walk(), 300))
    resumed = walk()
    resumed.resume_after(full[123].ts_ns + 1)
    assert list(itertools.islice(resumed, 176)) == full[124:]
