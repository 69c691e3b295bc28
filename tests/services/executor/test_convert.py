"""IB's objects -> proto records, with the real client libraries' own classes (both of them)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from proto.messages import PlaceOrder, PriceCondition
from services.executor import convert, ib_api
from tests.services.executor.harness import LIBS

UNSET_DOUBLE = 1.7976931348623157e308


@pytest.fixture(params=LIBS)
def ib(request: pytest.FixtureRequest) -> Any:
    return ib_api.load(str(request.param)).module


def trade(ib: Any, **order: Any) -> Any:
    contract = ib.Stock("TQQQ", "SMART", "USD", conId=72539702)
    fields = {"orderId": 7, "clientId": 17, "permId": 1007, "action": "BUY", "totalQuantity": 94.0,
              "orderType": "LMT", "lmtPrice": 97.03, "tif": "GTC", "outsideRth": True,
              "orderRef": "tqgrid1 c1 L3 BUY", **order}
    status = ib.OrderStatus(orderId=7, status="Submitted", filled=40.0, remaining=54.0, avgFillPrice=97.0213)
    return ib.Trade(contract, ib.Order(**fields), status, [], [])


def test_order_info_reads_the_trade_with_exact_prices(ib: Any) -> None:
    t = trade(ib, conditions=[ib.PriceCondition(isMore=False, price=97.03, conId=72539702, exch="SMART")])
    info = convert.order_info(t)
    assert (info.key, info.order_id, info.perm_id, info.client_id) == ("tqgrid1 c1 L3 BUY", 7, 1007, 17)
    assert (info.side, info.quantity, info.filled, info.remaining) == ("BUY", 94, 40, 54)
    assert info.limit == Decimal("97.03") and str(info.limit) == "97.03"
    assert info.avg_fill_price == Decimal("97.0213")
    assert info.condition_price == Decimal("97.03") and info.tif == "GTC" and info.outside_rth


def test_completed_order_takes_its_filled_quantity_from_the_order(ib: Any) -> None:
    t = trade(ib, filledQuantity=94.0)
    t.orderStatus = ib.OrderStatus(orderId=7, status="Filled")
    info = convert.order_info(t)
    assert (info.status, info.filled, info.remaining) == ("Filled", 94, 0)


def test_unset_values_become_zero_and_a_foreign_order_has_an_empty_key(ib: Any) -> None:
    t = trade(ib, orderRef="", lmtPrice=UNSET_DOUBLE, filledQuantity=UNSET_DOUBLE, action="SELL")
    info = convert.order_info(t)
    assert info.key == "" and info.limit == Decimal(0) and info.side == "SELL" and info.filled == 40


def test_prices_keep_cents_and_every_decimal_ib_gave() -> None:
    assert str(convert.decimal(100.0)) == "100.00"
    assert str(convert.decimal(97.5)) == "97.50"
    assert str(convert.decimal(120.695)) == "120.695"
    assert convert.decimal(None) == 0 and convert.decimal(UNSET_DOUBLE) == 0


def test_last_error_gives_ibs_own_text(ib: Any) -> None:
    t = trade(ib)
    t.log.append(ib.TradeLogEntry(datetime.now(UTC), "Cancelled", "Error 201, reqId 7: Order rejected - reason:x", 201))
    assert convert.last_error(t) == (201, "Order rejected - reason:x")
    t.log.append(ib.TradeLogEntry(datetime.now(UTC), "Cancelled", "", 0))
    assert convert.last_error(t) == (0, "")


def test_execution_info_maps_sides_times_and_the_commission_once_reported(ib: Any) -> None:
    when = datetime(2025, 6, 3, 14, 0, 1, tzinfo=UTC)
    execution = ib.Execution(execId="00025b46.01", time=when, side="SLD", shares=270.0, price=101.5, permId=1007,
                             clientId=17, orderId=7, cumQty=470.0, avgPrice=101.4574, orderRef="tqgrid1 c1 L3 SELL 97.03")
    contract = ib.Stock("TQQQ", "SMART", "USD")
    fill = ib.Fill(contract, execution, ib.CommissionReport(), when)
    info = convert.execution_info(fill)
    assert (info.side, info.shares, info.cum_qty, info.perm_id) == ("SELL", 270, 470, 1007)
    assert info.price == Decimal("101.50") and info.avg_price == Decimal("101.4574")
    assert info.exec_ts_ns == int(when.timestamp()) * 1_000_000_000 and info.commission is None
    reported = ib.Fill(contract, execution, ib.CommissionReport(execId="00025b46.01", commission=1.0), when)
    assert convert.execution_info(reported).commission == Decimal("1.00")


def test_an_unknown_side_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="'SSHORT'"):
        convert.side("SSHORT")


def test_ib_api_builds_the_conditional_limit_order_on_the_qualified_con_id() -> None:
    for name in LIBS:
        lib = ib_api.load(name)
        cmd = PlaceOrder(key="tqgrid1 c1 L3 BUY", symbol="TQQQ", side="BUY", quantity=77, limit=Decimal("97.03"),
                         tif="GTC", condition=PriceCondition(price=Decimal("97.03")), conditions_ignore_rth=True)
        order = lib.order_for(cmd, 72539702)
        assert (order.action, order.totalQuantity, order.lmtPrice, order.orderType) == ("BUY", 77, 97.03, "LMT")
        assert order.orderRef == cmd.key and order.tif == "GTC" and order.outsideRth and order.conditionsIgnoreRth
        [condition] = order.conditions
        assert (condition.conId, condition.exch, condition.isMore, condition.price) == (72539702, "SMART", False, 97.03)
        assert condition.triggerMethod == 2


def test_ib_api_refuses_an_unknown_library_naming_the_variable() -> None:
    with pytest.raises(ValueError, match="GRIDBOT_IB_LIB='ibapi'"):
        ib_api.load("ibapi")
