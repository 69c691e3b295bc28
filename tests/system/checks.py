"""What must hold after any session, checked against the paper broker's own order log (``sim orders``).

- no duplicate: no intent key filled twice, and never two orders live at once in one (cycle, level, side);
- no fill lost: the statekeeper's lots and realized P&L are exactly what the broker's fills say;
- the state agrees with the broker: position = the lots' shares, every live SELL belongs to a lot and every lot
  marked live has its SELL open at the broker.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from core.intent import IntentKey, NotAnIntentKey, parse

LIVE = {"PreSubmitted", "Submitted"}
FINAL = {"Filled", "Cancelled", "ApiCancelled", "Inactive"}


def grid_key(ref: str) -> IntentKey | None:
    try:
        return parse(ref)
    except NotAnIntentKey:
        return None


def live_interval(order: dict[str, Any]) -> tuple[int, int] | None:
    """When the order was live at the broker, as [start, end) in the broker's clock (end = far future if open)."""
    start = end = None
    for entry in order["history"]:
        if entry["status"] in LIVE and start is None:
            start = entry["ts_ns"]
        if entry["status"] in FINAL:
            end = entry["ts_ns"]
            break
    if start is None:
        return None
    return start, end if end is not None else 2**63


def duplicates(orders: list[dict[str, Any]]) -> list[str]:
    """Every breach of the executor's rules in the broker's log (empty = none)."""
    problems = []
    filled_by_key: dict[str, list[int]] = defaultdict(list)
    by_slot: dict[tuple[int, int, str], list[tuple[int, int, dict[str, Any]]]] = defaultdict(list)
    for order in orders:
        key = grid_key(order["order_ref"])
        if key is None:
            continue
        if order["filled"]:
            filled_by_key[order["order_ref"]].append(order["perm_id"])
        interval = live_interval(order)
        if interval is not None:
            by_slot[(key.cycle, key.level, key.side.value)].append((*interval, order))
    for ref, perms in filled_by_key.items():
        if len(perms) > 1:
            problems.append(f"key {ref!r} filled in {len(perms)} orders (permIds {perms})")
    for slot, intervals in by_slot.items():
        intervals.sort(key=lambda i: i[0])
        # Against the interval that ends last among those before, so a nested overlap is caught too.
        latest_end, latest = intervals[0][1], intervals[0][2]
        for start, end, order in intervals[1:]:
            if start < latest_end:
                problems.append(f"slot {slot}: {latest['order_ref']!r} (permId {latest['perm_id']}) and "
                                f"{order['order_ref']!r} (permId {order['perm_id']}) were live at the same time")
            if end > latest_end:
                latest_end, latest = end, order
    return problems


def fills(order: dict[str, Any]) -> tuple[Decimal, Decimal]:
    """(value, commissions) of an order's fills."""
    value = sum((f["shares"] * Decimal(f["price"]) for f in order["fills"]), Decimal(0))
    fees = sum((Decimal(f["commission"]) for f in order["fills"]), Decimal(0))
    return value, fees


def expected_from_broker(orders: list[dict[str, Any]]) -> tuple[Decimal, dict[str, int]]:
    """Realized P&L of the lots the broker shows sold, and the shares still held per BUY key."""
    by_ref = {o["order_ref"]: o for o in orders if o["filled"]}
    realized = Decimal(0)
    held: dict[str, int] = {}
    for ref, order in by_ref.items():
        key = grid_key(ref)
        if key is None or key.side.value != "BUY":
            continue
        held[ref] = order["filled"]
    for ref, order in by_ref.items():
        key = grid_key(ref)
        if key is None or key.side.value != "SELL":
            continue
        buy_ref = IntentKey.buy(key.cycle, key.level, key.attempt).encode()
        held[buy_ref] = held.get(buy_ref, 0) - order["filled"]
        if order["status"] == "Filled" and held[buy_ref] == 0:
            sell_value, sell_fees = fills(order)
            buy_value, buy_fees = fills(by_ref[buy_ref])
            realized += sell_value - buy_value - sell_fees - buy_fees
    return realized, {ref: n for ref, n in held.items() if n}


def disagreements(status: dict[str, Any], orders: list[dict[str, Any]], external_shares: int = 0) -> list[str]:
    """Where the statekeeper's state (``gridbot status --json``) and the broker's log disagree (empty = none)."""
    problems = []
    realized, held = expected_from_broker(orders)
    lots = {lot["buy_key"]: lot["quantity"] - lot.get("sold", 0) for lot in status["lots"]}
    if lots != held:
        problems.append(f"lots {lots} but the broker's fills leave {held}")
    if Decimal(status["realized_pnl"]) != realized:
        problems.append(f"realized P&L {status['realized_pnl']} but the broker's fills give {realized}")
    position = status["position"]["broker"]
    if position != sum(held.values()) + external_shares:
        problems.append(f"broker position {position} but the lots hold {sum(held.values())} (+{external_shares})")
    open_sells = {o["order_ref"] for o in orders if o["status"] in LIVE and o["action"] == "SELL"}
    lot_sells = {lot["sell_key"] for lot in status["lots"]}
    live_sells = {lot["sell_key"] for lot in status["lots"] if lot["sell"] == "live"}
    if not open_sells <= lot_sells:
        problems.append(f"open SELLs of no lot at the broker: {sorted(open_sells - lot_sells)}")
    if not live_sells <= open_sells:
        problems.append(f"lots marked live without an open SELL at the broker: {sorted(live_sells - open_sells)}")
    return problems
