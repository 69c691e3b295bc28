"""Benchmark of `gridbot backtest` (not a test): how long the shipped runs take, end to end, in-process.

    .venv/bin/python bench/bench_backtest.py                  # the 45 minute sessions and 16 years of daily bars
    .venv/bin/python bench/bench_backtest.py --repeat 5 --only minute --json

Each case does what the command does, minus printing: read the bar file, prepare it (as-traded prices, splits), play
every bar through the strategy core, the ledger and the paper broker's engine, and build the report. Wall time and
the process's CPU time are measured for each repetition; the table shows the best and the median. Results for this
project's machine are in docs/performance.md ("Backtest").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.ledger import LedgerRules  # noqa: E402
from gridbot.backtest import bars as barfiles  # noqa: E402
from gridbot.backtest.broker import Limits  # noqa: E402
from gridbot.backtest.engine import EXEC_MEMORY, Settings  # noqa: E402
from gridbot.backtest.paths import PathModel  # noqa: E402
from gridbot.backtest.report import build  # noqa: E402
from gridbot.backtest.runner import Plan, play  # noqa: E402
from gridbot.backtest.splits import TQQQ_SPLITS, load_splits  # noqa: E402
from gridbot.config import load  # noqa: E402
from services.strategy.settings import strategy_config  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
CASES = {
    "minute": ("45 sessions of minute bars (the shipped sample)", ROOT / "sim" / "data" / "TQQQ_1min_sample.csv.gz"),
    "hourly": ("16 years of hourly bars (10:00-15:00 ET)", SHARED / "TQQQ_60m_splitadj_2010-02-11_2026-02-27.csv"),
    "daily": ("16 years of daily bars, intrabar model", SHARED / "TQQQ_daily_splitadj_2010-02-11_2026-07-23.csv"),
}
TARGETS = {"minute": 2.0, "daily": 20.0}


@dataclass
class Sample:
    wall: float
    cpu: float
    bars: int
    prints: int
    looked_at: int
    fills: int
    round_trips: int
    realized: str


def run_once(path: Path) -> Sample:
    cfg = load(overrides={"general": {"lot_map": str(ROOT / "config" / "lots.csv")}})
    settings = Settings(strategy=strategy_config(cfg), limits=Limits(), ledger=LedgerRules(exec_memory=EXEC_MEMORY))
    model = PathModel(
        minute_prints=cfg.backtest.minute_prints,
        hour_prints=cfg.backtest.hour_prints,
        day_prints=cfg.backtest.day_prints,
        extremes=cfg.backtest.extremes,
        seed=cfg.backtest.seed,
    )
    wall0, cpu0 = time.perf_counter(), time.process_time()
    data = barfiles.load(path)
    played = play(data, load_splits(TQQQ_SPLITS), Plan(), settings, model)
    report = build(played.outcome, data.source, played.data.timeframe, played.prices, len(played.data.bars),
                   played.splits)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return Sample(
        wall=wall,
        cpu=cpu,
        bars=report.bars,
        prints=report.prints_seen,
        looked_at=report.prints_processed,
        fills=len(report.executions),
        round_trips=len(report.round_trips),
        realized=str(report.realized_pnl),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="repetitions per case (default 3)")
    parser.add_argument("--only", nargs="*", choices=tuple(CASES), help="cases to run (default: minute and daily)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    chosen = args.only or ["minute", "daily"]
    results: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f} at the start",
        "cases": {},
    }
    for name in chosen:
        title, path = CASES[name]
        samples = [run_once(path) for _ in range(args.repeat)]
        first = samples[0]
        results["cases"][name] = {
            "title": title,
            "best_wall_s": round(min(s.wall for s in samples), 2),
            "median_wall_s": round(statistics.median(s.wall for s in samples), 2),
            "best_cpu_s": round(min(s.cpu for s in samples), 2),
            "target_s": TARGETS.get(name),
            "bars": first.bars,
            "prints_played": first.prints,
            "prints_looked_at": first.looked_at,
            "fills": first.fills,
            "round_trips": first.round_trips,
            "realized_pnl": first.realized,
        }
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(results["machine"])
    print("| case | bars | prints played | looked at | fills | best wall (s) | median wall (s) | best CPU (s) | target |")
    print("|---|---|---|---|---|---|---|---|---|")
    for c in results["cases"].values():
        target = f"< {c['target_s']:g} s" if c["target_s"] else "-"
        print(f"| {c['title']} | {c['bars']:,} | {c['prints_played']:,} | {c['prints_looked_at']:,} | {c['fills']:,} "
              f"| {c['best_wall_s']} | {c['median_wall_s']} | {c['best_cpu_s']} | {target} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
