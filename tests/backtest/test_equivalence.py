"""The fast loop (only the prints that matter) gives what the strategy called on every print gives.

``every_print=True`` is the reference: every print goes to the broker, and the strategy decides after each one.
The fast loop jumps from one print that matters to the next (a limit or condition price reached, a deadline, a
Level 0 to place). Both must produce the very same order events (times included), fills, round trips and states.
"""

from __future__ import annotations

import dataclasses
from datetime import date
from decimal import Decimal

from gridbot.backtest import bars as barfiles
from gridbot.backtest.bars import BarData
from gridbot.backtest.engine import Outcome
from gridbot.backtest.paths import PathModel
from gridbot.backtest.runner import Plan, play
from gridbot.backtest.splits import TQQQ_SPLITS, load_splits
from gridbot.config import PROJECT_ROOT
from sim.market.timefmt import parse_start
from tests.backtest.helpers import prints, run_prints, settings

SAMPLE = PROJECT_ROOT / "sim" / "data" / "TQQQ_1min_sample.csv.gz"
DAILY = PROJECT_ROOT.parent / "shared" / "data" / "TQQQ_daily_splitadj_2010-02-11_2026-07-23.csv"


def same(fast: Outcome, slow: Outcome) -> None:
    assert fast.events == slow.events
    assert fast.state == slow.state
    assert fast.round_trips == slow.round_trips
    assert fast.broker.engine.executions == slow.broker.engine.executions
    # The same amount; its peak's time may differ by a print or two where the path stays at one price for a while
    # (the fast loop marks the equity where the path turns, the reference at every print).
    assert fast.tracker.drawdown.amount == slow.tracker.drawdown.amount
    assert fast.prints_processed < slow.prints_processed


def test_a_scripted_path_with_gaps_new_cycles_and_a_jump() -> None:
    down = [f"{p / 100:.2f}" for p in range(10000, 9400, -7)]
    up = [f"{p / 100:.2f}" for p in range(9400, 10300, 9)]
    # 103.00 -> 93.00 is a jump beyond the 5% band: no Level 0 on it, on the next print.
    path = ["100.00", *down, "96.00", "91.50", *up, "103.00", "93.00", "93.10", "93.20", "92.00", "95.00"]
    ps = prints(path)

    fast = run_prints(ps).outcome()
    slow = run_prints(ps, every_print=True).outcome()

    same(fast, slow)
    assert len(fast.round_trips) > 8 and fast.state.cycle >= 2


def test_level0_timeouts_outside_the_sessions() -> None:
    # Friday after 20:00 ET: the market is closed, a Level 0 cannot fill and times out after 120 s, again and again
    # at each later print, until Monday's pre-market.
    friday = parse_start("2025-06-06T20:30:00-04:00")
    monday = parse_start("2025-06-09T04:00:05-04:00")
    ps = prints(["100.00", "100.10", "100.20"], start_ns=friday, step_s=150) + prints(
        ["100.30", "100.40", "99.00", "98.00"], start_ns=monday, step_s=10
    )

    fast = run_prints(ps).outcome()
    slow = run_prints(ps, every_print=True).outcome()

    same(fast, slow)
    assert fast.broker.counters.timed_out == 3
    assert [ex.order_ref for ex in fast.broker.engine.executions][:1] == ["tqgrid1 c1 L0 BUY a4"]


def _sample_slice(day: date, bars: int) -> BarData:
    data = barfiles.load(SAMPLE).select(day, day, regular_only=False)
    return BarData(data.source, data.bars[:bars], data.days[:bars], data.bar_seconds)


def test_real_minute_bars_of_a_volatile_morning() -> None:
    # 2025-05-23: pre-market through the open, the sample's deepest ladder (12 lots).
    data = _sample_slice(date(2025, 5, 23), 420)
    model = PathModel()

    fast = play(data, [], Plan(), settings(), model, keep_events=True).outcome
    slow = play(data, [], Plan(), settings(every_print=True), model, keep_events=True).outcome

    same(fast, slow)
    assert len(fast.broker.engine.executions) > 20


def test_daily_bars_across_a_split() -> None:
    data = barfiles.load(DAILY)
    plan = Plan(first=date(2020, 12, 15), last=date(2021, 2, 5))
    model = PathModel(day_prints=40)
    splits = load_splits(TQQQ_SPLITS)

    fast = play(data, splits, plan, settings(), model, keep_events=True)
    slow = play(data, splits, plan, dataclasses.replace(settings(), every_print=True), model, keep_events=True)

    assert [s.day for s in fast.splits] == ["2021-01-21"]
    same(fast.outcome, slow.outcome)
    assert len(fast.outcome.round_trips) > 10
    assert all(ex.price > Decimal(50) for ex in fast.outcome.broker.engine.executions)  # as traded, not adjusted
