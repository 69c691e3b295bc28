"""The grid's price math: the user's numbers, half-up rounding at every step, the buy queue, and chain properties."""

from __future__ import annotations

from decimal import Decimal, localcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import prices
from core.prices import (
    buy_queue,
    level0_limit,
    next_level,
    parse_factor,
    parse_price,
    sell_target,
    to_cent,
    trigger,
    trigger_chain,
    triggers,
)

D = Decimal
USER_LEVELS = 88


def test_the_users_chain_from_100() -> None:
    chain = trigger_chain(D("100.00"), 6)
    assert chain == (D("100.00"), D("99.00"), D("98.01"), D("97.03"), D("96.06"), D("95.10"))
    assert [str(p) for p in chain[1:]] == ["99.00", "98.01", "97.03", "96.06", "95.10"]


def test_each_step_rounds_before_the_next() -> None:
    chain = trigger_chain(D("100"), USER_LEVELS)
    expected = [D("100")]
    for _ in range(USER_LEVELS - 1):
        expected.append((expected[-1] * D("0.99")).quantize(D("0.01"), rounding="ROUND_HALF_UP"))
    assert list(chain) == expected
    # Compounding first and rounding once would part from the user's rule at level 8: 92.27 instead of 92.28.
    assert chain[8] == D("92.28")
    assert to_cent(D("100") * D("0.99") ** 8) == D("92.27")


def test_half_up_rounding_at_the_half_cent() -> None:
    assert to_cent(D("1.005")) == D("1.01")  # banker's rounding would give 1.00
    assert to_cent(D("1.0049999")) == D("1.00")
    assert to_cent(D("-1.005")) == D("-1.01")
    assert trigger(D("201.50"), 1) == D("199.49")  # 199.485: half-up, not half-even (199.48)
    assert level0_limit(D("99.98")) == D("100.23")  # 100.22995


def test_results_do_not_depend_on_the_callers_decimal_context() -> None:
    expected = trigger_chain(D("100"), USER_LEVELS)
    prices._chain_tail.cache_clear()
    prices._next_triggers.cache_clear()
    with localcontext() as ctx:
        ctx.prec = 3
        ctx.rounding = "ROUND_DOWN"
        assert trigger_chain(D("100"), USER_LEVELS) == expected
        assert level0_limit(D("120.40")) == D("120.70")
        assert sell_target(D("97.0213")) == D("97.99")


def test_level0_limit_and_sell_target_use_the_users_factors_by_default() -> None:
    assert level0_limit(D("120.40")) == D("120.70")  # 120.701
    assert level0_limit(D("100")) == D("100.25")
    assert level0_limit(D("100"), D("0.01")) == D("101.00")
    assert sell_target(D("97.03")) == D("98.00")  # 98.0003
    assert sell_target(D("97.0213")) == D("97.99")  # 97.991513: the exact average, not the rounded one
    assert sell_target(D("100"), D("0.02")) == D("102.00")


def test_factors_come_from_config_strings() -> None:
    assert trigger_chain(D("100"), 3, parse_factor("0.02", "strategy.step")) == (
        D("100"),
        D("98.00"),
        D("96.04"),
    )
    with pytest.raises(ValueError, match="strategy.step must be a decimal number"):
        parse_factor("one percent", "strategy.step")
    with pytest.raises(ValueError, match="strategy.sell_markup must be a fraction"):
        parse_factor("1.5", "strategy.sell_markup")
    with pytest.raises(ValueError, match="strategy.step must be a fraction"):
        parse_factor("-0.01", "strategy.step")
    with pytest.raises(ValueError, match="must be a fraction"):
        parse_factor("NaN", "strategy.step")


def test_parse_price() -> None:
    assert parse_price(" 97.0213 ") == D("97.0213")
    for bad in ["0", "-1", "abc", "", "inf", "nan", "0.004", "1e12", "1e100"]:
        with pytest.raises(ValueError, match="--anchor"):
            parse_price(bad, "--anchor")


def test_floats_and_bad_inputs_are_refused() -> None:
    with pytest.raises(TypeError, match="anchor must be a Decimal, was float"):
        trigger_chain(100.0, 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="purchase_price must be a Decimal"):
        sell_target(97.03)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="anchor must be a positive price"):
        trigger_chain(D("0"), 3)
    with pytest.raises(ValueError, match="levels must be a whole number >= 1"):
        trigger_chain(D("100"), 0)
    with pytest.raises(ValueError, match="step must be a fraction"):
        trigger_chain(D("100"), 3, D("1"))
    with pytest.raises(ValueError, match="level must be a whole number >= 0"):
        trigger(D("100"), -1)
    with pytest.raises(ValueError, match="price must be a positive price"):
        level0_limit(D("-5"))
    # below a cent a limit would round to 0.00; absurdly large prices would overflow the exact arithmetic
    with pytest.raises(ValueError, match="at least 0.01, was 0.004"):
        trigger_chain(D("0.004"), 3)
    with pytest.raises(ValueError, match="purchase_price must be a positive price"):
        sell_target(D("1E12"))
    assert trigger_chain(D("0.01"), 3) == (D("0.01"), D("0.01"), D("0.01"))  # the floor: never a zero limit


def test_the_chain_is_cached_per_anchor() -> None:
    prices._chain_tail.cache_clear()
    prices._next_triggers.cache_clear()
    first = trigger_chain(D("100"), USER_LEVELS)
    computed = prices._next_triggers.cache_info().misses
    assert computed == -(-(USER_LEVELS - 1) // prices._CHAIN_BLOCK)  # each block of the chain once
    trigger(D("100"), 3)
    trigger_chain(D("100.00"), 10)
    triggers(D("100"), [40, 41, 42])
    assert prices._next_triggers.cache_info().misses == computed  # nothing computed again
    assert prices._chain_tail.cache_info().hits >= 1
    assert trigger_chain(D("100"), USER_LEVELS) == first
    # the anchor is the caller's own object, so its written form is kept
    assert str(trigger_chain(D("100.00"), 2)[0]) == "100.00"


def test_a_deeper_cycle_computes_only_the_blocks_below_what_it_had() -> None:
    prices._chain_tail.cache_clear()
    prices._next_triggers.cache_clear()
    shallow = trigger_chain(D("58.13"), 5)
    assert prices._next_triggers.cache_info().misses == 1
    deep = trigger_chain(D("58.13"), 3 * prices._CHAIN_BLOCK)
    assert prices._next_triggers.cache_info().misses == 3
    assert deep[:5] == shallow
    # Each trigger is the one before it, times (1 - step), rounded half-up to the cent: across the blocks too.
    assert all(deep[n] == to_cent(deep[n - 1] * D("0.99")) for n in range(2, len(deep)))


def test_triggers_are_the_chain_entries_of_the_levels_asked() -> None:
    chain = trigger_chain(D("97.0213"), USER_LEVELS)
    levels = [0, 1, 16, 17, 40, USER_LEVELS - 1, 3]
    assert triggers(D("97.0213"), levels) == tuple(chain[n] for n in levels)
    assert str(triggers(D("97.0213"), [0])[0]) == "97.0213"  # the anchor as given
    assert triggers(D("97.0213"), []) == ()
    with pytest.raises(ValueError, match="level must be a whole number >= 0, was -1"):
        triggers(D("97.0213"), [2, -1])
    with pytest.raises(ValueError, match="anchor must be a positive price"):
        triggers(D("0"), [1])


def test_trigger_is_the_chain_entry() -> None:
    chain = trigger_chain(D("97.0213"), USER_LEVELS)
    assert trigger(D("97.0213"), 0) == D("97.0213")
    assert all(trigger(D("97.0213"), n) == chain[n] for n in range(USER_LEVELS))
    assert trigger(D("97.0213"), 1) == D("96.05")  # 96.051087 from the exact anchor


def test_next_level() -> None:
    assert next_level([]) == 0
    assert next_level([0]) == 1
    assert next_level({0, 1, 2}) == 3
    assert next_level([0, 1, 3]) == 4  # a gap is not refilled: the rule is max + 1


def test_buy_queue() -> None:
    assert buy_queue([], USER_LEVELS) == ()  # no lot, no anchor: Level 0 is placed on a tick, not queued
    assert buy_queue([0], USER_LEVELS) == (1, 2, 3)
    assert buy_queue(iter([0, 1, 2]), USER_LEVELS) == (3, 4, 5)
    assert buy_queue([0, 1, 3], USER_LEVELS) == (4, 5, 6)
    assert buy_queue([2, 3], USER_LEVELS) == (4, 5, 6)  # level 0 sold first: the cycle's anchor still holds
    assert buy_queue([0, 85], USER_LEVELS) == (86, 87)
    assert buy_queue([87], USER_LEVELS) == ()
    assert buy_queue([0], USER_LEVELS, queued=5) == (1, 2, 3, 4, 5)
    assert buy_queue([0], USER_LEVELS, queued=0) == ()


def test_buy_queue_refuses_levels_the_map_does_not_have() -> None:
    with pytest.raises(ValueError, match=r"held level 88 is not a level of the lot map \(0..87\)"):
        buy_queue([0, 88], USER_LEVELS)
    with pytest.raises(ValueError, match="held level -1"):
        buy_queue([-1], USER_LEVELS)
    with pytest.raises(ValueError, match="queued_levels"):
        buy_queue([0], USER_LEVELS, queued=-1)


# --- properties of the chain ----------------------------------------------------------------------------------

anchors = st.decimals(
    min_value=D("2.00"), max_value=D("100000"), places=4, allow_nan=False, allow_infinity=False
)
steps = st.sampled_from([D("0.01"), D("0.005"), D("0.02"), D("0.05")])


@settings(deadline=None)  # a per-example time limit fails on a loaded CI machine, not on a bug
@given(anchors)
def test_chain_is_strictly_decreasing_for_every_realistic_anchor(anchor: Decimal) -> None:
    chain = trigger_chain(anchor, USER_LEVELS)
    assert len(chain) == USER_LEVELS
    assert all(later < earlier for earlier, later in zip(chain, chain[1:], strict=False))


@settings(deadline=None)  # a per-example time limit fails on a loaded CI machine, not on a bug
@given(anchors)
def test_each_step_is_within_half_a_cent_of_one_percent_below(anchor: Decimal) -> None:
    chain = trigger_chain(anchor, USER_LEVELS)
    for earlier, later in zip(chain, chain[1:], strict=False):
        assert abs(later - earlier * D("0.99")) <= D("0.005")
        assert later == later.quantize(D("0.01"))


@settings(deadline=None)  # a per-example time limit fails on a loaded CI machine, not on a bug
@given(anchors, steps, st.integers(min_value=1, max_value=200))
def test_prefixes_agree_whatever_the_length_asked(anchor: Decimal, step: Decimal, levels: int) -> None:
    long = trigger_chain(anchor, 200, step)
    assert trigger_chain(anchor, levels, step) == long[:levels]


@settings(deadline=None)  # a per-example time limit fails on a loaded CI machine, not on a bug
@given(st.decimals(min_value=D("0.01"), max_value=D("100000"), places=6))
def test_sell_target_is_within_half_a_cent_of_one_percent_above(purchase: Decimal) -> None:
    target = sell_target(purchase)
    assert abs(target - purchase * D("1.01")) <= D("0.005")
    assert target == target.quantize(D("0.01"))
