"""``gridbot status`` as data and as text: a pure function of what the system answered (no I/O, no clock).

:func:`build` turns the statekeeper's ``GridState``, the executor's ``BrokerSnapshot`` and what the bus carried
(``probe.Observed``) into one JSON-able dict; :func:`render` turns that dict into the text an operator reads.
Prices and money stay exact: Decimals become strings in the JSON, never floats.

The JSON has at least: ``cycle``, ``anchor_price``, ``next_level``, ``lots`` (each as in ``bot_state.json``, with
``sell``: ``live`` or ``parked``), ``orders`` (working orders by intent key), ``realized_pnl``, ``halted``,
``services`` (each service's heartbeat age).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec

from core.lotmap import LotMap
from core.prices import trigger
from gridbot.probe import Observed, stream_from_heartbeat
from proto.messages import BrokerConnected, BrokerConnectivity, BrokerSnapshot, GridState, Lot

NS = 1_000_000_000


@dataclass(frozen=True)
class Inputs:
    """Everything a status is made of; any answer may be missing (None), with the reason in ``errors``."""

    now_ns: int
    symbol: str
    step: Decimal
    down_after_s: float
    state: GridState | None = None
    state_seq: int | None = None
    broker: BrokerSnapshot | None = None
    observed: Observed | None = None
    lot_map: LotMap | None = None
    mode: str = ""
    errors: tuple[str, ...] = ()


def _plain(value: Any) -> Any:
    """msgspec's JSON-able form: Decimals as strings, structs as dicts."""
    return msgspec.to_builtins(value)


def _lot(lot: Lot) -> dict[str, Any]:
    """A lot with the keys it has in bot_state.json (``sell`` is ``live`` or ``parked``); prices as strings."""
    data: dict[str, Any] = _plain(lot)
    data["opened_at"] = iso_utc(lot.opened_ts_ns) if lot.opened_ts_ns else ""
    return data


def iso_utc(ts_ns: int) -> str:
    """UTC nanoseconds as ISO 8601 with microseconds, e.g. ``2025-06-02T14:00:03.671933Z``."""
    # Whole seconds and microseconds apart: a float of ns since 1970 would round the microseconds.
    moment = datetime.fromtimestamp(ts_ns // 10**9, tz=UTC).replace(microsecond=ts_ns // 1000 % 10**6)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def remaining(lot: Lot) -> int:
    return lot.quantity - lot.sold


def next_buy(state: GridState, step: Decimal, lot_map: LotMap | None) -> dict[str, Any] | None:
    """The next level the grid buys, its trigger and its shares (Level 0 when nothing is held)."""
    held = [lot.level for lot in state.lots if lot.cycle == state.cycle]
    level = max(held, default=-1) + 1
    if lot_map is not None and level not in lot_map:
        return None  # every level of the map is held: the grid buys nothing more this cycle
    price = None
    if level > 0 and state.anchor_price is not None:
        price = str(trigger(state.anchor_price, level, step))
    return {"level": level, "trigger": price, "shares": lot_map[level] if lot_map is not None else None}


def build(inp: Inputs) -> dict[str, Any]:
    """The status as one JSON-able dict (see the module's docstring)."""
    state = inp.state
    observed = inp.observed or Observed()
    report: dict[str, Any] = {
        "symbol": inp.symbol,
        "mode": inp.mode,
        "state_seq": inp.state_seq,
        "cycle": None,
        "anchor_price": None,
        "next_level": None,
        "next_buy": None,
        "lots": [],
        "orders": {},
        "realized_pnl": None,
        "halted": None,
        "halt_reason": "",
        "in_sync": None,
        "position": _position(inp, state),
        "price": _price(observed, inp.now_ns),
        "feed": _feed(observed, inp.now_ns, inp.down_after_s),
        "broker": _broker(inp.broker, observed),
        "services": _services(observed, inp.now_ns, inp.down_after_s),
        "errors": list(inp.errors),
    }
    if state is not None:
        nxt = next_buy(state, inp.step, inp.lot_map)
        report.update(
            cycle=state.cycle,
            anchor_price=None if state.anchor_price is None else str(state.anchor_price),
            next_level=None if nxt is None else nxt["level"],
            next_buy=nxt,
            lots=[_lot(lot) for lot in sorted(state.lots, key=lambda lot: (lot.cycle, lot.level))],
            orders={order.key: _plain(order) for order in sorted(state.orders, key=lambda o: o.key)},
            realized_pnl=str(state.realized_pnl),
            halted=state.halted,
            halt_reason=state.halt_reason,
            in_sync=state.in_sync,
        )
    return report


def _position(inp: Inputs, state: GridState | None) -> dict[str, Any]:
    broker_qty = None
    if inp.broker is not None:
        broker_qty = sum(p.quantity for p in inp.broker.positions if p.symbol == inp.symbol)
    lots_qty = None if state is None else sum(remaining(lot) for lot in state.lots)
    return {"broker": broker_qty, "lots": lots_qty}


def _price(observed: Observed, now_ns: int) -> dict[str, Any] | None:
    tick = observed.tick
    if tick is None:
        return None
    return {"last": str(tick.price), "age_s": round(max(0, now_ns - tick.receive_ts_ns) / NS, 3)}


def _feed(observed: Observed, now_ns: int, down_after_s: float) -> dict[str, Any]:
    status = observed.feed
    if status is not None:
        return {
            "known": True,
            "connected": status.connected,
            "stale": status.stale,
            "reason": status.reason,
            "feed": status.feed,
            "last_print_age_s": status.last_print_age_s,
            "prints": status.prints,
            "dropped": status.dropped,
        }
    hb = observed.heartbeats.get("feed")
    if hb is not None and (now_ns - hb.ts_ns) / NS <= down_after_s:
        beat = stream_from_heartbeat(hb.status)
        if beat is not None:
            # No status message in the window (the feed sends one every feed.status_interval, longer than a status
            # listens), but its heartbeat carries the same state every second.
            return {"known": True, "connected": beat.connected, "stale": beat.stale,
                    "reason": beat.reason or "from its heartbeat", "feed": None, "last_print_age_s": None,
                    "prints": None, "dropped": None}
        # No status message in the window (the feed sends one every feed.status_interval, longer than a status
        # listens). Its heartbeat only says the process runs; a tick heard in the window says the stream delivers.
        tick = observed.tick
        if tick is not None and (now_ns - tick.receive_ts_ns) / NS <= down_after_s:
            return {"known": False, "connected": True, "stale": False, "reason": "prints arriving"}
        return {"known": False, "connected": None, "stale": None,
                "reason": "feed running; no stream status or print heard while listening"}
    return {"known": False, "connected": False, "stale": None, "reason": "no heartbeat from the feed"}


def _broker(snapshot: BrokerSnapshot | None, observed: Observed) -> dict[str, Any]:
    if snapshot is not None:
        return {
            "connected": snapshot.connected,
            "open_orders": len(snapshot.orders),
            "con_id": snapshot.con_id,
            "source": "executor",
        }
    event = observed.broker
    if event is None:
        return {"connected": None, "source": "unknown: the executor did not answer"}
    connected = isinstance(event, BrokerConnected) or (isinstance(event, BrokerConnectivity) and event.connected)
    return {"connected": connected, "source": f"last broker event {type(event).__name__}"}


def _services(observed: Observed, now_ns: int, down_after_s: float) -> dict[str, Any]:
    rows = {
        row.name: {
            "alive": row.alive,
            "heartbeat_age_s": None if row.age_s is None else round(row.age_s, 3),
            "status": row.status,
            "pid": row.pid or None,
            "uptime_s": None if row.uptime_s is None else round(row.uptime_s, 1),
        }
        for row in observed.services(now_ns, down_after_s)
    }
    # The bus sends no heartbeat of its own: it is up if anything came through it.
    rows["bus"] = {"alive": observed.messages > 0, "heartbeat_age_s": None, "status": "", "pid": None, "uptime_s": None}
    return rows


# ---------------------------------------------------------------------------------------------------- text


def _money(value: str | None) -> str:
    return "-" if value is None else f"{Decimal(value):,.2f}"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.0f}min"


def render(report: dict[str, Any]) -> str:
    """The status as text: headline, price and next level, lots, working orders, health."""
    out: list[str] = []
    if report["cycle"] is None:
        out.append(f"{report['symbol']}: state unknown (the statekeeper did not answer)")
    else:
        if report["halted"]:
            trading = f"HALTED: {report['halt_reason'] or 'no reason given'}"
        elif not report["in_sync"]:
            trading = "NOT IN SYNC with the broker yet (no new orders)"
        else:
            trading = "trading"
        anchor = report["anchor_price"] or "none yet"
        out.append(f"{report['symbol']}  cycle {report['cycle']}  anchor {anchor}  {trading}")
    price = report["price"]
    price_text = "no tick heard" if price is None else f"{price['last']} ({_age(price['age_s'])} ago)"
    nxt = report["next_buy"]
    if nxt is None:
        next_text = "-" if report["cycle"] is None else "none (every level of the lot map is held)"
    elif nxt["level"] == 0:
        next_text = f"level 0 on the next fresh tick ({nxt['shares'] or '?'} shares)"
    else:
        next_text = f"level {nxt['level']} at {nxt['trigger'] or '?'} ({nxt['shares'] or '?'} shares)"
    out.append(f"price {price_text}   next {next_text}")
    pos = report["position"]
    out.append(
        f"position {pos['broker'] if pos['broker'] is not None else '?'} shares at the broker, "
        f"{pos['lots'] if pos['lots'] is not None else '?'} in lots   realized P&L {_money(report['realized_pnl'])}"
    )
    lots = report["lots"]
    live = sum(1 for lot in lots if lot.get("sell") == "live")
    out.append(f"lots: {len(lots)} ({live} SELLs live, {len(lots) - live} parked)")
    if lots:
        out.append(f"  {'cycle':>5} {'level':>5} {'shares':>6} {'bought':>10} {'target':>10}  sell")
        for lot in lots:
            qty = lot["quantity"] - lot.get("sold", 0)
            out.append(
                f"  {lot['cycle']:>5} {lot['level']:>5} {qty:>6} {lot['purchase_price']:>10} "
                f"{lot['sell_target_price']:>10}  {lot.get('sell', '?')}"
            )
    orders = report["orders"]
    out.append(f"working orders: {len(orders)}")
    for key, order in orders.items():
        out.append(
            f"  {key:<34} {order['side']:<4} {order['quantity']:>5} @ {order['limit']:>9}  "
            f"{order['status'] or 'sent'}{'  filled ' + str(order['filled']) if order['filled'] else ''}"
        )
    out.append("health: " + _health_line(report))
    for error in report["errors"]:
        out.append(f"! {error}")
    return "\n".join(out)


def _health_line(report: dict[str, Any]) -> str:
    feed = report["feed"]
    if feed["known"]:
        feed_text = "stream " + ("down" if not feed["connected"] else "stale" if feed["stale"] else "ok")
        if feed["reason"]:
            feed_text += f" ({feed['reason']})"
    elif feed["connected"]:
        feed_text = f"stream ok ({feed['reason']})"
    elif feed["connected"] is None:
        feed_text = f"stream not reported ({feed['reason']})"
    else:
        feed_text = f"stream DOWN ({feed['reason']})"
    broker = report["broker"]
    broker_text = {True: "broker connected", False: "broker DISCONNECTED", None: "broker ?"}[broker["connected"]]
    parts = [feed_text, broker_text]
    for name, svc in report["services"].items():
        if name == "bus":
            parts.append("bus ok" if svc["alive"] else "bus: nothing heard")
        elif svc["alive"]:
            status = "" if svc["status"] in ("", "ok") else f" {svc['status']}"
            parts.append(f"{name} {_age(svc['heartbeat_age_s'])}{status}")
        else:
            parts.append(f"{name} DOWN (last heartbeat {_age(svc['heartbeat_age_s'])})")
    return " | ".join(parts)
