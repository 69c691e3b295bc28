"""Prints from bars: the sim's very path, daily bars over the session, and jumping to the first print that matters."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from core import sessions
from gridbot.backtest.paths import (
    BarSegment,
    PathModel,
    PrintSegment,
    Watch,
    daily_segment,
    intraday_segment,
    next_hit,
)
from sim.market.intrabar import BAR_NS, Bar, bar_prints
from sim.market.prints import Print

D = Decimal
T = 1_748_872_800_000_000_000  # 2025-06-02 14:00 UTC (10:00 ET)
cents = st.integers(min_value=1000, max_value=20000)


@st.composite
def bars(draw: st.DrawFn) -> Bar:
    prices = sorted(draw(st.lists(cents, min_size=4, max_size=4)))
    low, high = prices[0], prices[3]
    o, c = draw(st.sampled_from([(prices[1], prices[2]), (prices[2], prices[1])]))
    return Bar(T, D(o) / 100, D(high) / 100, D(low) / 100, D(c) / 100, draw(st.integers(0, 10**6)))


@given(bars(), st.integers(min_value=4, max_value=60))
def test_a_bar_segment_is_exactly_the_sims_prints(bar: Bar, n: int) -> None:
    seg = BarSegment(bar, n, BAR_NS)

    assert [Print(seg.time(i), seg.price(i), seg.size(i)) for i in range(n)] == bar_prints(bar, n)


@given(bars(), st.integers(min_value=4, max_value=60))
def test_each_run_is_monotone_and_the_runs_cover_the_bar(bar: Bar, n: int) -> None:
    seg = BarSegment(bar, n, BAR_NS)

    runs = seg.runs()
    assert runs[0][0] == 0 and runs[-1][1] == n - 1
    assert all(a[1] == b[0] for a, b in zip(runs, runs[1:], strict=False))
    for a, b in runs:
        prices = [seg.price(i) for i in range(a, b + 1)]
        assert prices == sorted(prices) or prices == sorted(prices, reverse=True)


watches = st.builds(
    Watch,
    buy_at=st.one_of(st.none(), cents.map(lambda c: D(c) / 100)),
    sell_at=st.one_of(st.none(), cents.map(lambda c: D(c) / 100)),
    due_ns=st.one_of(st.none(), st.integers(T - BAR_NS, T + 2 * BAR_NS)),
)


@settings(max_examples=300)
@given(bars(), st.integers(min_value=4, max_value=60), watches, st.data())
def test_next_hit_is_the_first_hit_a_scan_finds(bar: Bar, n: int, watch: Watch, data: st.DataObject) -> None:
    seg = BarSegment(bar, n, BAR_NS)
    for a, b in seg.runs():
        start = data.draw(st.integers(a, b))
        scan = next((i for i in range(start, b + 1) if watch.hits(seg.price(i), seg.time(i))), None)

        assert next_hit(seg, start, a, b, watch) == scan


def test_a_watch_that_misses_the_range_misses_every_print() -> None:
    bar = Bar(T, D("50.00"), D("50.40"), D("49.80"), D("50.10"), 1000)
    watch = Watch(buy_at=D("49.79"), sell_at=D("50.41"), due_ns=T + BAR_NS)
    seg = BarSegment(bar, 10, BAR_NS)

    assert watch.misses_range(bar.low, bar.high, seg.time(9))
    assert not any(watch.hits(seg.price(i), seg.time(i)) for i in range(10))
    assert not Watch(buy_at=D("49.80")).misses_range(bar.low, bar.high, seg.time(9))


def test_a_print_segment_plays_its_prints_as_given() -> None:
    ps = [Print(T, D("10.00"), 5), Print(T + 1, D("9.00"), 6), Print(T + 2, D("11.00"), 7)]
    seg = PrintSegment(ps)

    assert [(seg.time(i), seg.price(i), seg.size(i)) for i in range(seg.n)] == [(p.ts_ns, p.price, p.size) for p in ps]
    assert seg.extremes() == (D("9.00"), D("11.00"))
    assert next_hit(seg, 0, 0, 0, Watch(buy_at=D("9.50"))) is None
    assert next_hit(seg, 1, 1, 1, Watch(buy_at=D("9.50"))) == 1


def test_hourly_bars_use_their_own_number_of_prints_over_the_hour() -> None:
    bar = Bar(T, D("50.00"), D("51.00"), D("49.00"), D("50.50"), 6000)
    seg = intraday_segment(bar, 3600 * 10**9, PathModel(hour_prints=60))

    assert seg.n == 60
    assert seg.time(59) == T + 59 * 60 * 10**9
    assert (seg.price(0), seg.price(59)) == (D("50.00"), D("50.50"))


def test_a_daily_bar_is_played_over_the_regular_session() -> None:
    bar = Bar(0, D("50.00"), D("52.00"), D("48.00"), D("51.00"), 390_000)
    seg = daily_segment(date(2025, 6, 2), bar, PathModel(day_prints=390))
    early = daily_segment(date(2025, 11, 28), bar, PathModel(day_prints=390))  # the day after Thanksgiving

    day = sessions.trading_day(date(2025, 6, 2))
    assert day is not None
    assert seg.time(0) == day.regular_open_ns
    assert seg.time(389) == day.regular_close_ns - 60 * 10**9
    assert all(sessions.session_at(seg.time(i)) is sessions.Session.REGULAR for i in (0, 389))
    assert sessions.session_at(early.time(389)) is sessions.Session.REGULAR  # 13:00 close, still inside
    assert {seg.price(i) for i in range(390)} >= {D("50.00"), D("52.00"), D("48.00"), D("51.00")}


def test_the_order_of_a_daily_bars_extremes_is_seeded_by_date_and_seed() -> None:
    bar = Bar(0, D("50.00"), D("52.00"), D("48.00"), D("51.00"), 1000)
    days = [date(2025, 6, d) for d in (2, 3, 4, 5, 6, 9, 10, 11, 12, 13)]

    def firsts(seed: int) -> list[Decimal]:
        return [daily_segment(d, bar, PathModel(seed=seed)).path.verts[1] for d in days]

    assert firsts(1) == firsts(1)  # reproducible
    assert set(firsts(1)) == {D("48.00"), D("52.00")}  # both orders occur
    assert firsts(1) != firsts(2)
    # "rule" = the sim's: an up day visits its low first.
    assert {daily_segment(d, bar, PathModel(extremes="rule")).path.verts[1] for d in days} == {D("48.00")}
