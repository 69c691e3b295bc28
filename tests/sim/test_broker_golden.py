"""Golden tests: every message the paper broker encodes, decoded by ib_insync's and ib_async's own decoders.

A layout error makes a client drop the message silently (it only logs); here the decoder runs with a recording
wrapper, any decoder log at ERROR fails the test, and the decoded values are checked field by field.
"""

from __future__ import annotations

import importlib
import logging
from datetime import UTC
from decimal import Decimal
from typing import Any

import pytest

from sim.broker import encode
from sim.broker.account import Account
from sim.broker.contracts import TQQQ
from sim.broker.orders import BrokerOrder, Condition, Execution
from sim.broker.wire import encode as frame
from sim.broker.wire import handshake_reply

LIBS = ["ib_insync", "ib_async"]
VERSIONS = [176, 170, 166, 163, 157]
TS = 1_748_872_800 * 10**9  # 2025-06-02 14:00:00 UTC
D = Decimal


class Recorder:
    """A client wrapper that records every callback the decoder makes."""

    # ib_async's execDetails converts times to the wrapper's zone.
    defaultTimezone = UTC

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)

        def record(*args: Any) -> None:
            self.calls.append((name, args))

        return record


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def split_like_client(data: bytes) -> list[str]:
    """What the clients' Client._onSocketHasData hands the decoder."""
    fields = data[4:].decode(errors="backslashreplace").split("\0")
    fields.pop()
    return fields


def decode(lib: str, sv: int, message: list[object]) -> tuple[str, tuple[Any, ...]]:
    """Decode one message with ``lib``'s decoder; return the single wrapper call it made."""
    decoder_mod = importlib.import_module(f"{lib}.decoder")
    recorder = Recorder()
    decoder = decoder_mod.Decoder(recorder, sv)
    errors = _Errors()
    logger = logging.getLogger(f"{lib}.Decoder")
    logger.addHandler(errors)
    try:
        decoder.interpret(split_like_client(frame(message)))
    finally:
        logger.removeHandler(errors)
    assert not errors.records, f"{lib} decoder failed: {errors.records[0].getMessage()[:300]}"
    assert len(recorder.calls) == 1, recorder.calls
    return recorder.calls[0]


def make_order(conditions: bool = False, status: str = "PreSubmitted", filled: int = 0) -> BrokerOrder:
    order = BrokerOrder(
        perm_id=1_234_567_001, client_id=17, order_id=42, account="DU1234567", con_id=TQQQ.con_id,
        action="SELL", quantity=94, order_type="LMT", limit=D("97.03"), tif="GTC", outside_rth=True,
        order_ref="tqgrid1 c12 L3 SELL 97.0213", placed_ns=TS, seq=1, status=status,
    )
    if conditions:
        order.action = "BUY"
        order.conditions = [Condition(is_more=False, price=D("96.06"), con_id=TQQQ.con_id, exchange="SMART")]
        order.conditions_ignore_rth = True
        order.triggered = False
    if filled:
        order.filled = filled
        order.fill_value = D("97.05") * filled
        order.last_fill_price = D("97.05")
        order.completed_ns = TS + 10**9
        order.completed_status = "filled"
    return order


def make_execution(realized: Decimal | None) -> Execution:
    return Execution(
        exec_id="0000000a.6901a1d2.01.01", perm_id=1_234_567_001, client_id=17, order_id=42, account="DU1234567",
        con_id=TQQQ.con_id, side="SLD", shares=94, price=D("97.05"), cum_qty=94, avg_price=D("97.05"), ts_ns=TS,
        order_ref="tqgrid1 c12 L3 SELL 97.0213", commission=D("1.00"), realized_pnl=realized,
    )


@pytest.fixture(params=VERSIONS)
def sv(request: pytest.FixtureRequest) -> int:
    return int(request.param)


def test_handshake_reply_is_exactly_two_fields(lib: str) -> None:
    fields = split_like_client(handshake_reply(176, "20250602 10:00:00 EDT"))
    assert fields == ["176", "20250602 10:00:00 EDT"]


def test_next_valid_id_and_managed_accounts_are_exactly_three_fields(lib: str) -> None:
    assert split_like_client(frame(encode.next_valid_id(5))) == ["9", "1", "5"]
    assert split_like_client(frame(encode.managed_accounts("DU1234567"))) == ["15", "1", "DU1234567"]
    assert decode(lib, 176, encode.next_valid_id(5)) == ("nextValidId", (5,))
    assert decode(lib, 176, encode.managed_accounts("DU1234567")) == ("managedAccounts", ("DU1234567",))


def test_error_carries_the_reject_json_field_from_166(lib: str, sv: int) -> None:
    name, args = decode(lib, sv, encode.error(42, 202, "Order Canceled - reason:", sv))
    assert name == "error"
    assert args == (42, 202, "Order Canceled - reason:", "")


@pytest.mark.parametrize("conditions", [False, True], ids=["plain", "conditional"])
def test_open_order(lib: str, sv: int, conditions: bool) -> None:
    order = make_order(conditions)
    message = encode.open_order(order, TQQQ, "PreSubmitted", sv)
    if sv == 176:
        # tws-protocol.md 5.1: 128 fields for a plain order at 176, 137 with one PriceCondition.
        assert len(message) == (137 if conditions else 128)
    name, (order_id, contract, o, state) = decode(lib, sv, message)
    assert name == "openOrder"
    assert order_id == 42 and o.orderId == 42 and o.clientId == 17 and o.permId == 1_234_567_001
    assert (contract.conId, contract.symbol, contract.exchange, contract.tradingClass) == (
        72539702, "TQQQ", "SMART", "NMS")
    assert (o.action, o.totalQuantity, o.orderType, o.lmtPrice, o.tif) == (
        order.action, 94.0, "LMT", 97.03, "GTC")
    assert o.orderRef == "tqgrid1 c12 L3 SELL 97.0213" and o.account == "DU1234567"
    assert o.outsideRth is True and o.whatIf is False
    assert state.status == "PreSubmitted"
    assert state.commission > 1e300  # unset until the fill
    if conditions:
        [cond] = o.conditions
        assert (cond.condType, cond.conjunction, cond.isMore, cond.price, cond.conId, cond.exch) == (
            1, "a", False, 96.06, 72539702, "SMART")
        assert o.conditionsIgnoreRth is True and o.conditionsCancelOrder is False
    else:
        assert o.conditions == []
    if sv >= 170:
        assert o.midOffsetAtHalf > 1e300  # the last field landed where the decoder reads it


def test_open_order_of_a_fill_carries_the_commission(lib: str) -> None:
    order = make_order(status="Filled", filled=94)
    name, (_, _, _, state) = decode(lib, 176, encode.open_order(order, TQQQ, "Filled", 176, commission=D("1.00")))
    assert name == "openOrder"
    assert (state.status, state.commission, state.commissionCurrency) == ("Filled", 1.0, "USD")


def test_what_if_open_order_is_recognised_as_a_what_if_reply(lib: str) -> None:
    order = make_order()
    margins = [D(0), D(0), D(1000000), D("9121.82"), D("9121.82"), D(0), D("9121.82"), D("9121.82"), D(1000000)]
    name, (_, _, o, state) = decode(lib, 176, encode.open_order(order, TQQQ, "PreSubmitted", 176, D("1.00"),
                                                                 what_if_margins=margins))
    assert name == "openOrder" and o.whatIf is True
    assert state.initMarginChange == "9121.82"


@pytest.mark.parametrize("filled", [0, 30, 94])
def test_order_status(lib: str, filled: int) -> None:
    order = make_order(status="Filled" if filled == 94 else "Submitted", filled=filled)
    name, args = decode(lib, 176, encode.order_status(order))
    assert name == "orderStatus"
    status, got_filled, remaining, avg, perm_id, parent_id, last, client_id, why_held, cap = args[1:]
    assert args[0] == 42 and perm_id == 1_234_567_001 and client_id == 17 and parent_id == 0
    assert (status, got_filled, remaining) == (order.status, float(filled), float(94 - filled))
    assert avg == (97.05 if filled else 0.0) and last == (97.05 if filled else 0.0)
    assert (why_held, cap) == ("", 0.0)


def test_execution_is_exactly_31_fields(lib: str) -> None:
    message = encode.execution(-1, make_execution(None), TQQQ)
    assert len(message) == 31
    name, (req_id, contract, ex) = decode(lib, 176, message)
    assert name == "execDetails" and req_id == -1
    assert contract.conId == 72539702
    assert (ex.execId, ex.orderId, ex.permId, ex.clientId) == ("0000000a.6901a1d2.01.01", 42, 1_234_567_001, 17)
    assert (ex.side, ex.shares, ex.price, ex.cumQty, ex.avgPrice) == ("SLD", 94.0, 97.05, 94.0, 97.05)
    assert ex.orderRef == "tqgrid1 c12 L3 SELL 97.0213" and ex.acctNumber == "DU1234567"
    assert ex.time.isoformat() == "2025-06-02T14:00:00+00:00"


@pytest.mark.parametrize("realized", [None, D("4.12")])
def test_commission_report_is_exactly_8_fields(lib: str, realized: Decimal | None) -> None:
    message = encode.commission_report(make_execution(realized))
    assert len(message) == 8
    name, (report,) = decode(lib, 176, message)
    assert name == "commissionReport"
    assert (report.execId, report.commission, report.currency) == ("0000000a.6901a1d2.01.01", 1.0, "USD")
    assert report.realizedPNL == (4.12 if realized is not None else pytest.approx(1.7976931348623157e308))


@pytest.mark.parametrize("conditions", [False, True], ids=["plain", "conditional"])
def test_completed_order(lib: str, sv: int, conditions: bool) -> None:
    order = make_order(conditions, status="Filled", filled=94)
    message = encode.completed_order(order, TQQQ, sv)
    if sv == 176 and not conditions:
        assert len(message) == 97  # tws-protocol.md 5.3
    name, (contract, o, state) = decode(lib, sv, message)
    assert name == "completedOrder"
    assert contract.conId == 72539702 and o.permId == 1_234_567_001
    assert o.orderRef == "tqgrid1 c12 L3 SELL 97.0213" and o.filledQuantity == 94.0
    assert (state.status, state.completedStatus) == ("Filled", "filled")
    assert state.completedTime.endswith("US/Eastern")
    assert len(o.conditions) == (1 if conditions else 0)
    if sv >= 170:
        assert o.midOffsetAtHalf > 1e300


def test_position_is_exactly_16_fields(lib: str) -> None:
    account = Account("DU1234567", D("990000"), position=94, avg_cost=D("96.0606"))
    message = encode.position(account, TQQQ)
    assert len(message) == 16
    name, (acct, contract, pos, avg) = decode(lib, 176, message)
    assert (name, acct, contract.conId, pos, avg) == ("position", "DU1234567", 72539702, 94.0, 96.0606)


def test_portfolio_is_exactly_20_fields(lib: str) -> None:
    account = Account("DU1234567", D("990000"), position=94, avg_cost=D("96.06"), realized_pnl=D("12.5"))
    message = encode.portfolio(account, TQQQ, D("97.00"))
    assert len(message) == 20
    name, args = decode(lib, 176, message)
    contract, pos, price, value, avg, unrealized, realized, acct = args
    assert name == "updatePortfolio" and contract.conId == 72539702 and contract.primaryExchange == "NASDAQ"
    assert (pos, price, value, avg, unrealized, realized, acct) == (
        94.0, 97.0, 9118.0, 96.06, 88.36, 12.5, "DU1234567")


def test_account_messages(lib: str) -> None:
    account = Account("DU1234567", D("1000000"))
    values = encode.account_values(account, None)
    assert ("NetLiquidation", "1000000.00", "USD") in values
    key, value, currency = values[0]
    assert decode(lib, 176, encode.account_value(key, value, currency, "DU1234567")) == (
        "updateAccountValue", (key, value, currency, "DU1234567"))
    assert decode(lib, 176, encode.account_time(TS)) == ("updateAccountTime", ("10:00",))
    assert decode(lib, 176, encode.account_download_end("DU1234567")) == ("accountDownloadEnd", ("DU1234567",))
    assert decode(lib, 176, encode.account_summary(7, "DU1234567", "NetLiquidation", "1000000.00", "USD")) == (
        "accountSummary", (7, "DU1234567", "NetLiquidation", "1000000.00", "USD"))
    assert decode(lib, 176, encode.account_summary_end(7)) == ("accountSummaryEnd", (7,))
    assert decode(lib, 176, encode.account_update_multi(3, "DU1234567", "", "NetLiquidation", "1", "USD")) == (
        "accountUpdateMulti", (3, "DU1234567", "", "NetLiquidation", "1", "USD"))
    assert decode(lib, 176, encode.account_update_multi_end(3)) == ("accountUpdateMultiEnd", (3,))


def test_end_markers(lib: str) -> None:
    assert decode(lib, 176, encode.open_order_end()) == ("openOrderEnd", ())
    assert decode(lib, 176, encode.position_end()) == ("positionEnd", ())
    assert decode(lib, 176, encode.completed_orders_end()) == ("completedOrdersEnd", ())
    assert decode(lib, 176, encode.execution_end(9)) == ("execDetailsEnd", (9,))
    assert decode(lib, 176, encode.contract_details_end(3)) == ("contractDetailsEnd", (3,))
    assert decode(lib, 176, encode.tick_snapshot_end(4)) == ("tickSnapshotEnd", (4,))


def test_contract_details(lib: str, sv: int) -> None:
    name, (req_id, cd) = decode(lib, sv, encode.contract_details(3, TQQQ, sv, TS))
    assert name == "contractDetails" and req_id == 3
    c = cd.contract
    assert (c.conId, c.symbol, c.secType, c.exchange, c.primaryExchange, c.currency, c.tradingClass) == (
        72539702, "TQQQ", "STK", "SMART", "NASDAQ", "USD", "NMS")
    assert (cd.minTick, cd.marketName, cd.longName, cd.timeZoneId) == (
        0.01, "NMS", "PROSHARES ULTRAPRO QQQ", "US/Eastern")
    assert cd.stockType == "ETF"
    assert cd.tradingHours.startswith("20250602:0400-20250602:2000;")
    assert cd.liquidHours.startswith("20250602:0930-20250602:1600;")
    if sv >= 164:
        assert (cd.minSize, cd.sizeIncrement, cd.suggestedSizeIncrement) == (1.0, 1.0, 100.0)


def test_market_data_messages(lib: str) -> None:
    assert decode(lib, 176, encode.tick_req_params(5, TQQQ)) == ("tickReqParams", (5, 0.01, "9c0001", 3))
    assert decode(lib, 176, encode.market_data_type(5, 3)) == ("marketDataType", (5, 3))
    message = encode.tick_price(5, encode.TICK_DELAYED_LAST, D("97.05"), 200)
    assert len(message) == 7
    assert decode(lib, 176, message) == ("priceSizeTick", (5, 68, 97.05, 200.0))
    assert decode(lib, 176, encode.tick_size(5, encode.TICK_LAST_SIZE, 200)) == ("tickSize", (5, 5, 200.0))
    assert decode(lib, 176, encode.current_time(TS)) == ("currentTime", (1_748_872_800,))
