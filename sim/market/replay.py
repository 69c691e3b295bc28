"""The `replay` source: a minute-bar file played as trade prints along the intrabar path.

``start`` seeks: the replay begins with the first print at or after it (the bar containing ``start`` is played from
there). With ``loop``, the file plays again and again, each pass moved forward by a whole number of weeks (so
weekdays and the time of day stay true) and its prices scaled so that it opens where the previous pass closed: a
looped replay never jumps, which a feed's plausibility band would reject.

Every price is rounded half-up to the cent (TQQQ's tick) before it is printed: the file has a few sub-penny
prints (e.g. 51.4135), and the stream and the broker must see the very same prices (the broker trades in cents).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from sim.market.intrabar import BAR_NS, Bar, bar_prints, vertex_indices
from sim.market.prints import NS_PER_SECOND, Print, to_cent
from sim.market.timefmt import iso_utc

WEEK_NS = 7 * 86_400 * NS_PER_SECOND


class ReplaySource:
    """Iterate the prints of ``bars`` (see the module docstring); keeps how far it has got for `status`."""

    name = "replay"

    def __init__(
        self,
        bars: list[Bar],
        prints_per_bar: int,
        start_ns: int | None = None,
        loop: bool = False,
        label: str = "",
    ) -> None:
        if not bars:
            raise ValueError("a replay needs at least one bar")
        vertex_indices(prints_per_bar)  # refuses too few prints per bar before the first print
        self.bars = bars
        self.prints_per_bar = prints_per_bar
        self.loop = loop
        self.label = label
        self.first_index = self._seek(start_ns)
        self.skip_before = start_ns  # prints of the first pass played that are earlier than this are skipped
        span = bars[-1].ts_ns + BAR_NS - bars[0].ts_ns
        self.period_ns = -(-span // WEEK_NS) * WEEK_NS  # whole weeks, rounded up
        self.pass_number = 0
        self.bar_index = self.first_index
        self.factor = Decimal(1)
        self.current_bar: Bar | None = None

    def _seek(self, start_ns: int | None) -> int:
        if start_ns is None:
            return 0
        if start_ns >= self.bars[-1].ts_ns + BAR_NS:
            raise ValueError(
                f"sim.start {iso_utc(start_ns)} is after the last bar of {self.label or 'the file'} "
                f"({iso_utc(self.bars[-1].ts_ns)}); choose a start inside the file or leave it empty"
            )
        return self._bar_at(start_ns)

    def _bar_at(self, ts_ns: int) -> int:
        """Index of the bar that contains ``ts_ns`` (pass 0 times), else of the first bar after it."""
        starts = [b.ts_ns for b in self.bars]
        return max(0, bisect.bisect_right(starts, ts_ns) - 1)

    def resume_after(self, ts_ns: int) -> None:
        """Continue after ``ts_ns`` (a restarted sim picks up its market where the broker last saw it): the same
        pass, the same price scale, the first print later than ``ts_ns``. Call before iterating."""
        first_ts = self.bars[0].ts_ns
        if ts_ns < first_ts or (self.skip_before is not None and ts_ns < self.skip_before):
            return
        k = (ts_ns - first_ts) // self.period_ns
        if k and not self.loop:
            self.first_index = len(self.bars)  # the file is over: nothing left to play
            return
        factor = Decimal(1)
        for _ in range(k):  # the same chain of scales the passes would have taken
            factor = to_cent(self.bars[-1].close * factor) / self.bars[0].open
        self.pass_number, self.factor = k, factor
        self.first_index = self._bar_at(ts_ns - k * self.period_ns)
        self.bar_index = self.first_index
        self.skip_before = ts_ns + 1

    def __iter__(self) -> Iterator[Print]:
        first_pass = True
        while True:
            shift = self.pass_number * self.period_ns
            first = self.first_index if first_pass else 0
            skip_before = self.skip_before if first_pass else None
            for i in range(first, len(self.bars)):
                self.bar_index = i
                bar = self.bars[i].scaled(self.factor, shift)
                self.current_bar = bar
                for p in bar_prints(bar, self.prints_per_bar):
                    if skip_before is not None and p.ts_ns < skip_before:
                        continue
                    yield p
            first_pass = False
            if not self.loop:
                return
            last_close = self.current_bar.close if self.current_bar else to_cent(self.bars[-1].close * self.factor)
            self.factor = last_close / self.bars[0].open
            self.pass_number += 1

    def progress(self) -> dict[str, Any]:
        """Say how far the replay has got: pass, bar number, the bar's time, percent of the file."""
        total = len(self.bars)
        return {
            "file": self.label,
            "pass": self.pass_number + 1,
            "bar": self.bar_index + 1,
            "bars": total,
            "percent": round(100.0 * (self.bar_index + 1) / total, 2),
            "bar_time": iso_utc(self.current_bar.ts_ns) if self.current_bar else None,
            "price_factor": str(self.factor),
        }
