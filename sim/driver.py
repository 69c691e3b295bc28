"""The one-clock loop: take prints from the market source at ``speed``, move the SimClock to each print, hand the
print to the broker (``on_print``: it matches orders against it) and to the stream (``publish``: every Alpaca
client sees it). The broker fills against exactly the prints the stream sent, at the same simulated time.

Pacing: print ``p`` is due at ``anchor_wall + (p.ts - anchor_sim) / speed``; the anchor moves when the speed
changes, on resume, and when a gap would take longer than ``max_wait`` seconds of wall time (nights and weekends of
a replay). Everything due is sent as one batch (Alpaca frames carry many messages), so thousands of prints a second
cost a few wake-ups. ``speed = 0`` sends as fast as the slowest client reads (back-pressure on the stream's unsent
bytes). The clock is driven by prints for replay/path/walk; with the manual source it runs free and prints come only
from :meth:`Driver.inject` (the `price` control verb).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from typing import Any

from sim.clock import SimClock
from sim.market import MarketSource
from sim.market.prints import NS_PER_SECOND, Print, to_cent
from sim.market.timefmt import iso_utc

log = logging.getLogger("sim.driver")

MAX_SPEED = 1000.0
MAX_BATCH = 1000  # prints per hand-off; a late loop catches up in chunks, yielding in between
UNPACED_HIGH_WATER = 1 << 20  # bytes unsent to the slowest client before an unpaced replay waits
UNPACED_LOW_WATER = 1 << 18
BACKPRESSURE_POLL_S = 0.002

Publish = Callable[[Sequence[Print], int], None]
OnPrint = Callable[[Decimal, int, int], None]


def check_speed(speed: float) -> float:
    """Return ``speed`` if valid: 0 (as fast as possible) or more than 0 up to 1000 (times real time)."""
    if not (speed == 0 or 0 < speed <= MAX_SPEED):
        raise ValueError(f"speed must be 0 (as fast as possible) or between 0 and {MAX_SPEED:g}, was {speed}")
    return float(speed)


class Driver:
    """Pace a market source onto the clock, the broker and the stream (see the module docstring)."""

    def __init__(
        self,
        source: MarketSource,
        clock: SimClock,
        speed: float,
        max_wait: float = 0.0,
        publish: Publish | None = None,
        on_print: OnPrint | None = None,
        backlog: Callable[[], int] | None = None,
    ) -> None:
        self.source = source
        self.clock = clock
        self.speed = check_speed(speed)
        if max_wait < 0:
            raise ValueError(f"sim.max_wait must be >= 0 seconds (0 = no cap), was {max_wait}")
        self.max_wait = max_wait
        self.publish = publish
        self.on_print = on_print
        self.backlog = backlog or (lambda: 0)
        self.prints = 0  # prints handed out so far; also the last trade id
        self.last: Print | None = None
        self.finished = False
        self.paused = False
        self.on_print_errors = 0
        self._wake = asyncio.Event()
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._stopping = False
        self._anchor: tuple[float, int] | None = None  # (wall monotonic s, sim ns)
        self._next: Print | None = None

    # -- control -----------------------------------------------------------------------------------------------

    def pause(self) -> None:
        self.paused = True
        self._resumed.clear()
        self._wake.set()

    def resume(self) -> None:
        self.paused = False
        self._anchor = None  # re-anchor at the next print: the pause took no simulated time
        self._resumed.set()
        self._wake.set()

    def set_speed(self, speed: float) -> float:
        speed = check_speed(speed)
        if self._anchor is not None and self.speed and speed and self._next is not None:
            # Keep the simulated time reached so far; only the rate changes from here.
            wall, sim = self._anchor
            now = time.monotonic()
            reached = min(self._next.ts_ns, sim + int((now - wall) * self.speed * NS_PER_SECOND))
            self._anchor = (now, reached)
        else:
            self._anchor = None
        self.speed = speed
        self._wake.set()
        return self.speed

    def stop(self) -> None:
        self._stopping = True
        self._resumed.set()
        self._wake.set()

    def inject(self, price: Decimal, size: int) -> Print:
        """Publish one print at the clock's current time (the `price` verb; the manual source's only prints).

        The price is rounded half-up to the cent, as every source's prints are."""
        if not price.is_finite() or to_cent(price) <= 0:
            raise ValueError(f"price must be at least 0.01, was {price}")
        price = to_cent(price)
        if size <= 0:
            raise ValueError(f"size must be a positive number of shares, was {size}")
        p = Print(self.clock.now_ns(), price, size)
        self._emit([p])
        return p

    # -- the loop ----------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Play the source until it ends (or :meth:`stop`); the sim stays up afterwards."""
        prints: Iterator[Print] = iter(self.source)
        self._next = next(prints, None)
        while self._next is not None and not self._stopping:
            if self.paused:
                await self._resumed.wait()
                continue
            if self.speed == 0:
                await self._unpaced_step(prints)
                continue
            wait = self._wait_for(self._next)
            if wait > 0:
                await self._sleep(wait)
                continue
            batch = self._due_batch(prints)
            self._emit(batch)
            await asyncio.sleep(0)
        self.finished = self._next is None
        if self.finished:
            log.info("driver: the %s source has ended after %d prints", self.source.name, self.prints)

    def _wait_for(self, p: Print) -> float:
        now = time.monotonic()
        if self._anchor is None:
            last_ts = self.last.ts_ns if self.last is not None else p.ts_ns
            self._anchor = (now, last_ts)
        wall, sim = self._anchor
        wait = wall + (p.ts_ns - sim) / NS_PER_SECOND / self.speed - now
        if self.max_wait and wait > self.max_wait:
            # A long gap: let it pass in max_wait seconds, then carry on at speed from the next print.
            self._anchor = (now + self.max_wait, p.ts_ns)
            wait = self.max_wait
        return wait

    def _due_batch(self, prints: Iterator[Print]) -> list[Print]:
        assert self._next is not None and self._anchor is not None
        wall, sim = self._anchor
        target = sim + int((time.monotonic() - wall) * self.speed * NS_PER_SECOND)
        batch = [self._next]
        self._next = next(prints, None)
        while self._next is not None and self._next.ts_ns <= target and len(batch) < MAX_BATCH:
            batch.append(self._next)
            self._next = next(prints, None)
        return batch

    async def _unpaced_step(self, prints: Iterator[Print]) -> None:
        assert self._next is not None
        batch = [self._next]
        self._next = next(prints, None)
        while self._next is not None and len(batch) < MAX_BATCH:
            batch.append(self._next)
            self._next = next(prints, None)
        self._emit(batch)
        if self.backlog() > UNPACED_HIGH_WATER:
            while self.backlog() > UNPACED_LOW_WATER and not self._stopping and not self.paused:
                await asyncio.sleep(BACKPRESSURE_POLL_S)
        else:
            await asyncio.sleep(0)

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            pass

    def _emit(self, batch: list[Print]) -> None:
        first_id = self.prints + 1
        on_print = self.on_print
        for p in batch:
            self.clock.advance_to(p.ts_ns)
            if on_print is not None:
                try:
                    on_print(p.price, p.size, p.ts_ns)
                except Exception:  # one bad print must not stop the market: count it and go on
                    self.on_print_errors += 1
                    log.exception("driver: the broker failed on the print %s", p)
        self.prints += len(batch)
        self.last = batch[-1]
        if self.publish is not None:
            self.publish(batch, first_id)

    # -- status ------------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        lag = None
        if self._anchor is not None and self.speed and self._next is not None and not self.paused:
            wall, sim = self._anchor
            due = wall + (self._next.ts_ns - sim) / NS_PER_SECOND / self.speed
            lag = round(max(0.0, time.monotonic() - due), 3)
        return {
            "source": self.source.name,
            "progress": self.source.progress(),
            "speed": self.speed,
            "paused": self.paused,
            "finished": self.finished,
            "prints": self.prints,
            "last_print": (
                {"time": iso_utc(self.last.ts_ns), "price": str(self.last.price), "size": self.last.size}
                if self.last is not None
                else None
            ),
            "next_print_time": iso_utc(self._next.ts_ns) if self._next is not None else None,
            "behind_s": lag,
            "broker_errors": self.on_print_errors,
        }
