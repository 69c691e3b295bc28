"""The grid's price math (DESIGN section 4, normative): Decimal, rounded half-up to the cent at every step.

- Level-0 limit: ``round(price x (1 + level0_buffer))``.
- Triggers: ``trigger(0) = anchor`` (Level 0's average fill, ``P0``), ``trigger(1) = round(P0 x (1 - step))``,
  ``trigger(n) = round(trigger(n-1) x (1 - step))``: 100.00 -> 99.00, 98.01, 97.03, 96.06, 95.10.
- Sell target: ``round(purchase_price x (1 + sell_markup))``.
- The buy queue: which levels must have a live BUY, given the levels held.

The factors come from config (``strategy.level0_buffer``, ``step``, ``sell_markup``, ``queued_levels``); the
defaults here are the user's values so that a caller that forgets one still trades the user's strategy.
Floats never enter: every function refuses one.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation
from functools import lru_cache

# Our own arithmetic context: results must not depend on whatever a caller did to the thread's decimal context.
_CTX = Context(prec=34, rounding=ROUND_HALF_UP)
# Chains are computed and cached in blocks of this many levels: a cycle computes its triggers down to the block of
# its deepest level only, and a cycle that goes deeper computes just the next block (the strategy asks at every
# decision, and most cycles end within a few dozen levels).
_CHAIN_BLOCK = 16

CENT = Decimal("0.01")
# Far above any share price; below it every product stays exact in the 34-digit context.
PRICE_CEILING = Decimal("1E12")
LEVEL0_BUFFER = Decimal("0.0025")
STEP = Decimal("0.01")
SELL_MARKUP = Decimal("0.01")
QUEUED_LEVELS = 3


def to_cent(value: Decimal) -> Decimal:
    """Round ``value`` half-up to the cent (TQQQ's tick)."""
    return _decimal(value, "price").quantize(CENT, rounding=ROUND_HALF_UP, context=_CTX)


def parse_factor(text: str, name: str) -> Decimal:
    """Turn a config factor like ``"0.0025"`` into a Decimal in [0, 1); errors name the config key ``name``."""
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, AttributeError):
        raise ValueError(f'{name} must be a decimal number in quotes like "0.01", was {text!r}') from None
    if not value.is_finite() or not 0 <= value < 1:
        raise ValueError(
            f'{name} must be a fraction from 0 up to (not including) 1, like "0.01", was {text!r}'
        )
    return value


def parse_price(text: str, name: str = "price") -> Decimal:
    """Turn a user's price like ``"97.02"`` into a positive Decimal (kept exact); errors name ``name``."""
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, AttributeError):
        raise ValueError(f"{name} must be a number like 97.02, was {text!r}") from None
    if not value.is_finite() or not CENT <= value < PRICE_CEILING:
        raise ValueError(f"{name} must be a positive price like 97.02 (at least 0.01), was {text!r}")
    return value


def level0_limit(price: Decimal, buffer: Decimal = LEVEL0_BUFFER) -> Decimal:
    """The Level-0 BUY limit for a tick at ``price``: a little above it, so it fills outside regular hours too."""
    return to_cent(_CTX.multiply(_positive(price, "price"), _CTX.add(1, _fraction(buffer, "level0_buffer"))))


def sell_target(purchase_price: Decimal, markup: Decimal = SELL_MARKUP) -> Decimal:
    """The SELL limit of a lot bought at ``purchase_price`` (its BUY's average fill, any precision)."""
    factor = _CTX.add(1, _fraction(markup, "sell_markup"))
    return to_cent(_CTX.multiply(_positive(purchase_price, "purchase_price"), factor))


def trigger_chain(anchor: Decimal, levels: int, step: Decimal = STEP) -> tuple[Decimal, ...]:
    """Return ``(trigger(0), ..., trigger(levels-1))`` for a cycle anchored at ``anchor``.

    ``trigger(0)`` is the anchor itself, exactly as given (Level 0's average fill: it is the lot's purchase price,
    not a limit); every later trigger is a cent price. Cached per (anchor, step): the strategy asks on every
    decision and the anchor changes once a cycle. Below $0.51 a 1% step is less than half a cent and the chain stops
    falling; at TQQQ's prices (88 levels fall about 58%) that never happens.
    """
    anchor = _positive(anchor, "anchor")
    if type(levels) is not int or levels < 1:
        raise ValueError(f"levels must be a whole number >= 1, was {levels!r}")
    step = _fraction(step, "step")
    # The tail is all cent prices, so it is the same for Decimal('100') and Decimal('100.00'), which share a cache
    # slot; the head is this caller's own anchor object.
    return (anchor, *_chain_tail(anchor, step, _block(levels))[: levels - 1])


def triggers(anchor: Decimal, levels: Iterable[int], step: Decimal = STEP) -> tuple[Decimal, ...]:
    """``trigger(anchor, level, step)`` for each of ``levels``, in their order.

    The strategy asks for its few queued levels at every decision: they are looked up in the cached chain, not copied
    out of a whole chain down to the deepest of them.
    """
    anchor = _positive(anchor, "anchor")
    wanted = tuple(levels)
    for level in wanted:
        if type(level) is not int or level < 0:
            raise ValueError(f"level must be a whole number >= 0, was {level!r}")
    step = _fraction(step, "step")
    tail = _chain_tail(anchor, step, _block(max(wanted, default=0) + 1))
    return tuple([anchor if level == 0 else tail[level - 1] for level in wanted])


def _block(levels: int) -> int:
    """The length of the cached tail that holds a chain of ``levels`` levels (a whole number of blocks)."""
    return -(-(levels - 1) // _CHAIN_BLOCK) * _CHAIN_BLOCK


@lru_cache(maxsize=256)
def _chain_tail(anchor: Decimal, step: Decimal, length: int) -> tuple[Decimal, ...]:
    """trigger(1) .. trigger(length), ``length`` a whole number of blocks: the blocks after ``anchor``, joined."""
    tail: list[Decimal] = []
    price = anchor
    while len(tail) < length:
        block = _next_triggers(price, step)
        tail.extend(block)
        price = block[-1]
    return tuple(tail)


@lru_cache(maxsize=1024)
def _next_triggers(price: Decimal, step: Decimal) -> tuple[Decimal, ...]:
    """The block of triggers after a trigger at ``price``, each rounded before the next is computed (the user's rule)."""
    factor = _CTX.subtract(1, step)
    block: list[Decimal] = []
    for _ in range(_CHAIN_BLOCK):
        price = _CTX.multiply(price, factor).quantize(CENT, rounding=ROUND_HALF_UP, context=_CTX)
        block.append(price)
    return tuple(block)


def trigger(anchor: Decimal, level: int, step: Decimal = STEP) -> Decimal:
    """The BUY trigger (= limit) of ``level`` in a cycle anchored at ``anchor``; level 0 gives the anchor."""
    if type(level) is not int or level < 0:
        raise ValueError(f"level must be a whole number >= 0, was {level!r}")
    return trigger_chain(anchor, level + 1, step)[level]


def next_level(held_levels: Iterable[int]) -> int:
    """The level the grid buys next: ``max(held) + 1``, or 0 when nothing is held (a new Level 0)."""
    return max(held_levels, default=-1) + 1


def buy_queue(held_levels: Iterable[int], lot_levels: int, queued: int = QUEUED_LEVELS) -> tuple[int, ...]:
    """The levels that must have a live grid BUY: ``next_level .. next_level + queued - 1`` that the map has.

    Empty when nothing is held: without a Level-0 lot there is no anchor, so no trigger exists; Level 0 itself is
    not queued but placed on a fresh tick (DESIGN section 4). Levels inside a gap of the held set (held 0, 1, 3)
    are not queued: the rule is ``max(held) + 1``, so level 2 is bought again only after level 3 is sold.
    """
    held = list(held_levels)
    for level in held:
        if type(level) is not int or not 0 <= level < lot_levels:
            raise ValueError(f"held level {level!r} is not a level of the lot map (0..{lot_levels - 1})")
    if type(queued) is not int or queued < 0:
        raise ValueError(f"queued_levels must be a whole number >= 0, was {queued!r}")
    if not held:
        return ()
    first = next_level(held)
    return tuple(range(first, min(first + queued, lot_levels)))


def _decimal(value: Decimal, name: str) -> Decimal:
    # bool and float are refused: a float has already rounded, and the grid decides orders from these numbers.
    if not isinstance(value, Decimal):
        raise TypeError(f"{name} must be a Decimal, was {type(value).__name__} {value!r}")
    return value


def _positive(value: Decimal, name: str) -> Decimal:
    value = _decimal(value, name)
    # Below a cent a price rounds to a zero limit; TQQQ's tick is a cent.
    if not value.is_finite() or not CENT <= value < PRICE_CEILING:
        raise ValueError(f"{name} must be a positive price of at least 0.01, was {value}")
    return value


def _fraction(value: Decimal, name: str) -> Decimal:
    value = _decimal(value, name)
    if not value.is_finite() or not 0 <= value < 1:
        raise ValueError(f"{name} must be a fraction from 0 up to (not including) 1, was {value}")
    return value
