"""The backtest loop: prints -> the paper broker's engine -> the executor's events -> the ledger -> the strategy.

One deterministic loop, no processes and no sockets, over the very cores that trade: ``core.strategy.decide`` asks
for the commands, :class:`gridbot.backtest.broker.SimulatedBroker` carries them out on the paper broker's engine and
reports what the executor would publish, ``core.ledger.step`` folds those events into the ``GridState``.

At each print that matters, in this order (the order the running system sees them in):

1. time acts up to the print: the executor's immediate-order timeouts, DAY expiry, session opens;
2. the print reaches the broker: conditions trigger, orders fill;
3. every resulting event goes through the ledger;
4. the strategy decides with the print as its latest tick and the one before as the plausibility reference;
   its commands go to the broker, their events through the ledger, and it decides again until it has nothing
   left to do (a new Level 0 waits for the next print after a cycle closes, as the live strategy waits for the
   next fresh tick).

**Only the prints that matter are looked at.** Between two of them nothing can happen: no live order's limit or
condition price is reached, no deadline passes, and the strategy has no Level 0 to place. The broker says which
prices and which time would matter (:meth:`SimulatedBroker.watch`); :func:`gridbot.backtest.paths.next_hit` finds
the first such print of a bar by bisection along the bar's monotone legs. ``every_print=True`` looks at every
print instead; tests/backtest/test_equivalence.py shows both give the same fills, events and states.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

import msgspec

from core.intent import Side, parse
from core.ledger import FeeAmendment, LedgerRules, step
from core.strategy import Command, Market, StrategyConfig, decide
from gridbot.backtest.broker import Limits, SimulatedBroker
from gridbot.backtest.paths import Segment, Watch, next_hit
from gridbot.backtest.tracker import Tracker
from proto.messages import GridState, Message, OrderAccepted, OrderCancelled, PlaceOrder, RoundTrip, Tick

# Decision rounds at one print before the loop gives up: each round places or cancels something, and a print
# that fills the whole ladder needs about a dozen; more means two rules disagree for ever.
MAX_ROUNDS = 200


class BacktestError(RuntimeError):
    """The loop cannot go on (a rule that never settles, a split that leaves fractional shares)."""


# The ledger's window of recent executions (its duplicate filter for replays and late reports) copied at every
# event: in-process nothing is replayed or late (a commission follows its execution at once), so a short window
# gives the same states as the statekeeper's and saves a fifth of the run.
EXEC_MEMORY = 16


@dataclass(frozen=True, slots=True)
class Settings:
    strategy: StrategyConfig
    limits: Limits = Limits()
    ledger: LedgerRules = LedgerRules(exec_memory=EXEC_MEMORY)
    partial_fills: bool = False
    # Look at every print (the slow reference the fast path is tested against).
    every_print: bool = False


@dataclass
class Outcome:
    """Everything the report needs, once the prints are played."""

    state: GridState
    round_trips: list[RoundTrip]
    amendments: list[FeeAmendment]
    broker: SimulatedBroker
    tracker: Tracker
    events: list[Message] = field(default_factory=list)
    prints_seen: int = 0
    prints_processed: int = 0
    decisions: int = 0


class Backtest:
    """Play segments of prints through the cores; :meth:`outcome` says what happened."""

    def __init__(self, settings: Settings, state: GridState | None = None, keep_events: bool = False) -> None:
        self.settings = settings
        self.state = state if state is not None else GridState(symbol=settings.strategy.symbol, in_sync=True)
        self.broker = SimulatedBroker(settings.limits, settings.partial_fills)
        self.tracker = Tracker(self.state)
        self.round_trips: list[RoundTrip] = []
        self.amendments: list[FeeAmendment] = []
        self._trip_by_key: dict[str, int] = {}
        self.events: list[Message] | None = [] if keep_events else None
        self._tick: Tick | None = None
        self._ticks = 0
        self._last_price: Decimal | None = None
        self._level0_not_before = 0
        self._held_back = False
        # Something changed outside a print (a split): the strategy must look at the next print whatever it is.
        self._must_decide = False
        self._watch: Watch | None = None
        self.prints_seen = 0
        self.prints_processed = 0
        self.decisions = 0

    # ------------------------------------------------------------------------------------------ playing

    def play(self, seg: Segment) -> None:
        """Play one segment of prints."""
        runs = seg.runs()
        last = seg.n - 1
        self.prints_seen += seg.n
        low, high = seg.extremes()
        if not self.settings.every_print and self._current_watch().misses_range(low, high, seg.time(last)):
            self._last_price = seg.price(last)
            self.tracker.pass_prices(seg.turns())
            return
        i = 0
        for a, b in runs:
            if i <= a:
                self.tracker.mark(seg.time(a), seg.price(a))
            while i <= b:
                j = i if self.settings.every_print else next_hit(seg, max(i, a), a, b, self._current_watch())
                if j is None:
                    i = b  # not processed: the next run starts (and is marked) there
                    break
                if j > 0:
                    self._last_price = seg.price(j - 1)
                self._process(seg.time(j), seg.price(j), seg.size(j))
                i = j + 1
        if i <= last:
            self._pass(seg, last)

    def _pass(self, seg: Segment, i: int) -> None:
        """A print nothing happens at: it only moves the mark (and becomes the reference of the next print)."""
        price = seg.price(i)
        self._last_price = price
        self.tracker.mark(seg.time(i), price)

    def _process(self, ts: int, price: Decimal, size: int) -> None:
        self.prints_processed += 1
        self._apply(self.broker.timeouts(ts))
        self._apply(self.broker.on_print(price, size, ts))
        self._ticks += 1
        self._tick = Tick(
            ts_ns=ts,
            symbol=self.settings.strategy.symbol,
            price=price,
            size=size,
            exchange_ts_ns=ts,
            receive_ts_ns=ts,
            seq=self._ticks,
        )
        self._decide(ts, reference=self._last_price)
        self._last_price = price
        self._watch = None
        self.tracker.on_state(ts, self.state)
        self.tracker.mark(ts, price)

    def _decide(self, ts: int, reference: Decimal | None) -> None:
        self._must_decide = False
        for _ in range(MAX_ROUNDS):
            market = Market(
                now_ns=ts,
                tick=self._tick,
                reference_price=reference,
                feed_stale=False,
                broker_connected=True,
                level0_not_before_ns=self._level0_not_before,
            )
            decision = decide(self.state, market, self.settings.strategy)
            self.decisions += 1
            self._held_back = bool(decision.held_back)
            if not decision.commands:
                return
            produced = 0
            plain = not decision.held_back
            for cmd in decision.commands:
                events = self.broker.execute(cmd, ts)
                produced += len(events)
                plain = plain and _plain_outcome(cmd, events)
                self._apply(events)
            if not produced:
                # Refused or duplicate: the live strategy would try again later; so does the next print.
                return
            if plain and not self.settings.every_print:
                # Every order was simply accepted and every cancel simply confirmed: the next decision has the same
                # inputs (lots, anchor, cycle, attempts, fills) and finds the live set equal to the desired one.
                return
        raise BacktestError(
            f"the strategy did not settle within {MAX_ROUNDS} decisions at {ts} ns; state: {self.state}"
        )

    def _apply(self, events: list[Message]) -> None:
        rules = self.settings.ledger
        for event in events:
            before = self.state
            applied = step(before, event, rules)
            self.state = applied.state
            for trip in applied.closed:
                self._trip_by_key[trip.buy_key] = self._trip_by_key[trip.sell_key] = len(self.round_trips)
                self.round_trips.append(trip)
            for amendment in applied.amended:
                self._amend(amendment)
            if (self.state.cycle, self.state.level0_attempt) != (before.cycle, before.level0_attempt):
                # The strategy sees the update after the tick that caused it: a new Level 0 needs a later tick.
                self._level0_not_before = event.ts_ns + 1
            if self.events is not None:
                self.events.append(event)

    def _amend(self, amendment: FeeAmendment) -> None:
        """A commission that came after its round trip closed: that round trip pays it (as the statekeeper's
        journal books it)."""
        self.amendments.append(amendment)
        index = self._trip_by_key.get(amendment.key)
        if index is not None:
            trip = self.round_trips[index]
            self.round_trips[index] = msgspec.structs.replace(
                trip, fees=trip.fees + amendment.fee, realized_pnl=trip.realized_pnl - amendment.fee
            )

    def _current_watch(self) -> Watch:
        if self._watch is None:
            watch = self.broker.watch(self._tick.ts_ns if self._tick is not None else 0)
            if not self.state.lots or self._held_back or self._must_decide:
                # No lot: the next print may start a Level 0. Held back: the next decision may place it.
                watch = _every(watch)
            self._watch = watch
        return self._watch

    # ------------------------------------------------------------------------------------------ splits

    def split(self, ratio: Decimal, ts: int, rescale: Callable[[GridState, Decimal], GridState]) -> None:
        """Apply a split before the print at ``ts``: cancel every live order, rescale the lots (``rescale``)."""
        self._apply(self.broker.cancel_all("split: IB cancels open orders on a corporate action", ts))
        self.state = rescale(self.state, ratio)
        self.broker.split(ratio)
        self.tracker.split(ts, ratio, self.state)
        # The tick before the split is no reference for the price after it.
        self._last_price = None
        self._must_decide = True
        self._watch = None

    # ------------------------------------------------------------------------------------------ the end

    def outcome(self) -> Outcome:
        return Outcome(
            state=self.state,
            round_trips=self.round_trips,
            amendments=self.amendments,
            broker=self.broker,
            tracker=self.tracker,
            events=self.events or [],
            prints_seen=self.prints_seen,
            prints_processed=self.prints_processed,
            decisions=self.decisions,
        )


def _plain_outcome(cmd: Command, events: list[Message]) -> bool:
    """True when ``cmd`` had exactly its plain result: a place accepted (not filled), a cancel confirmed with
    nothing filled (of an order other than a Level 0, whose end starts the next attempt)."""
    if len(events) != 1:
        return False
    event = events[0]
    if isinstance(cmd, PlaceOrder):
        return isinstance(event, OrderAccepted)
    if not isinstance(event, OrderCancelled) or event.filled:
        return False
    key = parse(event.key)
    return not (key.side is Side.BUY and key.level == 0)


def _every(watch: Watch) -> Watch:
    return Watch(buy_at=watch.buy_at, sell_at=watch.sell_at, due_ns=watch.due_ns, every=True)
