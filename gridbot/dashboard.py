"""The dashboard's picture: a pure function from what the system said to a rich renderable (no I/O, no clock).

``gridbot monitor`` keeps a :class:`View` up to date from the bus and redraws :func:`render` (``render_text`` gives
one frame as a string, for tests and ``monitor --once``). The frame shows:

- the headline: symbol, cycle, anchor, trading / HALTED (and why) / not in sync, the last price and its age;
- health: each service's heartbeat age, the feed's and the broker's state;
- the ladder around the current price: each level's trigger, shares, and what the grid has there (a lot with its
  target and whether its SELL is live or parked, a queued BUY), with the price marker between the levels it sits
  between;
- the latest alerts, critical ones in red (the monitor rings the terminal bell when one arrives: :func:`new_critical`);
- every lot, realized and unrealized P&L, the working orders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from core.lotmap import LotMap
from core.prices import trigger_chain
from gridbot.probe import HEARTBEAT_SERVICES, Observed, stream_from_heartbeat
from proto.messages import (
    Alert,
    BrokerConnected,
    BrokerConnectivity,
    BrokerDisconnected,
    GridState,
    Lot,
    WorkingOrder,
)

NS = 1_000_000_000
# Levels shown above and below the price on the ladder.
LADDER_ABOVE = 4
LADDER_BELOW = 6
ALERTS_SHOWN = 6
FINAL = frozenset({"Filled", "Cancelled", "ApiCancelled", "Inactive"})


@dataclass
class View:
    """Everything the dashboard draws; the monitor folds bus messages into ``observed`` and sets ``state``."""

    symbol: str
    step: Decimal
    down_after_s: float
    lot_map: LotMap | None = None
    state: GridState | None = None
    state_seq: int | None = None
    # From the executor's snapshot at start; broker events on the bus take over after it.
    broker_connected: bool | None = None
    observed: Observed = field(default_factory=Observed)
    # Why the state is unknown (the statekeeper did not answer), shown instead of the grid.
    state_error: str = ""
    # The last line of the frame (how to leave, how to stop the system).
    footer: str = ""

    def broker_is_connected(self) -> bool | None:
        event = self.observed.broker
        if event is None:
            return self.broker_connected
        if isinstance(event, BrokerConnected):
            return True
        if isinstance(event, BrokerDisconnected):
            return False
        assert isinstance(event, BrokerConnectivity)
        return event.connected

    def price(self) -> Decimal | None:
        return None if self.observed.tick is None else self.observed.tick.price


def new_critical(seen: int, alerts: list[Alert]) -> tuple[bool, int]:
    """Whether a critical alert arrived since ``seen`` alerts were counted; return it with the new count."""
    fresh = alerts[seen:] if seen <= len(alerts) else alerts
    return any(a.severity == "critical" for a in fresh), len(alerts)


# ---------------------------------------------------------------------------------------------------- frame


def render(view: View, now_ns: int) -> RenderableType:
    """One frame of the dashboard."""
    # Most urgent first: a terminal too short for the whole frame loses the bottom (the long order list).
    parts: list[RenderableType] = [_headline(view, now_ns), _health(view, now_ns)]
    if view.state is None:
        parts.append(Panel(Text(view.state_error or "waiting for the statekeeper's state ...", style="yellow"),
                           title="grid"))
        parts.append(_alerts(view.observed.alerts, now_ns))
    else:
        parts.append(_ladder(view, view.state))
        parts.append(_alerts(view.observed.alerts, now_ns))
        parts.append(_lots(view, view.state))
        parts.append(_orders(view.state))
    if view.footer:
        parts.append(Text(view.footer, style="dim"))
    return Group(*parts)


def render_text(view: View, now_ns: int, width: int = 110) -> str:
    """The frame as plain text (no colours), ``width`` columns wide."""
    console = Console(width=width, color_system=None, force_terminal=False, record=True, file=_Null())
    console.print(render(view, now_ns))
    return console.export_text()


class _Null:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.1f}s"
    return f"{seconds / 60:.0f}min" if seconds < 7200 else f"{seconds / 3600:.0f}h"


def _headline(view: View, now_ns: int) -> RenderableType:
    text = Text()
    text.append(f"{view.symbol} ", style="bold")
    state = view.state
    if state is not None:
        text.append(f"cycle {state.cycle}  ")
        text.append(f"anchor {state.anchor_price if state.anchor_price is not None else '-'}  ")
        if state.halted:
            text.append(f"HALTED: {state.halt_reason or 'no reason given'}", style="bold white on red")
        elif not state.in_sync:
            text.append("NOT IN SYNC with the broker (no new orders)", style="bold yellow")
        else:
            text.append("TRADING", style="bold green")
    tick = view.observed.tick
    if tick is None:
        text.append("   price: no tick yet", style="yellow")
    else:
        age = max(0, now_ns - tick.receive_ts_ns) / NS
        text.append(f"   price {tick.price}", style="bold cyan")
        text.append(f" ({_age(age)} ago)")
    return text


def _held(state: GridState) -> dict[int, Lot]:
    return {lot.level: lot for lot in state.lots if lot.cycle == state.cycle}


def _orders_by_level(state: GridState) -> dict[int, list[WorkingOrder]]:
    levels: dict[int, list[WorkingOrder]] = {}
    for order in state.orders:
        if order.status not in FINAL:
            levels.setdefault(order.level, []).append(order)
    return levels


def _ladder(view: View, state: GridState) -> RenderableType:
    anchor = state.anchor_price
    price = view.price()
    if anchor is None:
        level0 = [o for o in state.orders if o.level == 0 and o.side == "BUY" and o.status not in FINAL]
        if level0:
            o = level0[0]
            body = f"Level 0 BUY {o.quantity} @ {o.limit} working ({o.status or 'sent'})"
        else:
            body = "No lots: Level 0 buys on the next fresh tick (limit 0.25% above it)."
        return Panel(Text(body), title="ladder")
    levels = len(view.lot_map) if view.lot_map is not None else max([*_held(state), 0]) + 4
    chain = trigger_chain(anchor, levels, view.step)
    # The marker sits after the last level whose trigger is at or above the price.
    above = -1 if price is None else max((i for i, t in enumerate(chain) if t >= price), default=-1)
    centre = max(above, 0)
    first = max(0, centre - LADDER_ABOVE)
    last = min(levels - 1, centre + LADDER_BELOW)
    held = _held(state)
    orders = _orders_by_level(state)
    table = Table(title="ladder", expand=True, title_justify="left")
    table.add_column("level", justify="right")
    table.add_column("buy at", justify="right")
    table.add_column("shares", justify="right")
    table.add_column("lot")
    table.add_column("orders")
    if price is not None and above < first:
        table.add_row("", "", "", Text(f"▲ price {price} above the ladder", style="bold cyan"), "")
    for level in range(first, last + 1):
        lot = held.get(level)
        lot_text = Text("")
        if lot is not None:
            left = lot.quantity - lot.sold
            lot_text = Text(f"{left} @ {lot.purchase_price} -> {lot.sell_target_price} ")
            lot_text.append(lot.sell, style="green" if lot.sell == "live" else "yellow")
        order_text = ", ".join(
            f"{o.side} {o.quantity} {o.status or 'sent'}" + (f" ({o.filled} filled)" if o.filled else "")
            for o in orders.get(level, [])
        )
        shares = view.lot_map[level] if view.lot_map is not None and level in view.lot_map else ""
        style = "bold" if lot is not None else ""
        table.add_row(str(level), str(chain[level]), str(shares), lot_text, order_text, style=style)
        if price is not None and level == above:
            table.add_row("", Text(f"▶ {price}", style="bold cyan"), "", Text("◀ price", style="bold cyan"), "")
    if price is not None and above > last:
        table.add_row("", "", "", Text(f"▼ price {price} below level {last}", style="bold cyan"), "")
    return table


def _lots(view: View, state: GridState) -> RenderableType:
    price = view.price()
    realized = state.realized_pnl
    unrealized = None
    if price is not None:
        unrealized = sum(((price - lot.purchase_price) * (lot.quantity - lot.sold) for lot in state.lots), Decimal(0))
    live = sum(1 for lot in state.lots if lot.sell == "live")
    shares = sum(lot.quantity - lot.sold for lot in state.lots)
    title = (
        f"lots {len(state.lots)} ({live} SELLs live, {len(state.lots) - live} parked), {shares} shares   "
        f"realized P&L {realized:,.2f}   unrealized "
        + ("-" if unrealized is None else f"{unrealized:,.2f}")
    )
    table = Table(title=title, expand=True, title_justify="left")
    for name, justify in (("cycle", "right"), ("level", "right"), ("shares", "right"), ("bought", "right"),
                          ("target", "right"), ("to target", "right"), ("sell", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for lot in sorted(state.lots, key=lambda lot: (lot.cycle, lot.level)):
        to_go = "" if price is None else f"{(lot.sell_target_price - price) / price * 100:+.2f}%"
        table.add_row(
            str(lot.cycle), str(lot.level), str(lot.quantity - lot.sold), str(lot.purchase_price),
            str(lot.sell_target_price), to_go, Text(lot.sell, style="green" if lot.sell == "live" else "yellow"),
        )
    return table


def _orders(state: GridState) -> RenderableType:
    working = [o for o in state.orders if o.status not in FINAL]
    table = Table(title=f"working orders {len(working)}", expand=True, title_justify="left")
    for name in ("key", "side", "qty", "limit", "status", "filled"):
        table.add_column(name, justify="right" if name in ("qty", "limit", "filled") else "left")
    for o in sorted(working, key=lambda o: (o.side, o.level, o.key)):
        table.add_row(o.key, o.side, str(o.quantity), str(o.limit), o.status or "sent", str(o.filled or ""))
    return table


def _health(view: View, now_ns: int) -> RenderableType:
    text = Text("health  ")
    feed = view.observed.feed
    hb = view.observed.heartbeats.get("feed")
    beat = stream_from_heartbeat(hb.status) if hb is not None else None
    if feed is None and beat is not None:
        # The feed reports every feed.status_interval seconds; until the first report its heartbeat says it.
        if not beat.connected:
            text.append(f"stream DOWN {beat.reason}".rstrip(), style="bold red")
        elif beat.stale:
            text.append(f"stream STALE {beat.reason}".rstrip(), style="bold yellow")
        else:
            text.append("stream ok (heartbeat)", style="green")
    elif feed is None:
        text.append("stream: no status yet", style="yellow")
    elif not feed.connected:
        text.append(f"stream DOWN {feed.reason}".rstrip(), style="bold red")
    elif feed.stale:
        text.append(f"stream STALE {feed.reason}".rstrip(), style="bold yellow")
    else:
        text.append(f"stream ok ({feed.feed or 'feed'})", style="green")
    text.append(" | ")
    connected = view.broker_is_connected()
    text.append(
        {True: "broker connected", False: "broker DISCONNECTED", None: "broker ?"}[connected],
        style={True: "green", False: "bold red", None: "yellow"}[connected],
    )
    for row in view.observed.services(now_ns, view.down_after_s, HEARTBEAT_SERVICES):
        text.append(" | ")
        if row.alive:
            degraded = row.status not in ("", "ok")
            text.append(f"{row.name} {_age(row.age_s)}" + (f" {row.status}" if degraded else ""),
                        style="yellow" if degraded else "green")
        else:
            text.append(f"{row.name} DOWN ({_age(row.age_s)})", style="bold red")
    return text


def _alerts(alerts: list[Alert], now_ns: int) -> RenderableType:
    if not alerts:
        return Text("alerts: none", style="dim")
    table = Table(title="alerts", expand=True, title_justify="left", show_header=False)
    table.add_column("age", justify="right")
    table.add_column("severity")
    table.add_column("source")
    table.add_column("text")
    styles: dict[str, Any] = {"critical": "bold red", "warning": "yellow", "info": ""}
    for alert in reversed(alerts[-ALERTS_SHOWN:]):
        age = _age(max(0, now_ns - alert.ts_ns) / NS) if alert.ts_ns else "?"
        table.add_row(age, Text(alert.severity, style=styles[alert.severity]), f"{alert.source}/{alert.code}",
                      alert.text)
    return table
