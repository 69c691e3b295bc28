"""`gridbot status`: the report built from a state (pure), and the real CLI against peers on real sockets."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from core.lotmap import LotMap
from gridbot import statusview
from gridbot.probe import Observed
from proto import topics
from proto.envelope import Envelope, Header
from proto.messages import (
    BrokerSnapshot,
    BrokerSnapshotRequest,
    CommandRejected,
    FeedStatus,
    GridState,
    Heartbeat,
    Lot,
    Message,
    PositionInfo,
    StateSnapshot,
    StateSnapshotRequest,
    Tick,
    WorkingOrder,
)
from tests.gridbot.peers import Peers, gridbot

NOW = 1_750_000_000 * 1_000_000_000
LOT_MAP = LotMap((94, 88, 82, 77, 72, 67))


def lot(level: int, price: str, target: str, sell: str = "live", qty: int = 10) -> Lot:
    return Lot(
        cycle=3,
        level=level,
        quantity=qty,
        purchase_price=Decimal(price),
        sell_target_price=Decimal(target),
        buy_key=f"tqgrid1 c3 L{level} BUY",
        sell_key=f"tqgrid1 c3 L{level} SELL {price}",
        sell="live" if sell == "live" else "parked",
        opened_ts_ns=1_748_872_803_671_933_000,
    )


STATE = GridState(
    symbol="TQQQ",
    cycle=3,
    anchor_price=Decimal("100.00"),
    lots=[lot(1, "99.00", "99.99"), lot(0, "100.00", "101.00"), lot(2, "98.01", "98.99", sell="parked")],
    orders=[
        WorkingOrder(key="tqgrid1 c3 L3 BUY", side="BUY", level=3, quantity=77, limit=Decimal("97.03"),
                     status="PreSubmitted", order_id=11, perm_id=1011),
        WorkingOrder(key="tqgrid1 c3 L0 SELL 100.00", side="SELL", level=0, quantity=10, limit=Decimal("101.00"),
                     status="Submitted", order_id=7, perm_id=1007),
    ],
    realized_pnl=Decimal("12.3456"),
    halted=True,
    halt_reason="reconciliation: position 5 shares off",
    in_sync=True,
)


def envelope(sender: str, msg: Message, topic: str = "x") -> Envelope:
    return Envelope(topic, Header(sender, 1, 1, NOW), msg)


def observed_system() -> Observed:
    observed = Observed()
    for name, age_s in (("statekeeper", 0.2), ("executor", 0.5), ("strategy", 9.0)):
        hb = Heartbeat(ts_ns=NOW - int(age_s * 1e9), service=name, pid=100, started_ts_ns=NOW - 60 * 10**9)
        observed.update(envelope(name, hb), NOW)
    observed.update(envelope("feed", FeedStatus(connected=True, stale=False, feed="iex", last_print_age_s=0.4)), NOW)
    tick = Tick(symbol="TQQQ", price=Decimal("98.50"), size=100, exchange_ts_ns=NOW, receive_ts_ns=NOW - 10**9, seq=4)
    observed.update(envelope("feed", tick), NOW)
    return observed


def inputs(**changes: object) -> statusview.Inputs:
    base = dict(
        now_ns=NOW, symbol="TQQQ", step=Decimal("0.01"), down_after_s=3.0, state=STATE, state_seq=42,
        broker=BrokerSnapshot(connected=True, positions=[PositionInfo(symbol="TQQQ", quantity=30, avg_cost=Decimal(99))]),
        observed=observed_system(), lot_map=LOT_MAP, mode="sim",
    )
    base.update(changes)
    return statusview.Inputs(**base)  # type: ignore[arg-type]


# --- the report (pure) ----------------------------------------------------------------------------------------


def test_report_has_the_documented_keys_and_exact_prices() -> None:
    report = statusview.build(inputs())

    for key in ("cycle", "anchor_price", "next_level", "lots", "orders", "realized_pnl", "halted", "services"):
        assert key in report
    assert report["cycle"] == 3
    assert report["anchor_price"] == "100.00"
    assert report["realized_pnl"] == "12.3456"
    assert report["halted"] is True and report["halt_reason"].startswith("reconciliation")
    # next level = max(held) + 1 = 3, trigger 100 -> 99.00 -> 98.01 -> 97.03, shares from the lot map.
    assert report["next_level"] == 3
    assert report["next_buy"] == {"level": 3, "trigger": "97.03", "shares": 77}
    json.dumps(report)  # JSON-able as it is
    assert report["lots"][0]["opened_at"] == "2025-06-02T14:00:03.671933Z"


def test_lots_are_as_in_the_state_file_with_their_sell_slot_sorted_by_level() -> None:
    report = statusview.build(inputs())

    assert [(lot["level"], lot["sell"]) for lot in report["lots"]] == [(0, "live"), (1, "live"), (2, "parked")]
    first = report["lots"][0]
    assert first["purchase_price"] == "100.00" and first["sell_target_price"] == "101.00"
    assert first["buy_key"] == "tqgrid1 c3 L0 BUY"
    # The keys of a lot in bot_state.json (services/statekeeper/statefile.py).
    for key in ("level", "quantity", "purchase_price", "sell_target_price", "sell_order_id", "sell_perm_id",
                "buy_perm_id", "sell", "cycle", "buy_key", "sell_key", "sold", "opened_at", "opened_ts_ns"):
        assert key in first, key


def test_orders_are_keyed_by_intent_key() -> None:
    report = statusview.build(inputs())

    assert set(report["orders"]) == {"tqgrid1 c3 L3 BUY", "tqgrid1 c3 L0 SELL 100.00"}
    assert report["orders"]["tqgrid1 c3 L3 BUY"]["limit"] == "97.03"


def test_health_from_heartbeats_feed_status_and_the_broker() -> None:
    report = statusview.build(inputs())

    services = report["services"]
    assert services["statekeeper"]["alive"] and services["statekeeper"]["heartbeat_age_s"] == pytest.approx(0.2)
    assert services["executor"]["alive"]
    assert not services["strategy"]["alive"]  # 9 s old, down after 3
    assert not services["feed"]["alive"] and services["feed"]["heartbeat_age_s"] is None
    assert services["bus"]["alive"]
    assert report["feed"]["connected"] and not report["feed"]["stale"]
    assert report["broker"]["connected"] is True
    assert report["position"] == {"broker": 30, "lots": 30}
    assert report["price"] == {"last": "98.50", "age_s": 1.0}


def test_next_level_is_level_0_when_nothing_is_held_and_none_when_the_map_is_exhausted() -> None:
    empty = GridState(symbol="TQQQ", cycle=4, in_sync=True)
    assert statusview.build(inputs(state=empty))["next_buy"] == {"level": 0, "trigger": None, "shares": 94}

    full = GridState(symbol="TQQQ", cycle=3, anchor_price=Decimal(100), lots=[lot(5, "95.10", "96.05")])
    assert statusview.build(inputs(state=full))["next_level"] is None


def test_text_names_the_halt_the_lots_and_whatever_is_down() -> None:
    text = statusview.render(statusview.build(inputs()))

    assert "cycle 3" in text and "anchor 100.00" in text
    assert "HALTED: reconciliation: position 5 shares off" in text
    assert "next level 3 at 97.03 (77 shares)" in text
    assert "lots: 3 (2 SELLs live, 1 parked)" in text
    assert "tqgrid1 c3 L3 BUY" in text
    assert "strategy DOWN" in text and "executor 0.5s" in text
    assert "realized P&L 12.35" in text


def test_text_when_nothing_answers() -> None:
    report = statusview.build(
        inputs(state=None, state_seq=None, broker=None, observed=Observed(), errors=("the statekeeper did not answer",))
    )
    text = statusview.render(report)
    assert report["cycle"] is None
    assert "state unknown" in text and "bus: nothing heard" in text and "! the statekeeper did not answer" in text


def test_health_line_without_the_feeds_status_says_what_is_known() -> None:
    # The feed's status message comes every few seconds, a status listens about one: its heartbeat (which carries
    # the stream's state) and the ticks heard in the window are all there is; the line says so.
    def feed_line(with_tick: bool, status: str = "ok") -> str:
        observed = Observed()
        hb = Heartbeat(ts_ns=NOW, service="feed", pid=100, started_ts_ns=NOW - 60 * 10**9, status=status)
        observed.update(envelope("feed", hb), NOW)
        if with_tick:
            tick = Tick(symbol="TQQQ", price=Decimal("98.50"), size=100, exchange_ts_ns=NOW,
                        receive_ts_ns=NOW - 10**8, seq=4)
            observed.update(envelope("feed", tick), NOW)
        text = statusview.render(statusview.build(inputs(observed=observed)))
        return next(line for line in text.splitlines() if line.startswith("health: "))

    assert "stream ok (from its heartbeat)" in feed_line(with_tick=False)
    assert "stream stale (no print for more than 10 s)" in feed_line(False, "stale: no print for more than 10 s")
    assert "stream down (stream lost: reset by peer)" in feed_line(False, "down: stream lost: reset by peer")
    # A heartbeat status the view does not know: only what was heard in the window.
    assert "stream ok (prints arriving)" in feed_line(with_tick=True, status="starting")
    quiet = feed_line(with_tick=False, status="starting")
    assert "stream not reported (feed running; no stream status or print heard while listening)" in quiet
    assert "?" not in quiet
    gone = statusview.render(statusview.build(inputs(observed=Observed())))
    assert "stream DOWN (no heartbeat from the feed)" in gone


# --- the CLI against peers on real sockets --------------------------------------------------------------------


async def statekeeper(msg: Message) -> Message:
    if isinstance(msg, StateSnapshotRequest):
        return StateSnapshot(ts_ns=time.time_ns(), seq=42, state=STATE)
    return CommandRejected(reason=f"not a statekeeper command: {type(msg).__name__}")


async def executor(msg: Message) -> Message:
    if isinstance(msg, BrokerSnapshotRequest):
        return BrokerSnapshot(connected=False)
    return CommandRejected(reason="no")


@pytest.fixture
def peers() -> Iterator[Peers]:
    p = Peers(statekeeper, executor, heartbeats=["statekeeper", "executor", "strategy", "feed"])
    yield p
    p.close()


def test_status_json_from_the_running_peers(peers: Peers, tmp_path: Path) -> None:
    peers.publish("feed", topics.FEED_STATUS, FeedStatus(connected=True, stale=True, reason="no print for 12 s"))

    result = gridbot(peers.config_file(tmp_path), "status", "--json")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["cycle"] == 3 and report["state_seq"] == 42 and report["next_level"] == 3
    assert [lot["sell"] for lot in report["lots"]] == ["live", "live", "parked"]
    assert all(report["services"][name]["alive"] for name in ("statekeeper", "executor", "strategy", "feed", "bus"))
    assert all(0 <= report["services"][name]["heartbeat_age_s"] < 1.5 for name in ("statekeeper", "feed"))
    assert report["broker"] == {"connected": False, "open_orders": 0, "con_id": 0, "source": "executor"}
    assert report["errors"] == []
    assert any(isinstance(m, StateSnapshotRequest) for m in peers.received)


def test_status_text_from_the_running_peers(peers: Peers, tmp_path: Path) -> None:
    result = gridbot(peers.config_file(tmp_path), "status")

    assert result.returncode == 0, result.stderr
    assert "HALTED: reconciliation" in result.stdout
    assert "broker DISCONNECTED" in result.stdout
    assert result.stderr == ""


def test_status_with_the_system_down_says_so_and_exits_3(tmp_path: Path) -> None:
    nobody = Peers()  # a bus with nobody on it, and command endpoints nobody listens on
    try:
        started = time.monotonic()
        result = gridbot(nobody.config_file(tmp_path), "status", "--timeout", "0.3")
        elapsed = time.monotonic() - started
    finally:
        nobody.close()

    assert result.returncode == 3
    assert "state unknown" in result.stdout
    assert "the statekeeper did not answer StateSnapshotRequest" in result.stdout
    assert "statekeeper DOWN" in result.stdout
    assert "Traceback" not in result.stderr and result.stderr == ""
    assert elapsed < 10
