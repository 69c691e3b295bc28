"""placeOrder parsing: every conditional branch, as the real clients serialise it, at every server version.

The messages come from ib_insync's and ib_async's own ``Client.placeOrder`` (its socket replaced by a list), so a
branch the parser misses shows up as a wrong value or as leftover fields, never as silent desynchronisation.
"""

from __future__ import annotations

import importlib
import math
from decimal import Decimal
from typing import Any

import pytest

from sim.broker.requests import (
    RequestError,
    parse_place_order,
    parse_req_contract_details,
    parse_req_executions,
    parse_req_mkt_data,
)

LIBS = ["ib_insync", "ib_async"]
VERSIONS = [176, 170, 169, 166, 162, 160, 158, 157]


def sent_fields(lib: str, sv: int, method: str, *args: Any) -> list[str]:
    """The fields ``lib``'s Client sends for ``method(*args)`` at server version ``sv``."""
    mod = importlib.import_module(lib)
    client = mod.client.Client(mod.wrapper.Wrapper(None))
    client._serverVersion = sv
    client.connState = client.CONNECTED
    captured: list[str] = []
    client.sendMsg = captured.append
    getattr(client, method)(*args)
    [msg] = captured
    fields = msg.split("\0")
    fields.pop()
    return fields


def tqqq(mod: Any) -> Any:
    return mod.Stock("TQQQ", "SMART", "USD", conId=72539702, primaryExchange="NASDAQ")


def grid_buy(mod: Any) -> Any:
    """The grid's conditional BUY (DESIGN section 4)."""
    order = mod.LimitOrder("BUY", 30, 96.06, tif="GTC", outsideRth=True, orderRef="tqgrid1 c12 L4 BUY")
    order.conditions = [mod.PriceCondition(isMore=False, price=96.06, conId=72539702, exch="SMART")]
    order.conditionsIgnoreRth = True
    return order


def variants(mod: Any) -> dict[str, tuple[Any, Any]]:
    """(contract, order) pairs that walk every conditional branch of placeOrder."""
    stock = tqqq(mod)
    out: dict[str, tuple[Any, Any]] = {
        "plain limit": (stock, mod.LimitOrder("SELL", 94, 97.03, orderRef="tqgrid1 c12 L3 SELL 97.0213")),
        "market": (stock, mod.MarketOrder("BUY", 5)),
        "grid conditional buy": (stock, grid_buy(mod)),
    }
    rebuilt = mod.LimitOrder("SELL", 10, 50.0)
    rebuilt.deltaNeutralOrderType = "None"  # what an order rebuilt from TWS after a reconnect carries
    out["delta-neutral 'None'"] = (stock, rebuilt)
    scaled = mod.LimitOrder("BUY", 100, 50.0)
    scaled.scalePriceIncrement = 0.05
    scaled.scaleInitLevelSize = 10
    out["scale"] = (stock, scaled)
    hedged = mod.LimitOrder("BUY", 10, 50.0)
    hedged.hedgeType = "D"
    hedged.hedgeParam = "0.5"
    out["hedge"] = (stock, hedged)
    algo = mod.LimitOrder("BUY", 10, 50.0)
    algo.algoStrategy = "Adaptive"
    algo.algoParams = [mod.TagValue("adaptivePriority", "Normal")]
    out["algo"] = (stock, algo)
    bench = mod.Order(action="BUY", totalQuantity=10, orderType="PEG BENCH", lmtPrice=50.0)
    bench.referenceContractId = 756733
    out["PEG BENCH"] = (stock, bench)
    best = mod.Order(action="BUY", totalQuantity=10, orderType="PEG BEST", competeAgainstBestOffset=math.inf)
    out["PEG BEST inf"] = (stock, best)
    out["PEG MID"] = (stock, mod.Order(action="BUY", totalQuantity=10, orderType="PEG MID"))
    ats = mod.Stock("TQQQ", "IBKRATS", "USD", conId=72539702)
    out["IBKRATS"] = (ats, mod.LimitOrder("BUY", 10, 50.0))
    dnc_stock = tqqq(mod)
    dnc_stock.deltaNeutralContract = mod.DeltaNeutralContract(conId=1, delta=0.5, price=10.0)
    out["delta-neutral contract"] = (dnc_stock, mod.LimitOrder("BUY", 10, 50.0))
    bag = mod.Contract(secType="BAG", symbol="TQQQ", exchange="SMART", currency="USD")
    bag.comboLegs = [mod.ComboLeg(conId=72539702, ratio=1, action="BUY", exchange="SMART"),
                     mod.ComboLeg(conId=320227571, ratio=1, action="SELL", exchange="SMART")]
    bag_order = mod.LimitOrder("BUY", 1, 1.0)
    bag_order.orderComboLegs = [mod.OrderComboLeg(price=1.0)]
    bag_order.smartComboRoutingParams = [mod.TagValue("NonGuaranteed", "1")]
    out["BAG"] = (bag, bag_order)
    every_condition = mod.LimitOrder("BUY", 10, 50.0)
    every_condition.conditions = [
        mod.PriceCondition(isMore=True, price=60.0, conId=72539702, exch="SMART"),
        mod.TimeCondition(isMore=True, time="20250602 10:00:00 US/Eastern"),
        mod.MarginCondition(isMore=False, percent=30),
        mod.ExecutionCondition(secType="STK", exch="SMART", symbol="QQQ"),
        mod.VolumeCondition(isMore=True, volume=1000, conId=72539702, exch="SMART"),
        mod.PercentChangeCondition(isMore=True, changePercent=5.0, conId=72539702, exch="SMART"),
    ]
    every_condition.conditionsCancelOrder = True
    out["every condition type"] = (stock, every_condition)
    return out


CASES = list(variants(importlib.import_module("ib_insync")))


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("sv", VERSIONS)
@pytest.mark.parametrize("case", CASES)
def test_every_place_order_variant_parses_completely(lib: str, sv: int, case: str) -> None:
    mod = importlib.import_module(lib)
    contract, order = variants(mod)[case]
    fields = sent_fields(lib, sv, "placeOrder", 42, contract, order)
    ticket = parse_place_order(fields, sv)  # raises on leftover fields or a short message
    assert ticket.order_id == 42
    assert ticket.action == order.action
    assert ticket.total_quantity == Decimal(str(order.totalQuantity))
    assert ticket.order_type == order.orderType
    assert len(ticket.conditions) == len(order.conditions)


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("sv", [176, 157])
def test_grid_buy_fields(lib: str, sv: int) -> None:
    mod = importlib.import_module(lib)
    ticket = parse_place_order(sent_fields(lib, sv, "placeOrder", 7, tqqq(mod), grid_buy(mod)), sv)
    assert (ticket.lmt_price, ticket.tif, ticket.outside_rth, ticket.order_ref) == (
        Decimal("96.06"), "GTC", True, "tqgrid1 c12 L4 BUY")
    assert ticket.contract.con_id == 72539702 and ticket.contract.primary_exchange == "NASDAQ"
    [cond] = ticket.conditions
    assert (cond.cond_type, cond.conjunction, cond.is_more, cond.price, cond.con_id, cond.exchange) == (
        1, "a", False, Decimal("96.06"), 72539702, "SMART")
    assert ticket.conditions_ignore_rth is True and ticket.conditions_cancel_order is False


def test_captured_wire_sample_parses() -> None:
    """The 124-field capture in tws-placeorder-176.txt."""
    fields = ["3", "4", "72539702", "TQQQ", "STK", "", "0.0", "", "", "SMART", "NASDAQ", "USD", "TQQQ", "NMS", "",
              "", "BUY", "30", "LMT", "49.0", "", "GTC", "", "", "O", "0", "", "1", "0", "0", "0", "0", "0", "1", "0",
              "", "0.0", "", "", "", "", "", "", "", "0", "", "-1", "0", "", "", "0", "", "", "0", "0", "", "0", "",
              "", "", "", "", "0", "", "", "", "", "0", "", "", "", "", "", "", "", "", "", "", "0", "", "", "0",
              "0", "", "", "0", "", "0", "0", "0", "1", "1", "a", "0", "48.0", "72539702", "SMART", "0", "1", "0",
              "", "", "", "", "", "", "0", "", "", "", "", "", "", "", "", "0", "0", "0", "0", "", "", "0", "", ""]
    assert len(fields) == 124
    ticket = parse_place_order(fields, 176)
    assert (ticket.order_id, ticket.lmt_price, ticket.total_quantity) == (4, Decimal("49.0"), Decimal("30"))
    assert ticket.conditions[0].price == Decimal("48.0")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f[:60], "message ends before field"),
        (lambda f: [*f, "junk"], "unexpected trailing field"),
        (lambda f: f[:17] + ["many"] + f[18:], "field 'totalQuantity' must be a number, was 'many'"),
        (lambda f: f[:90] + ["x"] + f[91:], "field 'conditions.count' must be an integer"),
        (lambda f: f[:91] + ["2"] + f[92:], "condition 0 has unknown condType 2"),
    ],
    ids=["truncated", "trailing", "bad quantity", "bad condition count", "unknown condition type"],
)
def test_bad_place_order_names_the_field_and_the_order_id(mutate: Any, message: str) -> None:
    mod = importlib.import_module("ib_insync")
    fields = sent_fields("ib_insync", 176, "placeOrder", 42, tqqq(mod), grid_buy(mod))
    with pytest.raises(RequestError, match=message) as err:
        parse_place_order(mutate(fields), 176)
    assert err.value.req_id == 42


@pytest.mark.parametrize("lib", LIBS)
def test_other_requests_parse(lib: str) -> None:
    mod = importlib.import_module(lib)
    stock = tqqq(mod)
    md = parse_req_mkt_data(sent_fields(lib, 176, "reqMktData", 5, stock, "233", False, False, []))
    assert (md.req_id, md.contract.symbol, md.generic_ticks, md.snapshot) == (5, "TQQQ", "233", False)
    cd = parse_req_contract_details(sent_fields(lib, 176, "reqContractDetails", 3, mod.Stock("TQQQ", "SMART", "USD")))
    assert (cd.req_id, cd.contract.con_id, cd.contract.symbol, cd.contract.currency) == (3, 0, "TQQQ", "USD")
    filt = mod.ExecutionFilter(clientId=17, side="SELL")
    ex = parse_req_executions(sent_fields(lib, 176, "reqExecutions", 9, filt))
    assert (ex.req_id, ex.client_id, ex.side) == (9, 17, "SELL")
