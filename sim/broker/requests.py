"""Parse client -> server messages into typed requests (layouts at server versions 157-176, as the clients send).

Every conditional branch of placeOrder is honoured (BAG legs, delta-neutral, scale, hedge, delta-neutral contract,
algo, PEG BENCH, conditions, the version-gated tail), so any order ib_insync or ib_async can send parses. A message
that does not parse raises :class:`RequestError` naming the message and the field; the connection answers it with
an error and carries on (framing is by length, so one bad message never desynchronises the stream).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from sim.broker.wire import UNSET_INTEGER

# Client -> server message ids (tws-protocol.md section 3.1).
REQ_MKT_DATA = 1
CANCEL_MKT_DATA = 2
PLACE_ORDER = 3
CANCEL_ORDER = 4
REQ_OPEN_ORDERS = 5
REQ_ACCOUNT_UPDATES = 6
REQ_EXECUTIONS = 7
REQ_IDS = 8
REQ_CONTRACT_DETAILS = 9
REQ_AUTO_OPEN_ORDERS = 15
REQ_ALL_OPEN_ORDERS = 16
REQ_MANAGED_ACCTS = 17
REQ_HISTORICAL_DATA = 20
REQ_CURRENT_TIME = 49
REQ_GLOBAL_CANCEL = 58
REQ_MARKET_DATA_TYPE = 59
REQ_POSITIONS = 61
REQ_ACCOUNT_SUMMARY = 62
CANCEL_ACCOUNT_SUMMARY = 63
CANCEL_POSITIONS = 64
START_API = 71
REQ_ACCOUNT_UPDATES_MULTI = 76
CANCEL_ACCOUNT_UPDATES_MULTI = 77
REQ_COMPLETED_ORDERS = 99

NAMES = {
    REQ_MKT_DATA: "reqMktData",
    CANCEL_MKT_DATA: "cancelMktData",
    PLACE_ORDER: "placeOrder",
    CANCEL_ORDER: "cancelOrder",
    REQ_OPEN_ORDERS: "reqOpenOrders",
    REQ_ACCOUNT_UPDATES: "reqAccountUpdates",
    REQ_EXECUTIONS: "reqExecutions",
    REQ_IDS: "reqIds",
    REQ_CONTRACT_DETAILS: "reqContractDetails",
    REQ_AUTO_OPEN_ORDERS: "reqAutoOpenOrders",
    REQ_ALL_OPEN_ORDERS: "reqAllOpenOrders",
    REQ_MANAGED_ACCTS: "reqManagedAccts",
    REQ_HISTORICAL_DATA: "reqHistoricalData",
    REQ_CURRENT_TIME: "reqCurrentTime",
    REQ_GLOBAL_CANCEL: "reqGlobalCancel",
    REQ_MARKET_DATA_TYPE: "reqMarketDataType",
    REQ_POSITIONS: "reqPositions",
    REQ_ACCOUNT_SUMMARY: "reqAccountSummary",
    CANCEL_ACCOUNT_SUMMARY: "cancelAccountSummary",
    CANCEL_POSITIONS: "cancelPositions",
    START_API: "startApi",
    REQ_ACCOUNT_UPDATES_MULTI: "reqAccountUpdatesMulti",
    CANCEL_ACCOUNT_UPDATES_MULTI: "cancelAccountUpdatesMulti",
    REQ_COMPLETED_ORDERS: "reqCompletedOrders",
}


class RequestError(Exception):
    """A client message could not be parsed. ``req_id`` is the request or order id when it was read."""

    def __init__(self, message: str, req_id: int = -1) -> None:
        super().__init__(message)
        self.req_id = req_id


class Fields:
    """Read a message's fields in order, each read named so an error says which field was bad."""

    def __init__(self, fields: list[str], message: str) -> None:
        self._fields = fields
        self._pos = 1  # field 0 is the message id
        self.message = message

    def _next(self, name: str) -> str:
        if self._pos >= len(self._fields):
            raise RequestError(f"{self.message}: message ends before field '{name}' (field {self._pos})")
        value = self._fields[self._pos]
        self._pos += 1
        return value

    def _convert(self, name: str, convert: Callable[[str], Any], text: str, kind: str) -> Any:
        try:
            return convert(text)
        except (ValueError, InvalidOperation):
            raise RequestError(f"{self.message}: field '{name}' must be {kind}, was {text!r}") from None

    def text(self, name: str) -> str:
        return self._next(name)

    def integer(self, name: str, default: int = 0) -> int:
        text = self._next(name)
        if text == "":
            return default
        return int(self._convert(name, int, text, "an integer"))

    def opt_int(self, name: str) -> int | None:
        value = self.integer(name, UNSET_INTEGER)
        return None if value == UNSET_INTEGER else value

    def number(self, name: str, default: float = 0.0) -> float:
        text = self._next(name)
        if text == "":
            return default
        if text == "Infinite":
            return float("inf")
        return float(self._convert(name, float, text, "a number"))

    def decimal(self, name: str) -> Decimal | None:
        """A price or quantity; empty (the clients' rendering of UNSET) is None."""
        text = self._next(name)
        if text == "":
            return None
        value = self._convert(name, Decimal, text, "a number")
        if not value.is_finite() or value >= Decimal("1e300"):
            return None
        return Decimal(value)

    def flag(self, name: str) -> bool:
        text = self._next(name)
        if text == "":
            return False
        return bool(self._convert(name, int, text, "0 or 1"))

    def skip(self, *names: str) -> None:
        for name in names:
            self._next(name)

    @property
    def remaining(self) -> int:
        return len(self._fields) - self._pos


@dataclass(frozen=True)
class ContractRef:
    """The 12 contract fields the clients send."""

    con_id: int
    symbol: str
    sec_type: str
    last_trade_date: str
    strike: str
    right: str
    multiplier: str
    exchange: str
    primary_exchange: str
    currency: str
    local_symbol: str
    trading_class: str


def read_contract(f: Fields) -> ContractRef:
    return ContractRef(
        con_id=f.integer("conId"),
        symbol=f.text("symbol"),
        sec_type=f.text("secType"),
        last_trade_date=f.text("lastTradeDateOrContractMonth"),
        strike=f.text("strike"),
        right=f.text("right"),
        multiplier=f.text("multiplier"),
        exchange=f.text("exchange"),
        primary_exchange=f.text("primaryExchange"),
        currency=f.text("currency"),
        local_symbol=f.text("localSymbol"),
        trading_class=f.text("tradingClass"),
    )


@dataclass(frozen=True)
class ConditionSpec:
    """One order condition as sent. Price conditions carry is_more/price/con_id/exchange/trigger_method."""

    cond_type: int
    conjunction: str
    is_more: bool = True
    price: Decimal | None = None
    con_id: int = 0
    exchange: str = ""
    trigger_method: int = 0
    raw: tuple[str, ...] = ()


# Fields after condType and conjunction, per condition type (ib_insync order.py dataclasses).
_CONDITION_FIELDS = {1: 5, 3: 2, 4: 2, 5: 3, 6: 4, 7: 4}


def read_condition(f: Fields, index: int) -> ConditionSpec:
    cond_type = f.integer(f"conditions[{index}].condType")
    if cond_type not in _CONDITION_FIELDS:
        raise RequestError(f"{f.message}: condition {index} has unknown condType {cond_type}")
    conjunction = f.text(f"conditions[{index}].conjunction")
    if cond_type == 1:
        return ConditionSpec(
            cond_type=1,
            conjunction=conjunction,
            is_more=f.flag(f"conditions[{index}].isMore"),
            price=f.decimal(f"conditions[{index}].price"),
            con_id=f.integer(f"conditions[{index}].conId"),
            exchange=f.text(f"conditions[{index}].exch"),
            trigger_method=f.integer(f"conditions[{index}].triggerMethod"),
        )
    raw = tuple(f.text(f"conditions[{index}].field{i}") for i in range(_CONDITION_FIELDS[cond_type]))
    return ConditionSpec(cond_type=cond_type, conjunction=conjunction, raw=raw)


@dataclass(frozen=True)
class OrderTicket:
    """A parsed placeOrder: the fields the broker acts on or echoes back (the rest are read and checked only)."""

    order_id: int
    contract: ContractRef
    action: str
    total_quantity: Decimal | None
    order_type: str
    lmt_price: Decimal | None
    aux_price: Decimal | None
    tif: str
    oca_group: str
    account: str
    open_close: str
    origin: int
    order_ref: str
    transmit: bool
    parent_id: int
    outside_rth: bool
    hidden: bool
    good_after_time: str
    good_till_date: str
    what_if: bool
    algo_strategy: str
    conditions: tuple[ConditionSpec, ...] = field(default=())
    conditions_ignore_rth: bool = False
    conditions_cancel_order: bool = False
    sec_type_is_bag: bool = False


def parse_place_order(fields: list[str], server_version: int) -> OrderTicket:
    """Parse placeOrder (id 3) at ``server_version``: the layout of ib_insync/ib_async ``Client.placeOrder``."""
    f = Fields(fields, "placeOrder")
    order_id = f.integer("orderId")
    try:
        return _parse_place_order_body(f, order_id, server_version)
    except RequestError as e:
        raise RequestError(str(e), req_id=order_id) from None


def _parse_place_order_body(f: Fields, order_id: int, sv: int) -> OrderTicket:
    contract = read_contract(f)
    f.skip("secIdType", "secId")
    action = f.text("action")
    total_quantity = f.decimal("totalQuantity")
    order_type = f.text("orderType")
    lmt_price = f.decimal("lmtPrice")
    aux_price = f.decimal("auxPrice")
    tif = f.text("tif")
    oca_group = f.text("ocaGroup")
    account = f.text("account")
    open_close = f.text("openClose")
    origin = f.integer("origin")
    order_ref = f.text("orderRef")
    transmit = f.flag("transmit")
    parent_id = f.integer("parentId")
    f.skip("blockOrder", "sweepToFill", "displaySize", "triggerMethod")
    outside_rth = f.flag("outsideRth")
    hidden = f.flag("hidden")
    is_bag = contract.sec_type.upper() == "BAG"
    if is_bag:
        for i in range(f.integer("comboLegs.count")):
            f.skip(*(f"comboLegs[{i}].{n}" for n in ("conId", "ratio", "action", "exchange", "openClose",
                                                       "shortSaleSlot", "designatedLocation", "exemptCode")))
        for i in range(f.integer("orderComboLegs.count")):
            f.skip(f"orderComboLegs[{i}].price")
        for i in range(f.integer("smartComboRoutingParams.count")):
            f.skip(f"smartComboRoutingParams[{i}].tag", f"smartComboRoutingParams[{i}].value")
    f.skip("sharesAllocation", "discretionaryAmt")
    good_after_time = f.text("goodAfterTime")
    good_till_date = f.text("goodTillDate")
    f.skip("faGroup", "faMethod", "faPercentage")
    if sv < 177:
        f.skip("faProfile")
    f.skip("modelCode", "shortSaleSlot", "designatedLocation", "exemptCode", "ocaType", "rule80A",
           "settlingFirm", "allOrNone", "minQty", "percentOffset", "eTradeOnly", "firmQuoteOnly",
           "nbboPriceCap", "auctionStrategy", "startingPrice", "stockRefPrice", "delta", "stockRangeLower",
           "stockRangeUpper", "overridePercentageConstraints", "volatility", "volatilityType")
    delta_neutral_order_type = f.text("deltaNeutralOrderType")
    f.skip("deltaNeutralAuxPrice")
    if delta_neutral_order_type:
        # Orders rebuilt from TWS after a reconnect carry 'None' here, which the clients send as truthy.
        f.skip("deltaNeutralConId", "deltaNeutralSettlingFirm", "deltaNeutralClearingAccount",
               "deltaNeutralClearingIntent", "deltaNeutralOpenClose", "deltaNeutralShortSale",
               "deltaNeutralShortSaleSlot", "deltaNeutralDesignatedLocation")
    f.skip("continuousUpdate", "referencePriceType", "trailStopPrice", "trailingPercent",
           "scaleInitLevelSize", "scaleSubsLevelSize")
    scale_price_increment = f.number("scalePriceIncrement", default=0.0)
    if 0 < scale_price_increment < 1e300:
        f.skip("scalePriceAdjustValue", "scalePriceAdjustInterval", "scaleProfitOffset", "scaleAutoReset",
               "scaleInitPosition", "scaleInitFillQty", "scaleRandomPercent")
    f.skip("scaleTable", "activeStartTime", "activeStopTime")
    if f.text("hedgeType"):
        f.skip("hedgeParam")
    f.skip("optOutSmartRouting", "clearingAccount", "clearingIntent", "notHeld")
    if f.flag("deltaNeutralContract.present"):
        f.skip("deltaNeutralContract.conId", "deltaNeutralContract.delta", "deltaNeutralContract.price")
    algo_strategy = f.text("algoStrategy")
    if algo_strategy:
        for i in range(f.integer("algoParams.count")):
            f.skip(f"algoParams[{i}].tag", f"algoParams[{i}].value")
    f.skip("algoId")
    what_if = f.flag("whatIf")
    f.skip("orderMiscOptions", "solicited", "randomizeSize", "randomizePrice")
    if order_type == "PEG BENCH":
        f.skip("referenceContractId", "isPeggedChangeAmountDecrease", "peggedChangeAmount",
               "referenceChangeAmount", "referenceExchangeId")
    conditions: list[ConditionSpec] = []
    ignore_rth = cancel_order = False
    n_conditions = f.integer("conditions.count")
    if n_conditions < 0:
        raise RequestError(f"placeOrder: field 'conditions.count' must not be negative, was {n_conditions}")
    for i in range(n_conditions):
        conditions.append(read_condition(f, i))
    if n_conditions:
        ignore_rth = f.flag("conditionsIgnoreRth")
        cancel_order = f.flag("conditionsCancelOrder")
    f.skip("adjustedOrderType", "triggerPrice", "lmtPriceOffset", "adjustedStopPrice", "adjustedStopLimitPrice",
           "adjustedTrailingAmount", "adjustableTrailingUnit", "extOperator", "softDollarTier.name",
           "softDollarTier.val", "cashQty", "mifid2DecisionMaker", "mifid2DecisionAlgo", "mifid2ExecutionTrader",
           "mifid2ExecutionAlgo", "dontUseAutoPriceForHedge", "isOmsContainer", "discretionaryUpToLimitPrice",
           "usePriceMgmtAlgo")
    for version, name in ((158, "duration"), (160, "postToAts"), (162, "autoCancelParent"),
                          (166, "advancedErrorOverride"), (169, "manualOrderTime")):
        if sv >= version:
            f.skip(name)
    if sv >= 170:
        if contract.exchange == "IBKRATS":
            f.skip("minTradeQty")
        if order_type == "PEG BEST":
            f.skip("minCompeteSize")
            if f.number("competeAgainstBestOffset") == float("inf"):
                f.skip("midOffsetAtWhole", "midOffsetAtHalf")
        elif order_type == "PEG MID":
            f.skip("midOffsetAtWhole", "midOffsetAtHalf")
    if f.remaining:
        raise RequestError(f"placeOrder: {f.remaining} unexpected trailing field(s) at server version {sv}")
    return OrderTicket(
        order_id=order_id,
        contract=contract,
        action=action,
        total_quantity=total_quantity,
        order_type=order_type,
        lmt_price=lmt_price,
        aux_price=aux_price,
        tif=tif,
        oca_group=oca_group,
        account=account,
        open_close=open_close,
        origin=origin,
        order_ref=order_ref,
        transmit=transmit,
        parent_id=parent_id,
        outside_rth=outside_rth,
        hidden=hidden,
        good_after_time=good_after_time,
        good_till_date=good_till_date,
        what_if=what_if,
        algo_strategy=algo_strategy,
        conditions=tuple(conditions),
        conditions_ignore_rth=ignore_rth,
        conditions_cancel_order=cancel_order,
        sec_type_is_bag=is_bag,
    )


# --- the smaller requests -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MktDataRequest:
    req_id: int
    contract: ContractRef
    generic_ticks: str
    snapshot: bool
    regulatory_snapshot: bool


def parse_req_mkt_data(fields: list[str]) -> MktDataRequest:
    f = Fields(fields, "reqMktData")
    f.skip("version")
    req_id = f.integer("reqId")
    try:
        contract = read_contract(f)
        if contract.sec_type.upper() == "BAG":
            for i in range(f.integer("comboLegs.count")):
                f.skip(*(f"comboLegs[{i}].{n}" for n in ("conId", "ratio", "action", "exchange")))
        if f.flag("deltaNeutralContract.present"):
            f.skip("deltaNeutralContract.conId", "deltaNeutralContract.delta", "deltaNeutralContract.price")
        generic = f.text("genericTickList")
        snapshot = f.flag("snapshot")
        regulatory = f.flag("regulatorySnapshot")
    except RequestError as e:
        raise RequestError(str(e), req_id=req_id) from None
    return MktDataRequest(req_id, contract, generic, snapshot, regulatory)


@dataclass(frozen=True)
class ContractDetailsRequest:
    req_id: int
    contract: ContractRef


def parse_req_contract_details(fields: list[str]) -> ContractDetailsRequest:
    f = Fields(fields, "reqContractDetails")
    f.skip("version")
    req_id = f.integer("reqId")
    try:
        contract = read_contract(f)
    except RequestError as e:
        raise RequestError(str(e), req_id=req_id) from None
    return ContractDetailsRequest(req_id, contract)


@dataclass(frozen=True)
class ExecutionFilter:
    req_id: int
    client_id: int
    account: str
    time: str
    symbol: str
    sec_type: str
    exchange: str
    side: str


def parse_req_executions(fields: list[str]) -> ExecutionFilter:
    f = Fields(fields, "reqExecutions")
    f.skip("version")
    req_id = f.integer("reqId")
    try:
        return ExecutionFilter(
            req_id=req_id,
            client_id=f.integer("clientId"),
            account=f.text("acctCode"),
            time=f.text("time"),
            symbol=f.text("symbol"),
            sec_type=f.text("secType"),
            exchange=f.text("exchange"),
            side=f.text("side"),
        )
    except RequestError as e:
        raise RequestError(str(e), req_id=req_id) from None


def read_simple(fields: list[str], name: str, *spec: tuple[str, str]) -> dict[str, Any]:
    """Parse a short request: ``spec`` is (field name, kind) pairs after the message id; kinds int/str/bool."""
    f = Fields(fields, name)
    out: dict[str, Any] = {}
    for field_name, kind in spec:
        if kind == "int":
            out[field_name] = f.integer(field_name)
        elif kind == "bool":
            out[field_name] = f.flag(field_name)
        elif kind == "skip":
            f.skip(field_name)
        else:
            out[field_name] = f.text(field_name)
    return out
