"""The broker's state directory: every order, execution, id counter and the account, in one JSON file.

Written atomically after every change (temporary file, fsync, rename, fsync of the directory), so a killed broker
restarts from its last complete state. A file that does not parse stops the broker with a message naming it; it
is never overwritten.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import msgspec

from sim.broker.account import Account
from sim.broker.engine import Engine, LastPrint
from sim.broker.orders import BrokerOrder, Execution

STATE_FILE = "broker_state.json"
FORMAT_VERSION = 1


class StateError(Exception):
    """The state file is unreadable; the message names it and the fix."""


@dataclass
class BrokerState:
    format_version: int
    account_id: str
    cash: Decimal
    position: int
    avg_cost: Decimal
    realized_pnl: Decimal
    epoch_s: int
    next_perm_id: int
    next_exec_seq: int
    next_seq: int
    next_ids: dict[int, int] = field(default_factory=dict)
    orders: list[BrokerOrder] = field(default_factory=list)
    executions: list[Execution] = field(default_factory=list)
    last_price: Decimal | None = None
    last_size: int = 0
    last_ts_ns: int = 0


def snapshot(engine: Engine) -> BrokerState:
    acct = engine.account
    return BrokerState(
        format_version=FORMAT_VERSION,
        account_id=acct.account_id,
        cash=acct.cash,
        position=acct.position,
        avg_cost=acct.avg_cost,
        realized_pnl=acct.realized_pnl,
        epoch_s=engine.epoch_s,
        next_perm_id=engine.next_perm_id,
        next_exec_seq=engine.next_exec_seq,
        next_seq=engine.next_seq,
        next_ids=dict(engine.next_ids),
        orders=sorted(engine.orders.values(), key=lambda o: o.seq),
        executions=list(engine.executions),
        last_price=engine.last.price if engine.last else None,
        last_size=engine.last.size if engine.last else 0,
        last_ts_ns=engine.last.ts_ns if engine.last else 0,
    )


def restore(state: BrokerState, partial_fills: bool = False) -> Engine:
    engine = Engine(
        account=Account(state.account_id, state.cash, state.position, state.avg_cost, state.realized_pnl),
        epoch_s=state.epoch_s,
        partial_fills=partial_fills,
        next_perm_id=state.next_perm_id,
        next_exec_seq=state.next_exec_seq,
        next_seq=state.next_seq,
        next_ids=dict(state.next_ids),
        executions=list(state.executions),
    )
    for order in state.orders:
        engine.add_order(order)
    if state.last_price is not None:
        engine.last = LastPrint(state.last_price, state.last_size, state.last_ts_ns, 0)
    return engine


class Store:
    """One state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / STATE_FILE
        self._encoder = msgspec.json.Encoder(decimal_format="string")

    def load(self) -> BrokerState | None:
        """The saved state, or None for a fresh directory."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            state = msgspec.json.decode(data, type=BrokerState)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise StateError(
                f"broker state file '{self.path}' is unreadable ({e}); move it away to start a fresh paper account"
            ) from None
        if state.format_version != FORMAT_VERSION:
            raise StateError(
                f"broker state file '{self.path}' has format version {state.format_version}, this broker reads "
                f"{FORMAT_VERSION}; move it away to start a fresh paper account"
            )
        return state

    def save(self, state: BrokerState) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = self._encoder.encode(state)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
