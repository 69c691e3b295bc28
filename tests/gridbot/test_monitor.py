"""The dashboard: one frame rendered from a given state (pure), and a short run of the monitor against a real bus."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from decimal import Decimal
from pathlib import Path

from rich.console import Console

from core.lotmap import LotMap
from gridbot import config, dashboard
from gridbot.commands.monitor import Monitor
from gridbot.probe import Observed
from proto import topics
from proto.envelope import Envelope, Header
from proto.messages import (
    Alert,
    BrokerConnected,
    BrokerDisconnected,
    BrokerSnapshot,
    BrokerSnapshotRequest,
    CommandRejected,
    FeedStatus,
    GridState,
    Heartbeat,
    Lot,
    Message,
    StateSnapshot,
    StateSnapshotRequest,
    StateUpdate,
    Tick,
    WorkingOrder,
)
from tests.gridbot.peers import Peers, gridbot

NOW = 1_750_000_000 * 1_000_000_000
LOT_MAP = LotMap(tuple(range(100, 80, -1)))


def lot(level: int, price: str, target: str, sell: str = "live") -> Lot:
    return Lot(cycle=5, level=level, quantity=LOT_MAP[level], purchase_price=Decimal(price),
               sell_target_price=Decimal(target), buy_key=f"tqgrid1 c5 L{level} BUY",
               sell_key=f"tqgrid1 c5 L{level} SELL {price}", sell="live" if sell == "live" else "parked")


def buy(level: int, limit: str, status: str = "PreSubmitted") -> WorkingOrder:
    return WorkingOrder(key=f"tqgrid1 c5 L{level} BUY", side="BUY", level=level, quantity=LOT_MAP[level],
                        limit=Decimal(limit), status=status)


STATE = GridState(
    symbol="TQQQ", cycle=5, anchor_price=Decimal("100.00"), in_sync=True, realized_pnl=Decimal("41.5"),
    lots=[lot(0, "100.00", "101.00"), lot(1, "99.00", "99.99"), lot(2, "98.01", "98.99", sell="parked")],
    orders=[buy(3, "97.03"), buy(4, "96.06"), buy(5, "95.10")],
)


def env(sender: str, msg: Message) -> Envelope:
    return Envelope("t", Header(sender, 1, 1, NOW), msg)


def view(price: str | None = "97.50", state: GridState | None = STATE) -> dashboard.View:
    observed = Observed()
    for name in ("statekeeper", "executor", "strategy"):
        observed.update(env(name, Heartbeat(ts_ns=NOW - 300_000_000, service=name, pid=1, started_ts_ns=NOW)), NOW)
    observed.update(env("feed", FeedStatus(connected=True, stale=False, feed="iex")), NOW)
    observed.update(env("executor", BrokerConnected(host="127.0.0.1", port=7910, client_id=17)), NOW)
    if price is not None:
        observed.update(env("feed", Tick(symbol="TQQQ", price=Decimal(price), size=1, exchange_ts_ns=NOW,
                                         receive_ts_ns=NOW - 2 * 10**9, seq=1)), NOW)
    observed.update(env("statekeeper", Alert(ts_ns=NOW - 60 * 10**9, severity="critical", source="statekeeper",
                                             code="halted", text="position differs by 5 shares")), NOW)
    return dashboard.View(symbol="TQQQ", step=Decimal("0.01"), down_after_s=3.0, lot_map=LOT_MAP, state=state,
                          state_seq=9, observed=observed)


def lines_with(text: str, fragment: str) -> list[str]:
    return [line for line in text.splitlines() if fragment in line]


# --- one frame --------------------------------------------------------------------------------------------------


def test_the_price_marker_sits_between_the_levels_around_the_price() -> None:
    text = dashboard.render_text(view("97.50"), NOW)

    rows = text.splitlines()
    marker = next(i for i, line in enumerate(rows) if "◀ price" in line)
    assert "▶ 97.50" in rows[marker]
    # 97.03 (level 3) is the first trigger below 97.50, 98.01 (level 2) the last above it.
    assert "98.01" in rows[marker - 1] and rows[marker - 1].split("│")[1].strip() == "2"
    assert "97.03" in rows[marker + 1] and rows[marker + 1].split("│")[1].strip() == "3"


def test_lots_show_their_targets_and_sell_slot_and_queued_buys_their_status() -> None:
    text = dashboard.render_text(view(), NOW)

    level1 = lines_with(text, "99.00 -> 99.99")
    assert level1 and "live" in level1[0]
    assert "parked" in lines_with(text, "98.01 -> 98.99")[0]
    assert "BUY 97 PreSubmitted" in lines_with(text, "97.03")[0]
    assert "lots 3 (2 SELLs live, 1 parked), 297 shares" in text
    # Realized as given; unrealized at 97.50: (97.5-100)*100 + (97.5-99)*99 + (97.5-98.01)*98 = -448.48.
    assert "realized P&L 41.50" in text and "unrealized -448.48" in text
    assert "working orders 3" in text and "tqgrid1 c5 L4 BUY" in text


def test_headline_health_and_alerts() -> None:
    text = dashboard.render_text(view(), NOW)

    assert text.splitlines()[0].startswith("TQQQ cycle 5  anchor 100.00  TRADING   price 97.50 (2.0s ago)")
    assert "stream ok (iex)" in text and "broker connected" in text
    assert "statekeeper 0.3s" in text and "feed DOWN" in text
    assert "critical" in text and "statekeeper/halted" in text and "position differs by 5 shares" in text


def test_before_the_feeds_first_status_its_heartbeat_says_the_stream_state() -> None:
    def health(status: str | None) -> str:
        v = view()
        v.observed.feed = None
        if status is not None:
            beat = Heartbeat(ts_ns=NOW, service="feed", pid=2, started_ts_ns=NOW, status=status)
            v.observed.update(env("feed", beat), NOW)
        return lines_with(dashboard.render_text(v, NOW), "broker connected")[0]

    assert "stream: no status yet" in health(None)
    assert "stream ok (heartbeat)" in health("ok")
    assert "stream STALE no print for more than 10 s" in health("stale: no print for more than 10 s")
    assert "stream DOWN stream lost" in health("down: stream lost")


def test_halted_and_disconnected_are_shouted() -> None:
    v = view(state=GridState(symbol="TQQQ", cycle=5, anchor_price=Decimal(100), halted=True,
                             halt_reason="operator halt", in_sync=True))
    v.observed.update(env("executor", BrokerDisconnected(reason="1100")), NOW)
    text = dashboard.render_text(v, NOW)

    assert "HALTED: operator halt" in text
    assert "broker DISCONNECTED" in text


def test_price_above_the_anchor_and_no_anchor_yet() -> None:
    above = dashboard.render_text(view("100.40"), NOW)
    assert "▲ price 100.40 above the ladder" in above

    waiting = dashboard.render_text(view(state=GridState(symbol="TQQQ", cycle=6, in_sync=True)), NOW)
    assert "Level 0 buys on the next fresh tick" in waiting

    unknown = dashboard.render_text(view(price=None, state=None), NOW)
    assert "waiting for the statekeeper" in unknown and "price: no tick yet" in unknown


def test_the_bell_rings_once_per_new_critical_alert() -> None:
    alerts = [Alert(severity="warning", source="f", code="w", text="t")]
    assert dashboard.new_critical(0, alerts) == (False, 1)
    alerts.append(Alert(severity="critical", source="s", code="c", text="t"))
    assert dashboard.new_critical(1, alerts) == (True, 2)
    assert dashboard.new_critical(2, alerts) == (False, 2)


# --- a short run against a real bus -------------------------------------------------------------------------------


async def statekeeper(msg: Message) -> Message:
    if isinstance(msg, StateSnapshotRequest):
        return StateSnapshot(ts_ns=time.time_ns(), seq=9, state=STATE)
    return CommandRejected(reason="no")


async def executor(msg: Message) -> Message:
    if isinstance(msg, BrokerSnapshotRequest):
        return BrokerSnapshot(connected=True)
    return CommandRejected(reason="no")


def test_the_monitor_follows_the_bus_and_rings_on_a_critical_alert(tmp_path: Path) -> None:
    peers = Peers(statekeeper, executor, heartbeats=["statekeeper", "executor", "feed"], heartbeat_interval=0.1)
    out = io.StringIO()
    try:
        cfg = config.load(peers.config_file(tmp_path))
        monitor = Monitor(cfg, Console(file=out, width=120, force_terminal=True), bell=True)
        halted = GridState(symbol="TQQQ", cycle=5, anchor_price=Decimal(100), halted=True, halt_reason="by test",
                           in_sync=True, lots=STATE.lots)

        def publish_while_it_runs() -> None:
            # Once the monitor has the snapshot, publish an update, a tick and a critical alert.
            deadline = time.monotonic() + 10
            while monitor.view.state_seq != 9 and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.3)
            peers.publish("statekeeper", topics.STATE_UPDATE, StateUpdate(seq=10, state=halted))
            peers.publish("feed", topics.tick("TQQQ"), Tick(symbol="TQQQ", price=Decimal("98.40"), size=1,
                                                           exchange_ts_ns=0, receive_ts_ns=time.time_ns(), seq=1))
            peers.publish("executor", topics.ALERT, Alert(ts_ns=time.time_ns(), severity="critical",
                                                         source="executor", code="broker_lost", text="1100"))
            # Stop once it has seen all three (or let the duration end it).
            while time.monotonic() < deadline + 10 and not (
                monitor.bells and monitor.view.state_seq == 10 and monitor.view.observed.tick is not None
            ):
                time.sleep(0.02)
            monitor.request_stop()

        publisher = threading.Thread(target=publish_while_it_runs)
        publisher.start()
        asyncio.run(asyncio.wait_for(monitor.live(duration=25), 40))
        publisher.join(5)
    finally:
        peers.close()

    assert monitor.view.state_seq == 10 and monitor.view.state is not None and monitor.view.state.halted
    assert monitor.view.broker_connected is True
    assert monitor.bells == 1
    assert "\a" in out.getvalue()
    # Drawn as at the last message it received (the peers are gone by now, so their heartbeats have aged).
    frame = dashboard.render_text(monitor.view, monitor.view.observed.last_message_ns)
    assert "HALTED: by test" in frame and "price 98.40" in frame and "executor/broker_lost" in frame
    assert "statekeeper DOWN" not in frame


def test_monitor_once_through_the_cli(tmp_path: Path) -> None:
    peers = Peers(statekeeper, executor, heartbeats=["statekeeper", "executor", "strategy", "feed"])
    try:
        result = gridbot(peers.config_file(tmp_path), "monitor", "--once", "--width", "120")
    finally:
        peers.close()

    assert result.returncode == 0, result.stderr
    assert "TQQQ cycle 5  anchor 100.00  TRADING" in result.stdout
    assert "lots 3 (2 SELLs live, 1 parked)" in result.stdout
    assert "broker connected" in result.stdout
    assert "DOWN" not in result.stdout
