"""The intent key: the grid's name for an order, carried in IB's ``orderRef`` (DESIGN section 3, normative).

Grammar (single spaces, ASCII, nothing before or after)::

    key      = "tqgrid1" " c" CYCLE " L" LEVEL " " SIDE [" a" ATTEMPT] [" " PRICE]
    CYCLE    = 0 .. 999999, no leading zeros
    LEVEL    = 0 .. 999, no leading zeros
    SIDE     = "BUY" | "SELL"
    ATTEMPT  = 2 .. 999, no leading zeros        (written only from the second attempt on)
    PRICE    = the lot's purchase price, SELL only (required there, refused on a BUY): a positive decimal below
               1,000,000 with 2 to 8 decimals and no trailing zero after the second ("97.50", "97.0213")

Examples: ``tqgrid1 c12 L0 BUY``, ``tqgrid1 c12 L0 BUY a2``, ``tqgrid1 c12 L3 SELL 97.0213``,
``tqgrid1 c12 L3 BUY a2``, ``tqgrid1 c12 L3 SELL a2 96.06``. The longest possible key is 46 characters.

``tqgrid1`` names the grid and the version of this grammar. The attempt counts the BUY orders the grid has placed for
one (cycle, level): for Level 0 a new try after a timed-out one was cancelled; for any level, buying it again in the
same cycle after its lot was sold. Without it the second round trip of a level would carry the same key as the first,
filled one, and an executor that answers "already filled" for a known key would never place it. A SELL carries the
attempt of the BUY that made its lot. The first attempt is not written, so each key has exactly one spelling and
``parse(s).encode() == s`` for every valid ``s``.

The executor's uniqueness rule ("never two live orders for the same (cycle, level, side)") uses :attr:`IntentKey.slot`;
its idempotency ("a key already filled is answered, not placed again") uses the whole key.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from operator import attrgetter

PREFIX = "tqgrid1"
MAX_CYCLE = 999_999
MAX_LEVEL = 999
MAX_ATTEMPT = 999
MAX_PRICE_DECIMALS = 8
PRICE_LIMIT = Decimal(1_000_000)
MAX_KEY_LENGTH = 46
EXAMPLE = "tqgrid1 c12 L3 SELL 97.0213"

_KEY = re.compile(
    r"tqgrid1 c(?P<cycle>0|[1-9][0-9]{0,5}) L(?P<level>0|[1-9][0-9]{0,2}) (?P<side>BUY|SELL)"
    r"(?: a(?P<attempt>[2-9]|[1-9][0-9]{1,2}))?"
    r"(?: (?P<price>(?:0|[1-9][0-9]{0,5})\.[0-9]{2}(?:[0-9]{0,5}[1-9])?))?"
)


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


# The grammar's side words, as their Side (a dict lookup: Side(text) is an Enum call, slow on every new key parsed).
_SIDES = {side.value: side for side in Side}


class NotAnIntentKey(ValueError):
    """A string is not an intent key of this grid (a foreign or hand-made orderRef, or a damaged one)."""


@dataclass(frozen=True, slots=True)
class IntentKey:
    """One grid order's identity. ``attempt`` 1 and None both mean the first attempt and are stored as None."""

    cycle: int
    level: int
    side: Side
    attempt: int | None = None
    purchase_price: Decimal | None = None

    def __post_init__(self) -> None:
        _check_int("cycle", self.cycle, 0, MAX_CYCLE)
        _check_int("level", self.level, 0, MAX_LEVEL)
        side = self.side
        # A plain 'BUY' or 'SELL' is stored as its Side; a Side is kept as it is (Enum lookups are slow, and a parse
        # that misses the cache makes a key).
        if type(side) is not Side:
            try:
                side = Side(side)
            except ValueError:
                raise ValueError(f"side must be 'BUY' or 'SELL', was {self.side!r}") from None
            object.__setattr__(self, "side", side)
        if self.attempt is not None:
            _check_int("attempt", self.attempt, 1, MAX_ATTEMPT)
            if self.attempt == 1:
                object.__setattr__(self, "attempt", None)
        if side is Side.SELL:
            if self.purchase_price is None:
                raise ValueError("a SELL intent key needs the lot's purchase_price")
            object.__setattr__(self, "purchase_price", _canonical_price(self.purchase_price))
        elif self.purchase_price is not None:
            raise ValueError(f"a BUY intent key has no purchase_price, was given {self.purchase_price!r}")

    @classmethod
    def buy(cls, cycle: int, level: int, attempt: int | None = None) -> IntentKey:
        return cls(cycle, level, Side.BUY, attempt)

    @classmethod
    def sell(cls, cycle: int, level: int, purchase_price: Decimal, attempt: int | None = None) -> IntentKey:
        return cls(cycle, level, Side.SELL, attempt, purchase_price)

    @property
    def slot(self) -> tuple[int, int, Side]:
        """(cycle, level, side): at most one live order per slot."""
        return slot_of(self)

    @property
    def lot(self) -> tuple[int, int]:
        """(cycle, level): the lot this order buys or sells."""
        return (self.cycle, self.level)

    @property
    def attempt_number(self) -> int:
        """The attempt as a number (1 for the first)."""
        return 1 if self.attempt is None else self.attempt

    def encode(self) -> str:
        """The orderRef string for this key."""
        text = f"{PREFIX} c{self.cycle} L{self.level} {self.side.value}"
        if self.attempt is not None:
            text += f" a{self.attempt}"
        if self.purchase_price is not None:
            text += f" {self.purchase_price:f}"
        _remember(text, self)  # the next parse of this text is this key (see _KNOWN)
        return text

    def __str__(self) -> str:
        return self.encode()


# IntentKey.slot read in C, for code that asks it of many keys at once (the strategy, of every live key at every
# decision): map(slot_of, keys).
slot_of: Callable[[IntentKey], tuple[int, int, Side]] = attrgetter("cycle", "level", "side")


def parse(ref: str) -> IntentKey:
    """Parse an orderRef back into its key; :class:`NotAnIntentKey` for anything that is not one, exactly."""
    if not isinstance(ref, str):
        raise NotAnIntentKey(f"orderRef {ref!r} is not a grid intent key (not a string)")
    key = _KNOWN.get(ref)
    if key is None:
        key = _parse_text(ref)
        _remember(ref, key)
    return key


# Keys by their text, as parse read them or encode wrote them. The strategy and the ledger parse the same few dozen
# live keys at every decision (the backtester makes hundreds of thousands of decisions), and nearly every key they
# meet first is one encode wrote moments before (a lot's SELL key, the next BUY's key): parsing it anew took the
# regex and a validated key each time. Safe to share and to fill from both sides: a key is immutable, and a key's
# text parses back to an equal key with the very same fields (``parse(k.encode()) == k``, the round trip the tests
# check for every key), so parse answers the same whatever this holds. Emptied when full (the live keys are simply
# read again); refusals are never remembered.
_KNOWN: dict[str, IntentKey] = {}
_KNOWN_LIMIT = 8192


def _remember(text: str, key: IntentKey) -> None:
    if len(_KNOWN) >= _KNOWN_LIMIT:
        _KNOWN.clear()
    _KNOWN[text] = key


def _parse_text(ref: str) -> IntentKey:
    """The grammar itself (no memory): the key ``ref`` spells, or :class:`NotAnIntentKey`."""
    match = _KEY.fullmatch(ref)
    if match is None:
        if ref.startswith("tqgrid"):
            raise NotAnIntentKey(
                f"orderRef {ref!r} starts like a grid intent key but is malformed or of another version; "
                f"expected a key like {EXAMPLE!r}"
            )
        raise NotAnIntentKey(f"orderRef {ref!r} is not a grid intent key (expected a key like {EXAMPLE!r})")
    side = _SIDES[match["side"]]
    price = match["price"]
    if (side is Side.SELL) != (price is not None):
        need = "a SELL needs its lot's purchase price" if side is Side.SELL else "a BUY carries no price"
        raise NotAnIntentKey(f"orderRef {ref!r} is not a valid grid intent key: {need}")
    try:
        return IntentKey(
            cycle=int(match["cycle"]),
            level=int(match["level"]),
            side=side,
            attempt=int(match["attempt"]) if match["attempt"] else None,
            purchase_price=Decimal(price) if price is not None else None,
        )
    except ValueError as e:  # e.g. a price of 0.00
        raise NotAnIntentKey(f"orderRef {ref!r} is not a valid grid intent key: {e}") from None


def is_grid_ref(ref: object) -> bool:
    """True when ``ref`` (an orderRef, possibly None or empty) is one of this grid's intent keys."""
    if not isinstance(ref, str) or not ref.startswith(PREFIX):
        return False
    try:
        parse(ref)
    except NotAnIntentKey:
        return False
    return True


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}, was {value!r}")


def _canonical_price(value: object) -> Decimal:
    """The purchase price exactly as given, written with at least 2 and at most 8 decimals, no trailing zeros."""
    if isinstance(value, str):
        try:
            value = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"purchase_price must be a decimal number like 97.0213, was {value!r}") from None
    if not isinstance(value, Decimal):
        # A float has already been rounded to binary; the key must carry the exact price.
        raise TypeError(f"purchase_price must be a Decimal (or a decimal string), was {type(value).__name__}")
    if not value.is_finite() or not 0 < value < PRICE_LIMIT:
        raise ValueError(f"purchase_price must be a positive price below {PRICE_LIMIT}, was {value}")
    normal = value.normalize()
    exponent = normal.as_tuple().exponent
    assert isinstance(exponent, int)  # finite, checked above
    if exponent < -MAX_PRICE_DECIMALS:
        raise ValueError(
            f"purchase_price {value} has more than {MAX_PRICE_DECIMALS} decimals; "
            f"round the average fill to {MAX_PRICE_DECIMALS} places before making its key"
        )
    # Decimal('1E+2') and Decimal('97.5') become 100.00 and 97.50: the cent places are always written.
    return normal.quantize(Decimal("0.01")) if exponent > -2 else normal
