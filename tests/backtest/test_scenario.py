"""A small scenario computed by hand: seven prints, every fill, fee and P&L number worked out below.

The user's lot map: level 0 = 94 shares, 1 = 88, 2 = 82, 3 = 77. Level 0 at a tick of 100.00 is a BUY LMT at
round(100.00 x 1.0025) = 100.25, which fills at the print, 100.00 (anchor). Triggers: 99.00, 98.01, 97.03.
IB's fixed commission: 0.005 a share, at least 1.00 an order (1% of the value at most): every fill here pays 1.00.

    print   what happens
    100.00  Level 0 placed and filled: 94 @ 100.00 (SELL target 101.00); queue L1 99.00, L2 98.01, L3 97.03
     99.50  nothing
     98.90  L1 fills at the print (it gapped through 99.00): 88 @ 98.90, target round(98.90 x 1.01) = 99.89
     98.00  L2 fills at the print: 82 @ 98.00, target 98.98
     99.00  L2's SELL fills: 82 @ 99.00 -> 8118.00 - 8036.00 - 2 fees = 80.00; L2 re-armed (attempt 2)
     99.89  L1's SELL fills: 88 @ 99.89 -> 8790.32 - 8703.20 - 2 fees = 85.12
    100.50  Level 0 still held (its SELL waits at 101.00): the mark
"""

from __future__ import annotations

from decimal import Decimal

from gridbot.backtest.report import average_cost, build
from tests.backtest.helpers import MONDAY_10_ET, NS, prints, run_prints

D = Decimal
PATH = ["100.00", "99.50", "98.90", "98.00", "99.00", "99.89", "100.50"]


def test_the_fills_are_the_hand_computed_ones() -> None:
    backtest = run_prints(prints(PATH))

    fills = [(ex.order_ref, ex.side, ex.shares, ex.price, ex.commission) for ex in backtest.broker.engine.executions]
    assert fills == [
        ("tqgrid1 c1 L0 BUY", "BOT", 94, D("100.00"), D("1.00")),
        ("tqgrid1 c1 L1 BUY", "BOT", 88, D("98.90"), D("1.00")),
        ("tqgrid1 c1 L2 BUY", "BOT", 82, D("98.00"), D("1.00")),
        ("tqgrid1 c1 L2 SELL 98.00", "SLD", 82, D("99.00"), D("1.00")),
        ("tqgrid1 c1 L1 SELL 98.90", "SLD", 88, D("99.89"), D("1.00")),
    ]
    ts = [ex.ts_ns for ex in backtest.broker.engine.executions]
    assert ts == [MONDAY_10_ET + k * NS for k in (0, 2, 3, 4, 5)]


def test_the_round_trips_and_the_realized_pnl() -> None:
    backtest = run_prints(prints(PATH))

    trips = [(t.level, t.quantity, t.buy_price, t.sell_price, t.fees, t.realized_pnl) for t in backtest.round_trips]
    assert trips == [
        (2, 82, D("98.0000"), D("99.0000"), D("2.00"), D("80.00")),
        (1, 88, D("98.9000"), D("99.8900"), D("2.00"), D("85.12")),
    ]
    assert backtest.state.realized_pnl == D("165.12")


def test_what_stays_live_at_the_end() -> None:
    backtest = run_prints(prints(PATH))

    state = backtest.state
    assert [(lot.level, lot.quantity, lot.purchase_price, lot.sell_target_price) for lot in state.lots] == [
        (0, 94, D("100.0000"), D("101.00"))
    ]
    live = sorted((o.key, o.limit) for o in state.orders)
    assert live == [
        ("tqgrid1 c1 L0 SELL 100.00", D("101.00")),
        ("tqgrid1 c1 L1 BUY a2", D("99.00")),
        ("tqgrid1 c1 L2 BUY a2", D("98.01")),
        ("tqgrid1 c1 L3 BUY", D("97.03")),
    ]
    assert sorted(o.order_ref for o in backtest.broker.engine.live.values()) == [key for key, _ in live]


def test_the_report_numbers() -> None:
    outcome = run_prints(prints(PATH)).outcome()

    report = build(outcome, "scripted", "prints", "as-traded", len(PATH), [])

    assert report.fees == D("5.00")
    # Level 0 at the mark: 94 x 100.50 - 9400.00 cost - 1.00 fee.
    assert report.unrealized_pnl == D("46.00")
    assert report.equity == D("165.12") + D("46.00")
    # Three lots at once after 98.00: 9400.00 + 8703.20 + 8036.00.
    assert report.max_capital == D("26139.20")
    assert (report.max_lots, report.max_lots_ns) == (3, MONDAY_10_ET + 3 * NS)
    # From 0 before the first fill to the trough just after the 98.00 fill:
    # L0 94 x (98.00 - 100.00) + L1 88 x (98.00 - 98.90) - 3 fees = -188.00 - 79.20 - 3.00.
    assert report.drawdown.amount == D("270.20")
    assert report.drawdown.trough_ns == MONDAY_10_ET + 3 * NS
    # Lots held: 1 from 0 s to 2 s, 2 to 3 s, 3 to 4 s, 2 to 5 s, 1 to 6 s (the last print).
    assert report.time_at_depth_ns == {0: 0, 1: 3 * NS, 2: 2 * NS, 3: 1 * NS}
    assert report.return_on_capital == (D("211.12") / D("26139.20")).quantize(D("0.0001"))


def test_average_cost_accounting_by_hand() -> None:
    outcome = run_prints(prints(PATH)).outcome()

    acb = average_cost(outcome.broker.engine.executions, [], D("100.50"))

    # Buys with their fees: 9401.00 + 8704.20 + 8037.00 = 26142.20 for 264 shares.
    cost = D("26142.20")
    first = cost * 82 / 264  # the average cost of the 82 shares sold at 99.00
    cost -= first
    second = cost * 88 / 182  # of the 88 sold at 99.89
    cost -= second
    realized = (D("8118.00") - 1 - first) + (D("8790.32") - 1 - second)
    assert acb.realized == realized
    # -2.93 on the 82 shares (their average cost 99.0235 is above 99.00), +75.25 on the 88 shares.
    assert round(acb.realized, 2) == D("72.33")
    assert acb.unrealized == 94 * D("100.50") - cost
    # Same total as the specific-lot view: 165.12 realized + 46.00 unrealized.
    assert round(acb.realized + acb.unrealized, 10) == D("211.12")
