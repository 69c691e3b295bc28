"""The prints a backtest plays: bars along the sim's intrabar path, or a scripted list of prints. Pure.

A :class:`Segment` is a run of prints the backtest can index without building them all: a bar played as ``n``
prints (the sim's :class:`sim.market.intrabar.BarPath`, the very formula the paper broker's replay uses), or a
list of prints as given. It also says where its prices move monotonically (``runs``), so the loop can jump
straight to the first print that crosses an order's price instead of looking at every print.

The models (docs/backtest.md, "Prints from bars"):

- **Minute and hourly bars**: the sim's path: open, the extreme against the bar's direction, the other extreme,
  close; ``n`` prints spread evenly over the bar, straight lines between the vertices, to the cent.
- **Daily bars**: the same path over the day's regular session (09:30-16:00 US/Eastern, 13:00 on an early close),
  with ``n`` prints; which extreme comes first is a coin flip seeded by ``(seed, date)`` (the rule the sim uses for
  minute bars always buys the low of an up day before selling its high, which flatters a grid). The flip depends
  only on the seed and the date, so a day plays the same whatever range is backtested.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Protocol

from core import sessions
from sim.market.intrabar import Bar, BarPath
from sim.market.prints import Print

NS_PER_SECOND = 1_000_000_000
MINUTE_NS = 60 * NS_PER_SECOND
HOUR_NS = 60 * MINUTE_NS
DAY_NS = 24 * HOUR_NS
# Daily bars of a day the session calendar does not know (a data vendor's extra day): played over these hours.
FALLBACK_OPEN = sessions.REGULAR_OPEN
FALLBACK_CLOSE = sessions.REGULAR_CLOSE


class Segment(Protocol):
    """A run of prints indexed 0 .. n-1, in time order."""

    n: int

    def price(self, i: int) -> Decimal: ...

    def time(self, i: int) -> int: ...

    def size(self, i: int) -> int: ...

    def runs(self) -> tuple[tuple[int, int], ...]:
        """Index ranges ``(a, b)``, inclusive, covering 0 .. n-1 in order, over which the price is monotone."""
        ...

    def extremes(self) -> tuple[Decimal, Decimal]:
        """The lowest and the highest price of the segment."""
        ...

    def turns(self) -> list[tuple[int, Decimal]]:
        """(time, price) of the prints where the runs end, in order (where the path turns): the drawdown's samples."""
        ...


class BarSegment:
    """One bar as ``n`` prints along the sim's intrabar path."""

    __slots__ = ("path", "n", "_base", "_extra", "_runs")

    def __init__(self, bar: Bar, n: int, duration_ns: int, low_first: bool | None = None) -> None:
        self.path = BarPath(bar, n, duration_ns, low_first)
        self.n = n
        # The volume shared out as the sim does (print_sizes), without building the list.
        self._base, self._extra = divmod(bar.volume, n)
        idx = self.path.idx
        self._runs = ((idx[0], idx[1]), (idx[1], idx[2]), (idx[2], idx[3]))

    @property
    def bar(self) -> Bar:
        return self.path.bar

    def price(self, i: int) -> Decimal:
        return self.path.price(i)

    def time(self, i: int) -> int:
        return self.path.time(i)

    def size(self, i: int) -> int:
        return max(1, self._base + (1 if i < self._extra else 0))

    def runs(self) -> tuple[tuple[int, int], ...]:
        return self._runs

    def extremes(self) -> tuple[Decimal, Decimal]:
        return self.path.bar.low, self.path.bar.high

    def turns(self) -> list[tuple[int, Decimal]]:
        path = self.path
        return [(path.time(i), price) for i, price in zip(path.idx, path.verts, strict=True)]


class PrintSegment:
    """Prints exactly as given (a scripted path, a test's prices); every print is a run of its own."""

    __slots__ = ("prints", "n")

    def __init__(self, prints: Sequence[Print]) -> None:
        if not prints:
            raise ValueError("a print segment needs at least one print")
        self.prints = list(prints)
        self.n = len(self.prints)

    def price(self, i: int) -> Decimal:
        return self.prints[i].price

    def time(self, i: int) -> int:
        return self.prints[i].ts_ns

    def size(self, i: int) -> int:
        return self.prints[i].size

    def runs(self) -> tuple[tuple[int, int], ...]:
        return tuple((i, i) for i in range(self.n))

    def extremes(self) -> tuple[Decimal, Decimal]:
        prices = [p.price for p in self.prints]
        return min(prices), max(prices)

    def turns(self) -> list[tuple[int, Decimal]]:
        return [(p.ts_ns, p.price) for p in self.prints]


# --------------------------------------------------------------------------------------------- bar models


@dataclass(frozen=True, slots=True)
class PathModel:
    """How bars become prints: prints per bar for each bar length, and the order of a daily bar's extremes.

    ``extremes``: "rule" = the sim's rule for every bar (the extreme against the bar's direction first);
    "seeded" = a coin flip per bar seeded by (seed, the bar's date and time); "auto" = the rule for intraday bars,
    seeded for daily bars.
    """

    minute_prints: int = 10
    hour_prints: int = 60
    day_prints: int = 390
    extremes: str = "auto"
    seed: int = 1

    def __post_init__(self) -> None:
        for name in ("minute_prints", "hour_prints", "day_prints"):
            value = getattr(self, name)
            if type(value) is not int or value < 4:
                raise ValueError(f"backtest.{name} must be a whole number of prints >= 4 (open, high, low, close), "
                                 f"was {value!r}")
        if self.extremes not in ("auto", "rule", "seeded"):
            raise ValueError(f"backtest.extremes must be 'auto', 'rule' or 'seeded', was {self.extremes!r}")


def _seeded_low_first(seed: int, ts_ns: int) -> bool:
    # random.Random with a string seed is stable across runs and Python versions (it hashes with SHA-512).
    return random.Random(f"gridbot-backtest/{seed}/{ts_ns}").random() < 0.5


def _low_first(model: PathModel, bar: Bar, daily: bool) -> bool | None:
    seeded = model.extremes == "seeded" or (model.extremes == "auto" and daily)
    return _seeded_low_first(model.seed, bar.ts_ns) if seeded else None


def intraday_segment(bar: Bar, bar_ns: int, model: PathModel) -> BarSegment:
    """A minute (or any intraday) bar starting at ``bar.ts_ns`` and lasting ``bar_ns``."""
    n = model.minute_prints if bar_ns <= MINUTE_NS else model.hour_prints
    return BarSegment(bar, n, bar_ns, _low_first(model, bar, daily=False))


def regular_session(day: date) -> tuple[int, int, bool]:
    """The regular session of ``day`` as (open ns, close ns, known to the calendar)."""
    td = sessions.trading_day(day)
    if td is not None:
        return td.regular_open_ns, td.regular_close_ns, True
    return _eastern_ns(day, FALLBACK_OPEN), _eastern_ns(day, FALLBACK_CLOSE), False


def _eastern_ns(day: date, t: time) -> int:
    return int(datetime.combine(day, t, tzinfo=sessions.EASTERN).timestamp()) * NS_PER_SECOND


def daily_segment(day: date, bar: Bar, model: PathModel) -> BarSegment:
    """A daily bar played over the regular session of ``day`` (``bar.ts_ns`` is ignored: the session sets it)."""
    open_ns, close_ns, _ = regular_session(day)
    placed = Bar(open_ns, bar.open, bar.high, bar.low, bar.close, bar.volume)
    return BarSegment(placed, model.day_prints, close_ns - open_ns, _low_first(model, placed, daily=True))


# --------------------------------------------------------------------------------------------- jumping ahead


def first_where(seg: Segment, lo: int, hi: int, pred: Callable[[int], bool]) -> int | None:
    """The first index in ``lo .. hi`` where ``pred`` holds, for a ``pred`` false-then-true over the range."""
    if lo > hi or not pred(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if pred(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


@dataclass(frozen=True, slots=True)
class Watch:
    """What makes a print worth a look: a price at or below ``buy_at``, at or above ``sell_at``, a time at or after
    ``due_ns``, or anything at all (``every``)."""

    buy_at: Decimal | None = None
    sell_at: Decimal | None = None
    due_ns: int | None = None
    every: bool = False

    def hits(self, price: Decimal, ts_ns: int) -> bool:
        return (
            self.every
            or (self.buy_at is not None and price <= self.buy_at)
            or (self.sell_at is not None and price >= self.sell_at)
            or (self.due_ns is not None and ts_ns >= self.due_ns)
        )

    def misses_range(self, low: Decimal, high: Decimal, end_ns: int) -> bool:
        """True when no print with a price in ``[low, high]`` at or before ``end_ns`` can hit."""
        return not (
            self.every
            or (self.buy_at is not None and low <= self.buy_at)
            or (self.sell_at is not None and high >= self.sell_at)
            or (self.due_ns is not None and end_ns >= self.due_ns)
        )


def next_hit(seg: Segment, start: int, a: int, b: int, watch: Watch) -> int | None:
    """The first print in ``start .. b`` of the monotone run ``a .. b`` that ``watch`` hits, or None.

    On a falling run "price <= buy_at" holds from some print on (a suffix) and "price >= sell_at" up to some
    print (a prefix); on a rising run the other way round; "time >= due" is always a suffix. Prefixes are decided
    by their first print, suffixes by bisection: a few price evaluations per run instead of one per print.
    """
    if start > b:
        return None
    if watch.every:
        return start
    rising = seg.price(b) >= seg.price(a)
    found: list[int] = []
    buy_at, sell_at, due = watch.buy_at, watch.sell_at, watch.due_ns
    if buy_at is not None:
        if rising:
            if seg.price(start) <= buy_at:
                found.append(start)
        else:
            hit = first_where(seg, start, b, lambda i: seg.price(i) <= buy_at)
            if hit is not None:
                found.append(hit)
    if sell_at is not None:
        if rising:
            hit = first_where(seg, start, b, lambda i: seg.price(i) >= sell_at)
            if hit is not None:
                found.append(hit)
        elif seg.price(start) >= sell_at:
            found.append(start)
    if due is not None:
        hit = first_where(seg, start, b, lambda i: seg.time(i) >= due)
        if hit is not None:
            found.append(hit)
    return min(found) if found else None
