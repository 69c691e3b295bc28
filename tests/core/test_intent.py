"""The intent key: the exact grammar, round trips, one spelling per key, and refusal of anything foreign."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import intent
from core.intent import (
    EXAMPLE,
    MAX_KEY_LENGTH,
    IntentKey,
    NotAnIntentKey,
    Side,
    is_grid_ref,
    parse,
)

D = Decimal


def test_the_design_example_parses() -> None:
    key = parse("tqgrid1 c12 L3 SELL 97.0213")

    assert key == IntentKey(12, 3, Side.SELL, purchase_price=D("97.0213"))
    assert key.slot == (12, 3, Side.SELL)
    assert key.lot == (12, 3)
    assert key.attempt is None and key.attempt_number == 1
    assert key.encode() == EXAMPLE


@pytest.mark.parametrize(
    ("key", "text"),
    [
        (IntentKey.buy(12, 0), "tqgrid1 c12 L0 BUY"),
        (IntentKey.buy(12, 0, attempt=1), "tqgrid1 c12 L0 BUY"),
        (IntentKey.buy(12, 0, attempt=2), "tqgrid1 c12 L0 BUY a2"),
        (IntentKey.buy(0, 87), "tqgrid1 c0 L87 BUY"),
        (IntentKey.buy(3, 4, attempt=2), "tqgrid1 c3 L4 BUY a2"),
        (IntentKey.sell(3, 4, D("96.06"), attempt=2), "tqgrid1 c3 L4 SELL a2 96.06"),
        (IntentKey.sell(1, 0, D("120.695")), "tqgrid1 c1 L0 SELL 120.695"),
        (IntentKey(5, 2, "SELL", None, "97.5"), "tqgrid1 c5 L2 SELL 97.50"),  # type: ignore[arg-type]
    ],
)
def test_encodings(key: IntentKey, text: str) -> None:
    assert key.encode() == text
    assert str(key) == text
    assert parse(text) == key
    assert is_grid_ref(text)


def test_purchase_prices_are_exact_and_written_one_way() -> None:
    def written(price: str) -> str:
        return IntentKey.sell(1, 1, D(price)).encode().rsplit(" ", 1)[1]

    assert written("97.0213") == "97.0213"
    assert written("97.02130000") == "97.0213"
    assert written("97.5") == "97.50"
    assert written("97.500") == "97.50"
    assert written("97") == "97.00"
    assert written("1E+2") == "100.00"
    assert written("0.01") == "0.01"
    assert written("96.81946808") == "96.81946808"  # 8 decimals: the most a key carries
    assert IntentKey.sell(1, 1, D("97.500")) == IntentKey.sell(1, 1, D("97.5"))
    assert hash(IntentKey.sell(1, 1, D("97.500"))) == hash(IntentKey.sell(1, 1, D("97.5")))


def test_slot_of_is_the_slot() -> None:
    keys = [IntentKey.buy(3, 0), IntentKey.buy(3, 0, 2), IntentKey.sell(3, 5, D("97.5"), 2), parse("tqgrid1 c9 L1 BUY")]
    assert [intent.slot_of(k) for k in keys] == [k.slot for k in keys]
    assert keys[0].slot == (3, 0, Side.BUY) and keys[2].slot == (3, 5, Side.SELL)


def test_attempt_one_and_none_are_the_same_key() -> None:
    assert IntentKey.buy(7, 0, 1) == IntentKey.buy(7, 0)
    assert IntentKey.buy(7, 0, 1).attempt is None
    assert IntentKey.buy(7, 0, 3).attempt_number == 3


def test_a_rebought_level_gets_a_key_of_its_own() -> None:
    first_buy, second_buy = IntentKey.buy(4, 5), IntentKey.buy(4, 5, attempt=2)
    first_sell, second_sell = IntentKey.sell(4, 5, D("95.10")), IntentKey.sell(4, 5, D("95.10"), attempt=2)

    assert first_buy.encode() != second_buy.encode()
    assert first_sell.encode() != second_sell.encode()
    assert first_buy.slot == second_buy.slot  # still never two live at once


def test_the_longest_key_fits_the_budget() -> None:
    key = IntentKey.sell(999_999, 999, D("999999.12345678"), attempt=999)
    assert len(key.encode()) == MAX_KEY_LENGTH == 46


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"cycle": -1, "level": 0, "side": "BUY"}, "cycle must be a whole number from 0 to 999999"),
        ({"cycle": 1_000_000, "level": 0, "side": "BUY"}, "cycle must be"),
        ({"cycle": True, "level": 0, "side": "BUY"}, "cycle must be"),
        ({"cycle": 1, "level": 1000, "side": "BUY"}, "level must be a whole number from 0 to 999"),
        ({"cycle": 1, "level": 0, "side": "buy"}, "side must be 'BUY' or 'SELL'"),
        (
            {"cycle": 1, "level": 0, "side": "BUY", "attempt": 0},
            "attempt must be a whole number from 1 to 999",
        ),
        ({"cycle": 1, "level": 0, "side": "SELL"}, "a SELL intent key needs the lot's purchase_price"),
        (
            {"cycle": 1, "level": 0, "side": "BUY", "purchase_price": D("1")},
            "a BUY intent key has no purchase_price",
        ),
        ({"cycle": 1, "level": 0, "side": "SELL", "purchase_price": D("0")}, "positive price"),
        ({"cycle": 1, "level": 0, "side": "SELL", "purchase_price": D("-1")}, "positive price"),
        ({"cycle": 1, "level": 0, "side": "SELL", "purchase_price": D("NaN")}, "positive price"),
        ({"cycle": 1, "level": 0, "side": "SELL", "purchase_price": D("1000000")}, "below 1000000"),
        (
            {"cycle": 1, "level": 0, "side": "SELL", "purchase_price": D("1.123456789")},
            "more than 8 decimals",
        ),
        ({"cycle": 1, "level": 0, "side": "SELL", "purchase_price": "abc"}, "decimal number like 97.0213"),
    ],
)
def test_invalid_fields_are_refused(kwargs: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        IntentKey(**kwargs)  # type: ignore[arg-type]


def test_a_float_price_is_refused() -> None:
    with pytest.raises(TypeError, match="purchase_price must be a Decimal"):
        IntentKey.sell(1, 1, 97.03)  # type: ignore[arg-type]


def test_keys_are_frozen() -> None:
    key = IntentKey.buy(1, 1)
    with pytest.raises(AttributeError):
        key.level = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    "ref",
    [
        "",
        "   ",
        "GRID_L3_BUY",
        "tqgrid2 c12 L3 SELL 97.0213",
        "tqgrid c12 L3 SELL 97.0213",
        "tqgrid1 c12 L3 SELL",
        "tqgrid1 c12 L3 BUY 97.02",
        "tqgrid1 c12 L3 sell 97.0213",
        "tqgrid1 c12 L3 SELL 97.0213 ",
        " tqgrid1 c12 L3 SELL 97.0213",
        "tqgrid1  c12 L3 SELL 97.0213",
        "tqgrid1 c12 L3 SELL 97.5",
        "tqgrid1 c12 L3 SELL 97.500",
        "tqgrid1 c12 L3 SELL 97",
        "tqgrid1 c12 L3 SELL 097.50",
        "tqgrid1 c12 L3 SELL 0.00",
        "tqgrid1 c12 L3 SELL -97.50",
        "tqgrid1 c12 L3 SELL 1.123456789",
        "tqgrid1 c012 L3 BUY",
        "tqgrid1 c12 L03 BUY",
        "tqgrid1 c12 L3 BUY a1",
        "tqgrid1 c12 L3 BUY a0",
        "tqgrid1 c12 L3 BUY a02",
        "tqgrid1 c12 L3 SELL 97.02 a2",
        "tqgrid1 c1234567 L3 BUY",
        "tqgrid1 c12 L1000 BUY",
        "tqgrid1 c١٢ L3 BUY",  # Arabic-Indic digits: int() would take them
        "tqgrid1 c12 L3 BUY\n",
        "tqgrid1\tc12 L3 BUY",
    ],
)
def test_foreign_and_damaged_refs_are_refused(ref: str) -> None:
    with pytest.raises(NotAnIntentKey):
        parse(ref)
    assert not is_grid_ref(ref)


def test_refusals_say_what_was_expected() -> None:
    with pytest.raises(
        NotAnIntentKey, match=r"orderRef 'level3' is not a grid intent key \(expected a key like"
    ):
        parse("level3")
    with pytest.raises(
        NotAnIntentKey, match="starts like a grid intent key but is malformed or of another version"
    ):
        parse("tqgrid2 c1 L1 BUY")
    with pytest.raises(NotAnIntentKey, match="a SELL needs its lot's purchase price"):
        parse("tqgrid1 c1 L1 SELL")
    with pytest.raises(NotAnIntentKey, match="positive price"):
        parse("tqgrid1 c1 L1 SELL 0.00")


def test_non_strings_are_not_grid_refs() -> None:
    assert not is_grid_ref(None)
    assert not is_grid_ref(12)
    with pytest.raises(NotAnIntentKey, match="not a string"):
        parse(None)  # type: ignore[arg-type]


def test_not_an_intent_key_is_a_value_error() -> None:
    assert issubclass(NotAnIntentKey, ValueError)


# --- round trips ----------------------------------------------------------------------------------------------

prices = st.decimals(min_value=D("0.01"), max_value=D("999999.99999999"), places=8).map(
    lambda d: d.normalize()
)
attempts = st.none() | st.integers(min_value=1, max_value=999)
cycles = st.integers(min_value=0, max_value=999_999)
levels = st.integers(min_value=0, max_value=999)


@settings(deadline=None)  # a per-example time limit fails on a loaded CI machine, not on a bug
@given(cycles, levels, attempts)
def test_buy_keys_round_trip(cycle: int, level: int, attempt: int | None) -> None:
    key = IntentKey.buy(cycle, level, attempt)
    text = key.encode()
    assert parse(text) == key
    assert parse(text).encode() == text
    assert len(text) <= MAX_KEY_LENGTH
    # The grammar itself, not parse's memory of what encode wrote (that memory is right only because of this).
    assert intent._parse_text(text) == key


@settings(deadline=None)  # a per-example time limit fails on a loaded CI machine, not on a bug
@given(cycles, levels, attempts, prices)
def test_sell_keys_round_trip_with_the_exact_price(
    cycle: int, level: int, attempt: int | None, price: Decimal
) -> None:
    key = IntentKey.sell(cycle, level, price, attempt)
    text = key.encode()
    back = parse(text)
    assert back == key
    assert back.purchase_price == price  # exact: no rounding anywhere
    assert back.encode() == text
    assert len(text) <= MAX_KEY_LENGTH
    # The grammar itself, not parse's memory of what encode wrote: the same key, the price written the same way.
    grammar = intent._parse_text(text)
    assert grammar == key
    assert str(grammar.purchase_price) == str(key.purchase_price)


@settings(deadline=None)  # a per-example time limit fails on a loaded CI machine, not on a bug
@given(st.text(max_size=60))
def test_parse_accepts_only_what_it_would_write(text: str) -> None:
    try:
        key = parse(text)
    except NotAnIntentKey:
        assert not is_grid_ref(text)
    else:
        assert key.encode() == text


near_keys = st.from_regex(
    r"tqgrid1 c[0-9]{1,3} L[0-9]{1,3} (BUY|SELL)( a[0-9]{1,2})?( [0-9]{1,3}\.[0-9]{0,4})?", fullmatch=True
)


@settings(deadline=None)  # a per-example time limit fails on a loaded CI machine, not on a bug
@given(near_keys)
def test_near_keys_parse_only_in_their_one_spelling(text: str) -> None:
    try:
        key = parse(text)
    except NotAnIntentKey:
        assert not is_grid_ref(text)
    else:
        assert key.encode() == text


# --- parse's memory ---------------------------------------------------------------------------------------------


def test_parse_answers_the_same_with_or_without_its_memory() -> None:
    texts = [IntentKey.sell(7, 3, D("97.50"), 2).encode(), "tqgrid1 c7 L4 BUY a3", "tqgrid1 c7 L0 BUY"]
    remembered = [parse(t) for t in texts]
    intent._KNOWN.clear()
    fresh = [parse(t) for t in texts]
    assert fresh == remembered
    assert [str(k.purchase_price) for k in fresh] == [str(k.purchase_price) for k in remembered]
    # Refusals are not remembered: a refused text is refused again.
    for _ in range(2):
        with pytest.raises(NotAnIntentKey):
            parse("tqgrid1 c7 L3 SELL 0.00")
    assert "tqgrid1 c7 L3 SELL 0.00" not in intent._KNOWN


def test_parse_memory_is_bounded() -> None:
    for n in range(intent._KNOWN_LIMIT + 10):
        parse(f"tqgrid1 c{n} L1 BUY")
    assert len(intent._KNOWN) <= intent._KNOWN_LIMIT
    assert parse("tqgrid1 c5 L1 BUY") == IntentKey.buy(5, 1)
