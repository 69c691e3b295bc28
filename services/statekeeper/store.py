"""The statekeeper's durable store: the journal and ``bot_state.json`` kept in step, and the state read back at start.

Every change goes journal first (one SQLite transaction, durable when it returns), state file second (atomic
replace): a crash between the two leaves the journal one record ahead, and the next start rewrites the file from it.

At start (:meth:`Store.open`):

- a corrupt, truncated or unknown-version state file stops the start (StateFileError; the file is not touched);
- journal ahead of the file (a crash between the two writes): the journal's state wins and the file is rewritten;
- file and journal at the same record but different: the file was edited by hand (stopped statekeeper): it wins
  and the journal records it;
- journal missing, emptied or behind (replaced by an older copy): the file wins and starts the journal again;
- neither: a fresh, empty state, written at once (the file exists as soon as the statekeeper runs).

The state comes back with ``in_sync`` False: only a reconciliation with the broker sets it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path

import msgspec

from core.ledger import FeeAmendment
from proto.messages import GridState, Message, OrderFilled, RoundTrip
from services.statekeeper import statefile
from services.statekeeper.journal import Journal
from services.statekeeper.statefile import StateFileError

log = logging.getLogger("statekeeper.store")


class Store:
    """Owns the journal and the state file; :attr:`state` is the last state committed."""

    def __init__(self, state_path: Path, journal: Journal, state: GridState, seq: int) -> None:
        self.state_path = state_path
        self.journal = journal
        self.state = state
        self.seq = seq

    @classmethod
    def open(cls, state_path: Path, journal_path: Path, symbol: str) -> Store:
        """Load the state (see the module docstring); StateFileError / JournalError when it cannot be used."""
        loaded = statefile.read(state_path)
        if loaded is not None and loaded.state.symbol != symbol:
            raise StateFileError(
                f"state file '{state_path}' is for {loaded.state.symbol!r} but general.symbol is {symbol!r}; "
                "point statekeeper.state_file at this symbol's file"
            )
        journal = Journal(journal_path)
        try:
            last = journal.last()
            store = cls(state_path, journal, GridState(symbol=symbol), 0)
            if last is not None and last[1].symbol != symbol:
                raise StateFileError(
                    f"journal '{journal_path}' is for {last[1].symbol!r} but general.symbol is {symbol!r}; "
                    "point statekeeper.journal at this symbol's journal"
                )
            store._choose(loaded, last)
        except BaseException:
            journal.close()
            raise
        return store

    def _choose(self, loaded: statefile.Loaded | None, last: tuple[int, GridState] | None) -> None:
        if last is not None:
            seq, journal_state = last
            journal_state = msgspec.structs.replace(journal_state, in_sync=False)
        if loaded is None and last is None:
            log.info("no state file and no journal: starting with an empty state")
            self.commit("empty state", self.state)
            return
        if last is None or (loaded is not None and loaded.journal_seq > seq):
            assert loaded is not None
            why = "the journal is empty" if last is None else f"the journal (record {seq}) is behind the file"
            log.warning("state from %s (%s); the journal starts again from it", self.state_path, why)
            self.commit("state file loaded", loaded.state)
            return
        self.state, self.seq = journal_state, seq
        if loaded is None:
            log.warning(
                "state file %s is missing: rewriting it from the journal (record %d)", self.state_path, seq
            )
            self._write_file()
        elif loaded.journal_seq < seq:
            log.warning(
                "state file %s is at journal record %d, the journal at %d (a stop between the two writes): "
                "rewriting the file from the journal",
                self.state_path,
                loaded.journal_seq,
                seq,
            )
            self._write_file()
        elif _comparable(loaded.state) != _comparable(journal_state):
            log.warning(
                "state file %s was edited while the statekeeper was stopped: the file's state is used",
                self.state_path,
            )
            self.commit("state file edited by hand", loaded.state)
        else:
            log.info(
                "state loaded: journal record %d, cycle %d, %d lots",
                seq,
                self.state.cycle,
                len(self.state.lots),
            )

    def close(self) -> None:
        self.journal.close()

    # ------------------------------------------------------------------------------------------ writing

    def commit(
        self,
        kind: str,
        state: GridState,
        event: Message | None = None,
        *,
        closed: Iterable[RoundTrip] = (),
        amended: Iterable[FeeAmendment] = (),
    ) -> int:
        """Make ``state`` the committed state: journal record (with the event and round trips), then the file."""
        exec_id = event.exec_id if isinstance(event, OrderFilled) else None
        key = getattr(event, "key", "") if event is not None else ""
        self.seq = self.journal.record(
            kind,
            state,
            event,
            key=key if isinstance(key, str) else "",
            exec_id=exec_id,
            closed=closed,
            amended=amended,
        )
        self.state = state
        self._write_file()
        return self.seq

    def has_exec(self, exec_id: str) -> bool:
        return self.journal.has_exec(exec_id)

    def _write_file(self) -> None:
        statefile.write(self.state_path, self.state, self.seq, time.time_ns())


def _comparable(state: GridState) -> GridState:
    return msgspec.structs.replace(state, in_sync=False)
