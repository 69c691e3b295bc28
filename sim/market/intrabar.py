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


def vertices(bar: Bar) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """Return the four prices the path visits in order: open, first extreme, second extreme, close."""
    if bar.close >= bar.open:
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


def bar_prints(bar: Bar, n: int) -> list[Print]:
    """Expand ``bar`` into ``n`` prints along the intrabar path (see the module docstring)."""
    idx = vertex_indices(n)
    verts = vertices(bar)
    prices: list[Decimal] = []
    for leg in range(3):
        start_i, end_i = idx[leg], idx[leg + 1]
        start_p, end_p = verts[leg], verts[leg + 1]
        span = end_i - start_i
        for i in range(start_i, end_i):
            if i == start_i:
                prices.append(start_p)
                continue
            p = to_cent(start_p + (end_p - start_p) * (i - start_i) / span)
            prices.append(min(bar.high, max(bar.low, p)))
    prices.append(verts[3])
    sizes = print_sizes(bar.volume, n)
    return [Print(bar.ts_ns + (i * BAR_NS) // n, prices[i], sizes[i]) for i in range(n)]
