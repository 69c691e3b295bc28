"""Alpaca trade messages -> proto ``Tick``: the one place venue data becomes our data (parsing at the edge). Pure.

The stream runs alpaca-py with ``raw_data=True``: a trade reaches us as the wire map
``{"T": "t", "S": symbol, "p": price, "s": size, "t": msgpack Timestamp, ...}``. The raw form keeps the exchange
time's nanoseconds (alpaca-py's pydantic model truncates them to microseconds) and skips a model build per print.

Prices arrive as msgpack floats; ``Decimal(repr(float))`` gives back the decimal the venue sent (repr is the shortest
string that round-trips), so 97.02 stays 97.02. The tick keeps the exact print price; whoever decides an order
rounds it half-up to the cent. NaN and infinities pass through as Decimal NaN/Infinity for the filter to judge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from proto.messages import Tick

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class MalformedTrade(ValueError):
    """A trade message that cannot be read; the message says which field and what it was."""


@dataclass(frozen=True, slots=True)
class TradePrint:
    """One trade as the feed sees it, before the filter judges it."""

    symbol: str
    price: Decimal
    size: int
    exchange_ts_ns: int


def trade_from_raw(raw: Mapping[str, Any]) -> TradePrint:
    """Read a raw Alpaca trade map; raise MalformedTrade naming the bad field."""
    if not isinstance(raw, Mapping):
        raise MalformedTrade(f"trade message is a {type(raw).__name__}, not a map")
    symbol = raw.get("S")
    if not isinstance(symbol, str) or not symbol:
        raise MalformedTrade(f"trade field 'S' (symbol) must be a non-empty string, was {symbol!r}")
    return TradePrint(
        symbol=symbol,
        price=_price(raw.get("p")),
        size=_size(raw.get("s")),
        exchange_ts_ns=_timestamp_ns(raw.get("t")),
    )


def to_tick(trade: TradePrint, receive_ts_ns: int, seq: int, now_ns: int) -> Tick:
    """The proto message for an accepted print; ``seq`` is the feed's own count of published ticks."""
    return Tick(
        ts_ns=now_ns,
        symbol=trade.symbol,
        price=trade.price,
        size=trade.size,
        exchange_ts_ns=trade.exchange_ts_ns,
        receive_ts_ns=receive_ts_ns,
        seq=seq,
    )


def _price(value: object) -> Decimal:
    # bool is an int subclass; a True price is garbage, not 1.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedTrade(f"trade field 'p' (price) must be a number, was {value!r}")
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def _size(value: object) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise MalformedTrade(f"trade field 's' (size) must be a positive whole number of shares, was {value!r}")
    return value


def _timestamp_ns(value: object) -> int:
    # msgpack.Timestamp (what the wire carries) without importing msgpack here: it has to_unix_nano().
    to_unix_nano = getattr(value, "to_unix_nano", None)
    if callable(to_unix_nano):
        ns = to_unix_nano()
        if isinstance(ns, int):
            return ns
    if isinstance(value, datetime) and value.tzinfo is not None:
        return (value - _EPOCH) // _MICROSECOND * 1000
    raise MalformedTrade(f"trade field 't' (time) must be a msgpack timestamp, was {value!r}")
