"""The ledger's two ways of applying an event give the same results.

A state :func:`core.ledger.step` made is worked on in place (untouched parts handed on, lots and orders kept in order as
they change); any other state (read from a file, made by a test) is sorted afresh, as the ledger always did. These
tests feed the same event streams both ways, the second one through states that step did not make (each state
decoded from its JSON), and compare every result down to the bytes; they also check that step never changes the state
it was given, and pin down how a state not in the ledger's order is put in order.
"""

from __future__ import annotations

import random
from decimal import Decimal

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.ledger import Applied, LedgerRules, step
from proto.messages import AppliedExecution, GridState, Lot, Message, WorkingOrder
from tests.core.ledger_events import accepted, buy_key, fill, sell_key, status
from tests.core.test_ledger_properties import Generator, perturbed_stream

D = Decimal
ENCODE = msgspec.json.Encoder().encode
DECODE = msgspec.json.Decoder(GridState).decode


def as_bytes(applied: Applied) -> tuple[bytes, bool, bytes, bytes, tuple[str, ...]]:
    amended = [(a.key, a.exec_id, str(a.fee)) for a in applied.amended]
    return ENCODE(applied.state), applied.changed, ENCODE(applied.closed), ENCODE(amended), applied.notes


def stream_of(seed: int, steps: int) -> list[Message]:
    rng = random.Random(seed)
    return perturbed_stream(Generator(rng).run(steps), rng)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(min_value=0, max_value=2**32),
    steps=st.integers(min_value=1, max_value=30),
    memory=st.sampled_from([0, 3, 256]),
)
def test_states_step_made_and_the_same_states_read_back_give_identical_results(
    seed: int, steps: int, memory: int
) -> None:
    rules = LedgerRules(exec_memory=memory)
    made = GridState(symbol="TQQQ", in_sync=True)

    for event in stream_of(seed, steps):
        read_back = DECODE(ENCODE(made))
        before = ENCODE(made)
        in_place = step(made, event, rules)
        afresh = step(read_back, event, rules)

        assert as_bytes(in_place) == as_bytes(afresh), event
        assert in_place.state == afresh.state
        assert ENCODE(made) == before, "step changed the state it was given"
        made = in_place.state


def test_an_event_that_changes_nothing_says_so_and_hands_on_an_equal_state() -> None:
    key = buy_key(1, 0)
    state = step(GridState(symbol="TQQQ"), accepted(key, "BUY", 94, "100.00")).state

    again = step(state, status(key, "Submitted"))

    assert again.changed is False
    assert again.state == state
    assert ENCODE(again.state) == ENCODE(state)


def test_a_state_not_made_by_step_is_put_in_order_by_the_next_event() -> None:
    def lot(level: int, price: str) -> Lot:
        return Lot(
            cycle=1,
            level=level,
            quantity=10,
            purchase_price=D(price),
            sell_target_price=D(price) + 1,
            buy_key=buy_key(1, level),
            sell_key=sell_key(1, level, price),
            cost=D(price) * 10,
        )

    def order(level: int, limit: str) -> WorkingOrder:
        return WorkingOrder(
            key=buy_key(1, level), side="BUY", level=level, quantity=10, limit=D(limit), perm_id=level
        )

    shuffled = GridState(
        symbol="TQQQ",
        lots=[lot(3, "97.00"), lot(1, "99.00"), lot(2, "98.00")],
        orders=[order(5, "95.00"), order(4, "96.00"), order(5, "94.50")],
        buy_attempts={3: 1, 1: 1, 2: 1},
        executions=[
            AppliedExecution(exec_id="a", key="k", shares=1),
            AppliedExecution(exec_id="b", key="k", shares=1),
            AppliedExecution(exec_id="a", key="k", shares=2),
            AppliedExecution(exec_id="c", key="k", shares=1),
        ],
        ended_orders=[1, 2, 3],
    )
    # An event about no order of this state: it changes nothing but the order of things.
    result = step(shuffled, status("a foreign orderRef", "Submitted"), LedgerRules(exec_memory=2))

    state = result.state
    assert [x.level for x in state.lots] == [1, 2, 3]
    # A repeated key keeps its last order; orders by (side, level, key).
    assert [(x.level, x.limit) for x in state.orders] == [(4, D("96.00")), (5, D("94.50"))]
    assert list(state.buy_attempts) == [1, 2, 3]
    # A repeated execId keeps its first place and its last record; the window keeps the last two.
    assert [(x.exec_id, x.shares) for x in state.executions] == [("b", 1), ("c", 1)]
    assert state.ended_orders == [2, 3]
    assert result.changed is True


def test_a_fill_on_a_state_not_in_order_gives_what_it_gives_on_the_same_state_in_order() -> None:
    def lot(level: int, price: str) -> Lot:
        return Lot(
            cycle=1,
            level=level,
            quantity=10,
            purchase_price=D(price),
            sell_target_price=D(price) + 1,
            buy_key=buy_key(1, level),
            sell_key=sell_key(1, level, price),
            cost=D(price) * 10,
        )

    lots = [lot(3, "97.00"), lot(1, "99.00")]
    shuffled = GridState(symbol="TQQQ", lots=lots, buy_attempts={3: 1, 1: 1})
    in_order = GridState(symbol="TQQQ", lots=sorted(lots, key=lambda x: x.level), buy_attempts={1: 1, 3: 1})
    key = buy_key(1, 2)
    events = [accepted(key, "BUY", 10, "98.00"), fill(key, "BUY", 10, "98.00", 10)]

    for event in events:
        shuffled = step(shuffled, event).state
        in_order = step(in_order, event).state

    assert ENCODE(shuffled) == ENCODE(in_order)
    assert [x.level for x in in_order.lots] == [1, 2, 3]
    assert list(in_order.buy_attempts) == [1, 2, 3]
