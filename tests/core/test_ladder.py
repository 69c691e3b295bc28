"""The ladder rows for the user's map: the issue's numbers, cumulative sums, and properties for any anchor."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.ladder import build_ladder
from core.lotmap import LotMap, load_lot_map
from core.prices import sell_target, trigger_chain

D = Decimal
USER_MAP = load_lot_map(Path(__file__).resolve().parents[2] / "config" / "lots.csv")


def test_the_users_ladder_from_100() -> None:
    rows = build_ladder(D("100"), USER_MAP)

    assert len(rows) == 88
    head = [(r.level, r.shares, str(r.trigger), str(r.sell_target)) for r in rows[:6]]
    assert head == [
        (0, 94, "100.00", "101.00"),
        (1, 88, "99.00", "99.99"),
        (2, 82, "98.01", "98.99"),
        (3, 77, "97.03", "98.00"),
        (4, 72, "96.06", "97.02"),
        (5, 67, "95.10", "96.05"),
    ]
    assert [r.cum_shares for r in rows[:3]] == [94, 182, 264]
    assert [str(r.cum_cost) for r in rows[:3]] == ["9400.00", "18112.00", "26148.82"]
    assert [str(r.drop_pct) for r in rows[:3]] == ["0.00", "1.00", "1.99"]
    assert rows[-1].cum_shares == USER_MAP.total_shares == 1478
    assert rows[-1].level == 87 and rows[-1].shares == 1


def test_cumulative_cost_is_the_sum_of_each_level_at_its_trigger() -> None:
    rows = build_ladder(D("100"), USER_MAP)
    chain = trigger_chain(D("100"), 88)
    assert rows[-1].cum_cost == sum((chain[n] * USER_MAP[n] for n in range(88)), D(0))


def test_a_sub_cent_anchor_is_used_exactly_and_shown_to_the_cent() -> None:
    rows = build_ladder(D("97.0213"), LotMap((10, 5)))

    assert str(rows[0].trigger) == "97.02"
    assert rows[0].sell_target == sell_target(D("97.0213")) == D("97.99")
    assert rows[0].cum_cost == D("970.21")  # 970.213
    assert rows[1].trigger == D("96.05")  # from the exact anchor: 96.051087
    assert rows[1].cum_cost == D("1450.46")  # 970.213 + 480.25 = 1450.463, rounded once


def test_levels_limits_the_rows() -> None:
    assert [r.level for r in build_ladder(D("100"), USER_MAP, levels=3)] == [0, 1, 2]
    assert len(build_ladder(D("100"), USER_MAP, levels=88)) == 88
    for bad in (0, 89, -1):
        with pytest.raises(ValueError, match="levels must be a whole number from 1 to 88"):
            build_ladder(D("100"), USER_MAP, levels=bad)


def test_the_factors_can_be_changed() -> None:
    rows = build_ladder(D("100"), LotMap((1, 1, 1)), step=D("0.02"), sell_markup=D("0.05"))
    assert [str(r.trigger) for r in rows] == ["100.00", "98.00", "96.04"]
    assert [str(r.sell_target) for r in rows] == ["105.00", "102.90", "100.84"]


@settings(deadline=None)  # a per-example time limit fails on a loaded CI machine, not on a bug
@given(st.decimals(min_value=D("2"), max_value=D("10000"), places=2))
def test_ladder_properties(anchor: Decimal) -> None:
    rows = build_ladder(anchor, USER_MAP)
    for earlier, later in zip(rows, rows[1:], strict=False):
        assert later.trigger < earlier.trigger
        assert later.cum_shares == earlier.cum_shares + later.shares
        assert later.cum_cost > earlier.cum_cost
        assert later.drop_pct >= earlier.drop_pct
    assert all(r.sell_target > r.trigger for r in rows)
    assert all(D(0) <= r.drop_pct < D(100) for r in rows)
