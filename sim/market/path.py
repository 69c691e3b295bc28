"""The `path` source: a scripted price path, for scenarios a test or a demo wants exactly.

The file is a CSV of ``seconds,price`` with an optional third column ``size`` (shares, default one round lot) and an
optional header row. ``seconds`` is the time since ``start`` (fractions allowed) and must not decrease; prices are
rounded half-up to the cent (the stream and the broker see the same prices). With ``loop`` the path plays again, each pass starting one step (the path's last interval,
or a second) after the previous pass ended; prices repeat unchanged.
"""

from __future__ import annotations

import bisect
import csv
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from sim.market.prints import NS_PER_SECOND, Print, to_cent
from sim.market.timefmt import iso_utc

DEFAULT_SIZE = 100  # shares: one round lot when the file gives no size
MIN_LOOP_GAP_NS = NS_PER_SECOND


class PathFileError(ValueError):
    """A path file is missing or malformed; the message names the file, the line and the fix."""


def _is_header(row: list[str]) -> bool:
    try:
        Decimal(row[0].strip())
    except (InvalidOperation, IndexError):
        return True
    return False


def load_path(path: Path) -> list[tuple[int, Decimal, int]]:
    """Return the rows of a path file as (offset ns, price, size)."""
    if not path.is_file():
        raise PathFileError(f"path file '{path}' does not exist; set sim.file to a CSV of seconds,price")
    rows: list[tuple[int, Decimal, int]] = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        for row in reader:
            if not row or not any(c.strip() for c in row):
                continue
            where = f"path file '{path}' line {reader.line_num}"
            if not rows and reader.line_num == 1 and _is_header(row):
                continue
            if len(row) not in (2, 3):
                raise PathFileError(
                    f"{where}: expected seconds,price[,size], got {len(row)} columns: {row!r}"
                )
            try:
                seconds = Decimal(row[0].strip())
                price = Decimal(row[1].strip())
                size = int(row[2].strip()) if len(row) == 3 else DEFAULT_SIZE
            except (InvalidOperation, ValueError):
                raise PathFileError(
                    f"{where}: seconds and price must be numbers, size a whole number: {row!r}"
                ) from None
            if not seconds.is_finite() or seconds < 0:
                raise PathFileError(f"{where}: seconds must be >= 0, was {row[0]!r}")
            if not price.is_finite() or to_cent(price) <= 0:
                raise PathFileError(f"{where}: price must be at least 0.01, was {row[1]!r}")
            price = to_cent(price)
            if size <= 0:
                raise PathFileError(f"{where}: size must be a positive number of shares, was {row[2]!r}")
            offset = int(seconds * NS_PER_SECOND)
            if rows and offset < rows[-1][0]:
                raise PathFileError(f"{where}: seconds must not decrease ({row[0]} comes after a later time)")
            rows.append((offset, price, size))
    if not rows:
        raise PathFileError(f"path file '{path}' has no rows; write lines like 0,100.00")
    return rows


class PathSource:
    """Iterate the prints of a path file from ``start_ns`` (see the module docstring)."""

    name = "path"

    def __init__(
        self, rows: list[tuple[int, Decimal, int]], start_ns: int, loop: bool = False, label: str = ""
    ) -> None:
        if not rows:
            raise ValueError("a path needs at least one row")
        self.rows = rows
        self.start_ns = start_ns
        self.loop = loop
        self.label = label
        last_gap = rows[-1][0] - rows[-2][0] if len(rows) > 1 else 0
        self.period_ns = rows[-1][0] + (last_gap if last_gap > 0 else MIN_LOOP_GAP_NS)
        self.pass_number = 0
        self.row_index = 0
        self.first_row = 0
        self.last_ts: int | None = None

    def resume_after(self, ts_ns: int) -> None:
        """Continue with the first print later than ``ts_ns`` (same pass). Call before iterating."""
        if ts_ns < self.start_ns:
            return
        k = (ts_ns - self.start_ns) // self.period_ns
        if k and not self.loop:
            self.first_row = len(self.rows)
            return
        offsets = [offset for offset, _, _ in self.rows]
        self.pass_number = k
        self.first_row = bisect.bisect_right(offsets, ts_ns - self.start_ns - k * self.period_ns)

    def __iter__(self) -> Iterator[Print]:
        first = self.first_row
        while True:
            base = self.start_ns + self.pass_number * self.period_ns
            for i in range(first, len(self.rows)):
                offset, price, size = self.rows[i]
                self.row_index = i + 1
                self.last_ts = base + offset
                yield Print(base + offset, price, size)
            first = 0
            if not self.loop:
                return
            self.pass_number += 1

    def progress(self) -> dict[str, Any]:
        """Say how far the path has got: pass, row number, the last print's time."""
        return {
            "file": self.label,
            "pass": self.pass_number + 1,
            "row": self.row_index,
            "rows": len(self.rows),
            "percent": round(100.0 * self.row_index / len(self.rows), 2),
            "last_time": iso_utc(self.last_ts) if self.last_ts is not None else None,
        }
