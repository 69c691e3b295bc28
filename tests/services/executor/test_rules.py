"""The executor's pure core: the intent table's decisions, IB's answers applied, overdue orders, pacing."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.intent import Side
from proto.messages import (
    ClosePosition,
    ExecutionInfo,
    OpenOrderInfo,
    OrderAccepted,
    OrderCancelled,
    OrderRejected,
    OrderStatusChanged,
    PlaceOrder,
    PriceCondition,
)
from services.executor.rules import (
    CLOSE_REF,
    QUEUED,
    Backoff,
    Duplicate,
    ErrorKind,
    ExecLedger,
    Gate,
    IntentTable,
    Limits,
    OverdueKind,
    Refuse,
    SendWindow,
    Submit,
    classify_error,
    missed,
)

OPEN = Gate(connected=True, synced=True)
SEC = 1_000_000_000
CLIENT = 17


def table(max_buys: int = 4, max_sells: int = 18) -> IntentTable:
    return IntentTable(Limits("TQQQ", max_buys, max_sells))


def place(key: str, side: str = "BUY", quantity: int = 94, limit: str = "100.25", **kw: object) -> PlaceOrder:
    return PlaceOrder(key=key, symbol="TQQQ", side=side, quantity=quantity, limit=Decimal(limit), tif="GTC", **kw)  # type: ignore[arg-type]


def report(key: str, order_id: int, status: str, *, perm_id: int = 0, filled: int = 0, side: str = "BUY",
           quantity: int = 94, client_id: int = CLIENT, avg: str = "0") -> OpenOrderInfo:
    return OpenOrderInfo(
        key=key, order_id=order_id, perm_id=perm_id, client_id=client_id, symbol="TQQQ", side=side,  # type: ignore[arg-type]
        quantity=quantity, limit=Decimal("100.25"), tif="GTC", outside_rth=True, status=status, filled=filled,
        remaining=quantity - filled, avg_fill_price=Decimal(avg),
    )


def submitted(t: IntentTable, key: str, order_id: int, **kw: object) -> None:
    """Place ``key`` and let IB acknowledge it as orderId ``order_id``."""
    decision = t.decide_place(place(key, **kw), OPEN, 0)  # type: ignore[arg-type]
    assert isinstance(decision, Submit)
    t.mark_sent(decision.record, order_id, CLIENT, 1)
    side = str(kw.get("side", "BUY"))
    t.apply(report(key, order_id, "Submitted", perm_id=1000 + order_id, side=side), 2)


# --------------------------------------------------------------------------------------------- PlaceOrder


def test_first_command_for_a_key_is_submitted_and_entered_at_once() -> None:
    t = table()
    decision = t.decide_place(place("tqgrid1 c1 L0 BUY"), OPEN, 5)
    assert isinstance(decision, Submit)
    assert t.get("tqgrid1 c1 L0 BUY") is decision.record
    assert decision.record.status == QUEUED and decision.record.live


def test_repeats_of_a_queued_key_are_duplicates_before_ib_has_answered() -> None:
    t = table()
    decisions = [t.decide_place(place("tqgrid1 c1 L0 BUY"), OPEN, 0) for _ in range(10)]
    assert isinstance(decisions[0], Submit)
    assert all(isinstance(d, Duplicate) for d in decisions[1:])


def test_filled_key_is_a_duplicate_even_when_no_longer_live() -> None:
    t = table()
    submitted(t, "tqgrid1 c1 L0 BUY", 7)
    t.apply(report("tqgrid1 c1 L0 BUY", 7, "Filled", perm_id=1007, filled=94, avg="100.20"), 3)
    decision = t.decide_place(place("tqgrid1 c1 L0 BUY"), OPEN, 4)
    assert isinstance(decision, Duplicate)
    assert decision.record.status == "Filled" and decision.record.order_id == 7


def test_key_cancelled_with_nothing_filled_may_be_placed_again() -> None:
    t = table()
    submitted(t, "tqgrid1 c1 L2 BUY", 7)
    t.apply(report("tqgrid1 c1 L2 BUY", 7, "Cancelled", perm_id=1007), 3)
    assert isinstance(t.decide_place(place("tqgrid1 c1 L2 BUY"), OPEN, 4), Submit)


def test_key_cancelled_after_a_partial_fill_is_a_duplicate() -> None:
    t = table()
    submitted(t, "tqgrid1 c1 L0 BUY", 7)
    t.apply(report("tqgrid1 c1 L0 BUY", 7, "Cancelled", perm_id=1007, filled=40), 3)
    assert isinstance(t.decide_place(place("tqgrid1 c1 L0 BUY"), OPEN, 4), Duplicate)


def test_second_live_order_for_a_slot_is_refused_whatever_its_attempt() -> None:
    t = table()
    submitted(t, "tqgrid1 c1 L0 BUY", 7)
    decision = t.decide_place(place("tqgrid1 c1 L0 BUY a2"), OPEN, 3)
    assert isinstance(decision, Refuse)
    assert "slot (cycle 1, level 0, BUY)" in decision.reason and "tqgrid1 c1 L0 BUY" in decision.reason


def test_next_attempt_is_allowed_once_the_first_is_final() -> None:
    t = table()
    submitted(t, "tqgrid1 c1 L0 BUY", 7)
    t.apply(report("tqgrid1 c1 L0 BUY", 7, "Cancelled", perm_id=1007), 3)
    assert isinstance(t.decide_place(place("tqgrid1 c1 L0 BUY a2"), OPEN, 4), Submit)


def test_buy_cap_counts_live_grid_buys() -> None:
    t = table(max_buys=4)
    for level in range(1, 5):
        submitted(t, f"tqgrid1 c1 L{level} BUY", level)
    decision = t.decide_place(place("tqgrid1 c1 L5 BUY"), OPEN, 3)
    assert isinstance(decision, Refuse)
    assert "order cap" in decision.reason and "broker.max_live_buys" in decision.reason


def test_sell_cap_is_max_live_sells_and_buys_do_not_count() -> None:
    t = table(max_buys=4, max_sells=2)
    submitted(t, "tqgrid1 c1 L1 BUY", 1)
    submitted(t, "tqgrid1 c1 L2 SELL 99.00", 2, side="SELL")
    submitted(t, "tqgrid1 c1 L3 SELL 98.01", 3, side="SELL")
    decision = t.decide_place(place("tqgrid1 c1 L4 SELL 97.03", side="SELL"), OPEN, 3)
    assert isinstance(decision, Refuse) and "strategy.max_live_sells" in decision.reason
    assert isinstance(t.decide_place(place("tqgrid1 c1 L2 BUY"), OPEN, 3), Submit)


@pytest.mark.parametrize(
    ("gate", "words"),
    [
        (Gate(), "disconnected"),
        (Gate(connected=True), "not yet synced"),
        (Gate(connected=True, synced=True, connectivity_lost=True), "1100"),
        (Gate(connected=True, synced=True, halted=True, halt_reason="reconcile"), "halted (reconcile)"),
    ],
)
def test_refused_while_disconnected_unsynced_paused_or_halted(gate: Gate, words: str) -> None:
    t = table()
    decision = t.decide_place(place("tqgrid1 c1 L0 BUY"), gate, 0)
    assert isinstance(decision, Refuse) and words in decision.reason
    assert t.get("tqgrid1 c1 L0 BUY") is None


@pytest.mark.parametrize(
    ("cmd", "words"),
    [
        (place("old bot order"), "not a grid intent key"),
        (place("tqgrid1 c1 L0 BUY", side="SELL"), "contradicts the key"),
        (place("tqgrid1 c1 L0 BUY", quantity=0), "quantity"),
        (place("tqgrid1 c1 L0 BUY", limit="100.255"), "whole cents"),
        (place("tqgrid1 c1 L1 BUY", condition=PriceCondition(price=Decimal("99.001"))), "condition price"),
        (PlaceOrder(key="tqgrid1 c1 L0 BUY", symbol="QQQ", side="BUY", quantity=1, limit=Decimal(1), tif="DAY"),
         "general.symbol"),
    ],
)
def test_bad_commands_are_refused_naming_the_problem(cmd: PlaceOrder, words: str) -> None:
    decision = table().decide_place(cmd, OPEN, 0)
    assert isinstance(decision, Refuse) and words in decision.reason


# --------------------------------------------------------------------------------------------- IB's answers


def test_acknowledgement_publishes_order_accepted_once() -> None:
    t = table()
    decision = t.decide_place(place("tqgrid1 c1 L0 BUY"), OPEN, 0)
    assert isinstance(decision, Submit)
    t.mark_sent(decision.record, 7, CLIENT, 1)
    first = t.apply(report("tqgrid1 c1 L0 BUY", 7, "PreSubmitted", perm_id=55), 2)
    again = t.apply(report("tqgrid1 c1 L0 BUY", 7, "PreSubmitted", perm_id=55), 3)
    later = t.apply(report("tqgrid1 c1 L0 BUY", 7, "Submitted", perm_id=55), 4)
    assert [type(e) for e in first] == [OrderAccepted]
    assert isinstance(first[0], OrderAccepted) and first[0].perm_id == 55 and first[0].order_id == 7
    assert again == []
    assert [type(e) for e in later] == [OrderStatusChanged]


def test_rejection_with_error_code_becomes_order_rejected() -> None:
    t = table()
    decision = t.decide_place(place("tqgrid1 c1 L0 BUY"), OPEN, 0)
    assert isinstance(decision, Submit)
    t.mark_sent(decision.record, 7, CLIENT, 1)
    t.note_error(CLIENT, 7, 201, "Order rejected - reason: no")
    events = t.apply(report("tqgrid1 c1 L0 BUY", 7, "Cancelled"), 2)
    assert events == [OrderRejected(key="tqgrid1 c1 L0 BUY", order_id=7, code=201, text="Order rejected - reason: no")]
    assert not decision.record.live


def test_cancel_we_asked_for_is_order_cancelled_with_our_reason() -> None:
    t = table()
    submitted(t, "tqgrid1 c1 L2 BUY", 7)
    record = t.get("tqgrid1 c1 L2 BUY")
    assert record is not None
    record.cancel_reason = "queue moved"
    t.note_error(CLIENT, 7, 202, "Order Canceled - reason:")
    events = t.apply(report("tqgrid1 c1 L2 BUY", 7, "Cancelled", perm_id=1007), 3)
    assert len(events) == 1 and isinstance(events[0], OrderCancelled)
    assert events[0].reason == "queue moved" and events[0].filled == 0 and events[0].perm_id == 1007


def test_library_pseudo_status_is_ignored() -> None:
    t = table()
    submitted(t, "tqgrid1 c1 L2 BUY", 7)
    assert t.apply(report("tqgrid1 c1 L2 BUY", 7, "ValidationError", perm_id=1007), 3) == []
    record = t.get("tqgrid1 c1 L2 BUY")
    assert record is not None and record.status == "Submitted"


def test_foreign_orders_are_tracked_apart_with_an_empty_event_key() -> None:
    t = table()
    events = t.apply(report("", 3, "Submitted", perm_id=77, client_id=5, side="SELL"), 1)
    assert isinstance(events[0], OrderAccepted) and events[0].key == ""
    assert [r.perm_id for r in t.live_foreign()] == [77]
    assert t.count_live(Side.SELL) == 0


def test_rebuild_adopts_a_live_grid_order_and_announces_it() -> None:
    t = table()
    events = t.rebuild([report("tqgrid1 c3 L1 SELL 99.00", 9, "Submitted", perm_id=99, side="SELL")], 1)
    assert [type(e) for e in events] == [OrderAccepted]
    decision = t.decide_place(place("tqgrid1 c3 L1 SELL 99.00", side="SELL"), OPEN, 2)
    assert isinstance(decision, Duplicate) and decision.record.perm_id == 99


def test_rebuild_keeps_history_quiet_but_remembers_filled_keys() -> None:
    t = table()
    events = t.rebuild([report("tqgrid1 c3 L0 BUY", 4, "Filled", perm_id=44, filled=94)], 1)
    assert events == []
    assert isinstance(t.decide_place(place("tqgrid1 c3 L0 BUY"), OPEN, 2), Duplicate)


def test_rebuild_prefers_the_live_order_of_a_key_placed_twice() -> None:
    t = table()
    t.rebuild(
        [
            report("tqgrid1 c3 L2 BUY", 12, "Submitted", perm_id=120),
            report("tqgrid1 c3 L2 BUY", 10, "Cancelled", perm_id=100),
        ],
        1,
    )
    record = t.get("tqgrid1 c3 L2 BUY")
    assert record is not None and record.perm_id == 120 and record.live


def test_rebuild_reports_what_changed_while_away_and_drops_what_ib_never_got() -> None:
    t = table()
    submitted(t, "tqgrid1 c1 L1 SELL 99.00", 5, side="SELL")
    lost = t.decide_place(place("tqgrid1 c1 L2 BUY"), OPEN, 3)
    assert isinstance(lost, Submit)
    t.mark_sent(lost.record, 6, CLIENT, 4)
    events = t.rebuild([report("tqgrid1 c1 L1 SELL 99.00", 5, "Filled", perm_id=1005, filled=94, side="SELL")], 5)
    assert [(type(e), getattr(e, "status", "")) for e in events] == [(OrderStatusChanged, "Filled")]
    assert t.get("tqgrid1 c1 L2 BUY") is None
    assert isinstance(t.decide_place(place("tqgrid1 c1 L2 BUY"), OPEN, 6), Submit)


def test_rebuild_keeps_commands_still_waiting_in_the_queue() -> None:
    t = table()
    queued = t.decide_place(place("tqgrid1 c1 L2 BUY"), OPEN, 3)
    assert isinstance(queued, Submit)
    t.rebuild([], 4)
    assert t.get("tqgrid1 c1 L2 BUY") is queued.record


# --------------------------------------------------------------------------------------------- monitoring


def test_unacknowledged_order_is_overdue_after_the_ack_timeout() -> None:
    t = table()
    decision = t.decide_place(place("tqgrid1 c1 L2 BUY"), OPEN, 0)
    assert isinstance(decision, Submit)
    assert t.overdue(100 * SEC, 15 * SEC, 120 * SEC) == []  # still queued: not sent yet
    t.mark_sent(decision.record, 7, CLIENT, 10 * SEC)
    assert t.overdue(24 * SEC, 15 * SEC, 120 * SEC) == []
    [late] = t.overdue(25 * SEC, 15 * SEC, 120 * SEC)
    assert late.kind is OverdueKind.NOT_ACKNOWLEDGED and late.record is decision.record
    late.record.cancel_reason = late.reason
    assert t.overdue(26 * SEC, 15 * SEC, 120 * SEC) == []  # asked once


def test_immediate_order_is_overdue_when_not_final_in_time_even_if_acknowledged() -> None:
    t = table()
    decision = t.decide_place(place("tqgrid1 c1 L0 BUY", immediate=True), OPEN, 0)
    assert isinstance(decision, Submit)
    t.mark_sent(decision.record, 7, CLIENT, 0)
    t.apply(report("tqgrid1 c1 L0 BUY", 7, "Submitted", perm_id=5), 1 * SEC)
    assert t.overdue(119 * SEC, 15 * SEC, 120 * SEC) == []
    [late] = t.overdue(120 * SEC, 15 * SEC, 120 * SEC)
    assert late.kind is OverdueKind.IMMEDIATE_NOT_FINAL and "immediate_order_timeout" in late.reason


def test_acknowledged_resting_order_is_never_overdue() -> None:
    t = table()
    submitted(t, "tqgrid1 c1 L2 BUY", 7)
    assert t.overdue(10_000 * SEC, 15 * SEC, 120 * SEC) == []


# --------------------------------------------------------------------------------------------- executions


def execution(exec_id: str, shares: int, price: str, cum: int = 0, avg: str = "0", ts: int = 0) -> ExecutionInfo:
    return ExecutionInfo(
        exec_id=exec_id, key="tqgrid1 c1 L1 SELL 99.00", order_id=5, perm_id=1005, side="SELL", shares=shares,
        price=Decimal(price), cum_qty=cum, avg_price=Decimal(avg), exec_ts_ns=ts,
    )


def test_each_execution_is_entered_once() -> None:
    ledger = ExecLedger()
    first = execution("e1", 200, "99.00", 200, "99.00")
    assert ledger.record(first) == first
    assert ledger.record(first) is None
    assert not ledger.is_new("e1")


def test_pieces_on_several_venues_are_aggregated_when_ib_leaves_the_totals_out() -> None:
    ledger = ExecLedger()
    ledger.record(execution("e1", 200, "99.00"))
    second = ledger.record(execution("e2", 270, "99.10"))
    assert second is not None
    assert second.cum_qty == 470
    assert second.avg_price == Decimal("99.05744681")  # (200*99.00 + 270*99.10) / 470, 8 places


def test_missed_returns_unpublished_executions_oldest_first_without_repeats() -> None:
    ledger = ExecLedger()
    ledger.record(execution("e1", 200, "99.00", ts=1))
    found = missed([execution("e3", 10, "99", ts=3), execution("e1", 200, "99", ts=1), execution("e2", 5, "99", ts=2),
                    execution("e3", 10, "99", ts=3)], ledger)
    assert [e.exec_id for e in found] == ["e2", "e3"]


def test_commission_is_new_once_per_execution() -> None:
    ledger = ExecLedger()
    assert ledger.commission_is_new("e1") and not ledger.commission_is_new("e1")


# --------------------------------------------------------------------------------------------- pacing


def test_send_window_allows_45_per_second_then_waits_for_the_oldest_to_leave() -> None:
    window = SendWindow(45)
    for i in range(45):
        assert window.delay(10.0 + i * 0.01) == 0.0
        window.record(10.0 + i * 0.01)
    assert window.delay(10.5) == pytest.approx(0.5)
    assert window.delay(11.0) == 0.0


def test_backoff_doubles_from_one_second_to_thirty_and_resets() -> None:
    backoff = Backoff(1.0, 30.0)
    assert [backoff.next() for _ in range(7)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    backoff.reset()
    assert backoff.next() == 1.0


@pytest.mark.parametrize(
    ("code", "ours", "kind"),
    [
        (1100, False, ErrorKind.CONNECTIVITY_LOST),
        (1101, False, ErrorKind.RESTORED_DATA_LOST),
        (1102, False, ErrorKind.RESTORED),
        (326, False, ErrorKind.CLIENT_ID_IN_USE),
        (100, True, ErrorKind.PACING),
        (2104, False, ErrorKind.INFO),
        (2158, False, ErrorKind.INFO),
        (399, True, ErrorKind.INFO),
        (201, True, ErrorKind.ORDER),
        (201, False, ErrorKind.OTHER),
    ],
)
def test_error_codes_are_classified(code: int, ours: bool, kind: ErrorKind) -> None:
    assert classify_error(code, 7 if ours else -1, ours) is kind


def test_adopted_level0_buy_keeps_its_deadline_from_the_adoption() -> None:
    t = table()
    t.rebuild(
        [report("tqgrid1 c2 L0 BUY", 4, "Submitted", perm_id=44), report("tqgrid1 c2 L3 BUY", 5, "PreSubmitted", perm_id=45)],
        50 * SEC,
    )
    assert t.overdue(169 * SEC, 15 * SEC, 120 * SEC) == []
    [late] = t.overdue(170 * SEC, 15 * SEC, 120 * SEC)
    assert late.record.key == "tqgrid1 c2 L0 BUY" and late.kind is OverdueKind.IMMEDIATE_NOT_FINAL


def test_late_report_of_an_older_order_of_a_key_never_displaces_the_current_one() -> None:
    t = table()
    submitted(t, "tqgrid1 c1 L2 BUY", 7)
    t.apply(report("tqgrid1 c1 L2 BUY", 7, "Cancelled", perm_id=1007), 3)
    submitted(t, "tqgrid1 c1 L2 BUY", 8)
    t.apply(report("tqgrid1 c1 L2 BUY", 8, "Cancelled", perm_id=1008), 4)
    assert t.apply(report("tqgrid1 c1 L2 BUY", 7, "Cancelled", perm_id=1007), 5) == []
    record = t.get("tqgrid1 c1 L2 BUY")
    assert record is not None and record.order_id == 8
    filled_late = t.apply(report("tqgrid1 c1 L2 BUY", 7, "Cancelled", perm_id=1007, filled=10), 6)
    assert [type(e) for e in filled_late] == [OrderCancelled]  # a partial fill found later makes it the key's
    assert isinstance(t.decide_place(place("tqgrid1 c1 L2 BUY"), OPEN, 7), Duplicate)


def test_a_second_live_order_for_a_live_key_is_not_adopted() -> None:
    t = table()
    submitted(t, "tqgrid1 c1 L2 BUY", 7)
    assert t.apply(report("tqgrid1 c1 L2 BUY", 9, "Submitted", perm_id=1009, client_id=5), 3) == []
    record = t.get("tqgrid1 c1 L2 BUY")
    assert record is not None and record.order_id == 7


def close(side: str = "SELL", quantity: int = 94, limit: str = "99.00") -> ClosePosition:
    return ClosePosition(symbol="TQQQ", side=side, quantity=quantity, limit=Decimal(limit))  # type: ignore[arg-type]


def test_close_position_goes_while_halted_but_not_while_disconnected() -> None:
    t = table()
    halted = Gate(connected=True, synced=True, halted=True, halt_reason="reset")
    decision = t.decide_close(close(), halted, 94, 0)
    assert isinstance(decision, Submit)
    record = decision.record
    assert record.key == CLOSE_REF and record.immediate and not record.grid and record.tif == "DAY"
    assert t.is_current(record) and t.count_live(Side.SELL) == 0  # no grid cap is touched
    refused = table().decide_close(close(), Gate(), 94, 0)
    assert isinstance(refused, Refuse) and "disconnected" in refused.reason


@pytest.mark.parametrize(
    ("side", "quantity", "position", "ok"),
    [("SELL", 94, 94, True), ("SELL", 90, 94, True), ("SELL", 95, 94, False), ("BUY", 10, -10, True),
     ("BUY", 10, 10, False), ("SELL", 10, -10, False)],
)
def test_close_position_must_not_overshoot_the_position(side: str, quantity: int, position: int, ok: bool) -> None:
    decision = table().decide_close(close(side, quantity), OPEN, position, 0)
    assert isinstance(decision, Submit) is ok
    if not ok:
        assert isinstance(decision, Refuse) and f"position is {position}" in decision.reason


def test_one_closing_order_at_a_time_and_an_unsent_one_can_be_withdrawn() -> None:
    t = table()
    first = t.decide_close(close(), OPEN, 94, 0)
    assert isinstance(first, Submit)
    second = t.decide_close(close(), OPEN, 94, 0)
    assert isinstance(second, Refuse) and "already working" in second.reason
    t.forget_unsent(first.record)
    assert not t.is_current(first.record)
    assert isinstance(t.decide_close(close(), OPEN, 94, 0), Submit)


def test_the_closing_order_is_found_by_its_order_id_and_watched_for_its_deadline() -> None:
    t = table()
    decision = t.decide_close(close(), OPEN, 94, 0)
    assert isinstance(decision, Submit)
    t.mark_sent(decision.record, 30, CLIENT, 0)
    events = t.apply(report(CLOSE_REF, 30, "Submitted", perm_id=3000, side="SELL"), 1)
    assert isinstance(events[0], OrderAccepted) and events[0].key == ""
    [late] = t.overdue(120 * SEC, 15 * SEC, 120 * SEC)
    assert late.record is decision.record and late.kind is OverdueKind.IMMEDIATE_NOT_FINAL
