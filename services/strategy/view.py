"""What the strategy service knows, folded from bus messages: pure, so it is tested without sockets.

The state comes from the statekeeper (``StateUpdate`` numbered 1, 2, 3 ..., ``StateSnapshot`` on request); the
market from the feed (``Tick``, ``FeedStatus``); the broker's connection from the executor (``broker.event`` and
its ``BrokerSnapshot``); halts also from ``control`` (``TradingHalted`` is acted on at once, before the state update
that records it arrives). :func:`observe` folds one message into the view and says whether the state must be
resynchronised from a snapshot (a hole in the statekeeper's numbering).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

import msgspec

from core.strategy import Market
from proto.messages import (
    BrokerConnected,
    BrokerConnectivity,
    BrokerDisconnected,
    BrokerSnapshot,
    FeedStatus,
    GridState,
    Message,
    StateSnapshot,
    StateUpdate,
    Tick,
    TradingHalted,
)


@dataclass(frozen=True, slots=True)
class View:
    symbol: str
    state: GridState | None = None
    # The last statekeeper update applied (StateUpdate.seq / StateSnapshot.seq); 0 = none yet.
    state_seq: int = 0
    tick: Tick | None = None
    # The price of the tick before ``tick`` (the plausibility band's reference).
    previous_price: Decimal | None = None
    feed_stale: bool = False
    # None = not known yet (no broker event and no snapshot answered): treated as disconnected.
    broker_connected: bool | None = None
    # When the view saw the previous Level-0 attempt end or the cycle turn: a new Level 0 needs a later tick.
    level0_not_before_ns: int = 0

    def market(self, now_ns: int, executor_alive: bool = True) -> Market:
        """The core's market input at ``now_ns``; a silent executor counts as a disconnected broker."""
        return Market(
            now_ns=now_ns,
            tick=self.tick,
            reference_price=self.previous_price,
            feed_stale=self.feed_stale,
            broker_connected=bool(self.broker_connected) and executor_alive,
            level0_not_before_ns=self.level0_not_before_ns,
        )


@dataclass(frozen=True, slots=True)
class Observed:
    view: View
    # The state must be fetched again (a gap in the statekeeper's numbering).
    resync: bool = False
    # The message changed something a decision depends on.
    changed: bool = False


def observe(view: View, msg: Message, now_ns: int) -> Observed:
    """Fold one message into the view."""
    match msg:
        case Tick():
            if msg.symbol != view.symbol:
                return Observed(view)
            previous = view.tick.price if view.tick is not None else None
            # A print that just arrived contradicts an earlier "stale" or "disconnected" from the feed; its next
            # FeedStatus says so too, but the tick may overtake it.
            return Observed(replace(view, tick=msg, previous_price=previous, feed_stale=False), changed=True)
        case FeedStatus():
            stale = msg.stale or not msg.connected
            return Observed(replace(view, feed_stale=stale), changed=stale != view.feed_stale)
        case StateUpdate():
            if view.state is None or msg.seq <= view.state_seq:
                # Nothing to build on yet (the snapshot is on its way), or an update the view already has.
                return Observed(view, resync=view.state is None)
            if msg.seq != view.state_seq + 1:
                return Observed(view, resync=True)
            return Observed(adopt_state(view, msg.state, msg.seq, now_ns), changed=True)
        case StateSnapshot():
            # The answer to our own request: the truth now, whatever its number (a restarted statekeeper may
            # count from 1 again).
            return Observed(adopt_state(view, msg.state, msg.seq, now_ns), changed=True)
        case TradingHalted():
            if view.state is None or view.state.halted:
                return Observed(view)
            halted = msgspec.structs.replace(view.state, halted=True, halt_reason=msg.reason)
            return Observed(replace(view, state=halted), changed=True)
        case BrokerConnected():
            return _broker(view, True)
        case BrokerDisconnected():
            return _broker(view, False)
        case BrokerConnectivity():
            return _broker(view, msg.connected)
        case BrokerSnapshot():
            return _broker(view, msg.connected)
    return Observed(view)


def adopt_state(view: View, state: GridState, seq: int, now_ns: int) -> View:
    """Take ``state`` as the truth; note when a Level-0 attempt ended or the cycle turned."""
    not_before = view.level0_not_before_ns
    old = view.state
    if old is not None and (state.cycle != old.cycle or state.level0_attempt != old.level0_attempt):
        not_before = now_ns
    return replace(view, state=state, state_seq=seq, level0_not_before_ns=not_before)


def _broker(view: View, connected: bool) -> Observed:
    return Observed(replace(view, broker_connected=connected), changed=connected != view.broker_connected)
