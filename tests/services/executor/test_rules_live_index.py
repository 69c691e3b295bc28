"""The intent table's live index: its queries answer exactly what a scan of every record the table holds answers.

The table keeps every key ever placed; ``live_grid``, ``live_in_slot``, ``count_live`` and ``overdue`` look only at
the records that may be live (an index the table maintains). Random sequences of what the executor does to the
table (commands, IB's reports, withdrawals, resyncs, the monitor's marks) check every query, after every step,
against the plain scan of all records (the oracle below; ``records()`` lists them in the table's order).
"""

from __future__ import annotations

from decimal import Decimal

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from core.intent import Side
from proto.messages import ClosePosition, OpenOrderInfo, PlaceOrder
from services.executor.rules import (
    CLOSE_REF,
    QUEUED,
    Gate,
    IntentTable,
    Limits,
    OrderRecord,
    Overdue,
    Slot,
    Submit,
)

SEC = 1_000_000_000
ACK_TIMEOUT = 15 * SEC
IMMEDIATE_TIMEOUT = 120 * SEC
# Keys that share slots (a second attempt of a level, two SELLs of one slot), so that one slot can hold two live
# records (adopted from IB's reports) and "the holder" depends on the table's order.
GRID_KEYS = [
    "tqgrid1 c1 L0 BUY",
    "tqgrid1 c1 L0 BUY a2",
    "tqgrid1 c1 L1 BUY",
    "tqgrid1 c1 L1 BUY a2",
    "tqgrid1 c2 L1 BUY",
    "tqgrid1 c1 L1 SELL 99.50",
    "tqgrid1 c1 L1 SELL a2 99.40",
    "tqgrid1 c1 L2 SELL 98.01",
]
FOREIGN_KEYS = ["", "manual order", CLOSE_REF]
SLOTS: list[Slot] = [(1, 0, Side.BUY), (1, 1, Side.BUY), (2, 1, Side.BUY), (1, 1, Side.SELL), (1, 2, Side.SELL)]
STATUSES = [
    "PendingSubmit", "ApiPending", "PreSubmitted", "Submitted", "PendingCancel", "Filled", "Cancelled",
    "ApiCancelled", "Inactive", "ValidationError",
]
CLIENTS = [17, 3]
OPEN = Gate(connected=True, synced=True)


def side_of(key: str) -> str:
    return "SELL" if " SELL" in key else "BUY"


# --------------------------------------------------------------------------------------------- the oracle


def scan_grid(t: IntentTable) -> list[OrderRecord]:
    return [r for r in t.records() if r.grid]


def scan_live_grid(t: IntentTable) -> list[OrderRecord]:
    return [r for r in scan_grid(t) if r.live]


def scan_live_in_slot(t: IntentTable, slot: Slot) -> OrderRecord | None:
    return next((r for r in scan_grid(t) if r.live and r.slot == slot), None)


def scan_count_live(t: IntentTable, side: Side) -> int:
    return sum(1 for r in scan_grid(t) if r.live and r.slot is not None and r.slot[2] is side)


def scan_overdue(t: IntentTable, now_ns: int) -> list[tuple[OrderRecord, str]]:
    """IntentTable.overdue as it was written before the index: every grid record, then ours among the foreign."""
    found: list[tuple[OrderRecord, str]] = []
    ours = [r for r in t.records() if not r.grid and r.placed_by_us]
    for record in [*scan_grid(t), *ours]:
        if not record.live or record.status == QUEUED or record.cancel_sent_ns or record.cancel_reason:
            continue
        age = now_ns - record.sent_ns
        if record.immediate and age >= IMMEDIATE_TIMEOUT:
            found.append((record, "immediate_not_final"))
        elif not record.acknowledged and age >= ACK_TIMEOUT:
            found.append((record, "not_acknowledged"))
    return found


def same_overdue(found: list[Overdue], expected: list[tuple[OrderRecord, str]]) -> bool:
    return same_records([o.record for o in found], [r for r, _ in expected]) and [
        o.kind.value for o in found
    ] == [kind for _, kind in expected]


def same_records(a: list[OrderRecord], b: list[OrderRecord]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


# --------------------------------------------------------------------------------------------- the machine

reports = st.builds(
    OpenOrderInfo,
    key=st.sampled_from(GRID_KEYS + FOREIGN_KEYS),
    order_id=st.integers(1, 6),
    perm_id=st.sampled_from([0, 0, 1001, 1002, 1003, 1004]),
    client_id=st.sampled_from(CLIENTS),
    symbol=st.just("TQQQ"),
    side=st.sampled_from(["BUY", "SELL"]),
    quantity=st.just(10),
    limit=st.just(Decimal("100.00")),
    tif=st.just("GTC"),
    outside_rth=st.just(True),
    status=st.sampled_from(STATUSES),
    filled=st.sampled_from([0, 0, 0, 4, 10]),
    remaining=st.just(0),
    avg_fill_price=st.just(Decimal(0)),
)


class LiveIndexMachine(RuleBasedStateMachine):
    records = Bundle("records")

    def __init__(self) -> None:
        super().__init__()
        self.table = IntentTable(Limits("TQQQ", max_live_buys=3, max_live_sells=2))
        self.now = 0
        self.next_order_id = 1

    def tick(self, seconds: int) -> int:
        self.now += seconds * SEC
        return self.now

    @rule(target=records, key=st.sampled_from(GRID_KEYS), immediate=st.booleans(), open_gate=st.booleans(),
          dt=st.integers(0, 200))
    def place(self, key: str, immediate: bool, open_gate: bool, dt: int) -> OrderRecord | None:
        cmd = PlaceOrder(key=key, symbol="TQQQ", side=side_of(key), quantity=10,  # type: ignore[arg-type]
                         limit=Decimal("100.00"), tif="GTC", immediate=immediate)
        decision = self.table.decide_place(cmd, OPEN if open_gate else Gate(), self.tick(dt))
        return decision.record if isinstance(decision, Submit) else None

    @rule(target=records, dt=st.integers(0, 200))
    def close_position(self, dt: int) -> OrderRecord | None:
        cmd = ClosePosition(side="SELL", quantity=5, limit=Decimal("99.00"))
        decision = self.table.decide_close(cmd, OPEN, 10, self.tick(dt))
        return decision.record if isinstance(decision, Submit) else None

    @rule(record=records, client_id=st.sampled_from(CLIENTS), dt=st.integers(0, 200))
    def mark_sent(self, record: OrderRecord | None, client_id: int, dt: int) -> None:
        if record is not None:
            self.table.mark_sent(record, self.next_order_id, client_id, self.tick(dt))
            self.next_order_id += 1

    @rule(record=records, status=st.sampled_from(STATUSES), filled=st.sampled_from([0, 4, 10]),
          perm_id=st.integers(0, 1), dt=st.integers(0, 200))
    def report_of_ours(self, record: OrderRecord | None, status: str, filled: int, perm_id: int, dt: int) -> None:
        """IB's report about one of the orders the table entered (its ids as sent)."""
        if record is None:
            return
        info = OpenOrderInfo(
            key=record.key, order_id=record.order_id, perm_id=(2000 + record.order_id) * perm_id,
            client_id=record.client_id, symbol="TQQQ", side="SELL" if record.side == "SELL" else "BUY",
            quantity=record.quantity, limit=record.limit, tif="GTC", outside_rth=True, status=status,
            filled=filled, remaining=record.quantity - filled, avg_fill_price=Decimal(0),
        )
        self.table.apply(info, self.tick(dt))

    @rule(info=reports, dt=st.integers(0, 200))
    def report_of_any(self, info: OpenOrderInfo, dt: int) -> None:
        """IB's report about any order: one of ours, an earlier run's (adopted), a foreign one."""
        self.table.apply(info, self.tick(dt))

    @rule(record=records)
    def forget_unsent(self, record: OrderRecord | None) -> None:
        if record is not None:
            self.table.forget_unsent(record)

    @rule(record=records, reason=st.sampled_from(["CancelOrder", "immediate timeout"]), sent=st.booleans())
    def cancel(self, record: OrderRecord | None, reason: str, sent: bool) -> None:
        """As the command handler and the monitor: a queued record is withdrawn, a sent one marked for its cancel."""
        if record is None:
            return
        if record.status == QUEUED:
            self.table.forget_unsent(record)
            record.status = "Cancelled"
        record.cancel_reason = reason
        if sent:
            record.cancel_sent_ns = self.now

    @rule(infos=st.lists(reports, max_size=6), dt=st.integers(0, 200))
    def rebuild(self, infos: list[OpenOrderInfo], dt: int) -> None:
        self.table.rebuild(infos, self.tick(dt))

    @invariant()
    def the_queries_answer_what_a_scan_answers(self) -> None:
        t = self.table
        assert same_records(t.live_grid(), scan_live_grid(t))
        for slot in SLOTS:
            assert t.live_in_slot(slot) is scan_live_in_slot(t, slot)
        for side in Side:
            assert t.count_live(side) == scan_count_live(t, side)
        for later in (0, 10, 20, 130, 400):
            now = self.now + later * SEC
            assert same_overdue(t.overdue(now, ACK_TIMEOUT, IMMEDIATE_TIMEOUT), scan_overdue(t, now))

    @invariant()
    def the_indexes_hold_no_more_than_they_need(self) -> None:
        # White-box: nothing here changes a status behind the table's back, so the indexes are exact (a stale entry
        # would not change an answer, only make the queries look at more than the live orders).
        t = self.table
        live = scan_live_grid(t)
        assert {id(r) for r in t._live.values()} == {id(r) for r in live}
        assert {id(r) for r in t._watched.values()} == {
            id(r) for r in live if r.immediate or not r.acknowledged
        }


LiveIndexMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestLiveIndex = LiveIndexMachine.TestCase
