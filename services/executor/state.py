"""What every part of the executor shares: the IB client, the intent table, the connection flags, the outlets.

One instance per process, built by service.py and handed to each part (connection, submissions, events, monitor,
commands, halt flag). It holds state and the few outlets every part needs (publish, alert, the heartbeat
status); it decides nothing: the decisions are in rules.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import bus
from gridbot.alerts import AlertSink
from gridbot.config import Config
from proto.messages import ExecutionInfo, Message, PositionInfo, Severity
from services.executor.ib_api import IbLib
from services.executor.rules import ExecLedger, Gate, IntentTable, Limits

log = logging.getLogger("executor")

SERVICE = "executor"


class ConnectFailed(Exception):
    """Connecting or syncing failed in a way the connection loop retries (the text says why)."""


class ExecutorState:
    """The executor's shared state: read by the gate and the heartbeat, written by the connection and the events."""

    def __init__(
        self,
        cfg: Config,
        lib: IbLib,
        publisher: bus.Publisher,
        *,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.cfg = cfg
        self.lib = lib
        self.symbol = cfg.general.symbol
        self.client_id = cfg.broker.client_id
        self.now = monotonic_ns
        self.ib: Any = lib.new_ib()
        self.table = IntentTable(Limits(self.symbol, cfg.broker.max_live_buys, cfg.strategy.max_live_sells))
        self.ledger = ExecLedger()
        self.publisher = publisher
        self.alerts = AlertSink.from_config(cfg, SERVICE, publisher)
        # Connection state, read by the gate.
        self.connected = False
        self.synced = False
        self.connectivity_lost = False
        self.halted = False
        self.halt_reason = ""
        self.contract: Any = None
        self.con_id = 0
        self.server_version = 0
        self.accounts: list[str] = []
        self.positions: list[PositionInfo] = []
        self.executions: dict[str, ExecutionInfo] = {}

    def gate(self) -> Gate:
        return Gate(
            connected=self.connected,
            synced=self.synced,
            halted=self.halted,
            halt_reason=self.halt_reason,
            connectivity_lost=self.connectivity_lost,
        )

    def publish(self, topic: str, msg: Message) -> None:
        if not self.publisher.publish(topic, msg):
            log.error("bus publisher dropped %s on %s (queue full)", type(msg).__name__, topic)

    def alert(self, severity: Severity, code: str, text: str) -> None:
        # The log, the bus, and for a critical one the operator's alert command (gridbot.alerts).
        self.alerts.alert(severity, code, text)

    def set_status(self) -> None:
        """Put the executor's status on its heartbeat."""
        if not self.connected:
            status = "no broker"
        elif not self.synced:
            status = "syncing"
        elif self.connectivity_lost:
            status = "IB connectivity lost"
        elif self.halted:
            status = "halted"
        else:
            status = "ok"
        self.publisher.status = status
