"""Matching rules: limit fills at the print (gaps included), session gating, partial fills, conditions, commission."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.matching import (
    Fill,
    OrderType,
    PriceCondition,
    Print,
    Side,
    WorkingOrder,
    conditions_hold,
    conditions_may_trigger,
    execution_commission,
    fill_price,
    fixed_commission,
    match,
    reachable,
    round_cent,
)
from core.sessions import Session

D = Decimal


def lmt(key: int, side: Side, limit: str, qty: int = 10, outside_rth: bool = True) -> WorkingOrder:
    return WorkingOrder(key, side, OrderType.LIMIT, D(limit), qty, outside_rth)


@pytest.mark.parametrize(
    ("side", "limit", "print_price", "expected"),
    [
        (Side.BUY, "50.00", "50.01", None),
        (Side.BUY, "50.00", "50.00", "50.00"),
        (Side.BUY, "50.00", "49.50", "49.50"),  # a gap below the limit fills at the print
        (Side.SELL, "50.00", "49.99", None),
        (Side.SELL, "50.00", "50.00", "50.00"),
        (Side.SELL, "50.00", "51.20", "51.20"),
    ],
)
def test_limit_fill_price(side: Side, limit: str, print_price: str, expected: str | None) -> None:
    got = fill_price(lmt(1, side, limit), D(print_price))
    assert got == (None if expected is None else D(expected))


def test_market_order_fills_at_the_print() -> None:
    order = WorkingOrder(1, Side.SELL, OrderType.MARKET, None, 5, False)
    assert fill_price(order, D("12.34")) == D("12.34")


cents = st.integers(min_value=4_000, max_value=6_000).map(lambda c: D(c) / 100)
working_orders = st.builds(
    WorkingOrder,
    key=st.integers(0, 1_000),
    side=st.sampled_from(Side),
    order_type=st.sampled_from(OrderType),
    limit=cents,
    remaining=st.integers(0, 50),
    outside_rth=st.booleans(),
)


@given(st.lists(working_orders, max_size=25), cents)
def test_reachable_keeps_exactly_the_orders_fill_price_fills_in_their_order(
    orders: list[WorkingOrder], print_price: Decimal
) -> None:
    assert reachable(orders, print_price) == [o for o in orders if fill_price(o, print_price) is not None]


@given(st.lists(working_orders, max_size=25), cents, st.integers(1, 100), st.sampled_from(Session), st.booleans())
def test_matching_the_reachable_orders_gives_the_same_fills(
    orders: list[WorkingOrder], print_price: Decimal, size: int, session: Session, partial: bool
) -> None:
    prt = Print(print_price, size)
    assert match(reachable(orders, print_price), prt, session, partial) == match(orders, prt, session, partial)


def test_match_respects_sessions_and_outside_rth() -> None:
    orders = [lmt(1, Side.BUY, "50", outside_rth=False), lmt(2, Side.BUY, "50", outside_rth=True)]
    assert match(orders, Print(D("49"), 100), Session.PRE) == [Fill(2, 10, D("49"))]
    assert match(orders, Print(D("49"), 100), Session.REGULAR) == [Fill(1, 10, D("49")), Fill(2, 10, D("49"))]
    assert match(orders, Print(D("49"), 100), Session.CLOSED) == []


def test_partial_fills_share_the_print_size_in_time_priority() -> None:
    orders = [lmt(1, Side.BUY, "50", qty=30), lmt(2, Side.BUY, "50", qty=30), lmt(3, Side.BUY, "50", qty=30)]
    fills = match(orders, Print(D("50"), 45), Session.REGULAR, partial_fills=True)
    assert fills == [Fill(1, 30, D("50")), Fill(2, 15, D("50"))]


def test_full_fills_ignore_the_print_size() -> None:
    fills = match([lmt(1, Side.SELL, "50", qty=500)], Print(D("50.5"), 1), Session.REGULAR)
    assert fills == [Fill(1, 500, D("50.5"))]


def test_price_condition_comparisons() -> None:
    below = PriceCondition(is_more=False, price=D("48.00"))
    above = PriceCondition(is_more=True, price=D("52.00"))
    assert below.holds(D("48.00")) and below.holds(D("47.99")) and not below.holds(D("48.01"))
    assert above.holds(D("52.00")) and not above.holds(D("51.99"))


def test_condition_chain_joins_left_to_right() -> None:
    low_and = PriceCondition(False, D("48"), conjunction_and=True)
    low_or = PriceCondition(False, D("48"), conjunction_and=False)
    high = PriceCondition(True, D("52"))
    assert not conditions_hold([low_and, high], D("47"))
    assert conditions_hold([low_or, high], D("47"))
    assert conditions_hold([low_or, high], D("53"))
    assert not conditions_hold([low_or, high], D("50"))
    assert conditions_hold([], D("50"))


def test_conditions_watch_regular_hours_unless_ignore_rth() -> None:
    assert conditions_may_trigger(Session.REGULAR, ignore_rth=False)
    assert not conditions_may_trigger(Session.PRE, ignore_rth=False)
    assert conditions_may_trigger(Session.AFTER, ignore_rth=True)
    assert not conditions_may_trigger(Session.CLOSED, ignore_rth=True)


@pytest.mark.parametrize(
    ("shares", "value", "expected"),
    [
        (94, "11345.80", "1.00"),  # the minimum (the user's real paper fills were about $1.00)
        (400, "40000", "2.00"),  # per share
        (1, "5.00", "0.05"),  # the 1% cap beats the minimum
        (0, "0", "0.00"),
    ],
)
def test_fixed_commission(shares: int, value: str, expected: str) -> None:
    assert fixed_commission(shares, D(value)) == D(expected)


def test_execution_commission_charges_the_minimum_once_per_order() -> None:
    first = execution_commission(0, D(0), 100, D("50"))
    second = execution_commission(100, D("5000"), 100, D("50"))
    third = execution_commission(200, D("10000"), 300, D("50"))
    assert (first, second, third) == (D("1.00"), D("0.00"), D("1.50"))
    assert first + second + third == fixed_commission(500, D("25000"))


def test_round_cent_is_half_up() -> None:
    assert round_cent(D("97.025")) == D("97.03")
    assert round_cent(D("97.0249")) == D("97.02")
