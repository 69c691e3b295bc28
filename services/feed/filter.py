"""The bad-print filter: decides, print by print, whether a trade is plausible enough to publish. Pure.

A print is dropped when its price is not a number, is zero or negative, lies more than ``jump_band`` (a fraction)
away from the last good print, or is stamped earlier than the last good print. Equal timestamps are fine: many
prints share one.

A real move can exceed the band (an opening gap, a halt) and a replay that starts over goes back in time; a filter
that only ever compares with the last good print would then drop everything for ever. So a run of ``confirm``
rejected prints in a row that agree with each other (each within the band of the one before, time not going back)
is taken as the new truth: the print that completes the run is accepted and becomes the reference. A lone bad print
or a few scattered ones never form such a run.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum


class DropReason(StrEnum):
    """Why a print was not published (also the keys of the drop counters)."""

    NOT_A_NUMBER = "not_a_number"
    NON_POSITIVE = "non_positive"
    JUMP = "jump"
    OUT_OF_ORDER = "out_of_order"
    # Set by the service, not by this filter: a payload that does not parse, or a full hand-off queue.
    MALFORMED = "malformed"
    OVERFLOW = "overflow"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The filter's answer for one print: ``reason`` is None when it is accepted."""

    reason: DropReason | None = None
    # True when this print was accepted as a new level after a confirming run (see the module docstring).
    reanchored: bool = False

    @property
    def accepted(self) -> bool:
        return self.reason is None


ACCEPT = Verdict()


@dataclass(frozen=True, slots=True)
class _Mark:
    price: Decimal
    ts_ns: int


class PrintFilter:
    """Stateful judge of a stream of prints: the last good print, the run of rejects, the counters."""

    def __init__(self, jump_band: Decimal, confirm: int) -> None:
        if not jump_band > 0:
            raise ValueError(f"feed.jump_band must be a positive fraction (e.g. 0.05), was {jump_band}")
        if confirm < 2:
            raise ValueError(f"feed.jump_confirm must be at least 2 (a single print never moves the level), was {confirm}")
        self._band = jump_band
        self._confirm = confirm
        self._last_good: _Mark | None = None
        self._run_last: _Mark | None = None
        self._run_length = 0
        self.accepted = 0
        self.dropped: Counter[DropReason] = Counter()

    @property
    def last_good_price(self) -> Decimal | None:
        return None if self._last_good is None else self._last_good.price

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def count_drop(self, reason: DropReason) -> None:
        """Count a print the service dropped before it reached the filter (malformed, overflow)."""
        self.dropped[reason] += 1

    def check(self, price: Decimal, ts_ns: int) -> Verdict:
        """Judge one print, update the reference and the counters, and say whether to publish it."""
        if not price.is_finite():
            return self._drop(DropReason.NOT_A_NUMBER)
        if price <= 0:
            return self._drop(DropReason.NON_POSITIVE)
        mark = _Mark(price, ts_ns)
        last = self._last_good
        if last is None:
            return self._accept(mark)
        if ts_ns < last.ts_ns:
            reason = DropReason.OUT_OF_ORDER
        elif self._beyond_band(price, last.price):
            reason = DropReason.JUMP
        else:
            return self._accept(mark)
        if self._extends_run(mark):
            self._run_length += 1
        else:
            self._run_length = 1
        self._run_last = mark
        if self._run_length >= self._confirm:
            return self._accept(mark, reanchored=True)
        return self._drop(reason)

    def _beyond_band(self, price: Decimal, reference: Decimal) -> bool:
        return abs(price - reference) > reference * self._band

    def _extends_run(self, mark: _Mark) -> bool:
        prev = self._run_last
        return (
            prev is not None
            and self._run_length > 0
            and mark.ts_ns >= prev.ts_ns
            and not self._beyond_band(mark.price, prev.price)
        )

    def _accept(self, mark: _Mark, reanchored: bool = False) -> Verdict:
        self._last_good = mark
        self._run_last = None
        self._run_length = 0
        self.accepted += 1
        return Verdict(reanchored=True) if reanchored else ACCEPT

    def _drop(self, reason: DropReason) -> Verdict:
        self.dropped[reason] += 1
        return Verdict(reason)
