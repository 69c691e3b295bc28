"""The stream's pure parts: frame assembly, minute bars from prints, the session rules."""

from __future__ import annotations

from decimal import Decimal

import msgpack
import pytest

from sim.market.prints import NS_PER_SECOND, Print
from sim.stream.bars import BarBuilder
from sim.stream.session import Policy, Session, handle
from sim.stream.wire import frame, pack_bar, pack_trade, quote_prices

T0 = 1_748_872_800_000_000_000
POLICY = Policy("K", "S")


@pytest.mark.parametrize("n", [0, 1, 15, 16, 65_535, 65_536])
def test_a_frame_of_prepacked_messages_is_one_msgpack_array(n: int) -> None:
    packed = [msgpack.packb({"i": i}) for i in range(n)]
    assert msgpack.unpackb(frame(packed)) == [{"i": i} for i in range(n)]


def test_a_trade_keeps_its_nanoseconds_on_the_wire() -> None:
    msg = msgpack.unpackb(pack_trade("TQQQ", Print(T0 + 123, Decimal("51.4135"), 3), 9, "V"))
    assert msg["t"].to_unix_nano() == T0 + 123 and msg["p"] == 51.4135 and msg["i"] == 9


def test_the_synthetic_quote_brackets_the_print_by_a_cent() -> None:
    assert quote_prices(Decimal("51.4135")) == (Decimal("51.40"), Decimal("51.42"))
    assert quote_prices(Decimal("0.01")) == (Decimal("0.01"), Decimal("0.02"))


def test_a_bar_is_completed_by_the_first_print_of_the_next_minute_or_by_the_clock() -> None:
    bars = BarBuilder()
    prints = [
        Print(T0, Decimal("10"), 100),
        Print(T0 + 20 * NS_PER_SECOND, Decimal("12"), 300),
        Print(T0 + 40 * NS_PER_SECOND, Decimal("9"), 100),
    ]
    assert [bars.add(p) for p in prints] == [None, None, None]
    done = bars.add(Print(T0 + 61 * NS_PER_SECOND, Decimal("11"), 1))
    assert done is not None
    assert (done.ts_ns, done.open, done.high, done.low, done.close, done.volume, done.count) == (
        T0,
        Decimal("10"),
        Decimal("12"),
        Decimal("9"),
        Decimal("9"),
        500,
        3,
    )
    assert done.vwap == Decimal("11")  # (10x100 + 12x300 + 9x100) / 500
    assert msgpack.unpackb(pack_bar("TQQQ", done))["vw"] == 11.0
    assert bars.flush(T0 + 119 * NS_PER_SECOND) is None
    assert bars.flush(T0 + 120 * NS_PER_SECOND).volume == 1


def test_the_session_rules_in_order() -> None:
    s = Session("iex")
    in_use = {"K"}
    assert handle(s, {"action": "auth", "key": "K", "secret": "S"}, POLICY, in_use.__contains__).close
    s = Session("iex")
    ok = handle(s, {"action": "auth", "key": "K", "secret": "S"}, POLICY, lambda k: False)
    assert ok.replies == [{"T": "success", "msg": "authenticated"}] and s.authenticated and s.key == "K"
    handle(s, {"action": "subscribe", "trades": ["*"], "quotes": ["TQQQ"]}, POLICY, lambda k: False)
    assert s.wants("trades", "ANY") and s.wants("quotes", "TQQQ") and not s.wants("bars", "TQQQ")
    handle(s, {"action": "unsubscribe", "quotes": ["TQQQ"]}, POLICY, lambda k: False)
    assert not s.wants("quotes", "TQQQ")
