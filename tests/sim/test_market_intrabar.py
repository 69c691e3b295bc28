"""The deterministic intrabar path: one minute bar -> n prints (pure)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.market.intrabar import BAR_NS, Bar, bar_prints, print_sizes, vertex_indices

T = 1_746_022_560_000_000_000  # 2025-04-30 14:16 UTC


def bar(o: str, h: str, low: str, c: str, v: int = 1000) -> Bar:
    return Bar(T, Decimal(o), Decimal(h), Decimal(low), Decimal(c), v)


def test_an_up_bar_goes_open_low_high_close() -> None:
    prices = [p.price for p in bar_prints(bar("10.00", "10.30", "9.90", "10.20"), 10)]
    # vertices on prints 0, 3, 6, 9; straight lines between, to the cent
    assert prices == [Decimal(x) for x in "10.00 9.97 9.93 9.90 10.03 10.17 10.30 10.27 10.23 10.20".split()]


def test_a_down_bar_goes_open_high_low_close() -> None:
    prices = [p.price for p in bar_prints(bar("10.00", "10.30", "9.90", "9.95"), 4)]
    assert prices == [Decimal("10.00"), Decimal("10.30"), Decimal("9.90"), Decimal("9.95")]


def test_prints_are_spread_evenly_over_the_minute() -> None:
    ts = [p.ts_ns for p in bar_prints(bar("1", "1", "1", "1"), 10)]
    assert ts == [T + i * 6_000_000_000 for i in range(10)]


def test_sub_penny_bar_prices_are_printed_exactly_as_the_file_has_them() -> None:
    prints = bar_prints(bar("51.42", "51.55", "51.4135", "51.525"), 10)
    assert {Decimal("51.42"), Decimal("51.55"), Decimal("51.4135"), Decimal("51.525")} <= {
        p.price for p in prints
    }


def test_volume_is_shared_out_evenly_and_every_print_has_a_share() -> None:
    assert print_sizes(1003, 10) == [101, 101, 101, 100, 100, 100, 100, 100, 100, 100]
    assert print_sizes(2, 4) == [1, 1, 1, 1]


def test_fewer_than_four_prints_per_bar_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 4"):
        vertex_indices(3)


def test_the_same_bar_always_gives_the_same_prints() -> None:
    b = bar("51.62", "51.63", "51.47", "51.52", 443724)
    assert bar_prints(b, 10) == bar_prints(b, 10)


cents = st.integers(min_value=1, max_value=50_000).map(lambda c: Decimal(c) / 100)
subpenny = st.integers(min_value=10_000, max_value=5_000_000).map(lambda c: Decimal(c) / 10_000)


@st.composite
def bars(draw: st.DrawFn) -> Bar:
    prices = sorted(draw(st.lists(st.one_of(cents, subpenny), min_size=4, max_size=4)))
    low, high = prices[0], prices[3]
    o, c = draw(st.permutations([prices[1], prices[2]]))
    return Bar(T, o, high, low, c, draw(st.integers(min_value=0, max_value=10**7)))


@given(bars(), st.integers(min_value=4, max_value=120))
def test_every_path_prints_open_high_low_close_in_order_and_stays_inside_the_bar(b: Bar, n: int) -> None:
    prints = bar_prints(b, n)
    prices = [p.price for p in prints]
    assert len(prints) == n
    assert prices[0] == b.open and prices[-1] == b.close
    assert max(prices) == b.high and min(prices) == b.low
    _, i1, i2, _ = vertex_indices(n)
    up = b.close >= b.open
    assert (prices[i1], prices[i2]) == ((b.low, b.high) if up else (b.high, b.low))
    assert all(b.low <= p <= b.high for p in prices)
    assert all(T <= p.ts_ns < T + BAR_NS for p in prints)
    assert [p.ts_ns for p in prints] == sorted(p.ts_ns for p in prints)
    sizes = [p.size for p in prints]
    assert min(sizes) >= 1
    assert sum(sizes) == (b.volume if b.volume >= n else n)
