"""The bad-print filter: what is dropped, why, what is counted, and how a real new level is accepted."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.feed.filter import DropReason, PrintFilter

D = Decimal
SECOND = 1_000_000_000


def make(band: str = "0.05", confirm: int = 3) -> PrintFilter:
    return PrintFilter(D(band), confirm)


def test_first_print_is_accepted_and_becomes_the_reference() -> None:
    f = make()
    assert f.check(D("97.02"), 1 * SECOND).accepted
    assert f.last_good_price == D("97.02")
    assert f.accepted == 1


@pytest.mark.parametrize(
    "price, reason",
    [
        (D("NaN"), DropReason.NOT_A_NUMBER),
        (D("sNaN"), DropReason.NOT_A_NUMBER),
        (D("Infinity"), DropReason.NOT_A_NUMBER),
        (D("-Infinity"), DropReason.NOT_A_NUMBER),
        (D("0"), DropReason.NON_POSITIVE),
        (D("0.00"), DropReason.NON_POSITIVE),
        (D("-97.02"), DropReason.NON_POSITIVE),
    ],
)
def test_impossible_prices_are_dropped_even_as_the_first_print(price: Decimal, reason: DropReason) -> None:
    f = make()
    verdict = f.check(price, SECOND)
    assert verdict.reason is reason
    assert f.last_good_price is None
    assert f.dropped == {reason: 1}


def test_a_jump_beyond_the_band_is_dropped_and_the_reference_kept() -> None:
    f = make("0.05")
    f.check(D("100.00"), SECOND)
    assert f.check(D("105.01"), 2 * SECOND).reason is DropReason.JUMP
    assert f.check(D("94.99"), 3 * SECOND).reason is DropReason.JUMP
    assert f.last_good_price == D("100.00")
    assert f.dropped[DropReason.JUMP] == 2


def test_the_band_edge_is_inside() -> None:
    f = make("0.05")
    f.check(D("100.00"), SECOND)
    assert f.check(D("105.00"), 2 * SECOND).accepted
    assert f.check(D("99.75"), 3 * SECOND).accepted  # exactly 5 % below 105.00


def test_an_earlier_timestamp_is_out_of_order_but_an_equal_one_is_fine() -> None:
    f = make()
    f.check(D("97.02"), 10 * SECOND)
    assert f.check(D("97.03"), 10 * SECOND).accepted
    assert f.check(D("97.04"), 10 * SECOND - 1).reason is DropReason.OUT_OF_ORDER
    assert f.dropped == {DropReason.OUT_OF_ORDER: 1}


def test_a_lone_bad_print_between_good_ones_never_moves_the_level() -> None:
    f = make(confirm=3)
    prices = ["100.00", "100.01", "150.00", "100.02", "150.00", "100.03", "150.00", "100.01"]
    verdicts = [f.check(D(p), (i + 1) * SECOND) for i, p in enumerate(prices)]
    assert [v.accepted for v in verdicts] == [True, True, False, True, False, True, False, True]
    assert f.last_good_price == D("100.01")


def test_a_run_of_agreeing_prints_beyond_the_band_is_a_new_level() -> None:
    f = make(confirm=3)
    f.check(D("100.00"), SECOND)
    first = f.check(D("110.00"), 2 * SECOND)
    second = f.check(D("110.05"), 3 * SECOND)
    third = f.check(D("109.90"), 4 * SECOND)
    assert (first.reason, second.reason) == (DropReason.JUMP, DropReason.JUMP)
    assert third.accepted and third.reanchored
    assert f.last_good_price == D("109.90")
    assert f.check(D("110.10"), 5 * SECOND).accepted


def test_a_run_whose_prints_disagree_with_each_other_starts_over() -> None:
    f = make(confirm=3)
    f.check(D("100.00"), SECOND)
    assert not f.check(D("110.00"), 2 * SECOND).accepted
    assert not f.check(D("130.00"), 3 * SECOND).accepted  # beyond the band of 110: a new run of one
    assert not f.check(D("130.10"), 4 * SECOND).accepted  # run of two
    assert f.check(D("130.20"), 5 * SECOND).reanchored


def test_a_replay_that_starts_over_in_time_is_accepted_after_a_confirming_run() -> None:
    f = make(confirm=2)
    f.check(D("100.00"), 100 * SECOND)
    assert f.check(D("99.00"), 1 * SECOND).reason is DropReason.OUT_OF_ORDER
    assert f.check(D("99.10"), 2 * SECOND).reanchored
    assert f.check(D("99.20"), 3 * SECOND).accepted


def test_a_good_print_breaks_a_run() -> None:
    f = make(confirm=3)
    f.check(D("100.00"), SECOND)
    f.check(D("110.00"), 2 * SECOND)
    f.check(D("110.00"), 3 * SECOND)
    assert f.check(D("100.10"), 4 * SECOND).accepted
    assert not f.check(D("110.00"), 5 * SECOND).accepted
    assert not f.check(D("110.00"), 6 * SECOND).accepted


def test_counts_from_the_service_are_added() -> None:
    f = make()
    f.count_drop(DropReason.MALFORMED)
    f.count_drop(DropReason.OVERFLOW)
    f.check(D("-1"), SECOND)
    assert f.dropped_total == 3


@pytest.mark.parametrize("band, confirm", [("0", 3), ("-0.05", 3), ("0.05", 1), ("0.05", 0)])
def test_bad_settings_are_refused_with_the_key_name(band: str, confirm: int) -> None:
    with pytest.raises(ValueError, match=r"feed\.jump_(band|confirm)"):
        PrintFilter(D(band), confirm)


@given(
    st.lists(
        st.tuples(
            st.decimals(allow_nan=True, allow_infinity=True, places=2),
            st.integers(min_value=0, max_value=10**12),
        ),
        max_size=60,
    )
)
def test_every_accepted_print_is_positive_and_every_print_is_either_accepted_or_counted(
    prints: list[tuple[Decimal, int]],
) -> None:
    f = make("0.05", 3)
    accepted = 0
    for price, ts in prints:
        verdict = f.check(price, ts)
        if verdict.accepted:
            accepted += 1
            assert price.is_finite() and price > 0
    assert accepted == f.accepted
    assert f.accepted + f.dropped_total == len(prints)
