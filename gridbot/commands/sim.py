"""`gridbot sim <verb> [args]`: drive the simulated exchange through its control endpoint.

Verbs are whatever the running sim registered (`gridbot sim help` lists them): the paper broker's price, time,
drop, outage, connectivity, reject-next, orders, requests, and the market stream's own. Arguments pass through as
given. `--json` prints the raw result; otherwise orders and requests print as tables and status as labelled
sections (sim/status_text.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from gridbot import config
from sim.control import ControlError, call
from sim.status_text import render_status

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sim",
        help="drive the simulated exchange (prices, time, faults, reports)",
        description="Send one verb to the simulated exchange's control endpoint (config sim.control). "
        "`gridbot sim help` lists the verbs, e.g. `gridbot sim price 97.50`, `gridbot sim time "
        "2025-06-02T09:30:00-04:00`, `gridbot sim outage 30`, `gridbot sim orders --json`.",
    )
    parser.add_argument("--control", metavar="ENDPOINT", help="control endpoint (default: config sim.control)")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS", help="reply timeout (default 5)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("verb", help="the verb, e.g. price, time, drop, outage, orders, help")
    parser.add_argument("args", nargs="*", help="the verb's arguments")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    endpoint = args.control or config.load(args.config).sim.control
    try:
        result = call(endpoint, args.verb, *args.args, timeout=args.timeout)
    except ControlError as e:
        print(f"gridbot sim {args.verb}: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE if str(e).startswith("no reply") else EXIT_ERROR
    except ValueError as e:
        print(f"gridbot sim: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        print(json.dumps(result, indent=2) if args.json else format_result(args.verb, result))
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    return 0


def format_result(verb: str, result: Any) -> str:
    """Readable text for a verb's result."""
    if verb == "orders" and isinstance(result, list):
        return _orders_table(result)
    if verb == "requests" and isinstance(result, list):
        return "\n".join(
            f"{r['time']}  client {r['client_id']:>4}  {r['request']:<26} {','.join(map(str, r['fields']))[:80]}"
            for r in result
        ) or "(no requests)"
    if verb == "status" and isinstance(result, dict) and "clock" in result:
        return render_status(result)
    if isinstance(result, dict):
        return "\n".join(f"{key}: {value}" for key, value in result.items())
    if isinstance(result, list):
        return "\n".join(json.dumps(item) for item in result)
    return str(result)


def _orders_table(orders: list[dict[str, Any]]) -> str:
    if not orders:
        return "(no orders)"
    header = f"{'permId':>10} {'client':>6} {'id':>5} {'action':<4} {'qty':>5} {'type':<3} {'limit':>9} {'tif':<3} " \
             f"{'rth+':<4} {'cond':<10} {'status':<12} {'filled':>6} {'avg':>9}  orderRef"
    lines = [header]
    for o in orders:
        cond = ",".join(("<=" if not c["is_more"] else ">=") + c["price"] for c in o["conditions"]) or "-"
        lines.append(
            f"{o['perm_id']:>10} {o['client_id']:>6} {o['order_id']:>5} {o['action']:<4} {o['quantity']:>5} "
            f"{o['type']:<3} {o['limit'] or '-':>9} {o['tif']:<3} {'yes' if o['outside_rth'] else 'no':<4} "
            f"{cond:<10} {o['status']:<12} {o['filled']:>6} {o['avg_fill_price'] or '-':>9}  {o['order_ref']}"
        )
    return "\n".join(lines)
