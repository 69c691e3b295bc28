"""The NASDAQ session calendar: holidays, early closes, session boundaries (across DST), DAY expiry."""

from __future__ import annotations

from datetime import date, datetime

import pytest

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
