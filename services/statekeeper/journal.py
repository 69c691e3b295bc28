"""The statekeeper's durable journal: every applied event, the state after it, and the closed round trips.

SQLite (standard library) in WAL mode with ``synchronous=FULL``: a record is on disk when :meth:`Journal.record`
returns, and one record is one transaction (the event, the state after it, the round trips it closed and the fee
amendments), so a crash at any instant leaves either all of it or none of it.

Tables:

- ``events(seq, recorded_ns, kind, key, exec_id UNIQUE, payload)``: what was applied, in order; ``payload`` is the
  message's msgpack (proto.codec); ``exec_id`` makes every execution's record unique, so an execution the journal
  has is never applied again, however old.
- ``state(id=1, seq, body)``: the state after the last record (msgpack of GridState).
- ``round_trips(id, cycle, level, quantity, buy_price, sell_price, fees, realized_pnl, opened_ts_ns,
  closed_ts_ns, buy_key, sell_key)``: the closed lots, money as exact decimal text.
- ``meta(key, value)``: the journal's format version.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path

import msgspec

from core.ledger import FeeAmendment
from proto.codec import encode
from proto.messages import GridState, Message, RoundTrip

FORMAT = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    recorded_ns INTEGER NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL DEFAULT '',
    exec_id TEXT UNIQUE,
    payload BLOB
);
CREATE TABLE IF NOT EXISTS state (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS round_trips (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cycle INTEGER NOT NULL,
    level INTEGER NOT NULL,
    quantity INTEGER NOT NULL,
    buy_price TEXT NOT NULL,
    sell_price TEXT NOT NULL,
    fees TEXT NOT NULL,
    realized_pnl TEXT NOT NULL,
    opened_ts_ns INTEGER NOT NULL,
    closed_ts_ns INTEGER NOT NULL,
    buy_key TEXT NOT NULL,
    sell_key TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS round_trips_buy_key ON round_trips (buy_key);
CREATE INDEX IF NOT EXISTS round_trips_sell_key ON round_trips (sell_key);
"""

_state_decoder = msgspec.msgpack.Decoder(GridState)
_state_encoder = msgspec.msgpack.Encoder()


class JournalError(Exception):
    """The journal cannot be opened or read; the message names the file."""


class Journal:
    """The journal at ``path`` (created if missing). Use from one thread; close() when done."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # isolation_level=None: we open and commit our transactions ourselves, one per record.
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta (key, value) VALUES ('format', ?)", (FORMAT,))
            elif row[0] != FORMAT:
                raise JournalError(
                    f"journal '{path}' has format {row[0]!r}; this program writes format {FORMAT!r}. "
                    "Run the matching gridbot, or move the journal away (the state file and the broker rebuild it)"
                )
        except sqlite3.DatabaseError as e:
            raise JournalError(
                f"journal '{path}' cannot be used: {e}. Move it away: the state file and the broker rebuild the state"
            ) from None

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------------------------------ reading

    def last(self) -> tuple[int, GridState] | None:
        """The state after the last record and that record's number; None for an empty journal."""
        row = self._db.execute("SELECT seq, body FROM state WHERE id = 1").fetchone()
        if row is None:
            return None
        try:
            return int(row[0]), _state_decoder.decode(row[1])
        except msgspec.DecodeError as e:
            raise JournalError(f"journal '{self.path}': the saved state cannot be decoded: {e}") from None

    def last_seq(self) -> int:
        row = self._db.execute("SELECT MAX(seq) FROM events").fetchone()
        return int(row[0] or 0)

    def has_exec(self, exec_id: str) -> bool:
        """True when an execution with this id was applied (at any time)."""
        row = self._db.execute("SELECT 1 FROM events WHERE exec_id = ?", (exec_id,)).fetchone()
        return row is not None

    def round_trips(self) -> list[RoundTrip]:
        """Every closed round trip, oldest first."""
        return select_round_trips(self._db)

    def count_events(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    # ------------------------------------------------------------------------------------------ writing

    def record(
        self,
        kind: str,
        state: GridState,
        event: Message | None = None,
        *,
        key: str = "",
        exec_id: str | None = None,
        closed: Iterable[RoundTrip] = (),
        amended: Iterable[FeeAmendment] = (),
    ) -> int:
        """Append one record (event, state after it, round trips closed, fee amendments) durably; its number."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            cursor = db.execute(
                "INSERT INTO events (recorded_ns, kind, key, exec_id, payload) VALUES (?, ?, ?, ?, ?)",
                (time.time_ns(), kind, key, exec_id, encode(event) if event is not None else None),
            )
            seq = int(cursor.lastrowid or 0)
            db.execute(
                "INSERT INTO state (id, seq, body) VALUES (1, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, body = excluded.body",
                (seq, _state_encoder.encode(state)),
            )
            for trip in closed:
                db.execute(
                    "INSERT INTO round_trips (cycle, level, quantity, buy_price, sell_price, fees, realized_pnl,"
                    " opened_ts_ns, closed_ts_ns, buy_key, sell_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        trip.cycle,
                        trip.level,
                        trip.quantity,
                        str(trip.buy_price),
                        str(trip.sell_price),
                        str(trip.fees),
                        str(trip.realized_pnl),
                        trip.opened_ts_ns,
                        trip.closed_ts_ns,
                        trip.buy_key,
                        trip.sell_key,
                    ),
                )
            for amendment in amended:
                self._amend(amendment)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return seq

    def _amend(self, amendment: FeeAmendment) -> None:
        row = self._db.execute(
            "SELECT id, fees, realized_pnl FROM round_trips WHERE buy_key = ? OR sell_key = ? ORDER BY id DESC LIMIT 1",
            (amendment.key, amendment.key),
        ).fetchone()
        if row is None:
            return
        self._db.execute(
            "UPDATE round_trips SET fees = ?, realized_pnl = ? WHERE id = ?",
            (str(Decimal(row[1]) + amendment.fee), str(Decimal(row[2]) - amendment.fee), row[0]),
        )


def select_round_trips(db: sqlite3.Connection) -> list[RoundTrip]:
    """Every closed round trip in a journal database, oldest first (the statekeeper's and `gridbot history`'s read)."""
    rows = db.execute(
        "SELECT cycle, level, quantity, buy_price, sell_price, fees, realized_pnl, opened_ts_ns, closed_ts_ns,"
        " buy_key, sell_key FROM round_trips ORDER BY id"
    ).fetchall()
    return [
        RoundTrip(
            cycle=r[0],
            level=r[1],
            quantity=r[2],
            buy_price=Decimal(r[3]),
            sell_price=Decimal(r[4]),
            fees=Decimal(r[5]),
            realized_pnl=Decimal(r[6]),
            opened_ts_ns=r[7],
            closed_ts_ns=r[8],
            buy_key=r[9],
            sell_key=r[10],
        )
        for r in rows
    ]
