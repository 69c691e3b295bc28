"""The lot map: how many shares the grid buys at each level (DESIGN section 4).

A CSV of ``level,shares_to_buy`` rows, levels 0..N-1 in order with no gaps, positive whole shares, an optional header
row ``level,shares_to_buy``. The user's own file is accepted exactly as the spreadsheet wrote it: no header, CRLF line
ends, no newline after the last row, a UTF-8 byte-order mark or none.

Every refusal is one line naming the file, the line and the problem, e.g.
``lot map 'x.csv' line 12: shares must be a positive whole number, was '-3'``.
The only I/O here is :func:`load_lot_map` reading its file; :func:`parse_lot_map` is pure.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

HEADER = ("level", "shares_to_buy")
# Only plain ASCII digits: int() would also take '+5', '1_000' and non-ASCII digits, none of which a lot map means.
_WHOLE = re.compile(r"[0-9]+")


class LotMapError(ValueError):
    """A lot map is missing, unreadable or malformed; the message names the file, the line and the fix."""


@dataclass(frozen=True, slots=True)
class LotMap:
    """Shares to buy per level; ``shares[n]`` is level n's quantity. Levels are 0..len-1.

    ``lot_map[n]`` is level n's shares and ``n in lot_map`` asks whether level n exists; iterating yields the
    shares in level order (like the tuple).
    """

    shares: tuple[int, ...]
    source: str = "<memory>"

    def __post_init__(self) -> None:
        if not self.shares:
            raise LotMapError(f"lot map '{self.source}' is empty; it needs at least level 0")
        for level, qty in enumerate(self.shares):
            if type(qty) is not int or qty <= 0:
                raise LotMapError(
                    f"lot map '{self.source}' level {level}: shares must be a positive whole number, was {qty!r}"
                )

    def __len__(self) -> int:
        return len(self.shares)

    def __iter__(self) -> Iterator[int]:
        return iter(self.shares)

    def __contains__(self, level: object) -> bool:
        return type(level) is int and 0 <= level < len(self.shares)

    def __getitem__(self, level: int) -> int:
        """Shares to buy at ``level``; IndexError for a level the map does not have (negative ones included)."""
        # The test of __contains__, written out: the strategy asks for a few levels' shares at every decision.
        if type(level) is not int or not 0 <= level < len(self.shares):
            raise IndexError(f"lot map '{self.source}' has levels 0..{len(self.shares) - 1}, not {level!r}")
        return self.shares[level]

    def deepest_of(self, levels: Iterable[int]) -> int | None:
        """The deepest of ``levels`` that this map has (``level in self``), or None when it has none of them."""
        levels = list(levels)
        # The strategy asks with every lot's level at every decision, and they are all levels of the map: then the
        # highest one (found in C) is the answer, as every level the map has is at most that one.
        try:
            highest = max(levels, default=None)
        except TypeError:  # levels that do not compare (not whole numbers): the test below sorts them out
            highest = None
        if highest in self:
            return highest
        return max((level for level in levels if level in self), default=None)

    @property
    def deepest(self) -> int:
        """The last level of the map."""
        return len(self.shares) - 1

    @property
    def total_shares(self) -> int:
        return sum(self.shares)


def load_lot_map(path: Path | str) -> LotMap:
    """Read and validate the lot map at ``path``."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise LotMapError(
            f"lot map '{p}' does not exist; set general.lot_map in the config or pass the right path"
        ) from None
    except IsADirectoryError:
        raise LotMapError(f"lot map '{p}' is a directory; give the path of the CSV file") from None
    except OSError as e:
        raise LotMapError(f"lot map '{p}' cannot be read: {e.strerror or e}") from None
    try:
        # utf-8-sig drops a byte-order mark if there is one (spreadsheets on Windows write it).
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise LotMapError(
            f"lot map '{p}' line {line}: not UTF-8 text; save the file as CSV (UTF-8)"
        ) from None
    return parse_lot_map(text, str(p))


def parse_lot_map(text: str, source: str = "<memory>") -> LotMap:
    """Parse lot-map CSV text; ``source`` names the input in errors. Blank lines are ignored."""

    def fail(line: int, problem: str) -> LotMapError:
        return LotMapError(f"lot map '{source}' line {line}: {problem}")

    shares: list[int] = []
    first_line_of_level: dict[int, int] = {}
    seen_content = False
    # splitlines() takes CRLF, LF and CR alike and does not invent an empty row for a missing final newline.
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            cells = [cell.strip() for cell in next(csv.reader([line]))]
        except csv.Error as e:
            raise fail(number, f"not a CSV row ({e}): '{line.strip()}'") from None
        if not any(cells):
            continue  # a row of empty cells (',') is what a spreadsheet writes for a blank row
        is_first_row = not seen_content
        seen_content = True
        if is_first_row and tuple(c.lower() for c in cells) == HEADER:
            continue
        if len(cells) != 2:
            raise fail(
                number, f"expected 2 columns 'level,shares_to_buy', found {len(cells)}: '{line.strip()}'"
            )
        level_text, shares_text = cells
        if not _WHOLE.fullmatch(level_text):
            hint = " (a header row must be exactly 'level,shares_to_buy')" if is_first_row else ""
            raise fail(number, f"level must be a whole number 0, 1, 2, ..., was '{level_text}'{hint}")
        level = int(level_text)
        if level in first_line_of_level:
            raise fail(number, f"level {level} appears twice (first on line {first_line_of_level[level]})")
        expected = len(shares)
        if level != expected:
            if expected == 0:
                raise fail(number, f"levels must start at 0, the first level is {level}")
            raise fail(
                number,
                f"level {expected} is missing (this row has level {level}); list levels in order with no gaps",
            )
        if not _WHOLE.fullmatch(shares_text) or int(shares_text) == 0:
            raise fail(number, f"shares must be a positive whole number, was '{shares_text}'")
        first_line_of_level[level] = number
        shares.append(int(shares_text))
    if not shares:
        what = "has a header but no rows" if seen_content else "is empty"
        raise LotMapError(
            f"lot map '{source}' {what}; it needs rows 'level,shares_to_buy' starting at level 0"
        )
    return LotMap(tuple(shares), source)
