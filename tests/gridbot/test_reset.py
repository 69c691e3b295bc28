"""`gridbot reset`: the real CLI against a statekeeper and an executor stand-in on real sockets.

The stand-in broker confirms a cancel only on its second look (as IB does a moment later), can hold an order of
another client that no cancel reaches, and closes the position on ClosePosition: each step of the reset must wait
for the broker's confirmation and stop, with trading still halted, when it does not come.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from proto import topics
from proto.messages import (
    BrokerSnapshot,
    BrokerSnapshotRequest,
    CancelAll,
    ClosePosition,
    CommandAccepted,
    CommandRejected,
    GridState,
    Halt,
    Lot,
    Message,
    OpenOrderInfo,
    PositionInfo,
    ResetState,
    Resume,
    StateSnapshot,
    StateSnapshotRequest,
    Tick,
)
from tests.gridbot.peers import Peers, gridbot


def order(key: str, client_id: int = 17, order_id: int = 1) -> OpenOrderInfo:
    return OpenOrderInfo(key=key, order_id=order_id, perm_id=order_id + 1000, client_id=client_id, symbol="TQQQ",
                         side="SELL", quantity=10, limit=Decimal("101.00"), tif="GTC", outside_rth=True,
                         status="Submitted")


class Stand:
    """The statekeeper and the executor, as far as the reset sees them."""

    def __init__(self, position: int = 20, orders: list[OpenOrderInfo] | None = None, connected: bool = True):
        lot = Lot(cycle=4, level=0, quantity=20, purchase_price=Decimal(100), sell_target_price=Decimal(101),
                  buy_key="tqgrid1 c4 L0 BUY", sell_key="tqgrid1 c4 L0 SELL 100.00", sell="live")
        self.state = GridState(symbol="TQQQ", cycle=4, anchor_price=Decimal(100), lots=[lot], in_sync=True)
        self.position = position
        self.orders = list(orders if orders is not None else [order("tqgrid1 c4 L0 SELL 100.00"),
                                                               order("", order_id=2)])
        self.connected = connected
        self.cancelling: list[OpenOrderInfo] = []
        self.closes: list[ClosePosition] = []

    async def statekeeper(self, msg: Message) -> Message:
        match msg:
            case Halt():
                self.state = GridState(**{**_fields(self.state), "halted": True, "halt_reason": msg.reason})
            case Resume():
                self.state = GridState(**{**_fields(self.state), "halted": False, "halt_reason": ""})
            case ResetState():
                self.state = GridState(**{**_fields(self.state), "lots": [], "orders": [], "anchor_price": None,
                                          "cycle": self.state.cycle + 1})
            case StateSnapshotRequest():
                return StateSnapshot(ts_ns=time.time_ns(), seq=1, state=self.state)
            case _:
                return CommandRejected(reason=f"not for the statekeeper: {type(msg).__name__}")
        return CommandAccepted(ts_ns=time.time_ns())

    async def executor(self, msg: Message) -> Message:
        match msg:
            case BrokerSnapshotRequest():
                snapshot = BrokerSnapshot(connected=self.connected, orders=list(self.orders),
                                          positions=[PositionInfo(symbol="TQQQ", quantity=self.position,
                                                                  avg_cost=Decimal(100))])
                # A cancel shows at the broker one look later.
                self.orders = [o for o in self.orders if o not in self.cancelling]
                return snapshot
            case CancelAll():
                assert msg.include_foreign
                self.cancelling = [o for o in self.orders if o.client_id in (17, 0)]
                return CommandAccepted(detail=f"{len(self.cancelling)} cancelled")
            case ClosePosition():
                self.closes.append(msg)
                if msg.quantity > self.position:
                    return CommandRejected(reason="position differs")
                self.position -= msg.quantity
                return CommandAccepted(detail=f"filled {msg.quantity}")
        return CommandRejected(reason=f"not for the executor: {type(msg).__name__}")


def _fields(state: GridState) -> dict[str, object]:
    return {name: getattr(state, name) for name in state.__struct_fields__}


def kinds(peers: Peers) -> list[str]:
    return [type(m).__name__ for m in peers.received]


def reset(tmp_path: Path, stand: Stand, *args: str, extra: str = "", executor: bool = True,
          ticks: bool = False) -> tuple[Peers, str, str, int]:
    peers = Peers(stand.statekeeper, stand.executor if executor else None, heartbeats=["feed"])
    stop = threading.Event()
    try:
        if ticks:
            def tick_every_100ms() -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    peers.publish("feed", topics.tick("TQQQ"), Tick(symbol="TQQQ", price=Decimal("52.40"), size=1,
                                                                    exchange_ts_ns=n, receive_ts_ns=n, seq=n))
                    stop.wait(0.1)

            threading.Thread(target=tick_every_100ms, daemon=True).start()
        result = gridbot(peers.config_file(tmp_path, extra=extra), "reset", *args)
    finally:
        stop.set()
        peers.close()
    return peers, result.stdout, result.stderr, result.returncode


def test_without_yes_nothing_is_sent(tmp_path: Path) -> None:
    stand = Stand()
    peers, out, err, code = reset(tmp_path, stand, "--cancel-orders", "--flatten")

    assert code == 2
    assert "refusing without --yes" in err and "cancel every open order" in err and "close the position" in err
    assert peers.received == []


def test_the_whole_reset_confirmed_step_by_step(tmp_path: Path) -> None:
    stand = Stand()
    peers, out, err, code = reset(tmp_path, stand, "--yes", "--cancel-orders", "--flatten", "--limit", "99.5")

    assert code == 0, out + err
    sent = kinds(peers)
    assert sent[:3] == ["Halt", "BrokerSnapshotRequest", "CancelAll"]
    # The broker is asked again until it lists no open order, before anything is closed.
    assert sent.index("ClosePosition") > sent.index("CancelAll") + 1
    assert sent.index("ResetState") > sent.index("ClosePosition")
    assert stand.closes == [ClosePosition(ts_ns=stand.closes[0].ts_ns, symbol="TQQQ", side="SELL", quantity=20,
                                          limit=Decimal("99.50"), reason="operator reset")]
    assert stand.position == 0 and stand.orders == []
    assert stand.state.lots == [] and stand.state.cycle == 5
    assert stand.state.halted, "trading must stay halted after a reset without --resume"
    assert "cancel all: confirmed" in out and "flatten: confirmed, position 0" in out
    assert "state: cleared (cycle 5" in out and "trading stays halted" in out


def test_flatten_prices_from_the_last_tick_and_keeps_external_shares(tmp_path: Path) -> None:
    stand = Stand(position=150, orders=[])
    peers, out, err, code = reset(tmp_path, stand, "--yes", "--flatten", "--resume",
                                  extra="[statekeeper]\nexternal_shares = 50\n", ticks=True)

    assert code == 0, out + err
    # 52.40 x (1 - 0.0025) = 52.269 -> 52.27; only the grid's 100 shares are sold.
    assert [(c.side, c.quantity, c.limit) for c in stand.closes] == [("SELL", 100, Decimal("52.27"))]
    assert stand.position == 50
    assert kinds(peers)[-1] == "Resume" and not stand.state.halted


def test_an_order_no_cancel_reaches_stops_the_reset_before_the_state_is_touched(tmp_path: Path) -> None:
    stand = Stand(orders=[order("tqgrid1 c4 L0 SELL 100.00"), order("", client_id=9, order_id=7)])
    peers, out, err, code = reset(tmp_path, stand, "--yes", "--cancel-orders", "--timeout", "1.5")

    assert code == 1
    assert "did not confirm every open order cancelled within 1.5 s" in err
    assert "orderId 7 (Submitted, clientId 9)" in err
    assert "done so far: halted" in err and "Trading stays halted" in err
    assert "ResetState" not in kinds(peers) and stand.state.lots != []


def test_flatten_with_orders_still_open_is_refused(tmp_path: Path) -> None:
    stand = Stand()
    peers, out, err, code = reset(tmp_path, stand, "--yes", "--flatten", "--limit", "99")

    assert code == 1
    assert "still open: cancel them first (--cancel-orders)" in err
    assert stand.closes == [] and "ResetState" not in kinds(peers)


def test_a_disconnected_broker_stops_the_reset(tmp_path: Path) -> None:
    stand = Stand(connected=False)
    peers, out, err, code = reset(tmp_path, stand, "--yes", "--cancel-orders")

    assert code == 1
    assert "not connected to the broker" in err
    assert kinds(peers) == ["Halt", "BrokerSnapshotRequest"]


def test_no_executor_exits_3_after_the_halt(tmp_path: Path) -> None:
    stand = Stand()
    peers, out, err, code = reset(tmp_path, stand, "--yes", executor=False)

    assert code == 3
    assert "the executor did not answer BrokerSnapshotRequest" in err
    assert stand.state.halted and stand.state.lots != []


def test_state_only_reset_notes_the_orders_left_open(tmp_path: Path) -> None:
    stand = Stand(orders=[order("tqgrid1 c4 L0 SELL 100.00")])
    peers, out, err, code = reset(tmp_path, stand, "--yes")

    assert code == 0, err
    assert "1 open order(s) of TQQQ stay at the broker" in out
    assert "CancelAll" not in kinds(peers) and stand.state.lots == []


@pytest.mark.parametrize("bad", ["-3", "abc", "0.001"])
def test_a_bad_limit_is_refused_before_anything_is_sent(tmp_path: Path, bad: str) -> None:
    stand = Stand()
    peers, out, err, code = reset(tmp_path, stand, "--yes", "--flatten", "--limit", bad)

    assert code == 2 and "--limit" in err
    assert peers.received == []
