"""The grid as a desired set of orders (DESIGN section 4, normative): a pure function of (state, market, config).

:func:`desired_orders` says which grid orders should be live at IB, keyed by intent key; :func:`diff` compares that
set with the working orders in the state and returns the commands (cancels first, then places) that close the gap.
Because the same inputs always give the same set and the same keys, ten ticks at once, a restart or a replayed
event cannot produce a second order: the second decision names the same key, and the executor answers a key it
already has with the existing order.

The rule, in order:

- **Blocked**: while the state is halted, not in sync with the broker, or the broker is disconnected, the desired
  set is exactly the live set: nothing is placed and nothing is cancelled (live orders stay at IB).
- **Pinned**: a live grid order with a partial fill is never cancelled by the strategy (cancelling a BUY would turn
  it into an odd-sized lot, a SELL into an odd remainder); it stays desired and counts in its side's budget.
- **Level 0**: with no lot held and no Level-0 BUY of this cycle live, a fresh and plausible tick (age and band from
  config) gives a BUY LMT at ``round(price x (1 + level0_buffer))``, outside RTH, immediate, under the key of the
  next attempt. A live Level-0 order stays desired whatever the tick does (the executor times it out). A stale feed
  blocks only this rule.
- **Buy queue**: with lots held, the BUYs for ``next_level .. next_level + queued_levels - 1`` that the lot map has,
  each LMT at its trigger with a PriceCondition (last price <= trigger), GTC, outside RTH, conditions ignoring RTH,
  keyed with the level's next BUY attempt (so a level freed by a SELL is armed again under a new key). Every other
  grid BUY is cancelled.
- **Sells**: one SELL per lot at its ``sell_target_price``, GTC, outside RTH, under its own ``sell_key``; at most
  ``max_live_sells`` desired, those with the lowest targets (pinned ones first); the rest are parked and are placed
  as slots free up. A live SELL of a lot outside the budget is cancelled (the lot becomes parked). A live grid SELL
  that belongs to no lot is left alone: reconciliation owns it.

Time comes in through ``market.now_ns``; nothing here reads a clock or does I/O, so the backtester runs this very
module.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from operator import attrgetter
from typing import TypeVar

import msgspec

from core.intent import IntentKey, NotAnIntentKey, Side, parse, slot_of
from core.ledger import next_buy_attempt
from core.lotmap import LotMap
from core.prices import buy_queue, level0_limit, triggers
from proto.messages import (
    CancelOrder,
    GridState,
    Lot,
    PlaceOrder,
    PriceCondition,
    Tick,
    WorkingOrder,
)

NS_PER_SECOND = 1_000_000_000

# IB statuses after which an order can no longer fill or be cancelled: it is not live, whatever the state lists.
FINAL_STATUSES = frozenset({"Filled", "Cancelled", "ApiCancelled", "Inactive"})
# Statuses of an order whose cancel is already on its way: no second CancelOrder is sent.
CANCELLING_STATUSES = frozenset({"PendingCancel"})

Command = CancelOrder | PlaceOrder
# A live order or a desired one: the diff ranks both by key and limit.
_Order = TypeVar("_Order", WorkingOrder, PlaceOrder)


@dataclass(frozen=True, slots=True)
class StrategyConfig:
    """The strategy's parameters (config sections [strategy], [broker], [feed]; see config/defaults.toml)."""

    lot_map: LotMap
    symbol: str = "TQQQ"
    level0_buffer: Decimal = Decimal("0.0025")
    step: Decimal = Decimal("0.01")
    sell_markup: Decimal = Decimal("0.01")
    queued_levels: int = 3
    # Live SELLs kept at IB; the other lots are parked (IB allows 20 active orders per contract and side).
    max_live_sells: int = 18
    # The executor's cap on live grid BUYs (three queued plus a Level 0).
    max_live_buys: int = 4
    # A tick older than this (receive time against market.now_ns) never starts a Level 0.
    max_tick_age_ns: int = 5 * NS_PER_SECOND
    # A Level-0 tick further than this fraction from the price before it is implausible.
    jump_band: Decimal = Decimal("0.05")

    def __post_init__(self) -> None:
        if not 1 <= self.max_live_sells <= 20:
            raise ValueError(
                f"strategy.max_live_sells must be 1..20 (IB allows 20 per side), was {self.max_live_sells}"
            )
        if not 1 <= self.max_live_buys <= 20:
            raise ValueError(
                f"broker.max_live_buys must be 1..20 (IB allows 20 per side), was {self.max_live_buys}"
            )
        if self.queued_levels < 0 or self.queued_levels >= self.max_live_buys + 1:
            raise ValueError(
                f"strategy.queued_levels must be 0..broker.max_live_buys ({self.max_live_buys}), "
                f"was {self.queued_levels}"
            )
        if self.max_tick_age_ns <= 0:
            raise ValueError(
                f"strategy.max_tick_age must be positive, was {self.max_tick_age_ns / NS_PER_SECOND} s"
            )
        if not self.jump_band > 0:
            raise ValueError(f"feed.jump_band must be a positive fraction, was {self.jump_band}")


@dataclass(frozen=True, slots=True)
class Market:
    """What the strategy knows besides the state, at the instant ``now_ns`` (UTC ns) of a decision."""

    now_ns: int
    # The latest tick, and the price of the good tick before it (for the plausibility band); None = none yet.
    tick: Tick | None = None
    reference_price: Decimal | None = None
    # The feed says its data is stale or it is disconnected (FeedStatus): blocks Level 0 only.
    feed_stale: bool = False
    broker_connected: bool = False
    # A new Level-0 attempt needs a tick received at or after this instant (when the previous attempt was seen to
    # end): "the next fresh tick tries again", not a tick that was already there before.
    level0_not_before_ns: int = 0


class Decision(msgspec.Struct, frozen=True):
    """The outcome of one decision: the desired set, the commands that reach it, and why anything was held back.

    A frozen msgspec Struct, not a frozen dataclass (whose __init__ sets each field through object.__setattr__): one
    is made at every decision. It is never encoded.
    """

    desired: Mapping[str, PlaceOrder]
    commands: tuple[Command, ...]
    # Why nothing at all is placed or cancelled (halted, not in sync, disconnected); None when trading.
    blocked: str | None = None
    # Why no Level 0 is desired right now (None when one is, or when Level 0 does not apply).
    level0_blocked: str | None = None
    # Desired orders not placed in this decision (their slot is still taken, or the side's budget is full).
    held_back: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------- the live set


def live_orders(state: GridState) -> dict[str, WorkingOrder]:
    """The grid's working orders that can still fill, by intent key (orders of other tools are left out)."""
    return _live_orders(state)[0]


def _live_orders(state: GridState) -> tuple[dict[str, WorkingOrder], dict[str, IntentKey]]:
    """The live set, and each live key parsed: every rule below asks for a key's side, level or slot, and a
    decision parses each key here once instead of once per rule."""
    live: dict[str, WorkingOrder] = {}
    keys: dict[str, IntentKey] = {}
    for order in state.orders:
        if order.status in FINAL_STATUSES:
            continue
        try:
            key = parse(order.key)
        except NotAnIntentKey:
            continue  # an order of another tool
        # A repeated key: the later order replaces the earlier one in the earlier one's place (as in a dict display).
        live[order.key] = order
        keys[order.key] = key
    return live, keys


def _pinned_keys(live: Mapping[str, WorkingOrder]) -> list[str]:
    """The keys of the pinned live orders (partly filled), in the live set's order (the desired set's order)."""
    return [key for key, order in live.items() if order.filled > 0]


# --------------------------------------------------------------------------------------------- gates


def trading_blocked(state: GridState, market: Market) -> str | None:
    """Why nothing new may happen now, or None: halted, not reconciled, or the broker is away."""
    if state.halted:
        return f"halted: {state.halt_reason or 'no reason given'}"
    if not state.in_sync:
        return "state not in sync with the broker yet (the statekeeper has not reconciled)"
    if not market.broker_connected:
        return "broker disconnected"
    return None


def level0_tick_blocked(market: Market, config: StrategyConfig) -> str | None:
    """Why the latest tick may not start a Level 0 (stale, implausible, already used), or None when it may."""
    tick = market.tick
    if tick is None:
        return "no tick yet"
    if market.feed_stale:
        return "feed stale"
    if tick.symbol != config.symbol:
        return f"tick for {tick.symbol!r}, the grid trades {config.symbol!r}"
    received = tick.receive_ts_ns or tick.exchange_ts_ns
    age = market.now_ns - received
    # abs(): a tick stamped far in the future is no fresher than an old one (a clock is wrong somewhere).
    if abs(age) > config.max_tick_age_ns:
        return f"tick stale: {age / NS_PER_SECOND:.1f} s old, the limit is {config.max_tick_age_ns / NS_PER_SECOND} s"
    if received < market.level0_not_before_ns:
        return "tick is older than the end of the last Level-0 attempt; waiting for the next one"
    price = tick.price
    if not price.is_finite() or price <= 0:
        return f"tick price {price} is not a positive price"
    ref = market.reference_price
    if ref is not None and ref > 0 and abs(price / ref - 1) > config.jump_band:
        return f"tick price {price} is more than {config.jump_band} away from the price before it ({ref})"
    return None


# --------------------------------------------------------------------------------------------- the desired set


def desired_orders(state: GridState, market: Market, config: StrategyConfig) -> dict[str, PlaceOrder]:
    """The grid orders that should be live at IB now, by intent key (see the module docstring for the rule)."""
    live, live_keys = _live_orders(state)
    return _desire(state, market, config, live, live_keys, trading_blocked(state, market))[0]


def _desire(
    state: GridState,
    market: Market,
    config: StrategyConfig,
    live: Mapping[str, WorkingOrder],
    live_keys: Mapping[str, IntentKey],
    blocked: str | None,
) -> tuple[dict[str, PlaceOrder], str | None]:
    if blocked is not None:
        return {key: _as_place(order, config, market.now_ns) for key, order in live.items()}, None
    desired: dict[str, PlaceOrder] = {}
    level0_blocked: str | None = None
    # Pinned orders first: whatever the rules below say, a partly filled order is not cancelled by us.
    pinned = _pinned_keys(live)
    for key in pinned:
        desired[key] = _as_place(live[key], config, market.now_ns)
    if state.lots:
        desired.update(_queued_buys(state, config, market.now_ns))
    else:
        level0 = _live_level0(state, live, live_keys)
        if level0 is not None:
            desired[level0.key] = _as_place(level0, config, market.now_ns)
        else:
            level0_blocked = level0_tick_blocked(market, config)
            if level0_blocked is None:
                order = _level0_order(state, market, config)
                desired[order.key] = order
    desired.update(_budgeted_sells(state.lots, pinned, config, market.now_ns, desired))
    return desired, level0_blocked


def _live_level0(
    state: GridState, live: Mapping[str, WorkingOrder], live_keys: Mapping[str, IntentKey]
) -> WorkingOrder | None:
    for key, order in live.items():
        k = live_keys[key]
        if k.side is Side.BUY and k.level == 0 and k.cycle == state.cycle:
            return order
    return None


def _level0_order(state: GridState, market: Market, config: StrategyConfig) -> PlaceOrder:
    assert market.tick is not None  # level0_tick_blocked said yes
    key = _buy_key(state.cycle, 0, next_buy_attempt(state, 0))
    return PlaceOrder(
        ts_ns=market.now_ns,
        key=key,
        symbol=config.symbol,
        side="BUY",
        quantity=config.lot_map[0],
        limit=level0_limit(market.tick.price, config.level0_buffer),
        # DAY: Level 0 must be final within minutes anyway (the executor cancels it after its timeout).
        tif="DAY",
        outside_rth=True,
        immediate=True,
    )


def _queued_buys(state: GridState, config: StrategyConfig, now_ns: int) -> dict[str, PlaceOrder]:
    if state.anchor_price is None:
        return {}  # lots without an anchor (adopted ones): no trigger can be computed; reconciliation halts this
    # The queue follows from the deepest held level the map has alone (max(held) + 1 onwards).
    deepest = config.lot_map.deepest_of(map(_LEVEL, state.lots))
    levels = _queue_levels(deepest, len(config.lot_map), config.queued_levels)
    if not levels:
        return {}
    orders: dict[str, PlaceOrder] = {}
    for level, price in zip(levels, _queue_triggers(state.anchor_price, levels, config.step), strict=True):
        key = _buy_key(state.cycle, level, next_buy_attempt(state, level))
        orders[key] = PlaceOrder(
            ts_ns=now_ns,
            key=key,
            symbol=config.symbol,
            side="BUY",
            quantity=config.lot_map[level],
            limit=price,
            tif="GTC",
            outside_rth=True,
            condition=PriceCondition(price=price, is_more=False),
            conditions_ignore_rth=True,
        )
    return orders


# The queue's levels below the deepest held one (buy_queue of that one level): every decision of a cycle asks with the
# same few numbers, so they are remembered (typed: buy_queue refuses a queued_levels like True that only equals 1).
@lru_cache(maxsize=256, typed=True)
def _queue_levels(deepest: int | None, lot_levels: int, queued: int) -> tuple[int, ...]:
    return buy_queue(() if deepest is None else (deepest,), lot_levels, queued)


# The queue's levels are all below a held one (>= 1), so their triggers are cent prices that follow from the anchor's
# value alone, and every decision of a cycle asks for the same few again: remember them (typed: a number that only
# equals a Decimal anchor is still refused by triggers()).
@lru_cache(maxsize=256, typed=True)
def _queue_triggers(anchor: Decimal, levels: tuple[int, ...], step: Decimal) -> tuple[Decimal, ...]:
    return triggers(anchor, levels, step)


# A key is a pure function of its parts, and every decision names the same few BUY keys again: remember them.
@lru_cache(maxsize=1024)
def _buy_key(cycle: int, level: int, attempt: int) -> str:
    return IntentKey.buy(cycle, level, attempt).encode()


def _remaining(lot: Lot) -> int:
    return lot.quantity - lot.sold


# What the sell budget reads of every lot at every decision, read in C.
_QUANTITY = attrgetter("quantity")
_SOLD = attrgetter("sold")
_SELL_KEY = attrgetter("sell_key")
_CYCLE = attrgetter("cycle")
_LEVEL = attrgetter("level")
_TARGET = attrgetter("sell_target_price")


def sell_budget(
    lots: Iterable[Lot], live: Mapping[str, WorkingOrder], max_live_sells: int
) -> tuple[Lot, ...]:
    """The lots whose SELL should be live: pinned SELLs first, then the lowest targets, at most ``max_live_sells``.

    Ties between equal targets go to the deeper level, then the older cycle, so the choice never flips between
    two decisions on the same state.
    """
    return _sell_budget(lots, _pinned_keys(live), max_live_sells)


def _sell_budget(lots: Iterable[Lot], pinned: Sequence[str], max_live_sells: int) -> tuple[Lot, ...]:
    """:func:`sell_budget`, given the keys of the pinned live orders."""
    if max_live_sells <= 0:
        return ()
    candidates = list(lots)
    # Only lots with shares left to sell. A lot whose last share sold is closed, so that is nearly always every lot:
    # checked in C, filtered one by one only when it is not.
    if not all(map(operator.gt, map(_QUANTITY, candidates), map(_SOLD, candidates))):
        candidates = [lot for lot in candidates if _remaining(lot) > 0]
    ranked = _by_target(candidates)
    if pinned:
        first = set(pinned)
        ranked = [lot for lot in ranked if lot.sell_key in first] + [
            lot for lot in ranked if lot.sell_key not in first
        ]
    return tuple(ranked[:max_live_sells])


def _by_target(lots: list[Lot]) -> list[Lot]:
    """``lots`` by (lowest target, deepest level, oldest cycle, SELL key), ties in their given order.

    This runs at every decision over every lot, so the order is reached without a rank built in Python per lot.
    """
    levels = list(map(_LEVEL, lots))
    targets = list(map(_TARGET, lots))
    # The ledger keeps the lots by (cycle, level), and in one cycle a deeper level is bought lower: along the list
    # the levels rise and the targets fall. Then the reverse is already in order (each lot before the next by its
    # lower target, or on an equal target by its deeper level; nothing is left for the other parts to decide).
    if all(map(operator.lt, levels, levels[1:])) and all(map(operator.ge, targets, targets[1:])):
        return lots[::-1]
    # Otherwise sort by each part in turn, the last one first: Python's sort is stable, so this is the order of one
    # sort by the whole (target, -level, cycle, sell_key), ties in input order included.
    ranked = sorted(lots, key=_SELL_KEY)
    ranked.sort(key=_CYCLE)
    ranked.sort(key=_LEVEL, reverse=True)  # reverse=True keeps equal levels in their order too: deepest first
    ranked.sort(key=_TARGET)
    return ranked


def _budgeted_sells(
    lots: Sequence[Lot],
    pinned: Sequence[str],
    config: StrategyConfig,
    now_ns: int,
    already: Mapping[str, PlaceOrder],
) -> dict[str, PlaceOrder]:
    # A pinned SELL of no lot still holds a slot at IB; pinned SELLs of lots are ranked first by sell_budget.
    # SELLs are in ``already`` only when pinned (rarely): the lots' SELL keys are gathered only then.
    pinned_sells = [key for key, order in already.items() if order.side == "SELL"]
    orphans = 0
    if pinned_sells:
        lot_keys = {lot.sell_key for lot in lots}
        orphans = sum(1 for key in pinned_sells if key not in lot_keys)
    budget = _sell_budget(lots, pinned, max(0, config.max_live_sells - orphans))
    orders: dict[str, PlaceOrder] = {}
    for lot in budget:
        if lot.sell_key in already:
            continue
        orders[lot.sell_key] = PlaceOrder(
            ts_ns=now_ns,
            key=lot.sell_key,
            symbol=config.symbol,
            side="SELL",
            quantity=lot.quantity - lot.sold,  # what remains of the lot
            limit=lot.sell_target_price,
            tif="GTC",
            outside_rth=True,
        )
    return orders


def _as_place(order: WorkingOrder, config: StrategyConfig, now_ns: int) -> PlaceOrder:
    """A live order as the PlaceOrder that would have made it (the diff compares keys only)."""
    return PlaceOrder(
        ts_ns=now_ns,
        key=order.key,
        symbol=config.symbol,
        side=order.side,
        quantity=order.quantity,
        limit=order.limit,
        tif="GTC",
    )


# --------------------------------------------------------------------------------------------- the diff


def diff(
    desired: Mapping[str, PlaceOrder], state: GridState, config: StrategyConfig, now_ns: int = 0
) -> tuple[tuple[Command, ...], tuple[str, ...]]:
    """The commands that turn the live set into ``desired``: cancels first, then places; and the held-back keys.

    A place is held back while another live order holds its (cycle, level, side) slot (the executor allows one per
    slot; it goes out once the cancel is confirmed), or while its side is at its cap counting orders still being
    cancelled (IB's 20 per side must hold at every instant, not just once the cancels land).
    """
    live, live_keys = _live_orders(state)
    return _diff(desired, state, config, now_ns, live, live_keys)


def _diff(
    desired: Mapping[str, PlaceOrder],
    state: GridState,
    config: StrategyConfig,
    now_ns: int,
    live: Mapping[str, WorkingOrder],
    live_keys: Mapping[str, IntentKey],
) -> tuple[tuple[Command, ...], tuple[str, ...]]:
    cancels: list[Command] = []
    # Only the live orders that are not desired and not already being cancelled can give a cancel: they are taken
    # out before the sort (a stable sort keeps the rest in the same relative order), so the sort ranks a few.
    undesired = [
        (key, order)
        for key, order in live.items()
        if key not in desired and order.status not in CANCELLING_STATUSES
    ]
    # Only an undesired SELL asks whether it belongs to a lot: the lots' SELL keys are gathered only then.
    if undesired and any(live_keys[key].side is Side.SELL for key, _order in undesired):
        lot_sell_keys = {lot.sell_key for lot in state.lots}
    else:
        lot_sell_keys = set()
    for key, _order in _in_order(undesired, live_keys):
        k = live_keys[key]
        if k.side is Side.SELL and key not in lot_sell_keys:
            continue  # a SELL of no lot: reconciliation's business, never ours to cancel
        cancels.append(CancelOrder(ts_ns=now_ns, key=key, reason=_cancel_reason(k, state)))
    taken_slots = set(map(slot_of, live_keys.values()))
    counts = {"BUY": 0, "SELL": 0}
    for order in live.values():
        counts[order.side] += 1
    caps = {"BUY": config.max_live_buys, "SELL": config.max_live_sells}
    places: list[Command] = []
    held: list[str] = []
    # Likewise only the desired orders not live yet can give a place.
    missing = [(key, place) for key, place in desired.items() if key not in live]
    missing_keys = {key: parse(key) for key, _place in missing}
    for key, place in _in_order(missing, missing_keys):
        if missing_keys[key].slot in taken_slots or counts[place.side] >= caps[place.side]:
            held.append(key)
            continue
        counts[place.side] += 1
        places.append(place)
    return tuple(cancels + places), tuple(held)


def _in_order(orders: list[tuple[str, _Order]], keys: Mapping[str, IntentKey]) -> list[tuple[str, _Order]]:
    """(key, order) pairs in command order (:func:`_order_rank`, ties as given); one or none need no ranking."""
    if len(orders) < 2:
        return orders
    return sorted(orders, key=lambda item: _order_rank(keys[item[0]], item[1].limit))


def _order_rank(k: IntentKey, limit: Decimal) -> tuple[int, Decimal, int]:
    """BUYs before SELLs; BUYs by level (the nearest trigger first), SELLs by target (the nearest first)."""
    if k.side is Side.BUY:
        return (0, Decimal(k.level), k.attempt_number)
    return (1, limit, k.level)


def _cancel_reason(key: IntentKey, state: GridState) -> str:
    if key.side is Side.SELL:
        return "parked: outside the sell budget (lower targets take the live slots)"
    if key.cycle != state.cycle:
        return f"BUY of cycle {key.cycle}, the grid is in cycle {state.cycle}"
    return "BUY no longer in the queue"


def decide(state: GridState, market: Market, config: StrategyConfig) -> Decision:
    """One decision: the desired set and the commands that reach it from the state's live orders."""
    blocked = trading_blocked(state, market)
    # The live set (and its parsed keys) is a function of the state alone: worked out once for both the desired
    # set and the diff.
    live, live_keys = _live_orders(state)
    desired, level0_blocked = _desire(state, market, config, live, live_keys, blocked)
    if blocked is not None:
        return Decision(desired=desired, commands=(), blocked=blocked)
    commands, held = _diff(desired, state, config, market.now_ns, live, live_keys)
    return Decision(desired=desired, commands=commands, level0_blocked=level0_blocked, held_back=held)
