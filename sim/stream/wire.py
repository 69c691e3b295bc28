"""Alpaca's market-data wire format, as alpaca-py 0.44 reads it: msgpack maps in msgpack arrays, one array a frame.

Pure: builds bytes, no sockets. Each data message is packed once (:func:`pack_trade` ...) and frames are assembled
by concatenating packed messages behind an array header (:func:`frame`), so a print fanned out to many clients is
packed only once. Field names and types are those of docs.alpaca.markets "real-time stock pricing data" and
alpaca-py's ``mappings.py``; times are msgpack Timestamps (ext type -1), which alpaca-py turns into aware datetimes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgpack

from sim.market.prints import CENT, Print, to_cent

# Error codes and texts of Alpaca's streaming API (docs: streaming-market-data, "Errors").
ERRORS = {
    400: "invalid syntax",
    401: "not authenticated",
    402: "auth failed",
    403: "already authenticated",
    404: "auth timeout",
    405: "symbol limit exceeded",
    406: "connection limit exceeded",
    407: "slow client",
    409: "insufficient subscription",
    410: "invalid subscribe action for this feed",
    500: "internal error",
}

TAPE = "C"  # TQQQ is Nasdaq-listed: UTP tape C
TRADE_CONDITIONS = ["@"]  # regular sale
QUOTE_CONDITIONS = ["R"]  # regular two-sided quote
QUOTE_SIZE = 100  # shares on each side of the synthetic quote


def frame(packed: list[bytes]) -> bytes:
    """Concatenate packed messages into one msgpack array: the body of one websocket frame."""
    n = len(packed)
    if n < 16:
        header = bytes((0x90 | n,))
    elif n < 0x10000:
        header = b"\xdc" + struct.pack(">H", n)
    else:
        header = b"\xdd" + struct.pack(">I", n)
    return header + b"".join(packed)


def pack_messages(*messages: dict[str, Any]) -> bytes:
    """Pack control messages (dicts) as one frame."""
    return msgpack.packb(list(messages))


def error_message(code: int) -> dict[str, Any]:
    return {"T": "error", "code": code, "msg": ERRORS[code]}


CONNECTED = pack_messages({"T": "success", "msg": "connected"})


def _ts(ts_ns: int) -> msgpack.Timestamp:
    return msgpack.Timestamp.from_unix_nano(ts_ns)


def pack_trade(symbol: str, p: Print, trade_id: int, exchange: str) -> bytes:
    """Pack one trade message ("T": "t"); the price goes out as a float, as Alpaca sends it."""
    return msgpack.packb(
        {
            "T": "t",
            "S": symbol,
            "i": trade_id,
            "x": exchange,
            "p": float(p.price),
            "s": p.size,
            "c": TRADE_CONDITIONS,
            "t": _ts(p.ts_ns),
            "z": TAPE,
        }
    )


def quote_prices(price: Decimal) -> tuple[Decimal, Decimal]:
    """Return the synthetic (bid, ask) around a print: one cent either side of the print's cent."""
    mid = to_cent(price)
    return max(CENT, mid - CENT), mid + CENT


def pack_quote(symbol: str, p: Print, exchange: str) -> bytes:
    """Pack the synthetic quote that precedes a print ("T": "q")."""
    bid, ask = quote_prices(p.price)
    return msgpack.packb(
        {
            "T": "q",
            "S": symbol,
            "bx": exchange,
            "bp": float(bid),
            "bs": QUOTE_SIZE,
            "ax": exchange,
            "ap": float(ask),
            "as": QUOTE_SIZE,
            "c": QUOTE_CONDITIONS,
            "t": _ts(p.ts_ns),
            "z": TAPE,
        }
    )


@dataclass(frozen=True, slots=True)
class MinuteBar:
    """A minute bar built from the prints streamed in that minute."""

    ts_ns: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: int
    count: int
    notional: Decimal  # sum of price x size, for the VWAP

    @property
    def vwap(self) -> Decimal:
        return self.notional / self.volume if self.volume else self.close


def pack_bar(symbol: str, bar: MinuteBar) -> bytes:
    """Pack a minute bar ("T": "b"); alpaca-py requires n (trade count) and vw (VWAP)."""
    return msgpack.packb(
        {
            "T": "b",
            "S": symbol,
            "o": float(bar.open),
            "h": float(bar.high),
            "l": float(bar.low),
            "c": float(bar.close),
            "v": bar.volume,
            "t": _ts(bar.ts_ns),
            "n": bar.count,
            "vw": float(round(bar.vwap, 4)),
        }
    )
