"""Server -> client messages, field by field, at the negotiated server version (157-176).

Each function returns the message's fields (message id first) for :func:`sim.broker.wire.encode`. Layouts follow
../shared/docs/tws-protocol.md and tws-openorder-176.txt; the clients' decoder.py is the judge, and the golden tests
decode every message built here with both ib_insync's and ib_async's decoders.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from core import sessions
from sim.broker.account import Account
from sim.broker.contracts import Instrument
from sim.broker.orders import BrokerOrder, Execution
from sim.broker.wire import UNSET_DOUBLE, UNSET_INTEGER, decimal_text

Fields = list[object]

# Server -> client message ids.
TICK_PRICE = 1
TICK_SIZE = 2
ORDER_STATUS = 3
ERR_MSG = 4
OPEN_ORDER = 5
ACCT_VALUE = 6
PORTFOLIO_VALUE = 7
ACCT_UPDATE_TIME = 8
NEXT_VALID_ID = 9
CONTRACT_DATA = 10
EXECUTION_DATA = 11
MANAGED_ACCTS = 15
CURRENT_TIME = 49
CONTRACT_DATA_END = 52
OPEN_ORDER_END = 53
ACCT_DOWNLOAD_END = 54
EXECUTION_DATA_END = 55
TICK_SNAPSHOT_END = 57
MARKET_DATA_TYPE = 58
COMMISSION_REPORT = 59
POSITION_DATA = 61
POSITION_END = 62
ACCOUNT_SUMMARY = 63
ACCOUNT_SUMMARY_END = 64
ACCOUNT_UPDATE_MULTI = 73
ACCOUNT_UPDATE_MULTI_END = 74
TICK_REQ_PARAMS = 81
COMPLETED_ORDER = 101
COMPLETED_ORDERS_END = 102

# Tick types (TWS API "Tick Types"): live and their delayed counterparts.
TICK_LAST = 4
TICK_LAST_SIZE = 5
TICK_DELAYED_LAST = 68
TICK_DELAYED_LAST_SIZE = 71


def ib_time(ts_ns: int) -> str:
    """A timestamp as ``YYYYmmdd HH:MM:SS UTC``: explicit zone, so the clients never guess local time."""
    return datetime.fromtimestamp(ts_ns / 1e9, tz=UTC).strftime("%Y%m%d %H:%M:%S UTC")


def eastern_time(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, tz=sessions.EASTERN).strftime("%Y%m%d %H:%M:%S US/Eastern")


def _contract_11(inst: Instrument, exchange: str) -> Fields:
    """conId, symbol, secType, lastTradeDate, strike, right, multiplier, exchange, currency, localSymbol, class."""
    return [inst.con_id, inst.symbol, inst.sec_type, "", "0.0", "", "", exchange, inst.currency,
            inst.local_symbol, inst.trading_class]


# --- session and small replies ---------------------------------------------------------------------------------


def next_valid_id(order_id: int) -> Fields:
    return [NEXT_VALID_ID, 1, order_id]


def managed_accounts(accounts: str) -> Fields:
    return [MANAGED_ACCTS, 1, accounts]


def error(req_id: int, code: int, text: str, sv: int, reject_json: str = "") -> Fields:
    fields: Fields = [ERR_MSG, 2, req_id, code, text]
    if sv >= 166:
        fields.append(reject_json)
    return fields


def current_time(ts_ns: int) -> Fields:
    return [CURRENT_TIME, 1, ts_ns // 1_000_000_000]


def open_order_end() -> Fields:
    return [OPEN_ORDER_END, 1]


def execution_end(req_id: int) -> Fields:
    return [EXECUTION_DATA_END, 1, req_id]


def completed_orders_end() -> Fields:
    return [COMPLETED_ORDERS_END]


def position_end() -> Fields:
    return [POSITION_END, 1]


def contract_details_end(req_id: int) -> Fields:
    return [CONTRACT_DATA_END, 1, req_id]


# --- orders --------------------------------------------------------------------------------------------------


def _conditions(order: BrokerOrder) -> Fields:
    fields: Fields = [len(order.conditions)]
    for c in order.conditions:
        fields += [1, c.conjunction, c.is_more, c.price, c.con_id, c.exchange, c.trigger_method]
    if order.conditions:
        fields += [order.conditions_ignore_rth, order.conditions_cancel_order]
    return fields


def open_order(
    order: BrokerOrder,
    inst: Instrument,
    status: str,
    sv: int,
    commission: Decimal | None = None,
    what_if_margins: list[Decimal] | None = None,
) -> Fields:
    """openOrder (id 5): the whole order and its state.

    ``commission`` is set on the second openOrder of a fill. ``what_if_margins`` (the nine margin values) makes it
    the answer to a whatIf order: the clients recognise that by whatIf=1 and a set initMarginChange.
    """
    fields: Fields = [OPEN_ORDER, order.order_id, *_contract_11(inst, inst.exchange)]
    fields += [
        order.action, order.quantity, order.order_type, decimal_text(order.limit), UNSET_DOUBLE, order.tif,
        "", order.account, "O", 0, order.order_ref, order.client_id, order.perm_id, order.outside_rth,
        False,  # hidden
        "0",  # discretionaryAmt
        "",  # goodAfterTime
        "",  # sharesAllocation (ignored by the clients)
        "", "", "",  # faGroup, faMethod, faPercentage
    ]
    if sv < 177:
        fields.append("")  # faProfile
    fields += [
        "",  # modelCode
        "",  # goodTillDate
        "",  # rule80A
        UNSET_DOUBLE,  # percentOffset
        "",  # settlingFirm
        0,  # shortSaleSlot
        "",  # designatedLocation
        -1,  # exemptCode
        0,  # auctionStrategy
        UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE,  # startingPrice..stockRangeUpper
        UNSET_INTEGER,  # displaySize
        False, False, False,  # blockOrder, sweepToFill, allOrNone
        UNSET_INTEGER,  # minQty
        3,  # ocaType
        False, False,  # eTradeOnly, firmQuoteOnly
        UNSET_DOUBLE,  # nbboPriceCap
        0,  # parentId
        0,  # triggerMethod
        UNSET_DOUBLE,  # volatility
        0,  # volatilityType
        "",  # deltaNeutralOrderType (empty: no delta-neutral block follows)
        UNSET_DOUBLE,  # deltaNeutralAuxPrice
        False,  # continuousUpdate
        0,  # referencePriceType
        UNSET_DOUBLE, UNSET_DOUBLE,  # trailStopPrice, trailingPercent
        UNSET_DOUBLE, UNSET_INTEGER,  # basisPoints, basisPointsType
        "",  # comboLegsDescrip
        0, 0, 0,  # comboLegs, orderComboLegs, smartComboRoutingParams
        UNSET_INTEGER, UNSET_INTEGER, UNSET_DOUBLE,  # scaleInitLevelSize, scaleSubsLevelSize, scalePriceIncrement
        "",  # hedgeType
        False,  # optOutSmartRouting
        "", "",  # clearingAccount, clearingIntent
        False,  # notHeld
        False,  # deltaNeutralContract present
        "",  # algoStrategy
        False,  # solicited
        what_if_margins is not None,  # whatIf
        status,
        *(what_if_margins if what_if_margins is not None else [UNSET_DOUBLE] * 9),  # margins
        UNSET_DOUBLE if commission is None else commission,
        UNSET_DOUBLE, UNSET_DOUBLE,  # minCommission, maxCommission
        "USD" if commission is not None else "",
        "",  # warningText
        False, False,  # randomizeSize, randomizePrice
    ]
    fields += _conditions(order)
    fields += [
        "None",  # adjustedOrderType
        UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE,  # triggerPrice, trailStopPrice, lmtPriceOffset
        UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE,  # adjustedStopPrice, adjustedStopLimitPrice, adjustedTrailingAmount
        0,  # adjustableTrailingUnit
        "", "", "",  # softDollarTier name, val, displayName
        UNSET_DOUBLE,  # cashQty
        False, False, False, False,  # dontUseAutoPriceForHedge, isOmsContainer, discretionaryUpToLimitPrice, ...
    ]
    if sv >= 158:
        fields.append(UNSET_INTEGER)  # duration
    if sv >= 160:
        fields.append(UNSET_INTEGER)  # postToAts
    if sv >= 162:
        fields.append(False)  # autoCancelParent
    if sv >= 170:
        fields += [UNSET_INTEGER, UNSET_INTEGER, UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE]
    return fields


def order_status(order: BrokerOrder, status: str | None = None) -> Fields:
    """orderStatus (id 3, no version field since sv 131)."""
    return [
        ORDER_STATUS, order.order_id, status or order.status, order.filled, order.remaining,
        order.avg_fill_price.quantize(Decimal("0.00000001")) if order.filled else 0,
        order.perm_id, 0, order.last_fill_price if order.filled else 0, order.client_id, "", 0,
    ]


def execution(req_id: int, ex: Execution, inst: Instrument) -> Fields:
    """execDetails (id 11): exactly 31 fields at sv < 178 (ib_insync unpacks a fixed tuple)."""
    return [
        EXECUTION_DATA, req_id, ex.order_id, *_contract_11(inst, ex.exchange),
        ex.exec_id, ib_time(ex.ts_ns), ex.account, ex.exchange, ex.side, ex.shares, ex.price, ex.perm_id,
        ex.client_id, 0, ex.cum_qty, ex.avg_price, ex.order_ref, "", "", "", ex.liquidity,
    ]


def commission_report(ex: Execution) -> Fields:
    """commissionReport (id 59): exactly 8 fields; realized P&L UNSET when the execution opened a position."""
    realized = UNSET_DOUBLE if ex.realized_pnl is None else ex.realized_pnl.quantize(Decimal("0.01"))
    return [COMMISSION_REPORT, 1, ex.exec_id, ex.commission, "USD", realized, UNSET_DOUBLE, ""]


def completed_order(order: BrokerOrder, inst: Instrument, sv: int) -> Fields:
    """completedOrder (id 101): no version, no orderId, no clientId; only in reply to reqCompletedOrders."""
    fields: Fields = [COMPLETED_ORDER, *_contract_11(inst, inst.exchange)]
    fields += [
        order.action, order.quantity, order.order_type, decimal_text(order.limit), UNSET_DOUBLE, order.tif,
        "", order.account, "O", 0, order.order_ref, order.perm_id, order.outside_rth,
        False,  # hidden
        "0",  # discretionaryAmt
        "",  # goodAfterTime
        "", "", "",  # faGroup, faMethod, faPercentage
    ]
    if sv < 177:
        fields.append("")  # faProfile
    fields += [
        "", "", "",  # modelCode, goodTillDate, rule80A
        UNSET_DOUBLE,  # percentOffset
        "",  # settlingFirm
        0,  # shortSaleSlot
        "",  # designatedLocation
        -1,  # exemptCode
        UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE,  # startingPrice..stockRangeUpper
        UNSET_INTEGER,  # displaySize
        False, False,  # sweepToFill, allOrNone
        UNSET_INTEGER,  # minQty
        3,  # ocaType
        0,  # triggerMethod
        UNSET_DOUBLE, 0,  # volatility, volatilityType
        "", UNSET_DOUBLE,  # deltaNeutralOrderType, deltaNeutralAuxPrice
        False, 0,  # continuousUpdate, referencePriceType
        UNSET_DOUBLE, UNSET_DOUBLE,  # trailStopPrice, trailingPercent
        "",  # comboLegsDescrip
        0, 0, 0,  # comboLegs, orderComboLegs, smartComboRoutingParams
        UNSET_INTEGER, UNSET_INTEGER, UNSET_DOUBLE,  # scale
        "",  # hedgeType
        "", "",  # clearingAccount, clearingIntent
        False,  # notHeld
        False,  # deltaNeutralContract present
        "",  # algoStrategy
        False,  # solicited
        order.status,
        False, False,  # randomizeSize, randomizePrice
    ]
    fields += _conditions(order)
    fields += [
        UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE,  # trailStopPrice, lmtPriceOffset, cashQty
        False, False,  # dontUseAutoPriceForHedge, isOmsContainer
        "",  # autoCancelDate
        order.filled,  # filledQuantity
        0,  # refFuturesConId
        False,  # autoCancelParent
        "",  # shareholder
        False, False,  # imbalanceOnly, routeMarketableToBbo
        UNSET_INTEGER,  # parentPermId
        eastern_time(order.completed_ns or order.placed_ns),
        order.completed_status,
    ]
    if sv >= 170:
        fields += [UNSET_INTEGER, UNSET_INTEGER, UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE]
    return fields


# --- the account ---------------------------------------------------------------------------------------------


def position(account: Account, inst: Instrument) -> Fields:
    """position (id 61, version 3): exactly 16 fields."""
    return [POSITION_DATA, 3, account.account_id, *_contract_11(inst, ""), account.position, account.avg_cost]


def portfolio(account: Account, inst: Instrument, mark: Decimal | None) -> Fields:
    """updatePortfolio (id 7, version 8): exactly 20 fields; primaryExchange stands where exchange would."""
    price = mark if mark is not None else account.avg_cost
    return [
        PORTFOLIO_VALUE, 8, inst.con_id, inst.symbol, inst.sec_type, "", "0.0", "", "", inst.primary_exchange,
        inst.currency, inst.local_symbol, inst.trading_class, account.position, price,
        _cents(account.market_value(mark)), account.avg_cost, _cents(account.unrealized_pnl(mark)),
        _cents(account.realized_pnl), account.account_id,
    ]


def _cents(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"))


def account_values(account: Account, mark: Decimal | None) -> list[tuple[str, str, str]]:
    """(key, value, currency) as TWS reports them. No margin model: the account behaves as a cash account."""
    gross = abs(account.market_value(mark))
    net_liq = account.net_liquidation(mark)
    usd = [
        ("NetLiquidation", net_liq), ("TotalCashValue", account.cash), ("SettledCash", account.cash),
        ("CashBalance", account.cash), ("AccruedCash", Decimal(0)), ("BuyingPower", max(account.cash, Decimal(0))),
        ("AvailableFunds", account.cash), ("ExcessLiquidity", account.cash), ("EquityWithLoanValue", net_liq),
        ("GrossPositionValue", gross), ("InitMarginReq", Decimal(0)), ("MaintMarginReq", Decimal(0)),
        ("RealizedPnL", account.realized_pnl), ("UnrealizedPnL", account.unrealized_pnl(mark)),
    ]
    values = [("AccountCode", account.account_id, ""), ("AccountType", "INDIVIDUAL", ""),
              ("Currency", "USD", "USD")]
    values += [(key, str(_cents(value)), "USD") for key, value in usd]
    return values


def account_value(key: str, value: str, currency: str, account_id: str) -> Fields:
    return [ACCT_VALUE, 2, key, value, currency, account_id]


def account_time(ts_ns: int) -> Fields:
    return [ACCT_UPDATE_TIME, 1, datetime.fromtimestamp(ts_ns / 1e9, tz=sessions.EASTERN).strftime("%H:%M")]


def account_download_end(account_id: str) -> Fields:
    return [ACCT_DOWNLOAD_END, 1, account_id]


def account_summary(req_id: int, account_id: str, tag: str, value: str, currency: str) -> Fields:
    return [ACCOUNT_SUMMARY, 1, req_id, account_id, tag, value, currency]


def account_summary_end(req_id: int) -> Fields:
    return [ACCOUNT_SUMMARY_END, 1, req_id]


def account_update_multi(req_id: int, account_id: str, model: str, key: str, value: str, currency: str) -> Fields:
    return [ACCOUNT_UPDATE_MULTI, 1, req_id, account_id, model, key, value, currency]


def account_update_multi_end(req_id: int) -> Fields:
    return [ACCOUNT_UPDATE_MULTI_END, 1, req_id]


# --- contracts and market data -------------------------------------------------------------------------------


def _hours(start: date, days: int, liquid: bool) -> str:
    """TWS's tradingHours/liquidHours: ``YYYYMMDD:HHMM-YYYYMMDD:HHMM;...`` in the contract's zone, CLOSED days."""
    parts = []
    d = start
    for _ in range(days):
        day = sessions.trading_day(d)
        if day is None:
            parts.append(f"{d:%Y%m%d}:CLOSED")
        else:
            begin = day.regular_open_ns if liquid else day.pre_open_ns
            end = day.regular_close_ns if liquid else day.after_close_ns
            b = datetime.fromtimestamp(begin / 1e9, tz=sessions.EASTERN)
            e = datetime.fromtimestamp(end / 1e9, tz=sessions.EASTERN)
            parts.append(f"{b:%Y%m%d:%H%M}-{e:%Y%m%d:%H%M}")
        d += timedelta(days=1)
    return ";".join(parts)


def contract_details(req_id: int, inst: Instrument, sv: int, now_ns: int) -> Fields:
    """contractDetails (id 10). At sv >= 164 there is no version field and min/size increments close it."""
    today = sessions.eastern_date(now_ns)
    fields: Fields = [CONTRACT_DATA]
    if sv < 164:
        fields.append(8)
    fields += [
        req_id, inst.symbol, inst.sec_type, "", "0", "", inst.exchange, inst.currency, inst.local_symbol,
        inst.trading_class, inst.trading_class, inst.con_id, inst.min_tick,
    ]
    if sv < 164:
        fields.append(1)  # mdSizeMultiplier
    fields += [
        "", inst.order_types, inst.valid_exchanges, 1, 0, inst.long_name, inst.primary_exchange, "",
        "Financial", "Equity Fund", "Growth-Large Cap", inst.time_zone_id,
        _hours(today, 7, liquid=False), _hours(today, 7, liquid=True), "", "", 0,
        1,  # aggGroup
        "", "",  # underSymbol, underSecType
        "26",  # marketRuleIds
        "",  # realExpirationDate
        inst.stock_type,
    ]
    if sv == 163:
        fields.append("100")
    if sv >= 164:
        fields += ["1", "1", "100"]
    return fields


def tick_req_params(req_id: int, inst: Instrument) -> Fields:
    return [TICK_REQ_PARAMS, req_id, inst.min_tick, "9c0001", 3]


def market_data_type(req_id: int, data_type: int) -> Fields:
    return [MARKET_DATA_TYPE, 1, req_id, data_type]


def tick_price(req_id: int, tick_type: int, price: Decimal, size: int) -> Fields:
    """tickPrice (id 1, version 6): exactly 7 fields; attrMask 0."""
    return [TICK_PRICE, 6, req_id, tick_type, price, size, 0]


def tick_size(req_id: int, tick_type: int, size: int) -> Fields:
    return [TICK_SIZE, 6, req_id, tick_type, size]


def tick_snapshot_end(req_id: int) -> Fields:
    return [TICK_SNAPSHOT_END, 1, req_id]
