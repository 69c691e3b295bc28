"""Raw Alpaca trade maps (as msgpack decodes them off the wire) -> TradePrint -> Tick."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgpack
import pytest

from proto import codec
from proto.messages import Tick
from services.feed.convert import MalformedTrade, to_tick, trade_from_raw

NS = 1_748_872_800_123_456_789  # 2025-06-02T14:00:00.123456789Z


def wire_trade(**changes: Any) -> dict[str, Any]:
    """A trade as alpaca-py hands it to a raw_data handler (packed and unpacked with msgpack), then ``changes``."""
    trade = {
        "T": "t", "S": "TQQQ", "i": 52983525029461, "x": "V", "p": 97.02, "s": 94,
        "c": ["@"], "t": msgpack.Timestamp.from_unix_nano(NS), "z": "C",
    }
    decoded = dict(msgpack.unpackb(msgpack.packb(trade)))
    decoded.update(changes)
    return decoded


def test_a_wire_trade_keeps_symbol_decimal_price_size_and_nanoseconds() -> None:
    trade = trade_from_raw(wire_trade())
    assert trade.symbol == "TQQQ"
    assert trade.price == Decimal("97.02") and str(trade.price) == "97.02"
    assert trade.size == 94
    assert trade.exchange_ts_ns == NS


@pytest.mark.parametrize("price, text", [(97.0213, "97.0213"), (120.7, "120.7"), (97, "97"), (0.1, "0.1")])
def test_prices_come_back_as_the_decimal_that_was_sent(price: float, text: str) -> None:
    assert str(trade_from_raw(wire_trade(p=price)).price) == text


def test_nan_passes_through_for_the_filter_to_judge() -> None:
    assert trade_from_raw(wire_trade(p=float("nan"))).price.is_nan()


def test_an_aware_datetime_is_accepted_to_the_microsecond() -> None:
    when = datetime(2025, 6, 2, 14, 0, 0, 123456, tzinfo=UTC)
    assert trade_from_raw(wire_trade(t=when)).exchange_ts_ns == 1_748_872_800_123_456_000


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"S": None}, "'S'"),
        ({"S": ""}, "'S'"),
        ({"p": "97.02"}, "'p'"),
        ({"p": True}, "'p'"),
        ({"p": None}, "'p'"),
        ({"s": 0}, "'s'"),
        ({"s": -5}, "'s'"),
        ({"s": 1.5}, "'s'"),
        ({"s": "94"}, "'s'"),
        ({"t": "2025-06-02T14:00:00Z"}, "'t'"),
        ({"t": 1748872800}, "'t'"),
        ({"t": datetime(2025, 6, 2, 14, 0)}, "'t'"),
    ],
)
def test_malformed_fields_are_named(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(MalformedTrade, match=field):
        trade_from_raw(wire_trade(**changes))


def test_a_missing_field_is_named() -> None:
    raw = wire_trade()
    del raw["p"]
    with pytest.raises(MalformedTrade, match="'p'"):
        trade_from_raw(raw)


def test_a_non_map_is_malformed() -> None:
    with pytest.raises(MalformedTrade, match="not a map"):
        trade_from_raw(["t", "TQQQ"])  # type: ignore[arg-type]


def test_a_whole_float_size_is_a_whole_number() -> None:
    assert trade_from_raw(wire_trade(s=100.0)).size == 100


def test_to_tick_fills_every_field_and_survives_the_codec() -> None:
    tick = to_tick(trade_from_raw(wire_trade()), receive_ts_ns=NS + 5, seq=7, now_ns=NS + 9)
    assert tick == Tick(
        ts_ns=NS + 9, symbol="TQQQ", price=Decimal("97.02"), size=94,
        exchange_ts_ns=NS, receive_ts_ns=NS + 5, seq=7,
    )
    assert codec.decode(codec.encode(tick)) == tick
