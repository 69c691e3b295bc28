"""Splits: the table, telling adjusted from as-traded data, and what a split does to the grid's lots and orders."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from core.intent import IntentKey
from core.ledger import DEFAULT_RULES, make_lot
from gridbot.backtest import bars as barfiles
from gridbot.backtest.bars import BarData
from gridbot.backtest.paths import PathModel
from gridbot.backtest.runner import Plan, play
from gridbot.backtest.splits import (
    TQQQ_SPLITS,
    Split,
    SplitError,
    as_traded,
    load_splits,
    parse_ratio,
    price_kind,
    rescale,
)
from proto.messages import GridState, OrderCancelled
from sim.market.intrabar import Bar
from tests.backtest.helpers import settings

D = Decimal
HOURLY = Path(__file__).resolve().parents[3] / "shared" / "data" / "TQQQ_60m_splitadj_2010-02-11_2026-02-27.csv"
SPLIT = Split(date(2025, 6, 4), D(2))


def daily(closes: list[tuple[str, str, str, str]], first: date = date(2025, 6, 2)) -> BarData:
    """Daily bars (open, high, low, close) on consecutive weekdays from ``first``."""
    days: list[date] = []
    d = first
    while len(days) < len(closes):
        if d.weekday() < 5:
            days.append(d)
        d = date.fromordinal(d.toordinal() + 1)
    bars = [Bar(0, D(o), D(h), D(low), D(c), 100_000) for o, h, low, c in closes]
    return BarData("test-daily", bars, days, 86_400)


def test_the_shipped_table_reads_and_ratios_parse() -> None:
    splits = load_splits(TQQQ_SPLITS)

    assert [(s.day.isoformat(), s.ratio) for s in splits][-4:] == [
        ("2018-05-24", D(3)), ("2021-01-21", D(2)), ("2022-01-13", D(2)), ("2025-11-20", D(2)),
    ]
    assert (parse_ratio("3:1"), parse_ratio("1:2"), parse_ratio("4")) == (D(3), D("0.5"), D(4))


def test_a_bad_table_is_refused_with_its_line(tmp_path: Path) -> None:
    table = tmp_path / "splits.csv"
    table.write_text("date,ratio\n2020-01-02,2:1\n2019-01-02,2:1\n")
    with pytest.raises(SplitError, match=r"line 3: dates must increase"):
        load_splits(table)
    table.write_text("2020-01-02,two\n")
    with pytest.raises(SplitError, match=r"line 1: a split ratio looks like 2:1"):
        load_splits(table)


def test_a_lot_is_rescaled_its_cost_kept_and_its_sell_recomputed() -> None:
    level0 = msgspec.structs.replace(
        make_lot(IntentKey.buy(1, 0), 94, D("9400.00"), DEFAULT_RULES), fees=D("1.00"), sell="live"
    )
    level1 = make_lot(IntentKey.buy(1, 1), 88, D("8703.20"), DEFAULT_RULES)  # 98.90 a share
    state = GridState(symbol="TQQQ", cycle=1, anchor_price=D("100.0000"), lots=[level0, level1], in_sync=True)

    after = rescale(state, D(2), DEFAULT_RULES)

    got = [(lot.quantity, lot.cost, lot.fees, lot.purchase_price, lot.sell_target_price, lot.sell_key, lot.sell)
           for lot in after.lots]
    assert got == [
        (188, D("9400.00"), D("1.00"), D("50.0000"), D("50.50"), "tqgrid1 c1 L0 SELL 50.00", "parked"),
        (176, D("8703.20"), D("0"), D("49.4500"), D("49.94"), "tqgrid1 c1 L1 SELL 49.45", "parked"),
    ]
    assert after.anchor_price == D("50.0000")


def test_a_split_that_leaves_fractional_shares_is_refused() -> None:
    lot = make_lot(IntentKey.buy(1, 0), 95, D("9500.00"), DEFAULT_RULES)
    state = GridState(symbol="TQQQ", lots=[lot], anchor_price=D("100"), in_sync=True)

    with pytest.raises(SplitError, match="95.0 shares|47.5 shares"):
        rescale(state, D("0.5"), DEFAULT_RULES)


AS_TRADED = [
    ("100.00", "100.50", "99.00", "99.50"),
    ("99.50", "99.80", "98.60", "99.00"),
    ("49.50", "50.10", "49.40", "50.00"),  # 2:1 on the third day: half the price
    ("50.00", "50.20", "49.80", "50.10"),
]
ADJUSTED = [("50.00", "50.25", "49.50", "49.75"), ("49.75", "49.90", "49.30", "49.50"), *AS_TRADED[2:]]


def test_the_kind_of_prices_is_read_from_the_jump_at_a_split() -> None:
    assert price_kind(daily(AS_TRADED), [SPLIT], "auto") == "as-traded"
    assert price_kind(daily(ADJUSTED), [SPLIT], "auto") == "adjusted"
    assert price_kind(daily(AS_TRADED[:2]), [SPLIT], "auto") == "as-traded"  # no split inside: as they are


def test_a_declared_kind_the_data_contradict_is_refused() -> None:
    with pytest.raises(SplitError, match=r"declared adjusted but its prices look as-traded at the 2:1 split of "
                                         r"2025-06-04 \(99.00 -> 49.50\)"):
        price_kind(daily(AS_TRADED), [SPLIT], "adjusted")


def test_data_that_jump_at_one_split_and_not_at_another_are_refused() -> None:
    bars = [*AS_TRADED, ("50.10", "50.30", "49.90", "50.20"), ("50.20", "50.40", "50.00", "50.30")]
    later = Split(date(2025, 6, 9), D(2))  # the data do not halve there

    with pytest.raises(SplitError, match="mixes split-adjusted and as-traded prices"):
        price_kind(daily(bars), [SPLIT, later], "auto")


def test_adjusted_bars_are_turned_back_into_as_traded_ones() -> None:
    traded = as_traded(daily(ADJUSTED), [SPLIT])

    assert [(b.open, b.close) for b in traded.bars] == [
        (D("100.00"), D("99.50")), (D("99.50"), D("99.00")), (D("49.50"), D("50.00")), (D("50.00"), D("50.10")),
    ]
    assert traded.bars[0].volume == 50_000  # volumes divided by the ratio


def test_a_backtest_across_a_split_cancels_rescales_and_sells_the_rescaled_lots() -> None:
    # Day 1 (a down bar: open, high, low, close): Level 0 at the open, 94 @ 100.00; L1 (99.00) on the way down to
    # 98.80, at the first print at or below 99.00: 88 @ 98.91. Day 3 comes after a 2:1 split: the lots become
    # 188 @ 50.00 (target 50.50) and 176 @ 49.455 (8704.08 / 176; target round(49.455 x 1.01) = 49.95), their
    # SELLs are placed again at the first print and fill on the way up.
    bars = [
        ("100.00", "100.20", "98.80", "99.00"),
        ("99.00", "99.40", "98.90", "99.20"),
        ("49.60", "50.60", "49.55", "50.55"),
    ]
    model = PathModel(day_prints=40, extremes="rule")

    played = play(daily(bars), [SPLIT], Plan(prices="as-traded"), settings(), model, keep_events=True)

    outcome = played.outcome
    assert [s.day for s in played.splits] == ["2025-06-04"]
    fills = [(ex.order_ref, ex.side, ex.shares, ex.price) for ex in outcome.broker.engine.executions]
    assert fills[:4] == [
        ("tqgrid1 c1 L0 BUY", "BOT", 94, D("100.00")),
        ("tqgrid1 c1 L1 BUY", "BOT", 88, D("98.91")),
        ("tqgrid1 c1 L1 SELL 49.455", "SLD", 176, D("49.95")),
        ("tqgrid1 c1 L0 SELL 50.00", "SLD", 188, D("50.52")),
    ]
    cancelled = {e.key for e in outcome.events if isinstance(e, OrderCancelled) and "split" in e.reason}
    assert {"tqgrid1 c1 L0 SELL 100.00", "tqgrid1 c1 L1 SELL 98.91"} <= cancelled
    trips = {t.level: (t.quantity, t.realized_pnl) for t in outcome.round_trips if t.cycle == 1}
    # L1: 176 x 49.95 - 8704.08 - 2.00; L0: 188 x 50.52 - 9400.00 - 2.00.
    assert trips == {1: (176, D("85.12")), 0: (188, D("95.76"))}
    assert outcome.state.cycle == 2  # and the next cycle started at the next print


def test_the_shared_hourly_file_is_found_adjusted_and_played_as_traded() -> None:
    data = barfiles.load(HOURLY)

    assert price_kind(data, load_splits(TQQQ_SPLITS), "auto") == "adjusted"
    traded = as_traded(data, load_splits(TQQQ_SPLITS))
    # The 2025 minute sample (as traded) opened 2025-04-30 near 51.6; the adjusted file has half of that.
    i = data.days.index(date(2025, 4, 30))
    assert D("24") < data.bars[i].open < D("27") and D("48") < traded.bars[i].open < D("54")
