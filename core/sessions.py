"""The US equity session calendar (NASDAQ), in US/Eastern: which session a UTC instant falls in, and when it ends.

Pure: no I/O, no clock; every function takes the instant it is asked about. The paper broker and the backtester
share it, so an order's life (does it fill now? when does a DAY order expire?) is decided the same way in both.

Sessions of a trading day: pre-market 04:00-09:30, regular 09:30-16:00, after-hours 16:00-20:00. On an early-close
day (the day before Independence Day, the day after Thanksgiving, Christmas Eve) regular hours end at 13:00 and
after-hours at 17:00. Weekends, NASDAQ's full-day holidays and the known unscheduled closures are closed all day.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

EASTERN = ZoneInfo("America/New_York")

PRE_OPEN = time(4, 0)
REGULAR_OPEN = time(9, 30)
REGULAR_CLOSE = time(16, 0)
AFTER_CLOSE = time(20, 0)
EARLY_REGULAR_CLOSE = time(13, 0)
EARLY_AFTER_CLOSE = time(17, 0)

# Closures that no rule predicts (national days of mourning, storms). Add new ones here.
UNSCHEDULED_CLOSURES = frozenset(
    {
        date(2012, 10, 29),  # Hurricane Sandy
        date(2012, 10, 30),
        date(2018, 12, 5),  # President G. H. W. Bush
        date(2025, 1, 9),  # President Carter
    }
)

# NASDAQ first closed on Juneteenth in 2022.
JUNETEENTH_FROM = 2022

_NS = 1_000_000_000


class Session(enum.Enum):
    """Where an instant falls in the trading day."""

    CLOSED = "closed"
    PRE = "pre"
    REGULAR = "regular"
    AFTER = "after"

    @property
    def extended(self) -> bool:
        """True for pre-market and after-hours (the sessions an `outsideRth` order may trade in)."""
        return self in (Session.PRE, Session.AFTER)


@dataclass(frozen=True)
class TradingDay:
    """One trading day's session boundaries, as UTC nanoseconds."""

    day: date
    pre_open_ns: int
    regular_open_ns: int
    regular_close_ns: int
    after_close_ns: int

    @property
    def early_close(self) -> bool:
        return self.regular_close_ns - self.regular_open_ns < 6 * 3600 * _NS


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    """The n-th (1-based) given weekday (Monday=0) of a month."""
    first = date(year, month, 1)
    return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))


def _last_weekday(year: int, month: int, weekday: int) -> date:
    nxt = date(year + (month == 12), month % 12 + 1, 1)
    last = nxt - timedelta(days=1)
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def _easter(year: int) -> date:
    """Western Easter Sunday (the anonymous Gregorian algorithm)."""
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    m = (32 + 2 * e + 2 * i - h - k) % 7
    n = (a + 11 * h + 22 * m) // 451
    month, day = divmod(h + m - 7 * n + 114, 31)
    return date(year, month, day + 1)


def _observed(d: date) -> date:
    """A fixed-date holiday on Saturday is observed on Friday, on Sunday on Monday."""
    if d.weekday() == 5:
        return d - timedelta(days=1)
    if d.weekday() == 6:
        return d + timedelta(days=1)
    return d


@lru_cache(maxsize=64)
def holidays(year: int) -> frozenset[date]:
    """NASDAQ's full-day holidays observed in ``year``."""
    days = {
        _nth_weekday(year, 1, 0, 3),  # Martin Luther King Jr. Day
        _nth_weekday(year, 2, 0, 3),  # Washington's Birthday
        _easter(year) - timedelta(days=2),  # Good Friday
        _last_weekday(year, 5, 0),  # Memorial Day
        _observed(date(year, 7, 4)),  # Independence Day
        _nth_weekday(year, 9, 0, 1),  # Labor Day
        _nth_weekday(year, 11, 3, 4),  # Thanksgiving
        _observed(date(year, 12, 25)),  # Christmas
    }
    # New Year's Day on a Saturday is not observed on the Friday before (it would fall in the old year).
    new_year = date(year, 1, 1)
    if new_year.weekday() != 5:
        days.add(_observed(new_year))
    if year >= JUNETEENTH_FROM:
        days.add(_observed(date(year, 6, 19)))
    return frozenset(days)


def is_trading_day(d: date) -> bool:
    """True when NASDAQ opens on ``d`` (a weekday that is no holiday and no unscheduled closure)."""
    return d.weekday() < 5 and d not in holidays(d.year) and d not in UNSCHEDULED_CLOSURES


def is_early_close(d: date) -> bool:
    """True when ``d`` is a trading day whose regular session ends at 13:00."""
    if not is_trading_day(d):
        return False
    independence_eve = d.month == 7 and d.day == 3 and d.weekday() <= 3
    day_after_thanksgiving = d == _nth_weekday(d.year, 11, 3, 4) + timedelta(days=1)
    christmas_eve = d.month == 12 and d.day == 24 and d.weekday() <= 3
    return independence_eve or day_after_thanksgiving or christmas_eve


def _ns(d: date, t: time) -> int:
    local = datetime.combine(d, t, tzinfo=EASTERN)
    return int(local.timestamp()) * _NS


@lru_cache(maxsize=512)
def trading_day(d: date) -> TradingDay | None:
    """The session boundaries of ``d``, or None when the market is closed all day."""
    if not is_trading_day(d):
        return None
    early = is_early_close(d)
    return TradingDay(
        day=d,
        pre_open_ns=_ns(d, PRE_OPEN),
        regular_open_ns=_ns(d, REGULAR_OPEN),
        regular_close_ns=_ns(d, EARLY_REGULAR_CLOSE if early else REGULAR_CLOSE),
        after_close_ns=_ns(d, EARLY_AFTER_CLOSE if early else AFTER_CLOSE),
    )


def eastern_date(ts_ns: int) -> date:
    """The US/Eastern calendar date of a UTC instant."""
    return datetime.fromtimestamp(ts_ns / _NS, tz=UTC).astimezone(EASTERN).date()


def session_at(ts_ns: int) -> Session:
    """The session a UTC instant (nanoseconds) falls in."""
    day = trading_day(eastern_date(ts_ns))
    if day is None or ts_ns < day.pre_open_ns or ts_ns >= day.after_close_ns:
        return Session.CLOSED
    if ts_ns < day.regular_open_ns:
        return Session.PRE
    if ts_ns < day.regular_close_ns:
        return Session.REGULAR
    return Session.AFTER


@dataclass(frozen=True)
class SessionSpan:
    """A stretch of time, ``start_ns <= t < end_ns``, that lies wholly in one session."""

    session: Session
    start_ns: int
    end_ns: int


def session_span(ts_ns: int) -> SessionSpan:
    """The session of ``ts_ns`` (as :func:`session_at` says) and the stretch of its US/Eastern day around it that has
    the same session: a caller that asks about many instants close together (the paper broker, at every print and
    placement) looks the calendar up once per stretch instead of once per instant.

    Every instant of the stretch has the stretch's session by :func:`session_at`. The one subtlety is
    :func:`eastern_date`, which works in float seconds: within a microsecond of midnight it may name the day next to
    the right one; there both days are closed (no session runs across midnight), as are the stretches that end or
    start at midnight here.
    """
    d = eastern_date(ts_ns)
    day = trading_day(d)
    if day is not None:
        for session, lo, hi in (
            (Session.PRE, day.pre_open_ns, day.regular_open_ns),
            (Session.REGULAR, day.regular_open_ns, day.regular_close_ns),
            (Session.AFTER, day.regular_close_ns, day.after_close_ns),
        ):
            if lo <= ts_ns < hi:
                return SessionSpan(session, lo, hi)
    # Closed: the whole day, or from midnight to its first session, or from its last session to midnight.
    start, end = _ns(d, time(0)), _ns(d + timedelta(days=1), time(0))
    if day is not None:
        start, end = (day.after_close_ns, end) if ts_ns >= day.after_close_ns else (start, day.pre_open_ns)
    if start <= ts_ns < end:
        return SessionSpan(Session.CLOSED, start, end)
    # A float-rounded date next to the right one (within a microsecond of midnight): the instant alone.
    return SessionSpan(session_at(ts_ns), ts_ns, ts_ns + 1)


# Read at every print and placement, looked up once here: in CPython 3.11 an attribute of an Enum class is read
# through EnumType's __getattr__ hook, many times slower than a module global.
_REGULAR, _PRE, _AFTER = Session.REGULAR, Session.PRE, Session.AFTER


def can_trade(session: Session, outside_rth: bool) -> bool:
    """True when an order may fill in ``session``: regular hours always, extended hours only with outsideRth."""
    return session is _REGULAR or (outside_rth and (session is _PRE or session is _AFTER))


def next_trading_day(d: date) -> date:
    """The first trading day strictly after ``d``."""
    nxt = d + timedelta(days=1)
    while not is_trading_day(nxt):
        nxt += timedelta(days=1)
    return nxt


def day_order_expiry_ns(placed_ns: int, outside_rth: bool) -> int:
    """When a DAY order placed at ``placed_ns`` expires: the end of the first session window it can trade in.

    Without outsideRth that window is the regular session (16:00, or 13:00 on an early close); with outsideRth it
    runs to the end of after-hours (20:00, or 17:00). An order placed after its window closed works the next
    trading day's window, as TWS queues it.
    """
    d = eastern_date(placed_ns)
    while True:
        day = trading_day(d)
        if day is not None:
            end = day.after_close_ns if outside_rth else day.regular_close_ns
            if placed_ns < end:
                return end
        d = next_trading_day(d)


def next_regular_open_ns(ts_ns: int) -> int:
    """The start of the next regular session at or after ``ts_ns`` (for the warning 399 text)."""
    d = eastern_date(ts_ns)
    while True:
        day = trading_day(d)
        if day is not None and ts_ns < day.regular_open_ns:
            return day.regular_open_ns
        d = next_trading_day(d)
