"""The NASDAQ session calendar: holidays, early closes, session boundaries (across DST), DAY expiry."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import sessions
from core.sessions import Session

NS = 1_000_000_000


def et(*args: int) -> int:
    """US/Eastern wall time -> UTC nanoseconds."""
    return int(datetime(*args, tzinfo=sessions.EASTERN).timestamp()) * NS


def test_2025_holidays_match_nasdaqs_published_list() -> None:
    assert sessions.holidays(2025) == {
        date(2025, 1, 1),
        date(2025, 1, 20),
        date(2025, 2, 17),
        date(2025, 4, 18),
        date(2025, 5, 26),
        date(2025, 6, 19),
        date(2025, 7, 4),
        date(2025, 9, 1),
        date(2025, 11, 27),
        date(2025, 12, 25),
    }


@pytest.mark.parametrize(
    ("day", "holiday"),
    [
        (date(2021, 12, 24), True),  # Christmas on Saturday: observed Friday
        (date(2022, 12, 26), True),  # Christmas on Sunday: observed Monday
        (date(2021, 12, 31), False),  # New Year 2022 on Saturday: not observed in the old year
        (date(2021, 6, 18), False),  # before NASDAQ closed on Juneteenth
        (date(2022, 6, 20), True),  # Juneteenth on Sunday: observed Monday
        (date(2024, 3, 29), True),  # Good Friday
        (date(2026, 7, 3), True),  # Independence Day on Saturday: observed Friday
    ],
)
def test_observed_holiday_rules(day: date, holiday: bool) -> None:
    assert (day in sessions.holidays(day.year)) is holiday
    assert sessions.is_trading_day(day) is not holiday


def test_unscheduled_closure_and_weekends_are_closed() -> None:
    assert not sessions.is_trading_day(date(2025, 1, 9))
    assert not sessions.is_trading_day(date(2025, 6, 7))
    assert sessions.session_at(et(2025, 6, 7, 12, 0)) is Session.CLOSED


@pytest.mark.parametrize(
    ("day", "early"),
    [
        (date(2025, 7, 3), True),
        (date(2025, 11, 28), True),
        (date(2025, 12, 24), True),
        (date(2026, 7, 2), False),  # July 3 2026 is the observed holiday; no early close before it
        (date(2022, 7, 1), False),  # July 4 on Monday: no early close on Friday
        (date(2025, 6, 2), False),
    ],
)
def test_early_closes(day: date, early: bool) -> None:
    assert sessions.is_early_close(day) is early


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ((2025, 6, 2, 3, 59), Session.CLOSED),
        ((2025, 6, 2, 4, 0), Session.PRE),
        ((2025, 6, 2, 9, 29), Session.PRE),
        ((2025, 6, 2, 9, 30), Session.REGULAR),
        ((2025, 6, 2, 15, 59), Session.REGULAR),
        ((2025, 6, 2, 16, 0), Session.AFTER),
        ((2025, 6, 2, 19, 59), Session.AFTER),
        ((2025, 6, 2, 20, 0), Session.CLOSED),
        ((2025, 1, 6, 9, 30), Session.REGULAR),  # winter time (EST) too
        ((2025, 7, 3, 13, 0), Session.AFTER),  # early close
        ((2025, 7, 3, 17, 0), Session.CLOSED),
        ((2025, 6, 19, 12, 0), Session.CLOSED),  # Juneteenth
    ],
)
def test_session_at(when: tuple[int, ...], expected: Session) -> None:
    assert sessions.session_at(et(*when)) is expected


def test_can_trade_needs_outside_rth_in_extended_hours() -> None:
    assert sessions.can_trade(Session.REGULAR, outside_rth=False)
    assert not sessions.can_trade(Session.PRE, outside_rth=False)
    assert sessions.can_trade(Session.AFTER, outside_rth=True)
    assert not sessions.can_trade(Session.CLOSED, outside_rth=True)


@pytest.mark.parametrize(
    ("placed", "outside_rth", "expires"),
    [
        ((2025, 6, 2, 10, 0), False, (2025, 6, 2, 16, 0)),
        ((2025, 6, 2, 10, 0), True, (2025, 6, 2, 20, 0)),
        ((2025, 6, 2, 17, 0), False, (2025, 6, 3, 16, 0)),  # after the close: works tomorrow's session
        ((2025, 6, 2, 17, 0), True, (2025, 6, 2, 20, 0)),
        ((2025, 6, 6, 21, 0), False, (2025, 6, 9, 16, 0)),  # Friday night -> Monday
        ((2025, 6, 18, 21, 0), True, (2025, 6, 20, 20, 0)),  # over Juneteenth
        ((2025, 7, 3, 9, 0), False, (2025, 7, 3, 13, 0)),  # early close
    ],
)
def test_day_order_expiry(placed: tuple[int, ...], outside_rth: bool, expires: tuple[int, ...]) -> None:
    assert sessions.day_order_expiry_ns(et(*placed), outside_rth) == et(*expires)


def test_next_regular_open_skips_weekends_and_holidays() -> None:
    assert sessions.next_regular_open_ns(et(2025, 6, 2, 5, 0)) == et(2025, 6, 2, 9, 30)
    assert sessions.next_regular_open_ns(et(2025, 6, 6, 17, 0)) == et(2025, 6, 9, 9, 30)
    assert sessions.next_regular_open_ns(et(2025, 6, 18, 18, 0)) == et(2025, 6, 20, 9, 30)


# 2009-12-31 .. 2027-01-02 in UTC nanoseconds: the backtests' data and a margin.
ANY_INSTANT = st.integers(min_value=et(2009, 12, 31, 0, 0), max_value=et(2027, 1, 2, 0, 0))


@given(ANY_INSTANT, st.floats(min_value=0, max_value=1, exclude_max=True))
def test_session_span_holds_the_instant_and_only_its_session(ts: int, where: float) -> None:
    span = sessions.session_span(ts)
    assert span.start_ns <= ts < span.end_ns
    assert span.session is sessions.session_at(ts)
    inside = span.start_ns + int((span.end_ns - span.start_ns) * where)
    for t in (span.start_ns, inside, span.end_ns - 1):
        assert sessions.session_at(t) is span.session, (ts, t)


@pytest.mark.parametrize(
    "day",
    [
        (2025, 6, 2),  # a plain trading day
        (2025, 6, 7),  # a Saturday
        (2025, 7, 3),  # an early close
        (2025, 3, 9),  # the switch to daylight time (a 23-hour day)
        (2025, 11, 2),  # the switch back (a 25-hour day)
    ],
)
def test_session_span_edges_are_session_changes_or_midnight(day: tuple[int, int, int]) -> None:
    """Around every edge of the day (the session changes, midnight) to the nanosecond, including the instants that
    float seconds round to the neighbouring day."""
    wall_times = ((0, 0), (4, 0), (9, 30), (13, 0), (16, 0), (17, 0), (20, 0))
    edges = [et(*day, hour, minute) for hour, minute in wall_times] + [et(*day, 23, 59) + 60 * NS]
    for edge in edges:
        for ts in (edge - 1_000, edge - 1, edge, edge + 1, edge + 1_000):
            span = sessions.session_span(ts)
            assert span.start_ns <= ts < span.end_ns
            for t in (span.start_ns, ts, span.end_ns - 1):
                assert sessions.session_at(t) is span.session, (ts, t)


def test_session_span_of_a_regular_session() -> None:
    span = sessions.session_span(et(2025, 6, 2, 12, 0))
    assert span == sessions.SessionSpan(Session.REGULAR, et(2025, 6, 2, 9, 30), et(2025, 6, 2, 16, 0))
    closed = sessions.session_span(et(2025, 6, 7, 12, 0))
    assert closed == sessions.SessionSpan(Session.CLOSED, et(2025, 6, 7, 0, 0), et(2025, 6, 8, 0, 0))
