"""The broker's rules in a run (IB's cap with parked SELLs), and the report's accounting across a split."""

from __future__ import annotations

from decimal import Decimal

from gridbot.backtest.report import SplitApplied, average_cost, build, trade_rows
from sim.broker.orders import Execution
from tests.backtest.helpers import MONDAY_10_ET, NS, prints, run_prints

D = Decimal


def _walk(start: str, end: str, step: str) -> list[str]:
    price, stop, inc = D(start), D(end), D(step)
    inc = inc if stop >= price else -inc
    out = []
    while (price <= stop) if inc > 0 else (price >= stop):
        out.append(str(price))
        price += inc
    return out


def test_a_30_percent_drop_parks_sells_beyond_18_and_the_recovery_sells_every_lot() -> None:
    down = ["100.00", *_walk("99.50", "70.00", "0.50")]
    backtest = run_prints(prints(down))

    state = backtest.state
    assert sorted(lot.level for lot in state.lots) == list(range(36))  # trigger(35) = 70.35, trigger(36) = 69.65
    live = list(backtest.broker.engine.live.values())
    live_sells = {o.order_ref for o in live if o.action == "SELL"}
    lowest = sorted(state.lots, key=lambda lot: lot.sell_target_price)[:18]
    assert live_sells == {lot.sell_key for lot in lowest}
    assert sum(lot.sell == "parked" for lot in state.lots) == 18
    assert sorted(int(o.order_ref.split()[2][1:]) for o in live if o.action == "BUY") == [36, 37, 38]

    both = run_prints(prints([*down, *_walk("70.50", "101.00", "0.50")]))

    assert both.state.cycle == 2
    sold = {ex.order_ref.split()[2] for ex in both.broker.engine.executions if ex.side == "SLD"}
    assert sold == {f"L{level}" for level in range(36)}
    # Never more than IB's 20 a side at once (the engine would have refused: nothing was).
    assert both.broker.counters.refused == 0
    assert not [e for e in both.events if type(e).__name__ == "OrderRejected"]


def _ex(seq: int, side: str, shares: int, price: str, ts: int) -> Execution:
    return Execution(
        exec_id=f"{seq:08x}.0.01.01", perm_id=seq, client_id=17, order_id=seq, account="DU0", con_id=1, side=side,
        shares=shares, price=D(price), cum_qty=shares, avg_price=D(price), ts_ns=ts, order_ref="", commission=D("1.00"),
        realized_pnl=None,
    )


def test_average_cost_carries_the_cost_base_across_a_split() -> None:
    executions = [
        _ex(1, "BOT", 94, "100.00", MONDAY_10_ET),
        _ex(2, "BOT", 88, "99.00", MONDAY_10_ET + NS),
        # 2:1 before the next one: 364 shares with the same cost base (9401.00 + 8713.00)
        _ex(3, "SLD", 188, "50.50", MONDAY_10_ET + 3 * NS),
    ]
    split = SplitApplied(MONDAY_10_ET + 2 * NS, "2025-06-02", D(2))

    acc = average_cost(executions, [split], D("50.00"))

    base = D("18114.00") * 188 / 364
    assert acc.realized == D("9494.00") - 1 - base
    assert acc.unrealized == 176 * D("50.00") - (D("18114.00") - base)


def test_trade_rows_are_the_round_trips_with_times_and_keys() -> None:
    outcome = run_prints(prints(["100.00", "98.90", "99.89"])).outcome()

    rows = trade_rows(build(outcome, "x", "prints", "as-traded", 3, []))

    assert rows == [[
        "1", "1", "88", "2025-06-02 10:00 EDT", "98.9000", "2025-06-02 10:00 EDT", "99.8900", "2.00", "85.12", "0.00",
        "tqgrid1 c1 L1 BUY", "tqgrid1 c1 L1 SELL 98.90",
    ]]
