"""The instruments the paper broker knows: TQQQ only, with the values a real TWS reports for it."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class Instrument:
    con_id: int
    symbol: str
    sec_type: str
    exchange: str
    primary_exchange: str
    currency: str
    local_symbol: str
    trading_class: str
    min_tick: Decimal
    long_name: str
    stock_type: str
    valid_exchanges: str
    order_types: str
    time_zone_id: str


TQQQ = Instrument(
    con_id=72539702,
    symbol="TQQQ",
    sec_type="STK",
    exchange="SMART",
    primary_exchange="NASDAQ",
    currency="USD",
    local_symbol="TQQQ",
    trading_class="NMS",
    min_tick=Decimal("0.01"),
    long_name="PROSHARES ULTRAPRO QQQ",
    stock_type="ETF",
    valid_exchanges="SMART,AMEX,NYSE,CBOE,PHLX,ISE,CHX,ARCA,ISLAND,DRCTEDGE,BEX,BATS,EDGEA,BYX,IEX,LTSE,NASDAQ",
    order_types="ACTIVETIM,AD,ADJUST,ALERT,ALGO,ALLOC,AVGCOST,BASKET,COND,CONDORDER,DAY,DEACT,GAT,GTC,GTD,LMT,MKT,"
    "NONALGO,OCA,SCALE,WHATIF",
    time_zone_id="US/Eastern",
)

INSTRUMENTS = (TQQQ,)
# Exchanges a TQQQ order or condition may name.
KNOWN_EXCHANGES = frozenset({"SMART", "NASDAQ", "ISLAND", ""})


def lookup(con_id: int, symbol: str = "", sec_type: str = "", currency: str = "") -> Instrument | None:
    """Find an instrument by conId (when non-zero) or else by symbol, secType and currency (blank = any)."""
    for inst in INSTRUMENTS:
        if con_id:
            if con_id == inst.con_id and (not symbol or symbol.upper() == inst.symbol):
                return inst
            continue
        if (
            symbol.upper() == inst.symbol
            and sec_type.upper() in ("", inst.sec_type)
            and currency.upper() in ("", inst.currency)
        ):
            return inst
    return None


def by_con_id(con_id: int) -> Instrument | None:
    return next((inst for inst in INSTRUMENTS if inst.con_id == con_id), None)
