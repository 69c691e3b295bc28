"""The sell budget and the deepest held level against their documented rules, written out plainly.

The strategy reaches both without a Python-level rank per lot (it runs at every decision over every lot); these
properties check that the quick way gives exactly what the plain rule gives, for lots in the ledger's order and in
any other, with equal targets, several cycles, sold-out lots and pinned SELLs.
"""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from core.intent import IntentKey
from core.lotmap import LotMap
from core.prices import sell_target
from core.strategy import sell_budget
from proto.messages import Lot, WorkingOrder

D = Decimal


def make_lot(cycle: int, level: int, price: Decimal, quantity: int, sold: int, attempt: int | None) -> Lot:
    return Lot(
        cycle=cycle,
        level=level,
        quantity=quantity,
        purchase_price=price,
        sell_target_price=sell_target(price),
        buy_key=IntentKey.buy(cycle, level, attempt).encode(),
        sell_key=IntentKey.sell(cycle, level, price, attempt).encode(),
        sold=sold,
    )


def pinned_sell(lot: Lot) -> WorkingOrder:
    return WorkingOrder(
        key=lot.sell_key,
        side="SELL",
        level=lot.level,
        quantity=lot.quantity,
        limit=lot.sell_target_price,
        filled=1,
    )


def plain_budget(lots: list[Lot], live: dict[str, WorkingOrder], n: int) -> tuple[Lot, ...]:
    """The rule as the docstring states it: pinned first, then the lowest target, the deeper level, the older cycle."""

    def rank(lot: Lot) -> tuple[bool, Decimal, int, int, str]:
        order = live.get(lot.sell_key)
        pinned = order is not None and order.filled > 0
        return (not pinned, lot.sell_target_price, -lot.level, lot.cycle, lot.sell_key)

    return tuple(sorted((lot for lot in lots if lot.quantity - lot.sold > 0), key=rank)[: max(n, 0)])


# Few distinct prices, so equal targets (and equal targets at different levels and cycles) are common.
prices = st.sampled_from([D("40.00"), D("40.004"), D("39.6"), D("39.61"), D("55.1234"), D("12.5")])
# The cycles: "c10" sorts before "c9" as text, so the cycle must be a tie-break of its own, not the SELL key's.
lot_parts = st.tuples(
    st.sampled_from([1, 2, 9, 10, 11]),  # cycle
    st.integers(min_value=0, max_value=30),  # level
    prices,
    st.integers(min_value=1, max_value=40),  # quantity
    st.booleans(),  # sold out
    st.sampled_from([None, 2, 3]),  # attempt
)


LotParts = tuple[int, int, Decimal, int, bool, int | None]


def build(parts: list[LotParts]) -> list[Lot]:
    return [make_lot(c, lv, p, q, q if out else 0, a) for c, lv, p, q, out, a in parts]


@settings(deadline=None)  # a per-example time limit fails on a loaded CI machine, not on a bug
@given(st.lists(lot_parts, max_size=40), st.data(), st.integers(min_value=-1, max_value=25))
def test_the_budget_is_the_plain_rank_in_any_order(
    parts: list[LotParts], data: st.DataObject, n: int
) -> None:
    lots = build(parts)
    lots = data.draw(st.permutations(lots)) if lots else lots
    pinned = data.draw(st.lists(st.sampled_from(lots), max_size=3)) if lots else []
    live = {lot.sell_key: pinned_sell(lot) for lot in pinned}

    assert sell_budget(lots, live, n) == plain_budget(lots, live, n)


@settings(deadline=None)  # a per-example time limit fails on a loaded CI machine, not on a bug
@given(st.lists(lot_parts, max_size=40), st.integers(min_value=0, max_value=25))
def test_the_budget_is_the_plain_rank_in_the_ledgers_order(parts: list[LotParts], n: int) -> None:
    lots = sorted(build(parts), key=lambda lot: (lot.cycle, lot.level, lot.buy_key))

    assert sell_budget(lots, {}, n) == plain_budget(lots, {}, n)


def test_a_ladder_in_the_ledgers_order_is_ranked_deepest_first() -> None:
    # One cycle, each level bought a cent or more below the one above: the usual state, ties included.
    prices_by_level = [D("100.00"), D("99.00"), D("98.01"), D("98.01"), D("97.03"), D("96.06"), D("96.0501")]
    lots = [make_lot(4, level, price, 10, 0, None) for level, price in enumerate(prices_by_level)]

    chosen = sell_budget(lots, {}, 5)

    assert [lot.level for lot in chosen] == [6, 5, 4, 3, 2]
    assert chosen == plain_budget(lots, {}, 5)


def test_equal_targets_of_one_level_and_cycle_go_by_sell_key() -> None:
    # Bought at 40.00 and at 40.004 (a second attempt of the level): both SELLs target 40.40.
    first = make_lot(10, 7, D("40.004"), 10, 0, 2)
    second = make_lot(10, 7, D("40.00"), 10, 0, None)
    other_cycle = make_lot(9, 7, D("40.00"), 10, 0, None)
    lots = [first, second, other_cycle]
    assert len({lot.sell_target_price for lot in lots}) == 1

    assert sell_budget(lots, {}, 3) == (other_cycle, second, first)
    assert sell_budget(lots, {}, 3) == plain_budget(lots, {}, 3)


levels_of_any_kind = st.lists(
    st.integers(min_value=-3, max_value=12) | st.booleans() | st.sampled_from([2.0, 3.5, D(4), "5"]),
    max_size=12,
)


@settings(deadline=None)  # a per-example time limit fails on a loaded CI machine, not on a bug
@given(levels_of_any_kind)
def test_deepest_of_is_the_highest_level_the_map_has(levels: list[object]) -> None:
    lot_map = LotMap((5, 5, 5, 5, 5, 5, 5, 5))
    plain = max((level for level in levels if level in lot_map), default=None)  # type: ignore[type-var]

    # Lot levels are whole numbers; anything else given must be passed over as the map's own test does.
    assert lot_map.deepest_of(levels) == plain  # type: ignore[arg-type]
    assert type(lot_map.deepest_of(levels)) is type(plain)  # type: ignore[arg-type]
