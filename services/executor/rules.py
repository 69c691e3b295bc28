"""The executor's pure core: the intent table and the rules that decide whether a command reaches IB.

No I/O, no asyncio, no broker SDK: the service (services/executor/service.py) converts IB's objects into
``proto`` records at the edge (services/executor/convert.py) and feeds them in here; what comes out are decisions
and ``proto`` events to publish. DESIGN section 3 is the contract:

- a key that is live, or already (even partly) filled, is answered with the existing order: nothing goes to IB;
- never two live orders for one slot ``(cycle, level, side)`` (:attr:`core.intent.IntentKey.slot`);
- at most ``max_live_buys`` live grid BUYs and ``max_live_sells`` live grid SELLs;
- nothing is submitted while the broker is disconnected, the table is not synced, or trading is halted.

A command is entered into the table the moment it is accepted for submission (status :data:`QUEUED`), before
anything is awaited, so ten identical commands arriving together find the first one and place nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from enum import Enum

from core.intent import IntentKey, NotAnIntentKey, Side, parse
from proto.messages import (
    ClosePosition,
    ExecutionInfo,
    Message,
    OpenOrderInfo,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderStatusChanged,
    PlaceOrder,
)

# The orderRef of the operator's closing order (ClosePosition): deliberately not a grid intent key.
CLOSE_REF = "gridbot reset: close position"
# Our own status for a command accepted into the submission queue and not yet handed to IB.
QUEUED = "Queued"
# Statuses in which an order can still trade (PendingSubmit and ApiPending are the client library's own, before
# IB answers; PendingCancel can still fill until IB confirms the cancel).
LIVE_STATUSES = frozenset(
    {QUEUED, "PendingSubmit", "ApiPending", "PreSubmitted", "Submitted", "PendingCancel"}
)
# Set by the client library before IB has answered: not news for anyone.
CLIENT_SIDE_STATUSES = frozenset({QUEUED, "PendingSubmit", "ApiPending"})
ACKNOWLEDGED_STATUSES = frozenset({"PreSubmitted", "Submitted"})
FINAL_STATUSES = frozenset({"Filled", "Cancelled", "ApiCancelled", "Inactive"})
# Pseudo-statuses a client library sets locally (ib_async 2.x on a warning about an order); they say nothing
# about the order at IB, so the table keeps the last real status.
LOCAL_PSEUDO_STATUSES = frozenset({"ValidationError"})
# IB's "Order Canceled - reason:" confirmation: not a rejection.
CANCEL_CONFIRMATION = 202

Slot = tuple[int, int, Side]
CENT = Decimal("0.01")


def intent_of(key: str) -> IntentKey | None:
    """The parsed intent key, or None for a foreign orderRef (the older bot's orders, manual orders)."""
    try:
        return parse(key)
    except NotAnIntentKey:
        return None


@dataclass(slots=True)
class OrderRecord:
    """What the executor knows of one order: the latest order of an intent key, or a foreign order."""

    key: str
    side: str
    quantity: int
    limit: Decimal
    slot: Slot | None = None
    order_id: int = 0
    perm_id: int = 0
    client_id: int = 0
    status: str = QUEUED
    filled: int = 0
    avg_fill_price: Decimal = Decimal(0)
    symbol: str = ""
    tif: str = ""
    outside_rth: bool = True
    condition_price: Decimal | None = None
    immediate: bool = False
    # Monotonic-clock nanoseconds (the service's clock): when entered, handed to IB, acknowledged, cancel sent.
    created_ns: int = 0
    sent_ns: int = 0
    acked_ns: int = 0
    cancel_sent_ns: int = 0
    # Why the executor itself asked IB to cancel (a timeout, CancelOrder); empty when it did not.
    cancel_reason: str = ""
    # Placed by this executor (a command), not merely met in IB's reports: only those are watched for timeouts
    # among the foreign orders (the operator's closing order is one).
    placed_by_us: bool = False
    # The last error IB reported about this order (0 = none).
    error_code: int = 0
    error_text: str = ""

    @property
    def live(self) -> bool:
        return self.status in LIVE_STATUSES

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def acknowledged(self) -> bool:
        return self.acked_ns != 0 or self.status in ACKNOWLEDGED_STATUSES

    @property
    def grid(self) -> bool:
        return self.slot is not None

    @property
    def event_key(self) -> str:
        """The key events carry: the intent key, or "" for a foreign order (proto.messages, order events)."""
        return self.key if self.slot is not None else ""

    def info(self) -> OpenOrderInfo:
        """The record as the snapshot message carries it."""
        return OpenOrderInfo(
            key=self.key,
            order_id=self.order_id,
            perm_id=self.perm_id,
            client_id=self.client_id,
            symbol=self.symbol,
            side="BUY" if self.side == "BUY" else "SELL",
            quantity=self.quantity,
            limit=self.limit,
            tif=self.tif,
            outside_rth=self.outside_rth,
            status=self.status,
            filled=self.filled,
            remaining=max(self.quantity - self.filled, 0),
            avg_fill_price=self.avg_fill_price,
            condition_price=self.condition_price,
        )


@dataclass(frozen=True, slots=True)
class Limits:
    """The executor's own caps and the one symbol it trades (from config)."""

    symbol: str
    max_live_buys: int
    max_live_sells: int


@dataclass(frozen=True, slots=True)
class Gate:
    """Why submissions may be refused right now; :meth:`refusal` is None when they are allowed."""

    connected: bool = False
    synced: bool = False
    halted: bool = False
    halt_reason: str = ""
    connectivity_lost: bool = False

    def refusal(self) -> str | None:
        if not self.connected:
            return (
                "broker disconnected: the executor is reconnecting; retry when BrokerConnected is published"
            )
        if not self.synced:
            return "not yet synced with the broker: the intent table is being rebuilt; retry shortly"
        if self.connectivity_lost:
            return "IB reports connectivity lost (1100): submissions paused until 1101/1102"
        if self.halted:
            return f"trading halted ({self.halt_reason or 'no reason given'}); resume before placing orders"
        return None


@dataclass(frozen=True, slots=True)
class Submit:
    """Send the order to IB; the record is already in the table with status QUEUED."""

    record: OrderRecord


@dataclass(frozen=True, slots=True)
class Duplicate:
    """The key already has this live or filled order; send nothing."""

    record: OrderRecord


@dataclass(frozen=True, slots=True)
class Refuse:
    reason: str


PlaceDecision = Submit | Duplicate | Refuse


class OverdueKind(Enum):
    NOT_ACKNOWLEDGED = "not_acknowledged"
    IMMEDIATE_NOT_FINAL = "immediate_not_final"


@dataclass(frozen=True, slots=True)
class Overdue:
    record: OrderRecord
    kind: OverdueKind

    @property
    def reason(self) -> str:
        if self.kind is OverdueKind.NOT_ACKNOWLEDGED:
            return "not acknowledged (PreSubmitted/Submitted) within broker.ack_timeout"
        return "immediate order not final within broker.immediate_order_timeout"


@dataclass(slots=True)
class IntentTable:
    """Every order the executor knows, by intent key (the current order of each key) and by IB's ids.

    ``_by_key`` keeps every key ever placed (its final records answer repeats as duplicates), so it grows with the
    history: the live executor's after months, a backtest's after tens of thousands of orders. The questions asked
    at every command and every monitor pass (the live orders, a slot's holder, a side's count, the overdue ones)
    look at ``_live`` instead, which holds the grid records that are live, so they cost O(live orders), and the
    monitor's at ``_watched``, the few of those that can come overdue.
    """

    limits: Limits
    _by_key: dict[str, OrderRecord] = field(default_factory=dict)
    _foreign: dict[tuple[int, int, int], OrderRecord] = field(default_factory=dict)
    # The grid records that may be live, by key: every live record of ``_by_key`` is here (each entry is its key's
    # current record), kept so by :meth:`_enter`, :meth:`_withdraw` and :meth:`_track` wherever the table enters,
    # replaces, forgets or updates a record. A record's status changed from outside the table (only ever to a
    # final one) may leave it here a while, so the queries still check ``live``.
    _live: dict[str, OrderRecord] = field(default_factory=dict)
    # The live grid records that can come overdue (immediate, or not yet acknowledged), kept with ``_live`` (and,
    # like it, possibly holding one that ended behind the table's back): the monitor asks at every pass, and most
    # live orders are acknowledged, not immediate, and wait for days.
    _watched: dict[str, OrderRecord] = field(default_factory=dict)
    # Each key's place in ``_by_key``'s order (a key keeps its place when its record is replaced, as in a dict; a
    # key withdrawn and entered again goes to the end). ``_live`` is in no particular order (a key placed again
    # joins it at the end): the answers that depend on the order, the live records' list, which of two live
    # records of one slot is "the holder", the overdue orders' list, follow ``_place``, as a scan of ``_by_key``
    # did.
    _place: dict[str, int] = field(default_factory=dict)
    _next_place: int = 0

    # ------------------------------------------------------------------------------------------ queries

    def get(self, key: str) -> OrderRecord | None:
        return self._by_key.get(key)

    def records(self) -> list[OrderRecord]:
        """Every grid record (the current order of each key), then every foreign order."""
        return [*self._by_key.values(), *self._foreign.values()]

    def live_grid(self) -> list[OrderRecord]:
        return sorted((r for r in self._live.values() if r.live), key=self._place_of)

    def live_foreign(self) -> list[OrderRecord]:
        return [r for r in self._foreign.values() if r.live]

    def live_in_slot(self, slot: Slot) -> OrderRecord | None:
        return self._live_on_side(slot[2], slot)[1]

    def count_live(self, side: Side) -> int:
        return self._live_on_side(side)[0]

    def _live_on_side(self, side: Side, slot: Slot | None = None) -> tuple[int, OrderRecord | None]:
        """How many live grid orders ``side`` has, and which of them holds ``slot`` (one pass for both questions
        of a PlaceOrder)."""
        count = 0
        holder: OrderRecord | None = None
        for record in self._live.values():
            record_slot = record.slot
            # ``record.live`` spelled out: this loop runs for every PlaceOrder.
            if record_slot is None or record_slot[2] is not side or record.status not in LIVE_STATUSES:
                continue
            count += 1
            # Two live records of one slot come only from IB's reports (adopted orders): the first placed holds it.
            if record_slot == slot and (holder is None or self._place_of(record) < self._place_of(holder)):
                holder = record
        return count, holder

    def find(self, order_ref: str, client_id: int, order_id: int, perm_id: int) -> OrderRecord | None:
        """The record an IB message is about: by orderRef for grid orders, else by IB's ids among foreign ones."""
        record = self._by_key.get(order_ref)
        if record is not None and _same_order(record, client_id, order_id, perm_id):
            return record
        if record is None and intent_of(order_ref) is None:
            for foreign in self._foreign.values():
                if _same_order(foreign, client_id, order_id, perm_id):
                    return foreign
        return None

    # ------------------------------------------------------------------------------------------ commands

    def decide_place(self, cmd: PlaceOrder, gate: Gate, now_ns: int) -> PlaceDecision:
        """Decide a PlaceOrder; on Submit the record is entered (QUEUED) so repeats see it at once."""
        refusal = gate.refusal()
        if refusal is not None:
            return Refuse(refusal)
        intent = intent_of(cmd.key)
        if intent is None:
            return Refuse(f"key {cmd.key!r} is not a grid intent key (like 'tqgrid1 c12 L3 SELL 97.0213')")
        existing = self._by_key.get(cmd.key)
        if existing is not None and (existing.live or existing.filled > 0 or existing.status == "Filled"):
            return Duplicate(existing)
        problem = self._invalid(cmd, intent)
        if problem is not None:
            return Refuse(problem)
        slot = intent.slot
        live, holder = self._live_on_side(intent.side, slot)
        if holder is not None:
            cycle, level, side = slot
            return Refuse(
                f"slot (cycle {cycle}, level {level}, {side}) already has a live order {holder.key!r} "
                f"(orderId {holder.order_id}, status {holder.status}); cancel it first"
            )
        cap = self.limits.max_live_buys if intent.side is Side.BUY else self.limits.max_live_sells
        if live >= cap:
            name = "broker.max_live_buys" if intent.side is Side.BUY else "strategy.max_live_sells"
            return Refuse(f"order cap: {live} live grid {intent.side}s already, at most {cap} ({name})")
        record = OrderRecord(
            key=cmd.key,
            side=cmd.side,
            quantity=cmd.quantity,
            limit=cmd.limit,
            slot=slot,
            symbol=cmd.symbol,
            tif=cmd.tif,
            outside_rth=cmd.outside_rth,
            condition_price=cmd.condition.price if cmd.condition is not None else None,
            immediate=cmd.immediate,
            created_ns=now_ns,
            placed_by_us=True,
        )
        self._enter(record)
        return Submit(record)

    def decide_close(self, cmd: ClosePosition, gate: Gate, position: int, now_ns: int) -> PlaceDecision:
        """Decide the operator's ClosePosition: one LMT order for the position, even while halted.

        ``position`` is the broker's, just fetched. The order is not a grid order (its orderRef is CLOSE_REF), so
        it counts against no grid cap and the ledger never takes it for a lot; it is an immediate order.
        """
        refusal = replace(gate, halted=False).refusal()
        if refusal is not None:
            return Refuse(refusal)
        if cmd.symbol and cmd.symbol != self.limits.symbol:
            return Refuse(f"symbol {cmd.symbol!r} is not the grid's symbol {self.limits.symbol!r} (general.symbol)")
        if cmd.quantity <= 0:
            return Refuse(f"quantity must be a positive number of shares, was {cmd.quantity}")
        if not _is_cent_price(cmd.limit):
            return Refuse(f"limit must be a positive price in whole cents, was {cmd.limit}")
        covered = position >= cmd.quantity if cmd.side == "SELL" else -position >= cmd.quantity
        if not covered:
            return Refuse(
                f"the broker's position is {position} {self.limits.symbol}: a {cmd.side} of {cmd.quantity} would not "
                "close it (it changed since it was read); look again and retry"
            )
        for record in self._foreign.values():
            if record.key == CLOSE_REF and record.live:
                return Refuse(f"a closing order is already working (orderId {record.order_id}, {record.status})")
        record = OrderRecord(
            key=CLOSE_REF,
            side=cmd.side,
            quantity=cmd.quantity,
            limit=cmd.limit,
            symbol=self.limits.symbol,
            tif="DAY",
            immediate=True,
            created_ns=now_ns,
            placed_by_us=True,
        )
        # Entered among the foreign orders under a provisional identity; IB's reports find it by orderId.
        self._foreign[(0, 0, id(record))] = record
        return Submit(record)

    def is_current(self, record: OrderRecord) -> bool:
        """Whether ``record`` is still the table's (not replaced, not withdrawn)."""
        if record.grid:
            return self._by_key.get(record.key) is record
        return any(r is record for r in self._foreign.values())

    def _invalid(self, cmd: PlaceOrder, intent: IntentKey) -> str | None:
        if cmd.symbol != self.limits.symbol:
            return f"symbol {cmd.symbol!r} is not the grid's symbol {self.limits.symbol!r} (general.symbol)"
        if cmd.side != intent.side:  # a StrEnum: equal to its value
            return f"side {cmd.side} contradicts the key {cmd.key!r}"
        if cmd.quantity <= 0:
            return f"quantity must be a positive number of shares, was {cmd.quantity}"
        if not _is_cent_price(cmd.limit):
            return f"limit must be a positive price in whole cents, was {cmd.limit}"
        if cmd.condition is not None and not _is_cent_price(cmd.condition.price):
            return f"condition price must be a positive price in whole cents, was {cmd.condition.price}"
        return None

    def forget_unsent(self, record: OrderRecord) -> None:
        """Drop a QUEUED record that never reached IB (the queue was flushed), so the key may be placed again."""
        if record.status != QUEUED:
            return
        if self._by_key.get(record.key) is record:
            self._withdraw(record.key)
        for ident, candidate in list(self._foreign.items()):
            if candidate is record:
                del self._foreign[ident]

    def mark_sent(self, record: OrderRecord, order_id: int, client_id: int, now_ns: int) -> None:
        was_live = record.live  # QUEUED: live already, and indexed so
        record.order_id = order_id
        record.client_id = client_id
        record.status = "PendingSubmit"
        record.sent_ns = now_ns
        if not was_live and self._by_key.get(record.key) is record:
            self._track(record)

    # ------------------------------------------------------------------------------------------ IB's answers

    def apply(self, info: OpenOrderInfo, now_ns: int, ts_ns: int = 0) -> list[Message]:
        """Apply an order's current state as IB reports it; return the order events that this changes.

        ``info.key`` is the orderRef. An unknown grid order (placed by an earlier run, another clientId) is
        adopted. ``ts_ns`` stamps the events (UTC); ``now_ns`` is the service's monotonic clock.
        """
        if info.status in LOCAL_PSEUDO_STATUSES:
            return []
        record = self._record_for(info, now_ns)
        if record is None:
            return []
        was_live = record.live
        # A record just met in IB's reports (no status yet) has not ended before either.
        may_end = was_live or record.status == ""
        was_acked = record.acknowledged
        status, filled, avg_fill_price = record.status, record.filled, record.avg_fill_price
        _update(record, info)
        live = record.live
        acknowledged = record.acknowledged
        if (live is not was_live or acknowledged is not was_acked) and record.grid:
            self._track(record)  # _record_for returns a grid record only as its key's current one
        events: list[Message] = []
        accepted = live and not was_acked and acknowledged
        if accepted:
            record.acked_ns = now_ns
            events.append(
                OrderAccepted(
                    ts_ns=ts_ns,
                    key=record.event_key,
                    order_id=record.order_id,
                    perm_id=record.perm_id,
                    side="BUY" if record.side == "BUY" else "SELL",
                    quantity=record.quantity,
                    limit=record.limit,
                    status=record.status,
                    client_id=record.client_id,
                )
            )
        if record.status == status and record.filled == filled and record.avg_fill_price == avg_fill_price:
            return events
        if record.final:
            if may_end:
                events.append(self._final_event(record, ts_ns))
        elif (accepted and record.filled == 0) or record.status in CLIENT_SIDE_STATUSES:
            # The acceptance says it all; a client-side status says nothing about IB.
            pass
        else:
            events.append(_status_event(record, ts_ns))
        return events

    def by_order_id(self, client_id: int, order_id: int) -> OrderRecord | None:
        """The grid record of one of our orders by IB's orderId (errors name an order only by it)."""
        if order_id <= 0:
            return None
        for record in self._by_key.values():
            if record.order_id == order_id and record.client_id == client_id:
                return record
        return None

    def note_error(self, client_id: int, order_id: int, code: int, text: str) -> OrderRecord | None:
        """Remember IB's error about one of our orders; a cancel confirmation (202) never hides a real error."""
        record = self.by_order_id(client_id, order_id)
        if record is not None and (code != CANCEL_CONFIRMATION or record.error_code == 0):
            record.error_code = code
            record.error_text = text
        return record

    def final_event(self, record: OrderRecord, ts_ns: int = 0) -> Message:
        """The event that settles a final record (OrderRejected or OrderCancelled); filled orders settle by fills."""
        return self._final_event(record, ts_ns)

    def _final_event(self, record: OrderRecord, ts_ns: int) -> Message:
        rejected = (
            record.status in {"Cancelled", "Inactive", "ApiCancelled"}
            and record.filled == 0
            and not record.cancel_reason
            and record.error_code not in (0, CANCEL_CONFIRMATION)
        )
        if rejected:
            return OrderRejected(
                ts_ns=ts_ns,
                key=record.event_key,
                order_id=record.order_id,
                code=record.error_code,
                text=record.error_text,
            )
        if record.status == "Filled":
            return _status_event(record, ts_ns)
        reason = record.cancel_reason or (
            f"IB {record.error_code}: {record.error_text}"
            if record.error_code
            else f"IB status {record.status}"
        )
        return OrderCancelled(
            ts_ns=ts_ns,
            key=record.event_key,
            order_id=record.order_id,
            perm_id=record.perm_id,
            filled=record.filled,
            reason=reason,
            avg_fill_price=record.avg_fill_price,
        )

    def _record_for(self, info: OpenOrderInfo, now_ns: int) -> OrderRecord | None:
        record = self._by_key.get(info.key)
        if record is not None:
            # The key's current record (a key of the table is a grid intent key: it was parsed when entered).
            if _same_order(record, info.client_id, info.order_id, info.perm_id):
                return record
            if not _replaced_by(record, info):
                return None
            return self._enter_adopted(info, record.slot, now_ns)
        intent = intent_of(info.key)
        if intent is None:
            ident = (info.client_id, info.order_id, info.perm_id)
            record = self._foreign.get(ident)
            if record is None:
                for candidate in self._foreign.values():
                    if _same_order(candidate, info.client_id, info.order_id, info.perm_id):
                        return candidate
                record = _new_record(info, None, now_ns)
                self._foreign[ident] = record
            return record
        return self._enter_adopted(info, intent.slot, now_ns)

    def _enter_adopted(self, info: OpenOrderInfo, slot: Slot | None, now_ns: int) -> OrderRecord:
        fresh = _new_record(info, slot, now_ns)
        self._enter(fresh)
        return fresh

    # ------------------------------------------------------------------------------------------ resync

    def rebuild(self, orders: Iterable[OpenOrderInfo], now_ns: int, ts_ns: int = 0) -> list[Message]:
        """Merge the broker's open and completed orders (broker truth beats memory); return what changed.

        Records of ours that IB does not know at all are dropped: a QUEUED one never left, and one that was
        handed to IB just before a disconnect and is unknown after the resync was lost on the way.
        """
        events: list[Message] = []
        seen: set[int] = set()
        for info in _dominant_first(orders):
            known = self.find(info.key, info.client_id, info.order_id, info.perm_id) is not None
            changes = self.apply(info, now_ns, ts_ns)
            # An order first met in the sync is history the snapshot carries; only a live grid order adopted
            # from an earlier run is announced, so that consumers learn its ids.
            events.extend(changes if known else [e for e in changes if isinstance(e, OrderAccepted)])
            record = self.find(info.key, info.client_id, info.order_id, info.perm_id)
            if record is not None:
                seen.add(id(record))
        for key, record in list(self._live.items()):
            # A QUEUED record is still waiting in the submission queue (a resync without a disconnect).
            if id(record) not in seen and record.live and record.status != QUEUED:
                self._withdraw(key)
        for ident, record in list(self._foreign.items()):
            if id(record) not in seen and record.status != QUEUED:
                del self._foreign[ident]
        return events

    def unknown_after_resync(self, records: Iterable[OrderRecord]) -> list[OrderRecord]:
        """Those of ``records`` (sent before a resync) that the table no longer holds."""
        return [r for r in records if self._by_key.get(r.key) is not r]

    # ------------------------------------------------------------------------------------------ monitoring

    def overdue(self, now_ns: int, ack_timeout_ns: int, immediate_timeout_ns: int) -> list[Overdue]:
        """Orders to cancel: handed to IB and not acknowledged in time, or immediate and not final in time."""
        found = _overdue_among(self._watched.values(), now_ns, ack_timeout_ns, immediate_timeout_ns)
        if len(found) > 1:
            found.sort(key=lambda overdue: self._place_of(overdue.record))
        ours = [r for r in self._foreign.values() if r.placed_by_us]
        if ours:
            found += _overdue_among(ours, now_ns, ack_timeout_ns, immediate_timeout_ns)
        return found

    # ------------------------------------------------------------------------------------------ the live index

    def _enter(self, record: OrderRecord) -> None:
        """Make ``record`` its key's current record (a new key goes to the end of the table's order)."""
        key = record.key
        if key not in self._by_key:
            self._place[key] = self._next_place
            self._next_place += 1
        self._by_key[key] = record
        self._track(record)

    def _withdraw(self, key: str) -> None:
        """Forget ``key`` and its record."""
        del self._by_key[key]
        del self._place[key]
        self._live.pop(key, None)
        self._watched.pop(key, None)

    def _track(self, record: OrderRecord) -> None:
        """Index ``record``, its key's current record, after its status or acknowledgement may have changed."""
        key = record.key
        if not record.live:
            self._live.pop(key, None)
            self._watched.pop(key, None)
            return
        self._live[key] = record
        if record.immediate or not record.acknowledged:
            self._watched[key] = record
        else:
            self._watched.pop(key, None)

    def _place_of(self, record: OrderRecord) -> int:
        return self._place[record.key]


def _overdue_among(
    records: Iterable[OrderRecord], now_ns: int, ack_timeout_ns: int, immediate_timeout_ns: int
) -> list[Overdue]:
    found: list[Overdue] = []
    for record in records:
        # Its age first: most records are not old enough for either timeout.
        age = now_ns - record.sent_ns
        if record.immediate and age >= immediate_timeout_ns:
            kind = OverdueKind.IMMEDIATE_NOT_FINAL
        elif age >= ack_timeout_ns and not record.acknowledged:
            kind = OverdueKind.NOT_ACKNOWLEDGED
        else:
            continue
        if record.cancel_reason or record.cancel_sent_ns or record.status == QUEUED or not record.live:
            continue  # not sent yet, cancelled already, or over
        found.append(Overdue(record, kind))
    return found


def _replaced_by(record: OrderRecord, info: OpenOrderInfo) -> bool:
    """Whether IB's report of another order of the same key makes that order the key's current one.

    A key's current order is, in this order of precedence: a live one, a filled one, the latest other. A report
    about an older order (cancelled before the key was placed again) never displaces the current one.
    """
    if _same_order(record, info.client_id, info.order_id, info.perm_id):
        return False
    incoming_final = info.status in FINAL_STATUSES
    if record.live:
        # Our own command still waiting in the queue yields to a live order an earlier run placed (it will not be
        # sent: the worker finds it replaced). Two live orders for one key cannot come from this executor: keep
        # the first, the reconciliation reports the other.
        return record.status == QUEUED and not incoming_final
    if record.filled > 0 or record.status == "Filled":
        return False
    # The current order ended unfilled: a live or filled order of the key wins, another unfilled end is history.
    return not incoming_final or info.filled > 0


def _same_order(record: OrderRecord, client_id: int, order_id: int, perm_id: int) -> bool:
    if record.perm_id and perm_id:
        return record.perm_id == perm_id
    return record.order_id == order_id and record.client_id == client_id


def _new_record(info: OpenOrderInfo, slot: Slot | None, now_ns: int) -> OrderRecord:
    """A record for an order first met in IB's reports (placed by an earlier run, or by someone else)."""
    return OrderRecord(
        key=info.key,
        side=info.side,
        quantity=info.quantity,
        limit=info.limit,
        slot=slot,
        status="",
        # A grid Level-0 BUY is the grid's immediate order (DESIGN section 4): one adopted after a restart still
        # gets its deadline, counted from the adoption since IB does not say when it was placed.
        immediate=slot is not None and slot[1] == 0 and slot[2] is Side.BUY,
        created_ns=now_ns,
        sent_ns=now_ns,
    )


def _update(record: OrderRecord, info: OpenOrderInfo) -> None:
    record.order_id = info.order_id or record.order_id
    record.perm_id = info.perm_id or record.perm_id
    record.client_id = info.client_id or record.client_id
    record.status = info.status
    # A status report can lag an execution the table has already counted; filled quantities only grow.
    if info.filled >= record.filled:
        record.filled = info.filled
        if info.avg_fill_price:
            record.avg_fill_price = info.avg_fill_price
    if info.quantity:
        record.quantity = info.quantity
    if info.limit:
        record.limit = info.limit
    record.symbol = info.symbol or record.symbol
    record.tif = info.tif or record.tif
    record.outside_rth = info.outside_rth
    if info.condition_price is not None:
        record.condition_price = info.condition_price


def _status_event(record: OrderRecord, ts_ns: int) -> OrderStatusChanged:
    return OrderStatusChanged(
        ts_ns=ts_ns,
        key=record.event_key,
        order_id=record.order_id,
        perm_id=record.perm_id,
        status=record.status,
        filled=record.filled,
        remaining=max(record.quantity - record.filled, 0),
        avg_fill_price=record.avg_fill_price,
    )


def _dominant_first(orders: Iterable[OpenOrderInfo]) -> list[OpenOrderInfo]:
    """Order the broker's reports so that, per key, the order that must win is applied last.

    A key can have several orders at IB (one cancelled unfilled, then placed again): the live one wins, then a
    filled one, then the rest.
    """

    def rank(info: OpenOrderInfo) -> tuple[int, int]:
        if info.status in LIVE_STATUSES:
            return (2, info.perm_id)
        if info.filled > 0 or info.status == "Filled":
            return (1, info.perm_id)
        return (0, info.perm_id)

    return sorted(orders, key=rank)


def _is_cent_price(price: Decimal) -> bool:
    return price.is_finite() and price > 0 and price == price.quantize(CENT)


# ---------------------------------------------------------------------------------------------- executions


@dataclass(slots=True)
class ExecLedger:
    """Executions and commission reports already published, by execId (each is published exactly once)."""

    _published: set[str] = field(default_factory=set)
    _commissions: set[str] = field(default_factory=set)
    # Per order (permId): execId -> (shares, price), to aggregate an order filled in pieces.
    _by_order: dict[int, dict[str, tuple[int, Decimal]]] = field(default_factory=dict)

    def is_new(self, exec_id: str) -> bool:
        return exec_id not in self._published

    def record(self, execution: ExecutionInfo) -> ExecutionInfo | None:
        """Enter an execution; None when it was published before. Fills in cum_qty/avg_price when IB left them 0."""
        if execution.exec_id in self._published:
            return None
        self._published.add(execution.exec_id)
        pieces = self._by_order.setdefault(execution.perm_id, {})
        pieces[execution.exec_id] = (execution.shares, execution.price)
        if execution.cum_qty > 0 and execution.avg_price > 0:
            return execution
        cum = sum(shares for shares, _ in pieces.values())
        cost = sum((shares * price for shares, price in pieces.values()), Decimal(0))
        avg = (cost / cum).quantize(Decimal("0.00000001")).normalize() if cum else Decimal(0)
        return ExecutionInfo(
            exec_id=execution.exec_id,
            key=execution.key,
            order_id=execution.order_id,
            perm_id=execution.perm_id,
            side=execution.side,
            shares=execution.shares,
            price=execution.price,
            cum_qty=cum,
            avg_price=avg,
            exec_ts_ns=execution.exec_ts_ns,
            commission=execution.commission,
        )

    def commission_is_new(self, exec_id: str) -> bool:
        """True once per execId: whether its commission report is still to be published."""
        if exec_id in self._commissions:
            return False
        self._commissions.add(exec_id)
        return True


def missed(executions: Iterable[ExecutionInfo], ledger: ExecLedger) -> list[ExecutionInfo]:
    """The executions not yet published, oldest first (as IB filled them), each once."""
    fresh: dict[str, ExecutionInfo] = {}
    for execution in executions:
        if ledger.is_new(execution.exec_id) and execution.exec_id not in fresh:
            fresh[execution.exec_id] = execution
    return sorted(fresh.values(), key=lambda e: (e.exec_ts_ns, e.cum_qty))


# ---------------------------------------------------------------------------------------------- pacing


@dataclass(slots=True)
class SendWindow:
    """At most ``max_per_second`` messages in any sliding one-second window (IB allows 50; we keep to 45)."""

    max_per_second: int
    window_s: float = 1.0
    _sent: list[float] = field(default_factory=list)

    def delay(self, now: float) -> float:
        """Seconds to wait before the next message may go."""
        self._sent = [t for t in self._sent if now - t < self.window_s]
        if len(self._sent) < self.max_per_second:
            return 0.0
        return self._sent[0] + self.window_s - now

    def record(self, now: float) -> None:
        self._sent.append(now)


@dataclass(slots=True)
class Backoff:
    """Reconnect delays: ``initial`` seconds, doubling up to ``maximum`` (1 s -> 30 s by default)."""

    initial: float
    maximum: float
    _next: float = 0.0

    def next(self) -> float:
        delay = self._next or self.initial
        self._next = min(delay * 2, self.maximum)
        return min(delay, self.maximum)

    def reset(self) -> None:
        self._next = 0.0


# ---------------------------------------------------------------------------------------------- IB's codes


class ErrorKind(Enum):
    INFO = "info"  # farm status 2100-2199 and warnings: logged only
    CONNECTIVITY_LOST = "connectivity_lost"  # 1100
    RESTORED_DATA_LOST = "restored_data_lost"  # 1101: resubscribe, full resync
    RESTORED = "restored"  # 1102: carry on
    CLIENT_ID_IN_USE = "client_id_in_use"  # 326
    PACING = "pacing"  # 100
    ORDER = "order"  # about one order (reqId = orderId)
    OTHER = "other"


# Warnings that do not end an order (ib_insync's and ib_async's lists together, without 202).
WARNING_CODES = frozenset({105, 110, 165, 321, 329, 399, 404, 434, 492, 10167})


def classify_error(code: int, req_id: int, is_our_order: bool) -> ErrorKind:
    """What an IB error code means to the executor."""
    if code == 1100:
        return ErrorKind.CONNECTIVITY_LOST
    if code == 1101:
        return ErrorKind.RESTORED_DATA_LOST
    if code == 1102:
        return ErrorKind.RESTORED
    if code == 326:
        return ErrorKind.CLIENT_ID_IN_USE
    if code == 100:
        return ErrorKind.PACING
    if 2100 <= code < 2200 or code in WARNING_CODES:
        return ErrorKind.INFO
    if is_our_order and req_id > 0:
        return ErrorKind.ORDER
    return ErrorKind.OTHER


# Error kinds that, about one of our orders, end it (the order is rejected with that code).
ORDER_ENDING = frozenset({ErrorKind.ORDER, ErrorKind.PACING})
