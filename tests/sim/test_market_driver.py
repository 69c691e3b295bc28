"""The one-clock driver: each print moves the clock, goes to the broker and to the stream, at `speed`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from decimal import Decimal

import pytest

from sim.clock import SimClock
from sim.driver import Driver, check_speed
from sim.market.manual import ManualSource
from sim.market.path import PathSource
from sim.market.prints import NS_PER_SECOND, Print

T0 = 1_748_872_800_000_000_000
S = NS_PER_SECOND


class Recorder:
    """Stands in for the broker (on_print) and the stream (publish), noting what each saw and when."""

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.broker: list[tuple[Decimal, int, int, int]] = []
        self.stream: list[tuple[int, Print]] = []
        self.wall: list[float] = []  # when each print was published (one time per batch)
        self.batches: list[int] = []  # the size of each publish call

    def on_print(self, price: Decimal, size: int, ts_ns: int) -> None:
        self.broker.append((price, size, ts_ns, self.clock.now_ns()))

    def publish(self, prints: Sequence[Print], first_id: int) -> None:
        self.stream.extend((first_id + i, p) for i, p in enumerate(prints))
        now = time.monotonic()
        self.wall.extend(now for _ in prints)
        self.batches.append(len(prints))


def path(*rows: tuple[float, str]) -> PathSource:
    return PathSource([(int(s * S), Decimal(p), 10) for s, p in rows], T0)


def make(source: PathSource | ManualSource, speed: float, max_wait: float = 0.0, driven: bool = True):
    clock = SimClock(start_ns=T0, driven=driven)
    rec = Recorder(clock)
    return Driver(source, clock, speed, max_wait, publish=rec.publish, on_print=rec.on_print), rec, clock


def run(coro, timeout: float = 10.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_the_broker_and_the_stream_get_the_same_prints_on_the_same_clock() -> None:
    driver, rec, clock = make(path((0, "10.00"), (0.5, "10.01"), (0.5, "9.99"), (2, "10.50")), speed=0)
    run(driver.run())
    streamed = [p for _, p in rec.stream]
    assert [(p.price, p.size, p.ts_ns) for p in streamed] == [(b[0], b[1], b[2]) for b in rec.broker]
    assert all(ts == clock_at_fill for _, _, ts, clock_at_fill in rec.broker)  # one clock
    assert [i for i, _ in rec.stream] == [1, 2, 3, 4]  # trade ids continue without a gap
    assert clock.now_ns() == T0 + 2 * S and driver.finished and driver.prints == 4


def test_prints_are_paced_at_speed() -> None:
    driver, rec, _ = make(path(*[(i / 10, "10") for i in range(11)]), speed=10)  # 1 simulated second
    started = time.monotonic()
    run(driver.run())
    elapsed = time.monotonic() - started
    assert 0.095 <= elapsed < 1.0  # never faster than the speed allows; generous above for a busy machine
    # Handed out over time, not in one burst: no print before its time (0.01 s apart at 10x). A busy machine can
    # only make them late, and the driver then sends what is due together.
    assert all(wall - started >= i * 0.01 - 1e-3 for i, wall in enumerate(rec.wall))


def test_a_long_gap_passes_in_max_wait_and_the_clock_jumps() -> None:
    driver, rec, clock = make(
        path((0, "10"), (8 * 3600, "11"), (8 * 3600 + 0.1, "12")), speed=1, max_wait=0.1
    )
    planned: list[float] = []  # the waits the driver asks for: the plan, whatever the machine's load does to it
    sleep = driver._sleep

    async def noted_sleep(seconds: float) -> None:
        planned.append(seconds)
        await sleep(seconds)

    driver._sleep = noted_sleep  # type: ignore[method-assign]
    run(driver.run())  # an 8-hour gap at speed 1 would time this out
    assert clock.now_ns() == T0 + (8 * 3600 * 10 + 1) * S // 10
    assert planned and max(planned) <= 0.1 + 1e-9  # never a wait longer than max_wait
    assert rec.batches == [1, 1, 1]
    # The gap took max_wait and the print after it its 0.1 s at speed 1, both measured from the first print: a late
    # wake-up on a busy machine may shorten the second wait (the driver catches up with its schedule), never the sum.
    assert rec.wall[1] - rec.wall[0] >= 0.099
    assert rec.wall[2] - rec.wall[0] >= 0.199


def test_pause_holds_the_market_and_resume_carries_on() -> None:
    async def scenario() -> None:
        driver, rec, _ = make(path(*[(i / 100, "10") for i in range(200)]), speed=1)
        task = asyncio.create_task(driver.run())
        await asyncio.sleep(0.1)
        driver.pause()
        held = driver.prints
        await asyncio.sleep(0.15)
        assert driver.prints == held and 0 < held < 200 and driver.status()["paused"]
        driver.set_speed(1000)
        driver.resume()
        await asyncio.wait_for(task, 2)
        assert driver.prints == 200 and [i for i, _ in rec.stream] == list(range(1, 201))

    run(scenario())


def test_a_faster_speed_takes_effect_in_the_middle_of_a_gap() -> None:
    async def scenario() -> None:
        driver, _, _ = make(path((0, "10"), (60, "11")), speed=1)
        task = asyncio.create_task(driver.run())
        await asyncio.sleep(0.05)
        driver.set_speed(1000)  # 60 s at 1000x: 60 ms; at the old speed the gap would take 60 s
        await asyncio.wait_for(task, 5)  # generous for a loaded machine, and far below 60 s

    run(scenario())


def test_inject_prints_at_the_free_running_clock_to_both_sides() -> None:
    async def scenario() -> None:
        driver, rec, clock = make(ManualSource(), speed=60, driven=False)
        await driver.run()  # the manual source has nothing of its own
        p = driver.inject(Decimal("101.245"), 300)  # half-up to the cent, like every print
        assert rec.broker == [(Decimal("101.25"), 300, p.ts_ns, rec.broker[0][3])]
        assert rec.stream == [(1, p)] and abs(p.ts_ns - clock.now_ns()) < S
        with pytest.raises(ValueError, match="price must be at least 0.01"):
            driver.inject(Decimal("-1"), 1)
        with pytest.raises(ValueError, match="size must be a positive"):
            driver.inject(Decimal("1"), 0)

    run(scenario())


def test_a_broker_error_on_one_print_is_counted_and_the_stream_still_gets_it() -> None:
    clock = SimClock(start_ns=T0, driven=True)
    rec = Recorder(clock)

    def failing(price: Decimal, size: int, ts_ns: int) -> None:
        raise RuntimeError("broker bug")

    driver = Driver(path((0, "10"), (1, "11")), clock, 0, publish=rec.publish, on_print=failing)
    run(driver.run())
    assert driver.on_print_errors == 2 and len(rec.stream) == 2


@pytest.mark.parametrize("bad", [-1.0, 1000.5, float("nan")])
def test_a_speed_outside_0_to_1000_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="speed must be 0"):
        check_speed(bad)
    assert check_speed(0) == 0 and check_speed(1000) == 1000 and check_speed(0.5) == 0.5
