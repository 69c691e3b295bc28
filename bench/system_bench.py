"""Benchmark of the running system on the simulated exchange (not a test): latency and sustained print rate.

    .venv/bin/python bench/system_bench.py                 # both parts, results as a table (and --json)
    .venv/bin/python bench/system_bench.py --samples 60 --rates 1000 5000 10000 20000

Each part starts the whole system under the real supervisord in a directory of its own, on free ports (the system
tests' harness, tests/system/harness.py), so it never touches a running system of yours.

**Latency, print -> order at the broker.** The market is manual (prices only from the `price` verb) and the sim's
clock runs free at wall-clock rate, so the broker's timestamps and the print's are one timeline. With no lot held,
a print makes the strategy place Level 0; the sample is the time from the sim stamping the print (just before the
stream sends it) to the paper broker receiving the placeOrder. It is split at the feed's receive time (the tick's
``receive_ts_ns``, seen on the bus): stream + alpaca-py, then feed -> bus -> strategy -> bus... -> executor ->
ib_insync -> TWS protocol. Between samples the cycle is closed (the lot's SELL filled) under a halt, and trading
resumes only once the closing print is too old to start a Level 0 (strategy.max_tick_age is 0.5 s here), so each
Level 0 is caused by its own print.

**Throughput, feed -> bus -> strategy.** The market replays the shipped sample with ``prints_per_bar`` 1200, so the
print rate is 20 x speed a second; for each rate the speed is set, the market runs a few seconds and is paused, and
the prints the sim sent are compared with the ticks a subscriber on the bus received (the same Subscriber class the
strategy uses), its sequence gaps, the feed's dropped count, and the strategy's own log ("gap from feed" lines).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import zmq.asyncio  # noqa: E402

from bus.subscriber import Subscriber  # noqa: E402
from core.prices import sell_target  # noqa: E402
from gridbot import config, probe  # noqa: E402
from proto import topics  # noqa: E402
from proto.messages import (  # noqa: E402
    FeedStatus,
    GridState,
    Halt,
    Resume,
    StateSnapshot,
    StateSnapshotRequest,
    Tick,
)
from tests.system.harness import System, wait_until  # noqa: E402

START = "2025-06-02T10:00:00-04:00"
PRINTS_PER_BAR = 1200
MAX_TICK_AGE = 0.5


def iso_ns(text: str) -> int:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class TickWatch:
    """A subscriber to the feed's ticks and status on a thread of its own (the bench's view of the bus)."""

    def __init__(self, cfg: config.Config) -> None:
        self.cfg = cfg
        self.ticks: list[Tick] = []
        self.count = 0
        self.feed: FeedStatus | None = None
        self.gaps = 0
        self.lost = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        self._ready.wait(10)

    async def _run(self) -> None:
        ctx = zmq.asyncio.Context()
        sub = Subscriber(ctx, self.cfg.bus.xpub, [topics.tick(self.cfg.general.symbol), topics.FEED_STATUS])
        self._ready.set()
        try:
            while not self._stop.is_set():
                envelope = await sub.recv(timeout=0.2)
                if envelope is None:
                    continue
                if isinstance(envelope.msg, Tick):
                    self.count += 1
                    if len(self.ticks) < 10_000:
                        self.ticks.append(envelope.msg)
                elif isinstance(envelope.msg, FeedStatus):
                    self.feed = envelope.msg
                self.gaps, self.lost = sub.gaps, sub.lost
        finally:
            await sub.close()
            ctx.destroy(linger=0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def state(cfg: config.Config) -> GridState:
    reply = asyncio.run(probe.ask(cfg, "statekeeper", StateSnapshotRequest(ts_ns=time.time_ns()), timeout=5))
    assert isinstance(reply, StateSnapshot), reply
    return reply.state


def command(cfg: config.Config, msg: Halt | Resume) -> None:
    asyncio.run(probe.ask(cfg, "statekeeper", msg, timeout=5))


# ---------------------------------------------------------------------------------------------------- latency


def measure_latency(samples: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gridbot-bench-") as tmp:
        system = System(Path(tmp), config=f"[strategy]\nmax_tick_age = {MAX_TICK_AGE}\n",
                        sim={"source": "manual", "start": START, "speed": 1.0})
        try:
            system.start()
            wait_until(system.ready, 60, "the system ready", interval=0.3, explain=system.explain)
            cfg = config.load(system.config_file)
            watch = TickWatch(cfg)
            try:
                return _latency_samples(system, cfg, watch, samples)
            finally:
                watch.close()
                system.stop_all()
        finally:
            system.close()


def _latency_samples(system: System, cfg: config.Config, watch: TickWatch, samples: int) -> dict[str, Any]:
    total, to_feed, feed_to_broker = [], [], []
    price = Decimal("50.00")
    # The sim's clock is wall time plus an offset: read it to place the feed's receive times on the same line.
    status = system.sim("status")
    offset_ns = status["clock"]["ts_ns"] - time.time_ns()
    for i in range(samples):
        grid = state(cfg)
        cycle = grid.cycle
        printed = system.sim("price", str(price))
        print_ns = iso_ns(printed["time"])
        key = f"tqgrid1 c{cycle} L0 BUY"

        def level0(key: str = key, print_ns: int = print_ns) -> dict[str, Any] | None:
            for order in system.sim("orders"):
                if order["order_ref"].startswith(key) and order["history"][0]["ts_ns"] >= print_ns:
                    return order
            return None

        order = wait_until(level0, 10, f"sample {i}: Level 0 after the print", interval=0.01,
                           explain=system.explain)
        arrival_ns = order["history"][0]["ts_ns"]
        total.append((arrival_ns - print_ns) / 1e6)
        tick = next((t for t in reversed(watch.ticks) if t.price == price), None)
        if tick is not None:
            received = tick.receive_ts_ns + offset_ns
            to_feed.append((received - print_ns) / 1e6)
            feed_to_broker.append((arrival_ns - received) / 1e6)
        # Close the cycle under a halt, and resume once the closing print is too old to start a Level 0.
        wait_until(lambda: any(lot.sell == "live" for lot in state(cfg).lots), 10, "the lot's SELL live",
                   interval=0.02)
        lot = state(cfg).lots[0]
        command(cfg, Halt(ts_ns=time.time_ns(), reason="bench: closing the cycle", source="bench"))
        system.sim("price", str(sell_target(lot.purchase_price)))
        wait_until(lambda cycle=cycle: state(cfg).cycle == cycle + 1, 10, "the cycle to close", interval=0.02)
        time.sleep(MAX_TICK_AGE + 0.1)
        command(cfg, Resume(ts_ns=time.time_ns(), reason="bench", source="bench"))
        wait_until(lambda: not [o for o in state(cfg).orders if o.status not in ("Filled", "Cancelled")], 10,
                   "the old cycle's BUYs cancelled", interval=0.02)
        # Prices wander a little so each sample's print is its own.
        price = (price + Decimal("0.07")) if i % 2 == 0 else (price - Decimal("0.05"))
    return {
        "samples": len(total),
        "print_to_broker_ms": _summary(total),
        "print_to_feed_ms": _summary(to_feed),
        "feed_to_broker_ms": _summary(feed_to_broker),
    }


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "p50": round(percentile(values, 50), 2),
        "p99": round(percentile(values, 99), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
        "mean": round(statistics.fmean(values), 2),
    }


# ---------------------------------------------------------------------------------------------------- throughput


def measure_throughput(rates: list[int], seconds: float) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="gridbot-bench-") as tmp:
        system = System(Path(tmp), sim={"source": "replay", "start": START, "prints_per_bar": PRINTS_PER_BAR,
                                        "speed": 1.0, "max_wait": 0.2, "loop": True})
        try:
            system.start()
            wait_until(lambda: system.sim_or_none("pause") is not None, 20, "the sim's control endpoint")
            wait_until(system.ready, 60, "the system ready", interval=0.3, explain=system.explain)
            cfg = config.load(system.config_file)
            watch = TickWatch(cfg)
            try:
                return [_one_rate(system, watch, rate, seconds) for rate in rates]
            finally:
                watch.close()
                system.stop_all()
        finally:
            system.close()


def _one_rate(system: System, watch: TickWatch, rate: int, seconds: float) -> dict[str, Any]:
    speed = rate * 60 / PRINTS_PER_BAR
    system.sim("speed", str(speed))
    strategy_gaps_before = system.log("strategy").count("gap from feed")
    gaps_before, lost_before = watch.gaps, watch.lost
    dropped_before = watch.feed.dropped if watch.feed else 0
    prints_before = system.sim("status")["market"]["prints"]
    ticks_before = watch.count
    pids = system.pids()
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.monotonic()
    system.sim("resume")
    time.sleep(seconds)
    behind = system.sim("status")["market"].get("behind_s")
    system.sim("pause")
    elapsed = time.monotonic() - started
    cpu = {name: round(100 * (cpu_seconds(pid) - cpu_before[name]) / elapsed) for name, pid in pids.items()}
    status = system.sim("status")["market"]
    prints = status["prints"] - prints_before
    # Let what is in flight arrive: until the count stops moving for half a second.
    last, still_since = watch.count, time.monotonic()
    while time.monotonic() - still_since < 0.5:
        time.sleep(0.05)
        if watch.count != last:
            last, still_since = watch.count, time.monotonic()
    ticks = watch.count - ticks_before
    dropped = (watch.feed.dropped if watch.feed else 0) - dropped_before
    return {
        "target_rate": rate,
        "achieved_rate": round(prints / elapsed),
        "prints": prints,
        "ticks_received": ticks,
        "missing": prints - ticks,
        "bus_gaps": watch.gaps - gaps_before,
        "bus_lost": watch.lost - lost_before,
        "feed_dropped": dropped,
        "strategy_gap_lines": system.log("strategy").count("gap from feed") - strategy_gaps_before,
        "sim_behind_s": behind,
        "cpu_percent": cpu,
        "sustained": prints == ticks and watch.gaps == gaps_before and dropped == 0,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model or platform.processor(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40, help="latency samples (default 40)")
    parser.add_argument("--rates", type=int, nargs="*", default=[500, 1000, 2000, 5000, 10000, 20000],
                        help="print rates to try, prints/s")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per rate (default 4)")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": machine()}
    if not args.skip_latency:
        results["latency"] = measure_latency(args.samples)
    if not args.skip_throughput:
        results["throughput"] = measure_throughput(args.rates, args.seconds)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    m = results["machine"]
    print(f"machine: {m['cpu']}, {m['cpus']} CPUs, Python {m['python']}, {m['system']}")
    if "latency" in results:
        lat = results["latency"]
        print(f"latency over {lat['samples']} samples (ms):")
        for name in ("print_to_broker_ms", "print_to_feed_ms", "feed_to_broker_ms"):
            s = lat[name]
            print(f"  {name:<20} p50 {s.get('p50')}  p99 {s.get('p99')}  min {s.get('min')}  max {s.get('max')}")
    if "throughput" in results:
        print("throughput, feed -> bus -> strategy:")
        print("  target  achieved   prints    ticks  missing  gaps  dropped  strategy-gaps  behind_s  sustained  "
              "CPU % per program")
        for r in results["throughput"]:
            cpu = " ".join(f"{k} {v}" for k, v in r["cpu_percent"].items())
            print(f"  {r['target_rate']:>6} {r['achieved_rate']:>9} {r['prints']:>8} {r['ticks_received']:>8} "
                  f"{r['missing']:>8} {r['bus_gaps']:>5} {r['feed_dropped']:>8} {r['strategy_gap_lines']:>14} "
                  f"{r['sim_behind_s']!s:>9}  {r['sustained']!s:<9}  {cpu}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
