"""The deterministic intrabar path: how one minute bar becomes several trade prints.

A bar only says where the minute opened, how far it went each way and where it closed; the broker and the stream
need the prints in between. The model (documented in docs/sim.md, "The market and the stream"):

- The path visits four vertices: open, the two extremes, close. The extreme *against* the bar's direction comes
  first (an up bar, close >= open, goes open -> low -> high -> close; a down bar open -> high -> low -> close), the
  usual convention of bar-based backtesters, because it is the order that makes both extremes reachable in turn.
- ``n`` prints (n >= 4) are spread evenly over the minute: print i at ``bar start + i * 60 s / n``. The vertices fall
  on prints 0, (n-1)//3, 2(n-1)//3 and n-1, so the open, high, low and close are each printed exactly as the bar
  has them (the replay rounds a bar to the cent first); the prints between two vertices are linear interpolations, rounded half-up to the cent and kept inside
  [low, high].
- The bar's volume is shared out evenly (the first ``volume % n`` prints get one share more); every print has at
  least one share, so a bar with fewer shares than prints reports a little more volume than the file.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sim.market.prints import NS_PER_SECOND, Print, to_cent

BAR_NS = 60 * NS_PER_SECOND
MIN_PRINTS_PER_BAR = 4


@dataclass(frozen=True, slots=True)
class Bar:
    """One minute bar: start of the minute (UTC ns), open, high, low, close, volume in shares."""

    ts_ns: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: int

    def scaled(self, factor: Decimal, shift_ns: int) -> Bar:
        """Return this bar moved by ``shift_ns``, its prices multiplied by ``factor`` and rounded half-up to the
        cent (rounding is monotonic, so low <= open, close <= high still holds)."""
        return Bar(
            self.ts_ns + shift_ns,
            to_cent(self.open * factor),
            to_cent(self.high * factor),
            to_cent(self.low * factor),
            to_cent(self.close * factor),
            self.volume,
        )


def vertices(bar: Bar, low_first: bool | None = None) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """Return the four prices the path visits in order: open, first extreme, second extreme, close.

    ``low_first`` overrides the rule (the extreme against the bar's direction first); the backtester's seeded model
    for daily bars uses it.
    """
    if low_first is None:
        low_first = bar.close >= bar.open
    if low_first:
        return bar.open, bar.low, bar.high, bar.close
    return bar.open, bar.high, bar.low, bar.close


def vertex_indices(n: int) -> tuple[int, int, int, int]:
    """Return the print indices where the four vertices fall for ``n`` prints per bar."""
    if n < MIN_PRINTS_PER_BAR:
        raise ValueError(
            f"prints per bar must be at least {MIN_PRINTS_PER_BAR} (open, high, low, close), was {n}"
        )
    return 0, (n - 1) // 3, (2 * (n - 1)) // 3, n - 1


def print_sizes(volume: int, n: int) -> list[int]:
    """Share ``volume`` over ``n`` prints as evenly as possible, at least one share each."""
    base, extra = divmod(volume, n)
    return [max(1, base + (1 if i < extra else 0)) for i in range(n)]


class BarPath:
    """One bar's ``n`` prints, each computed on demand (the backtester jumps to the prints that matter).

    ``duration_ns`` is the bar's length (a minute by default; the backtester also plays hourly and daily bars).
    """

    __slots__ = ("bar", "n", "duration_ns", "verts", "idx")

    def __init__(self, bar: Bar, n: int, duration_ns: int = BAR_NS, low_first: bool | None = None) -> None:
        self.bar = bar
        self.n = n
        self.duration_ns = duration_ns
        self.idx = vertex_indices(n)
        self.verts = vertices(bar, low_first)

    def price(self, i: int) -> Decimal:
        """The price of print ``i`` (0 .. n-1): a vertex, or the straight line between two, to the cent."""
        idx, verts = self.idx, self.verts
        if i >= idx[3]:
            return verts[3]
        leg = 0 if i < idx[1] else 1 if i < idx[2] else 2
        start_i, start_p = idx[leg], verts[leg]
        if i == start_i:
            return start_p
        end_p = verts[leg + 1]
        p = to_cent(start_p + (end_p - start_p) * (i - start_i) / (idx[leg + 1] - start_i))
        return min(self.bar.high, max(self.bar.low, p))

    def time(self, i: int) -> int:
        """When print ``i`` happens (UTC ns): spread evenly over the bar."""
        return self.bar.ts_ns + (i * self.duration_ns) // self.n


def bar_prints(bar: Bar, n: int, duration_ns: int = BAR_NS) -> list[Print]:
    """Expand ``bar`` into ``n`` prints along the intrabar path (see the module docstring)."""
    path = BarPath(bar, n, duration_ns)
    sizes = print_sizes(bar.volume, n)
    return [Print(path.time(i), path.price(i), sizes[i]) for i in range(n)]
