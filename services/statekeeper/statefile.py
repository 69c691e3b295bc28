"""``bot_state.json``: the grid's state in the user's format (DESIGN section 5), written atomically, read strictly.

One JSON object (format version 1)::

    {
      "version": 1,
      "symbol": "TQQQ",
      "cycle": 3,
      "anchor_price": 100.12,
      "halted": false,
      "halt_reason": "",
      "lots": [
        {"level": 1, "quantity": 88, "purchase_price": 99.12, "sell_target_price": 100.11, "sell_order_id": 12,
         "sell_perm_id": 1631716614, "buy_perm_id": 1631716600, "sell": "live", "cycle": 3, ...}
      ],
      "orders": [...], "realized_pnl": 12.34, "level0_attempt": 0, "buy_attempts": {"1": 1},
      "executions": [...], "ended_orders": [...], "journal_seq": 17, "saved_at": "2025-11-21T14:30:00.123456Z"
    }

Prices and money are exact JSON numbers (``97.0213``, never ``97.02129999``): the user's tools read numbers, and
this program reads them back as ``Decimal`` without passing through a float. Times are UTC nanoseconds
(``*_ts_ns``) with an ISO 8601 copy for people (``opened_at``). ``journal_seq`` is the journal record the file
reflects (the journal is newer when a crash came between the two writes).

Writes are atomic: a temporary file in the same directory, fsync, rename over the old file, fsync of the directory.
A missing file is "no state yet"; a corrupt, truncated or unknown-version file raises :class:`StateFileError`
naming the file and the problem, and this module never writes over such a file.
"""

from __future__ import annotations

import contextlib
import os
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from proto.messages import AppliedExecution, GridState, Lot, SellSlot, Side, WorkingOrder

VERSION = 1

_encoder = msgspec.json.Encoder(decimal_format="number")


class StateFileError(Exception):
    """The state file cannot be used; the message names the file, what is wrong and what to do."""


# --------------------------------------------------------------------------------------------- the schema (v1)
# Its own structs, not GridState's: the file is a contract with the user's tools and keeps its field names and
# order (the user's lot fields first) whatever the bus messages become.


class LotRecord(msgspec.Struct, kw_only=True):
    level: int
    quantity: int
    purchase_price: Decimal
    sell_target_price: Decimal
    sell_order_id: int | None = None
    sell_perm_id: int | None = None
    buy_perm_id: int | None = None
    sell: SellSlot = "parked"
    cycle: int
    buy_key: str
    sell_key: str
    sold: int = 0
    cost: Decimal = Decimal(0)
    sold_value: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)
    opened_at: str = ""
    opened_ts_ns: int = 0
    last_sell_ts_ns: int = 0


class OrderRecord(msgspec.Struct, kw_only=True):
    key: str
    side: Side
    level: int
    quantity: int
    limit: Decimal
    order_id: int = 0
    perm_id: int = 0
    status: str = ""
    filled: int = 0
    avg_fill_price: Decimal = Decimal(0)
    fill_value: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)
    placed_ts_ns: int = 0
    last_fill_ts_ns: int = 0


class StateFileV1(msgspec.Struct, kw_only=True):
    version: int
    symbol: str
    cycle: int
    anchor_price: Decimal | None = None
    halted: bool = False
    halt_reason: str = ""
    lots: list[LotRecord] = []
    orders: list[OrderRecord] = []
    realized_pnl: Decimal = Decimal(0)
    level0_attempt: int = 0
    buy_attempts: dict[int, int] = {}
    executions: list[AppliedExecution] = []
    ended_orders: list[int] = []
    journal_seq: int = 0
    saved_at: str = ""


class Loaded(msgspec.Struct, frozen=True, kw_only=True):
    """A state file read back: the state (never in sync: that takes a reconciliation) and its journal record."""

    state: GridState
    journal_seq: int
    saved_at: str = ""


# --------------------------------------------------------------------------------------------- encode / decode


def encode(state: GridState, journal_seq: int, now_ns: int) -> bytes:
    """The file's bytes for ``state`` (pretty-printed JSON, exact numbers, a final newline)."""
    record = StateFileV1(
        version=VERSION,
        symbol=state.symbol,
        cycle=state.cycle,
        anchor_price=state.anchor_price,
        halted=state.halted,
        halt_reason=state.halt_reason,
        lots=[_lot_record(lot) for lot in state.lots],
        orders=[msgspec.convert(msgspec.structs.asdict(o), OrderRecord) for o in state.orders],
        realized_pnl=state.realized_pnl,
        level0_attempt=state.level0_attempt,
        buy_attempts=dict(state.buy_attempts),
        executions=list(state.executions),
        ended_orders=list(state.ended_orders),
        journal_seq=journal_seq,
        saved_at=iso_time(now_ns),
    )
    return msgspec.json.format(_encoder.encode(record), indent=2) + b"\n"


def decode(data: bytes, path: Path | str = "<memory>") -> Loaded:
    """Parse a state file's bytes; StateFileError (naming ``path``) for anything that is not a valid v1 file."""

    def fail(problem: str) -> StateFileError:
        return StateFileError(
            f"state file '{path}' {problem}. It was left as it is: repair it, or move it away and run "
            "`gridbot reconcile` to rebuild the state from the broker"
        )

    if not data.strip():
        raise fail("is empty (truncated?)")
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError as e:
        raise fail(f"is not valid JSON (corrupt or truncated: {e})") from None
    if not isinstance(raw, dict):
        raise fail(f"holds a JSON {type(raw).__name__}, not the state object")
    version = raw.get("version")
    if version is None:
        raise fail("has no 'version': it is not a gridbot state file")
    if version != VERSION:
        raise fail(
            f"has version {version!r}; this program reads version {VERSION} (run the matching gridbot)"
        )
    try:
        record = msgspec.json.decode(data, type=StateFileV1)
    except msgspec.ValidationError as e:
        raise fail(f"is invalid: {str(e).replace('$.', '')}") from None
    try:
        state = _to_state(record)
    except ValueError as e:
        raise fail(f"is inconsistent: {e}") from None
    return Loaded(state=state, journal_seq=record.journal_seq, saved_at=record.saved_at)


def _lot_record(lot: Lot) -> LotRecord:
    data = msgspec.structs.asdict(lot)
    data["opened_at"] = iso_time(lot.opened_ts_ns) if lot.opened_ts_ns else ""
    return msgspec.convert(data, LotRecord)


def _to_state(record: StateFileV1) -> GridState:
    lots = []
    for n, r in enumerate(record.lots):
        where = f"lots[{n}] (level {r.level})"
        if r.level < 0 or r.quantity <= 0 or not 0 <= r.sold < r.quantity:
            raise ValueError(f"{where}: needs level >= 0, quantity > 0 and 0 <= sold < quantity")
        if r.purchase_price <= 0 or r.sell_target_price <= 0:
            raise ValueError(f"{where}: purchase_price and sell_target_price must be positive")
        data: dict[str, Any] = msgspec.structs.asdict(r)
        data.pop("opened_at")
        # A hand-written lot may omit the exact cost; its purchase price is then the whole truth.
        if not r.cost:
            data["cost"] = r.purchase_price * r.quantity
        lots.append(msgspec.convert(data, Lot))
    keys = [lot.buy_key for lot in lots]
    if len(set(keys)) != len(keys):
        raise ValueError("two lots have the same buy_key")
    if record.cycle < 0:
        raise ValueError(f"cycle must be >= 0, was {record.cycle}")
    return GridState(
        symbol=record.symbol,
        cycle=record.cycle,
        anchor_price=record.anchor_price,
        halted=record.halted,
        halt_reason=record.halt_reason,
        lots=lots,
        orders=[msgspec.convert(msgspec.structs.asdict(o), WorkingOrder) for o in record.orders],
        realized_pnl=record.realized_pnl,
        level0_attempt=record.level0_attempt,
        in_sync=False,
        buy_attempts=dict(record.buy_attempts),
        executions=list(record.executions),
        ended_orders=list(record.ended_orders),
    )


def iso_time(ts_ns: int) -> str:
    """UTC nanoseconds as ISO 8601 with microseconds and a Z."""
    return datetime.fromtimestamp(ts_ns / 1e9, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --------------------------------------------------------------------------------------------- files


def read(path: Path) -> Loaded | None:
    """Read the state file at ``path``; None when there is none; StateFileError when it cannot be used."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise StateFileError(
            f"state file '{path}' is a directory; statekeeper.state_file must name a file"
        ) from None
    except OSError as e:
        raise StateFileError(f"state file '{path}' cannot be read: {e.strerror or e}") from None
    return decode(data, path)


def write(path: Path, state: GridState, journal_seq: int, now_ns: int) -> None:
    """Replace the state file with ``state`` atomically (temp file, fsync, rename, fsync of the directory)."""
    write_atomic(path, encode(state, journal_seq, now_ns))


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash at any instant leaves either the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
