"""The statekeeper service: owns the grid's state; applies order events, persists, publishes, reconciles.

- Subscribes to ``order.event`` (and ``broker.event``, for the log); every event goes through the pure ledger
  (core.ledger); a change is journalled, written to ``bot_state.json``, then published as a numbered
  ``StateUpdate`` (seq 1, 2, 3 ... per start) on ``state.update``. An execution the journal has is never applied
  again.
- Serves commands on its ROUTER (config bus.statekeeper): ``StateSnapshotRequest`` -> ``StateSnapshot`` (with the
  seq of the last update it includes), ``Halt`` / ``Resume`` (persisted; ``TradingHalted`` / ``TradingResumed`` on
  ``control``), ``ReconcileRequest`` -> ``ReconcileReport``.
- Reconciles (core.reconcile) against the executor's ``BrokerSnapshot`` at start (retrying every
  statekeeper.reconcile_retry seconds until the executor answers, connected), after a gap in the executor's
  events, and on request. Until the first one succeeds ``in_sync`` stays False, so the strategy places nothing.
  Anything unexplained halts trading with a critical alert; a later consistent reconciliation lifts a halt that
  reconciliation set (an operator's halt stays until Resume).

Everything that changes the state runs on the main loop, one thing at a time (commands are queued to it), so an
event is never applied in the middle of a reconciliation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import msgspec
import zmq.asyncio

from bus import CommandClient, CommandServer, CommandTimeout, Publisher, Subscriber
from bus.command_client import CommandError
from core import ledger
from core.lotmap import LotMap
from core.prices import parse_factor
from core.reconcile import BROKER_UNAVAILABLE, ReconcileRules, Reconciliation, reconcile
from gridbot.alerts import AlertSink
from gridbot.config import Config
from proto import topics
from proto.messages import (
    BrokerSnapshot,
    BrokerSnapshotRequest,
    CommandAccepted,
    CommandRejected,
    GridState,
    Halt,
    Message,
    OrderFilled,
    ReconcileFinding,
    ReconcileReport,
    ReconcileRequest,
    ResetState,
    Resume,
    StateSnapshot,
    StateSnapshotRequest,
    StateUpdate,
    TradingHalted,
    TradingResumed,
)
from services.statekeeper.store import Store

log = logging.getLogger("statekeeper")

SENDER = "statekeeper"
EXECUTOR = "executor"
# Halts that reconciliation sets start with this; a consistent reconciliation lifts only those.
RECONCILE_HALT = "reconcile: "
# Events held while a reconciliation is due; beyond this many they are applied at once (the executor being away
# for long, its events are few; this only bounds memory).
HOLD_LIMIT = 10_000
# The main loop wakes at least this often (seconds) to run what is due (retries, queued commands).
_TICK = 0.05


@dataclass
class _Queued:
    msg: Message
    reply: asyncio.Future[Message]


class StatekeeperService:
    """One statekeeper: a store, the bus sockets, the ledger and reconciliation rules."""

    def __init__(self, cfg: Config, ctx: zmq.asyncio.Context, store: Store, lot_map: LotMap) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.store = store
        self.lot_map = lot_map
        strategy = cfg.strategy
        self.rules = ReconcileRules(
            symbol=cfg.general.symbol,
            external_shares=cfg.statekeeper.external_shares,
            sell_markup=parse_factor(strategy.sell_markup, "strategy.sell_markup"),
            step=parse_factor(strategy.step, "strategy.step"),
            queued_levels=strategy.queued_levels,
        )
        self.ledger_rules = self.rules.ledger
        self.update_seq = 0
        self.applied = 0
        self.reconciliations = 0
        self.last_report: ReconcileReport | None = None
        self._reconcile_due = True
        self._next_reconcile_at = 0.0
        # Events that came while a reconciliation was due, applied after it (at most HOLD_LIMIT are held).
        self._held: list[Message] = []
        self._started = time.monotonic()
        self._commands: asyncio.Queue[_Queued] = asyncio.Queue()
        bus = cfg.bus
        self.publisher = Publisher(ctx, bus.xsub, SENDER, bus.heartbeat_interval)
        self.subscriber = Subscriber(
            ctx,
            bus.xpub,
            [topics.ORDER_EVENT, topics.BROKER_EVENT],
            on_gap=self._on_gap,
            heartbeat_interval=bus.heartbeat_interval,
            heartbeat_misses=bus.heartbeat_misses,
        )
        self.server = CommandServer(ctx, bus.statekeeper, self._handle, name=SENDER)
        self.alerts = AlertSink.from_config(cfg, SENDER, self.publisher)
        # The state as loaded is not in sync until reconciled.
        self.store.state = msgspec.structs.replace(self.store.state, in_sync=False)

    @property
    def state(self) -> GridState:
        return self.store.state

    # ------------------------------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Serve until cancelled (SIGTERM through bus.service); the message in hand is finished first."""
        await self.publisher.start()
        await self.server.start()
        self._started = time.monotonic()
        self._set_status()
        log.info(
            "statekeeper for %s: cycle %d, %d lots, %d working orders; state %s, journal record %d",
            self.state.symbol,
            self.state.cycle,
            len(self.state.lots),
            len(self.state.orders),
            self.store.state_path,
            self.store.seq,
        )
        this = asyncio.current_task()
        try:
            while True:
                if this is not None and this.cancelling():
                    # A cancellation (SIGTERM) that a library swallowed (asyncio.wait_for before Python 3.12 can,
                    # when its future completes at the same moment): stop anyway, between two messages.
                    raise asyncio.CancelledError
                if self._reconcile_due and time.monotonic() >= self._next_reconcile_at and self._listening():
                    await self._reconcile(apply=False, cause="start" if not self.state.in_sync else "gap")
                if not self._reconcile_due and self._held:
                    held, self._held = self._held, []
                    for msg in held:
                        self._on_message(msg)
                envelope = await self.subscriber.recv(timeout=_TICK)
                if envelope is not None:
                    self._on_event(envelope.msg)
                while not self._commands.empty():
                    await self._run_command(self._commands.get_nowait())
        finally:
            await self._close()

    def _listening(self) -> bool:
        """True once events published from now on reach us (so a snapshot taken now misses nothing).

        Hearing the executor's heartbeat proves our subscription has reached it; an executor that sends none is
        waited for only as long as a peer may stay silent, then reconciled with anyway.
        """
        if self.state.in_sync or self.subscriber.peer_alive(EXECUTOR):
            return True
        return time.monotonic() - self._started > self.subscriber.down_after

    async def _close(self) -> None:
        await self.server.close()
        await self.subscriber.close()
        await self.publisher.close()
        self.store.close()

    # ------------------------------------------------------------------------------------------ events

    def _on_event(self, msg: Message) -> None:
        """Apply an event now, or hold it while a reconciliation is due (the Clone pattern: the broker's snapshot
        first, then what came on the bus meanwhile), so that the catch-up sees the executions before any later
        report of the same orders."""
        if self._reconcile_due and len(self._held) < HOLD_LIMIT:
            self._held.append(msg)
            return
        self._on_message(msg)

    def _on_message(self, msg: Message) -> None:
        if isinstance(msg, OrderFilled) and self.store.has_exec(msg.exec_id):
            log.debug("execution %s is in the journal already; ignored", msg.exec_id)
            return
        result = ledger.step(self.state, msg, self.ledger_rules)
        for note in result.notes:
            log.info("%s", note)
        if not (result.changed or result.closed or result.amended):
            return
        self.applied += 1
        self.store.commit(type(msg).__name__, result.state, msg, closed=result.closed, amended=result.amended)
        for trip in result.closed:
            log.info(
                "round trip closed: cycle %d level %d, %d shares %s -> %s, fees %s, P&L %s",
                trip.cycle,
                trip.level,
                trip.quantity,
                trip.buy_price,
                trip.sell_price,
                trip.fees,
                trip.realized_pnl,
            )
        self._publish_update(type(msg).__name__)

    def _on_gap(self, sender: str, expected: int, got: int) -> None:
        if sender == EXECUTOR:
            log.warning("lost %d event(s) from the executor: reconciling to catch up", got - expected)
            self._reconcile_due = True

    def _publish_update(self, cause: str) -> None:
        self.update_seq += 1
        self.publisher.publish(
            topics.STATE_UPDATE,
            StateUpdate(ts_ns=time.time_ns(), seq=self.update_seq, state=self.state, cause=cause),
        )
        self._set_status()

    def _set_status(self) -> None:
        state = self.state
        self.publisher.status = "halted" if state.halted else ("ok" if state.in_sync else "not in sync")

    # ------------------------------------------------------------------------------------------ commands

    async def _handle(self, msg: Message) -> Message:
        """Command server handler: snapshots at once, everything that changes the state through the main loop."""
        match msg:
            case StateSnapshotRequest():
                return StateSnapshot(ts_ns=time.time_ns(), seq=self.update_seq, state=self.state)
            case Halt() | Resume() | ReconcileRequest() | ResetState():
                future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
                await self._commands.put(_Queued(msg, future))
                return await future
            case _:
                return CommandRejected(
                    ts_ns=time.time_ns(),
                    reason=f"the statekeeper does not take {type(msg).__name__}; it takes StateSnapshotRequest, "
                    "Halt, Resume, ReconcileRequest and ResetState",
                )

    async def _run_command(self, queued: _Queued) -> None:
        try:
            match queued.msg:
                case Halt() as halt:
                    reply = self._halt(halt.reason or "halted by the operator", halt.source or "operator")
                case Resume() as resume:
                    reply = self._resume(
                        resume.reason or "resumed by the operator", resume.source or "operator"
                    )
                case ReconcileRequest() as request:
                    reply = await self._reconcile(apply=request.apply, cause="request")
                case ResetState() as reset:
                    reply = self._reset(reset.reason or "operator reset", reset.source or "operator")
                case _:
                    reply = CommandRejected(ts_ns=time.time_ns(), reason="unexpected command")
        except Exception as e:  # a command must get an answer, and the service must go on
            log.exception("command %s failed", type(queued.msg).__name__)
            reply = CommandRejected(ts_ns=time.time_ns(), reason=f"{type(e).__name__}: {e}")
        if not queued.reply.done():
            queued.reply.set_result(reply)

    def _halt(self, reason: str, source: str) -> Message:
        already = self.state.halted and self.state.halt_reason == reason
        if not already:
            self.store.commit("Halt", ledger.halt(self.state, reason))
            self.publisher.publish(
                topics.CONTROL, TradingHalted(ts_ns=time.time_ns(), reason=reason, source=source)
            )
            self._publish_update("halt")
            log.warning("trading halted (%s): %s", source, reason)
        return CommandAccepted(ts_ns=time.time_ns(), detail=f"halted: {reason}")

    def _resume(self, reason: str, source: str) -> Message:
        if self.state.halted:
            self.store.commit("Resume", ledger.resume(self.state))
            self.publisher.publish(
                topics.CONTROL, TradingResumed(ts_ns=time.time_ns(), reason=reason, source=source)
            )
            self._publish_update("resume")
            log.warning("trading resumed (%s): %s", source, reason)
        return CommandAccepted(ts_ns=time.time_ns(), detail="trading is not halted")

    def _reset(self, reason: str, source: str) -> Message:
        before = self.state
        self.store.commit("ResetState", ledger.reset(before))
        self._publish_update("reset")
        log.warning(
            "state reset (%s: %s): %d lot(s) and %d working order(s) dropped; cycle %d begins",
            source,
            reason,
            len(before.lots),
            len(before.orders),
            self.state.cycle,
        )
        return CommandAccepted(
            ts_ns=time.time_ns(),
            detail=f"state cleared: {len(before.lots)} lot(s) and {len(before.orders)} order(s) dropped; "
            f"cycle {self.state.cycle} begins",
        )

    # ------------------------------------------------------------------------------------------ reconciliation

    async def _reconcile(self, apply: bool, cause: str) -> ReconcileReport:
        self._reconcile_due = False
        # A failed start (or catch-up) is tried again; a failed request of the operator's only when not in sync.
        retry = cause != "request" or not self.state.in_sync
        snapshot = await self._broker_snapshot()
        if snapshot is None:
            return self._unavailable("the executor did not answer a BrokerSnapshotRequest", retry)
        if not snapshot.connected:
            return self._unavailable("the executor is not connected to the broker (or not synced yet)", retry)
        known = {e.exec_id for e in snapshot.executions if self.store.has_exec(e.exec_id)}
        result = reconcile(self.state, snapshot, self.lot_map, self.rules, known_exec_ids=known, apply=apply)
        self.reconciliations += 1
        for event, applied in result.caught_up:
            self.store.commit(
                f"reconcile {type(event).__name__}",
                applied.state,
                event,
                closed=applied.closed,
                amended=applied.amended,
            )
        report = result.report(ts_ns=time.time_ns())
        final = self._judge(result)
        self.store.commit("reconcile", final, report)
        self.last_report = report
        self._publish_update(f"reconcile ({cause})")
        for finding in result.findings:
            (log.info if finding.explained else log.error)("reconcile: %s: %s", finding.kind, finding.detail)
        return report

    def _judge(self, result: Reconciliation) -> GridState:
        """The reconciled state, in sync, halted if anything is unexplained (and un-halted if it no longer is)."""
        state = msgspec.structs.replace(result.state, in_sync=True)
        if not result.consistent:
            reason = RECONCILE_HALT + result.summary() + "; see `gridbot reconcile`"
            if not (state.halted and state.halt_reason == reason):
                self.alerts.critical("reconcile", f"trading halted: {result.summary()}")
                self.publisher.publish(
                    topics.CONTROL, TradingHalted(ts_ns=time.time_ns(), reason=reason, source=SENDER)
                )
            return ledger.halt(state, reason)
        if state.halted and state.halt_reason.startswith(RECONCILE_HALT):
            self.publisher.publish(
                topics.CONTROL,
                TradingResumed(
                    ts_ns=time.time_ns(), reason="reconciliation is consistent again", source=SENDER
                ),
            )
            self.alerts.info("reconcile", "reconciliation consistent again: the halt it set is lifted")
            return ledger.resume(state)
        return state

    async def _broker_snapshot(self) -> BrokerSnapshot | None:
        # A socket per request: requests are rare (start, gaps, the operator), and a fresh DEALER cannot inherit a
        # stuck state from an executor that was away (its queue of unanswered requests, a missed wake-up).
        bus = self.cfg.bus
        client = CommandClient(self.ctx, bus.executor, SENDER, timeout=bus.command_timeout, retries=0)
        try:
            # resync: the executor asks the broker afresh (orders of other clients appear only then).
            reply = await client.request(BrokerSnapshotRequest(ts_ns=time.time_ns(), resync=True))
        except (CommandTimeout, CommandError) as e:
            log.info("no broker snapshot yet: %s", e)
            return None
        finally:
            await client.close()
        if isinstance(reply, BrokerSnapshot):
            return reply
        log.warning("the executor answered a BrokerSnapshotRequest with %s", type(reply).__name__)
        return None

    def _unavailable(self, why: str, retry: bool) -> ReconcileReport:
        """Nothing could be compared; the state stays as it is (not in sync if it never was)."""
        if retry:
            self._reconcile_due = True
            self._next_reconcile_at = time.monotonic() + self.cfg.statekeeper.reconcile_retry
        log.info("reconciliation not possible now%s: %s", " (will retry)" if retry else "", why)
        return ReconcileReport(
            ts_ns=time.time_ns(),
            consistent=False,
            findings=[ReconcileFinding(kind=BROKER_UNAVAILABLE, detail=why, explained=False)],
            plan=["operator: start the executor / wait for the broker, then run `gridbot reconcile` again"],
        )
