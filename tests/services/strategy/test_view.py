"""Folding bus messages into the strategy's view: the state's numbering, halts, the broker, the feed."""

from __future__ import annotations

from decimal import Decimal

from core.strategy import NS_PER_SECOND
from proto.messages import (
    BrokerConnected,
    BrokerConnectivity,
    BrokerDisconnected,
    BrokerSnapshot,
    FeedStatus,
    GridState,
    StateSnapshot,
    StateUpdate,
    Tick,
    TradingHalted,
)
from services.strategy.view import View, observe

NOW = 1_750_000_000 * NS_PER_SECOND


def gs(**kw: object) -> GridState:
    return GridState(symbol="TQQQ", in_sync=True, **kw)  # type: ignore[arg-type]


def tick(price: str, seq: int = 1, symbol: str = "TQQQ") -> Tick:
    return Tick(symbol=symbol, price=Decimal(price), size=10, exchange_ts_ns=NOW, receive_ts_ns=NOW, seq=seq)


def synced(seq: int = 5, **kw: object) -> View:
    return observe(View("TQQQ"), StateSnapshot(seq=seq, state=gs(**kw)), NOW).view


def test_a_snapshot_gives_the_state_and_its_number() -> None:
    observed = observe(View("TQQQ"), StateSnapshot(seq=7, state=gs(cycle=3)), NOW)

    assert observed.changed and not observed.resync
    assert observed.view.state == gs(cycle=3) and observed.view.state_seq == 7


def test_the_next_update_is_applied() -> None:
    observed = observe(synced(5), StateUpdate(seq=6, state=gs(cycle=2)), NOW)

    assert observed.view.state_seq == 6 and observed.view.state is not None and observed.view.state.cycle == 2
    assert not observed.resync


def test_a_hole_in_the_numbering_asks_for_a_snapshot_and_keeps_the_state() -> None:
    view = synced(5)

    observed = observe(view, StateUpdate(seq=8, state=gs(cycle=2)), NOW)

    assert observed.resync and observed.view == view


def test_an_update_already_applied_is_skipped() -> None:
    view = synced(5)

    observed = observe(view, StateUpdate(seq=5, state=gs(cycle=9)), NOW)

    assert not observed.resync and not observed.changed and observed.view == view


def test_an_update_before_any_snapshot_asks_for_one() -> None:
    observed = observe(View("TQQQ"), StateUpdate(seq=1, state=gs()), NOW)

    assert observed.resync and observed.view.state is None


def test_a_snapshot_from_a_restarted_statekeeper_is_taken_even_with_a_lower_number() -> None:
    observed = observe(synced(50), StateSnapshot(seq=2, state=gs(cycle=4)), NOW)

    assert observed.view.state_seq == 2 and observed.view.state is not None and observed.view.state.cycle == 4


def test_a_halt_notice_halts_at_once_and_the_next_update_carries_the_truth() -> None:
    halted = observe(synced(5), TradingHalted(reason="reconcile: unexplained position"), NOW).view

    assert halted.state is not None and halted.state.halted
    assert halted.state.halt_reason == "reconcile: unexplained position"
    resumed = observe(halted, StateUpdate(seq=6, state=gs()), NOW).view
    assert resumed.state is not None and not resumed.state.halted


def test_a_level0_attempt_ending_or_a_new_cycle_needs_a_later_tick() -> None:
    view = synced(5, level0_attempt=0)

    ended = observe(view, StateUpdate(seq=6, state=gs(level0_attempt=1)), NOW + 7).view
    turned = observe(ended, StateUpdate(seq=7, state=gs(level0_attempt=1, cycle=2)), NOW + 9).view
    same = observe(turned, StateUpdate(seq=8, state=gs(level0_attempt=1, cycle=2)), NOW + 11).view

    assert ended.level0_not_before_ns == NOW + 7
    assert turned.level0_not_before_ns == NOW + 9
    assert same.level0_not_before_ns == NOW + 9


def test_ticks_keep_the_latest_and_the_price_before_it() -> None:
    view = observe(View("TQQQ"), tick("100.00", 1), NOW).view
    view = observe(view, tick("100.50", 2), NOW).view
    view = observe(view, tick("55.00", 3, symbol="QQQ"), NOW).view

    assert view.tick is not None and view.tick.price == Decimal("100.50")
    assert view.previous_price == Decimal("100.00")


def test_a_restarted_feed_counting_from_one_again_is_followed() -> None:
    view = observe(View("TQQQ"), tick("100.00", 900), NOW).view

    view = observe(view, tick("101.00", 1), NOW).view

    assert view.tick is not None and view.tick.price == Decimal("101.00")


def test_the_feed_status_marks_stale_or_disconnected() -> None:
    view = View("TQQQ")

    stale = observe(view, FeedStatus(connected=True, stale=True), NOW).view
    down = observe(view, FeedStatus(connected=False, stale=False), NOW).view
    fine = observe(stale, FeedStatus(connected=True, stale=False), NOW).view

    assert stale.feed_stale and down.feed_stale and not fine.feed_stale


def test_broker_events_and_the_executors_snapshot_set_the_connection() -> None:
    view = View("TQQQ")
    assert not view.market(NOW).broker_connected

    up = observe(view, BrokerConnected(host="127.0.0.1", port=7910, client_id=17), NOW).view
    lost = observe(up, BrokerConnectivity(code=1100, text="lost", connected=False), NOW).view
    back = observe(lost, BrokerConnectivity(code=1102, text="restored", connected=True), NOW).view
    gone = observe(back, BrokerDisconnected(reason="socket closed"), NOW).view
    snap = observe(gone, BrokerSnapshot(connected=True), NOW).view

    assert [v.broker_connected for v in (up, lost, back, gone, snap)] == [True, False, True, False, True]
    assert snap.market(NOW).broker_connected
    assert not snap.market(NOW, executor_alive=False).broker_connected


def test_a_tick_after_a_stale_status_means_the_feed_is_back() -> None:
    stale = observe(View("TQQQ"), FeedStatus(connected=True, stale=True), NOW).view

    back = observe(stale, tick("100.00"), NOW).view

    assert not back.feed_stale
