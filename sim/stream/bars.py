"""Minute bars from the prints a channel streams, for clients that subscribe to bars. Pure."""

from __future__ import annotations

from sim.market.prints import NS_PER_SECOND, Print
from sim.stream.wire import MinuteBar

MINUTE_NS = 60 * NS_PER_SECOND


class BarBuilder:
    """Accumulate prints into the current minute; a print of a later minute completes the bar (as Alpaca sends
    a minute bar just after its minute ends)."""

    def __init__(self) -> None:
        self._bar: MinuteBar | None = None

    def add(self, p: Print) -> MinuteBar | None:
        """Add a print; return the previous minute's bar if this print starts a new minute."""
        minute = p.ts_ns - p.ts_ns % MINUTE_NS
        bar = self._bar
        if bar is None or minute != bar.ts_ns:
            self._bar = MinuteBar(minute, p.price, p.price, p.price, p.price, p.size, 1, p.price * p.size)
            return bar
        self._bar = MinuteBar(
            bar.ts_ns,
            bar.open,
            max(bar.high, p.price),
            min(bar.low, p.price),
            p.price,
            bar.volume + p.size,
            bar.count + 1,
            bar.notional + p.price * p.size,
        )
        return None

    def flush(self, now_ns: int) -> MinuteBar | None:
        """Return the current bar if its minute is over at ``now_ns`` (the clock moved on without a print)."""
        bar = self._bar
        if bar is not None and now_ns >= bar.ts_ns + MINUTE_NS:
            self._bar = None
            return bar
        return None
