"""The strategy core in a closed loop with the real ledger and the matching rules, as the backtester runs them.

A minimal broker (this file) keeps the orders the strategy's commands make, fills them against scripted prints with
core.matching's rules (a gap through a limit fills at the print), and reports each step to core.ledger as the
executor's events would. Every decision is made on the ledger's state, so the examples below check the strategy
and the ledger together: the user's scenarios, with no process and no socket.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from core import ledger, matching
from core.intent import parse
from core.lotmap import load_lot_map
from core.prices import sell_target, trigger_chain
from core.strategy import NS_PER_SECOND, Market, StrategyConfig, decide
from gridbot.config import PROJECT_ROOT
from proto.messages import (
    CancelOrder,
    GridState,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    PlaceOrder,
    RoundTrip,
    Tick,
)

D = Decimal
USER_MAP = load_lot_map(PROJECT_ROOT / "config" / "lots.csv")
CONFIG = StrategyConfig(lot_map=USER_MAP)
START = 1_750_000_000 * NS_PER_SECOND


@dataclass
class Resting:
    cmd: PlaceOrder
    order_id: int
    perm_id: int
    filled: int = 0


@dataclass
class Loop:
    """The strategy, the ledger and a minimal broker, stepping one print at a time."""

    config: StrategyConfig = CONFIG
    state: GridState = field(default_factory=lambda: GridState(symbol="TQQQ", in_sync=True))
    book: dict[str, Resting] = field(default_factory=dict)
    now: int = START
    next_id: int = 1
    prints: int = 0
    placed: list[PlaceOrder] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    fills: list[OrderFilled] = field(default_factory=list)
    closed: list[RoundTrip] = field(default_factory=list)
    max_live: dict[str, int] = field(default_factory=lambda: {"BUY": 0, "SELL": 0})
    # Split the next fill of this key into this many executions.
    pieces: dict[str, int] = field(default_factory=dict)
    last_price: Decimal | None = None

    def event(self, msg: object) -> None:
        applied = ledger.step(self.state, msg)  # type: ignore[arg-type]
        self.state = applied.state
        self.closed.extend(applied.closed)

    def run(self, prices: Iterable[str | Decimal]) -> None:
        for price in prices:
            self.print_at(D(price))

    def print_at(self, price: Decimal) -> None:
        self.now += NS_PER_SECOND
        self.prints += 1
        self.match(price)
        tick = Tick(
            symbol="TQQQ",
            price=price,
            size=100,
            exchange_ts_ns=self.now,
            receive_ts_ns=self.now,
            seq=self.prints,
        )
        # Decide until nothing more happens (a confirmed cancel frees a slot for a held-back place).
        for _ in range(5):
            market = Market(
                now_ns=self.now, tick=tick, reference_price=self.last_price, broker_connected=True
            )
            decision = decide(self.state, market, self.config)
            if not decision.commands:
                break
            for cmd in decision.commands:
                self.execute(cmd)
        self.last_price = price

    def execute(self, cmd: PlaceOrder | CancelOrder) -> None:
        if isinstance(cmd, CancelOrder):
            resting = self.book.pop(cmd.key)
            self.cancelled.append(cmd.key)
            self.event(
                OrderCancelled(
                    ts_ns=self.now,
                    key=cmd.key,
                    order_id=resting.order_id,
                    perm_id=resting.perm_id,
                    filled=resting.filled,
                )
            )
            return
        slot = parse(cmd.key).slot
        assert all(parse(k).slot != slot for k in self.book), f"two live orders for {slot}"
        self.book[cmd.key] = Resting(cmd, self.next_id, 1_000_000 + self.next_id)
        self.next_id += 1
        self.placed.append(cmd)
        for side in ("BUY", "SELL"):
            live = sum(1 for r in self.book.values() if r.cmd.side == side)
            self.max_live[side] = max(self.max_live[side], live)
            assert live <= 20, f"{live} live {side} orders: IB allows 20"
        self.event(
            OrderAccepted(
                ts_ns=self.now,
                key=cmd.key,
                order_id=self.book[cmd.key].order_id,
                perm_id=self.book[cmd.key].perm_id,
                side=cmd.side,
                quantity=cmd.quantity,
                limit=cmd.limit,
                status="PreSubmitted" if cmd.condition else "Submitted",
            )
        )

    def match(self, price: Decimal) -> None:
        for key, resting in list(self.book.items()):
            cmd = resting.cmd
            if cmd.condition is not None and not matching.conditions_hold(
                [matching.PriceCondition(is_more=cmd.condition.is_more, price=cmd.condition.price)], price
            ):
                continue
            order = matching.WorkingOrder(
                key=resting.perm_id,
                side=matching.Side(cmd.side),
                order_type=matching.OrderType.LIMIT,
                limit=cmd.limit,
                remaining=cmd.quantity - resting.filled,
                outside_rth=cmd.outside_rth,
            )
            at = matching.fill_price(order, price)
            if at is None:
                continue
            remaining = cmd.quantity - resting.filled
            parts = self.pieces.pop(key, 1)
            sizes = [remaining // parts] * (parts - 1) + [remaining - (remaining // parts) * (parts - 1)]
            for size in sizes:
                resting.filled += size
                fill = OrderFilled(
                    ts_ns=self.now,
                    key=key,
                    exec_id=f"e{self.next_id}.{resting.filled}",
                    order_id=resting.order_id,
                    perm_id=resting.perm_id,
                    side=cmd.side,
                    shares=size,
                    price=at,
                    cum_qty=resting.filled,
                    avg_price=at,
                    exec_ts_ns=self.now,
                    order_quantity=cmd.quantity,
                    commission=D("1.00"),
                )
                self.fills.append(fill)
                if resting.filled >= cmd.quantity:
                    del self.book[key]
                self.event(fill)

    def live(self, side: str) -> list[Resting]:
        return [r for r in self.book.values() if r.cmd.side == side]


def walk(start: str, end: str, step: str = "0.05") -> list[Decimal]:
    a, b, s = D(start), D(end), D(step)
    s = s if b >= a else -s
    out = []
    price = a
    while (price <= b) if s > 0 else (price >= b):
        out.append(price)
        price += s
    return out


# --------------------------------------------------------------------------------------------- scenarios


def test_a_drop_of_5_percent_and_a_rise_back_closes_every_round_trip_and_starts_a_new_level0() -> None:
    loop = Loop()

    loop.run(["100.00", "100.00"])  # the first tick places Level 0 at 100.25, the second fills it at 100.00
    assert loop.state.anchor_price == D("100.00")
    loop.run(walk("100.00", "95.00") + walk("95.00", "101.00"))

    buys = [f for f in loop.fills if f.side == "BUY"]
    assert [(parse(f.key).level, f.price) for f in buys] == [
        (0, D("100.00")),
        (1, D("99.00")),
        (2, D("98.00")),
        (3, D("97.00")),
        (4, D("96.05")),
        (5, D("95.10")),
    ]
    sells = [f for f in loop.fills if f.side == "SELL"]
    assert [(parse(f.key).level, f.price) for f in sells] == [
        (5, D("96.05")),
        (4, D("97.05")),
        (3, D("98.00")),
        (2, D("99.00")),
        (1, D("100.00")),
        (0, D("101.00")),
    ]
    # Each SELL rests at round(purchase x 1.01) and fills at the first print at or above it (prints 5 cents apart).
    targets = [sell_target(parse(f.key).purchase_price or D(0)) for f in sells]
    assert targets == [D("96.05"), D("97.01"), D("97.97"), D("98.98"), D("99.99"), D("101.00")]
    assert all(t <= f.price < t + D("0.05") for f, t in zip(sells, targets, strict=True))
    assert len(loop.closed) == 6 and all(t.realized_pnl > 0 for t in loop.closed)
    assert loop.state.cycle == 2 and loop.state.lots == [] and loop.state.anchor_price is None
    assert [p.key for p in loop.placed][-1] == "tqgrid1 c2 L0 BUY"
    assert set(loop.book) == {"tqgrid1 c2 L0 BUY"}


def test_ten_ticks_in_the_same_instant_place_one_level0() -> None:
    loop = Loop()
    tick_prices = [D("100.00") + D("0.01") * n for n in range(10)]

    for n, price in enumerate(tick_prices):
        tick = Tick(symbol="TQQQ", price=price, size=1, exchange_ts_ns=START, receive_ts_ns=START, seq=n + 1)
        for cmd in decide(
            loop.state, Market(now_ns=START, tick=tick, broker_connected=True), CONFIG
        ).commands:
            if cmd.key not in loop.book:
                loop.execute(cmd)

    assert [p.key for p in loop.placed] == ["tqgrid1 c1 L0 BUY"]


def test_a_drop_of_30_percent_keeps_18_sells_live_and_a_recovery_sells_every_lot() -> None:
    loop = Loop()
    loop.run(["100.00", "100.00"])

    loop.run(walk("100.00", "70.00", "0.10"))

    levels = [n for n, t in enumerate(trigger_chain(D("100.00"), len(USER_MAP))) if t >= D("70.00")]
    assert sorted(lot.level for lot in loop.state.lots) == levels  # 36 lots: levels 0..35
    live_sells = {r.cmd.key for r in loop.live("SELL")}
    assert len(live_sells) == 18
    by_target = sorted(loop.state.lots, key=lambda lot: lot.sell_target_price)
    assert live_sells == {lot.sell_key for lot in by_target[:18]}
    assert sum(lot.sell == "parked" for lot in loop.state.lots) == len(levels) - 18
    assert sorted(parse(r.cmd.key).level for r in loop.live("BUY")) == [36, 37, 38]
    assert loop.max_live == {"BUY": 3, "SELL": 18}

    loop.run(walk("70.00", "101.00", "0.10"))

    assert loop.state.cycle == 2 and loop.state.lots == []
    assert len(loop.closed) == len(levels)
    assert {t.level for t in loop.closed} == set(levels)
    assert loop.max_live["SELL"] <= 18 and loop.max_live["BUY"] <= 4


def test_a_buy_filled_in_three_pieces_makes_one_lot_and_one_sell() -> None:
    loop = Loop()
    loop.run(["100.00", "100.00"])
    loop.pieces["tqgrid1 c1 L1 BUY"] = 3

    loop.run(["99.50", "99.00"])

    pieces = [f for f in loop.fills if f.key == "tqgrid1 c1 L1 BUY"]
    assert [f.shares for f in pieces] == [29, 29, 30]
    lot1 = next(lot for lot in loop.state.lots if lot.level == 1)
    assert (lot1.quantity, lot1.purchase_price, lot1.sell_target_price) == (88, D("99.00"), D("99.99"))
    assert [r.cmd.key for r in loop.live("SELL")] == ["tqgrid1 c1 L0 SELL 100.00", "tqgrid1 c1 L1 SELL 99.00"]
    assert sorted(parse(r.cmd.key).level for r in loop.live("BUY")) == [2, 3, 4]


def test_a_gap_down_through_three_triggers_fills_them_at_the_print_and_moves_the_queue() -> None:
    loop = Loop()
    loop.run(["100.00", "100.00", "99.50"])

    loop.run(["96.50"])

    buys = [(parse(f.key).level, f.price) for f in loop.fills if f.side == "BUY"]
    assert buys == [(0, D("100.00")), (1, D("96.50")), (2, D("96.50")), (3, D("96.50"))]
    assert sorted(parse(r.cmd.key).level for r in loop.live("BUY")) == [4, 5, 6]
    assert sorted((parse(r.cmd.key).level, r.cmd.limit) for r in loop.live("SELL")) == [
        (0, D("101.00")),
        (1, D("97.47")),
        (2, D("97.47")),
        (3, D("97.47")),
    ]


def test_a_level_freed_by_a_sell_is_bought_again_under_a_new_key() -> None:
    loop = Loop()
    loop.run(["100.00", "100.00", "99.00", "98.00", "99.00"])  # L1 and L2 bought; L2 sold at 99.00

    assert sorted(lot.level for lot in loop.state.lots) == [0, 1]
    assert sorted(r.cmd.key for r in loop.live("BUY")) == [
        "tqgrid1 c1 L2 BUY a2",
        "tqgrid1 c1 L3 BUY",
        "tqgrid1 c1 L4 BUY",
    ]
    loop.run(["98.00"])

    lot2 = next(lot for lot in loop.state.lots if lot.level == 2)
    assert (lot2.buy_key, lot2.sell_key) == ("tqgrid1 c1 L2 BUY a2", "tqgrid1 c1 L2 SELL a2 98.00")
    assert "tqgrid1 c1 L2 SELL a2 98.00" in {r.cmd.key for r in loop.live("SELL")}


def test_the_worked_example_of_docs_strategy_md() -> None:
    loop = Loop()

    loop.run(["100.00", "100.00", "99.00", "96.00"])
    assert sorted(r.cmd.key for r in loop.live("BUY")) == ["tqgrid1 c1 L5 BUY", "tqgrid1 c1 L6 BUY",
                                                          "tqgrid1 c1 L7 BUY"]
    assert sorted((r.cmd.key, r.cmd.limit) for r in loop.live("SELL")) == [
        ("tqgrid1 c1 L0 SELL 100.00", D("101.00")), ("tqgrid1 c1 L1 SELL 99.00", D("99.99")),
        ("tqgrid1 c1 L2 SELL 96.00", D("96.96")), ("tqgrid1 c1 L3 SELL 96.00", D("96.96")),
        ("tqgrid1 c1 L4 SELL 96.00", D("96.96")),
    ]

    loop.run(["96.96"])
    assert sorted(lot.level for lot in loop.state.lots) == [0, 1]
    assert sorted(r.cmd.key for r in loop.live("BUY")) == ["tqgrid1 c1 L2 BUY a2", "tqgrid1 c1 L3 BUY a2",
                                                          "tqgrid1 c1 L4 BUY a2"]
    assert sorted(loop.cancelled) == ["tqgrid1 c1 L5 BUY", "tqgrid1 c1 L6 BUY", "tqgrid1 c1 L7 BUY"]

    loop.run(["99.99", "101.00"])
    assert loop.state.cycle == 2 and len(loop.closed) == 5
    assert set(loop.book) == {"tqgrid1 c2 L0 BUY"}
