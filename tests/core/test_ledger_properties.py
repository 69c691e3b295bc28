"""Property tests of the ledger: random grid histories, their events duplicated and reordered, keep the invariants.

A history is generated at the level of orders (which BUYs and SELLs, their executions and commissions); an
independent model computes from it the lots, round trips and counters that must result. The executor's event stream
of that history is then duplicated and shuffled (keeping only what causality guarantees, see perturbed_stream) and
fed to the ledger, which must arrive at exactly the model's result, keeping the invariants after every event.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.intent import IntentKey
from core.ledger import step
from proto.messages import (
    CommissionReported,
    GridState,
    Message,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    RoundTrip,
)

D = Decimal


@dataclass
class Order:
    key: str
    side: str
    quantity: int
    limit: Decimal
    order_id: int
    perm_id: int
    # (exec_id, shares, price, commission carried on the fill, commission reported separately)
    execs: list[tuple[str, int, Decimal, Decimal | None, Decimal | None]] = field(default_factory=list)
    cancelled: bool = False
    lot_buy_key: str = ""  # for a SELL: the BUY key of its lot
    cycle: int = 1

    @property
    def filled(self) -> int:
        return sum(shares for _, shares, _, _, _ in self.execs)

    @property
    def value(self) -> Decimal:
        return sum((shares * price for _, shares, price, _, _ in self.execs), D(0))

    @property
    def fees(self) -> Decimal:
        return sum((fill_fee or report or D(0) for _, _, _, fill_fee, report in self.execs), D(0))


@dataclass
class ModelLot:
    cycle: int
    level: int
    attempt: int
    quantity: int
    cost: Decimal
    fees: Decimal
    sold: int = 0
    sold_value: Decimal = D(0)

    @property
    def purchase(self) -> Decimal:
        return (self.cost / self.quantity).quantize(D("0.0001"), rounding=ROUND_HALF_UP)

    @property
    def buy_key(self) -> str:
        return IntentKey.buy(self.cycle, self.level, self.attempt).encode()

    @property
    def sell_key(self) -> str:
        return IntentKey.sell(self.cycle, self.level, self.purchase, self.attempt).encode()


@dataclass
class History:
    orders: list[Order] = field(default_factory=list)
    lots: dict[str, ModelLot] = field(default_factory=dict)
    trips: list[tuple[str, int, Decimal, Decimal]] = field(default_factory=list)  # buy_key, qty, fees, pnl
    cycle: int = 1
    level0_attempt: int = 0
    buy_attempts: dict[int, int] = field(default_factory=dict)
    live_keys: set[str] = field(default_factory=set)


class Generator:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.h = History()
        self.next_id = 1

    def _ids(self) -> tuple[int, int]:
        self.next_id += 1
        return self.next_id, 7_000_000 + self.next_id

    def _execs(self, order: Order, shares: int, price_low: int, price_high: int) -> None:
        pieces = self.rng.randint(1, min(3, shares))
        cuts = sorted(self.rng.sample(range(1, shares), pieces - 1)) if pieces > 1 else []
        sizes = [b - a for a, b in zip([0, *cuts], [*cuts, shares], strict=True)]
        for size in sizes:
            exec_id = f"{order.perm_id:x}.{len(order.execs) + 1:02d}"
            price = D(self.rng.randint(price_low, price_high)) / 100
            fee = D(self.rng.randint(30, 150)) / 100
            how = self.rng.random()
            on_fill, report = (fee, None) if how < 0.3 else (None, fee) if how < 0.8 else (fee, fee)
            if self.rng.random() < 0.1:
                on_fill, report = None, None  # IB never reported it
            order.execs.append((exec_id, size, price, on_fill, report))

    def buy(self, level: int, attempt: int, quantity: int, outcome: str) -> None:
        h = self.h
        order_id, perm_id = self._ids()
        key = IntentKey.buy(h.cycle, level, attempt).encode()
        order = Order(key, "BUY", quantity, D(100 - level), order_id, perm_id, cycle=h.cycle)
        h.orders.append(order)
        if outcome == "unfilled":
            order.cancelled = True
            if level == 0:
                h.level0_attempt = max(h.level0_attempt, attempt)
            return
        shares = quantity if outcome == "full" else self.rng.randint(1, quantity - 1)
        self._execs(order, shares, 9000 - level * 100, 9100 - level * 100)
        order.cancelled = outcome == "partial"
        lot = ModelLot(h.cycle, level, attempt, order.filled, order.value, order.fees)
        h.lots[lot.buy_key] = lot
        if level == 0:
            h.level0_attempt = max(h.level0_attempt, attempt)
        else:
            h.buy_attempts[level] = max(h.buy_attempts.get(level, 0), attempt)

    def sell(self, lot: ModelLot, outcome: str) -> None:
        h = self.h
        order_id, perm_id = self._ids()
        remaining = lot.quantity - lot.sold
        order = Order(
            lot.sell_key, "SELL", remaining, lot.purchase, order_id, perm_id, lot_buy_key=lot.buy_key
        )
        order.cycle = lot.cycle
        h.orders.append(order)
        if outcome == "live":
            h.live_keys.add(order.key)
            return
        shares = remaining if outcome == "full" or remaining == 1 else self.rng.randint(1, remaining - 1)
        self._execs(order, shares, 9200, 9400)
        order.cancelled = shares < remaining
        lot.sold += shares
        lot.sold_value += order.value
        lot.fees += order.fees
        if lot.sold == lot.quantity:
            del h.lots[lot.buy_key]
            h.trips.append((lot.buy_key, lot.quantity, lot.fees, lot.sold_value - lot.cost - lot.fees))
            if not any(other.cycle == h.cycle for other in h.lots.values()):
                h.cycle += 1
                h.level0_attempt = 0
                h.buy_attempts = {}

    def run(self, steps: int) -> History:
        h = self.h
        for _ in range(steps):
            if h.live_keys:
                break  # a live, unfilled SELL ends the history (its lot stays live)
            held = [lot for lot in h.lots.values() if lot.cycle == h.cycle]
            if not held:
                outcome = self.rng.choice(["unfilled", "full", "full", "partial"])
                self.buy(0, h.level0_attempt + 1, 94, outcome)
                continue
            choice = self.rng.random()
            top = max(lot.level for lot in held)
            if choice < 0.45 and top < 12:
                level = top + 1
                outcome = self.rng.choice(["full", "full", "full", "partial", "unfilled"])
                self.buy(level, h.buy_attempts.get(level, 0) + 1, 90 - level * 5, outcome)
            else:
                outcome = self.rng.choice(["full", "full", "full", "partial", "live"])
                self.sell(self.rng.choice(held), outcome)
        return h


def events_of(order: Order) -> tuple[list[Message], list[Message], list[Message]]:
    """The order's events: its reports that may come any time, its fills, and its final report (after its fills)."""
    side = "BUY" if order.side == "BUY" else "SELL"
    loose: list[Message] = [
        OrderAccepted(
            key=order.key,
            order_id=order.order_id,
            perm_id=order.perm_id,
            side=side,
            quantity=order.quantity,
            limit=order.limit,
            status="Submitted",
        )
    ]
    fills: list[Message] = []
    cum = 0
    for exec_id, shares, price, on_fill, report in order.execs:
        cum += shares
        fills.append(
            OrderFilled(
                key=order.key,
                exec_id=exec_id,
                order_id=order.order_id,
                perm_id=order.perm_id,
                side=side,
                shares=shares,
                price=price,
                cum_qty=cum,
                avg_price=price,
                exec_ts_ns=cum,
                order_quantity=order.quantity,
                commission=on_fill,
            )
        )
        if report is not None:
            loose.append(CommissionReported(exec_id=exec_id, key=order.key, commission=report))
    final: list[Message] = []
    if order.cancelled:
        final.append(
            OrderCancelled(
                key=order.key,
                order_id=order.order_id,
                perm_id=order.perm_id,
                filled=order.filled,
                avg_fill_price=(order.value / order.filled) if order.filled else D(0),
            )
        )
    return loose, fills, final


def perturbed_stream(history: History, rng: random.Random) -> list[Message]:
    """Every event of the history, shuffled within causality, with some repeated later.

    Causality kept: an order's final report comes after its fills; an order placed after another one filled (the
    grid decides from the lots) has all its events after that one's fills and final report. Everything else moves
    freely: acknowledgements after fills or after the final report, commissions before their executions, the events
    of unfilled orders among those of others.
    """
    nodes: list[tuple[Message, set[int]]] = []
    barrier: set[int] = set()
    for order in history.orders:
        loose, fills, final = events_of(order)
        mine: list[int] = []
        fill_ids: list[int] = []
        for event in loose:
            nodes.append((event, set(barrier)))
            mine.append(len(nodes) - 1)
        for event in fills:
            nodes.append((event, set(barrier)))
            fill_ids.append(len(nodes) - 1)
        for event in final:
            nodes.append((event, set(barrier) | set(fill_ids)))
            fill_ids.append(len(nodes) - 1)
        if order.execs:
            barrier = barrier | set(fill_ids)
    emitted: list[int] = []
    done: set[int] = set()
    ready = [i for i, (_, pre) in enumerate(nodes) if not pre]
    waiting = {i for i, (_, pre) in enumerate(nodes) if pre}
    while ready:
        i = ready.pop(rng.randrange(len(ready)))
        emitted.append(i)
        done.add(i)
        for j in sorted(waiting):
            if nodes[j][1] <= done:
                waiting.discard(j)
                ready.append(j)
    assert not waiting
    stream = [nodes[i][0] for i in emitted]
    for _ in range(rng.randint(0, len(stream) // 3 + 1)):
        at = rng.randrange(len(stream))
        stream.insert(rng.randint(at + 1, len(stream)), stream[at])
    return stream


def run_ledger(stream: list[Message]) -> tuple[GridState, dict[str, RoundTrip]]:
    state = GridState(symbol="TQQQ", in_sync=True)
    trips: dict[str, RoundTrip] = {}
    for event in stream:
        result = step(state, event)
        for trip in result.closed:
            assert trip.buy_key not in trips, "a round trip closed twice"
            trips[trip.buy_key] = trip
        for amendment in result.amended:
            match = [t for t in trips.values() if amendment.key in (t.buy_key, t.sell_key)]
            assert len(match) == 1, amendment
            t = match[0]
            trips[t.buy_key] = RoundTrip(
                **{
                    **{f: getattr(t, f) for f in t.__struct_fields__},
                    "fees": t.fees + amendment.fee,
                    "realized_pnl": t.realized_pnl - amendment.fee,
                }
            )
        state = result.state
        check_invariants(state, trips)
    return state, trips


def check_invariants(state: GridState, trips: dict[str, RoundTrip]) -> None:
    for lot in state.lots:
        assert 0 < lot.quantity and 0 <= lot.sold < lot.quantity, lot
        assert lot.cost > 0, "a lot without a BUY fill"
        live = [o for o in state.orders if o.side == "SELL" and o.key == lot.sell_key]
        assert len(live) <= 1, "more than one live SELL for a lot"
    keys = [lot.buy_key for lot in state.lots]
    assert len(keys) == len(set(keys))
    assert state.realized_pnl == sum((t.realized_pnl for t in trips.values()), D(0))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(min_value=0, max_value=2**32), steps=st.integers(min_value=1, max_value=40))
def test_duplicated_and_reordered_events_give_the_models_lots_and_round_trips(seed: int, steps: int) -> None:
    rng = random.Random(seed)
    history = Generator(rng).run(steps)

    state, trips = run_ledger(perturbed_stream(history, rng))

    expected_lots = {
        key: (lot.quantity, lot.cost, lot.purchase, lot.sold, lot.sold_value, lot.fees, lot.sell_key)
        for key, lot in history.lots.items()
    }
    actual_lots = {
        lot.buy_key: (
            lot.quantity,
            lot.cost,
            lot.purchase_price,
            lot.sold,
            lot.sold_value,
            lot.fees,
            lot.sell_key,
        )
        for lot in state.lots
    }
    assert actual_lots == expected_lots
    assert Counter((k, q, f, p) for k, q, f, p in history.trips) == Counter(
        (t.buy_key, t.quantity, t.fees, t.realized_pnl) for t in trips.values()
    )
    assert state.realized_pnl == sum((p for _, _, _, p in history.trips), D(0))
    assert (state.cycle, state.level0_attempt, state.buy_attempts) == (
        history.cycle,
        history.level0_attempt,
        history.buy_attempts,
    )
    assert {o.key for o in state.orders} == history.live_keys
    assert {lot.sell_key for lot in state.lots if lot.sell == "live"} == history.live_keys


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32))
def test_applying_a_stream_twice_changes_nothing_the_second_time(seed: int) -> None:
    rng = random.Random(seed)
    history = Generator(rng).run(20)
    stream = perturbed_stream(history, rng)
    state, _ = run_ledger(stream)

    for event in stream:
        result = step(state, event)
        assert result.closed == () and result.amended == ()
        state = result.state
    assert run_ledger(stream)[0].lots == state.lots
