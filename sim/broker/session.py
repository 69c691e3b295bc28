"""One client connection: the handshake, startApi, and the answers to every request the clients send.

The connection owns its subscriptions (market data, positions, account updates); orders belong to the broker and
outlive the connection. A request that fails is answered with an error and the connection carries on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from core import sessions
from core.matching import fixed_commission
from sim.broker import contracts, encode, requests
from sim.broker.orders import BrokerOrder
from sim.broker.requests import RequestError
from sim.broker.wire import FrameReader, ProtocolError, handshake_reply, parse_version_range, split_fields
from sim.broker.wire import encode as frame

if TYPE_CHECKING:
    from sim.broker.server import PaperBroker

log = logging.getLogger("sim.broker.session")

MAX_SERVER_VERSION = 176
MIN_SERVER_VERSION = 157
# How long a fresh connection may take to finish the handshake and startApi.
HANDSHAKE_TIMEOUT = 10.0
# Unsent bytes to one client beyond which it is considered dead and closed.
MAX_UNSENT_BYTES = 16 * 1024 * 1024

FARM_STATUS = (
    (2104, "Market data farm connection is OK:usfarm"),
    (2106, "HMDS data farm connection is OK:ushmds"),
    (2158, "Sec-def data farm connection is OK:secdefnj"),
)
CLIENT_ID_IN_USE = (326, "Unable to connect as the client id is already in use. Retry with a unique client id.")

# Market data types (reqMarketDataType): 1 live, 2 frozen, 3 delayed, 4 delayed-frozen.
DELAYED_TYPES = (3, 4)


class ClientSession:
    """A TWS API connection from one client."""

    def __init__(self, broker: PaperBroker, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.broker = broker
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.client_id: int | None = None
        self.server_version = MAX_SERVER_VERSION
        self.market_data_type = 1
        self.mkt_data: dict[int, int] = {}  # reqId -> market data type it was opened with
        self.positions_subscribed = False
        self.account_updates_subscribed = False
        self.multi_subscriptions: dict[int, str] = {}  # reqId -> modelCode
        self.connected_ns = broker.clock.now_ns()
        self._frames = FrameReader()
        self._closed = False
        self._dispatch = self._handlers()

    # --- plumbing ------------------------------------------------------------------------------------------------

    def send(self, fields: list[object]) -> None:
        if self._closed or self.writer.is_closing():
            return
        self.writer.write(frame(fields))
        if self.writer.transport.get_write_buffer_size() > MAX_UNSENT_BYTES:
            # A client that stopped reading would make the broker buffer without end; TWS drops such clients too.
            log.warning("client %s (%s) is not reading (%d bytes unsent); closing", self.client_id, self.peer,
                        self.writer.transport.get_write_buffer_size())
            self.close()

    def error(self, req_id: int, code: int, text: str) -> None:
        self.send(encode.error(req_id, code, text, self.server_version))

    def close(self) -> None:
        self._closed = True
        if not self.writer.is_closing():
            self.writer.close()

    async def _read_payloads(self) -> list[bytes]:
        data = await self.reader.read(65536)
        if not data:
            raise ConnectionResetError("peer closed the connection")
        return self._frames.feed(data)

    async def run(self) -> None:
        """Serve the connection until either side closes it."""
        try:
            pending = await asyncio.wait_for(self._handshake(), HANDSHAKE_TIMEOUT)
            if pending is None:
                return
            for payload in pending:
                self._handle(payload)
            while not self._closed:
                for payload in await self._read_payloads():
                    self._handle(payload)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, OSError) as e:
            log.info("client %s (%s) disconnected: %s", self.client_id, self.peer, e or type(e).__name__)
        except ProtocolError as e:
            log.warning("client %s (%s) broke the protocol, closing: %s", self.client_id, self.peer, e)
        finally:
            self.close()
            self.broker.session_closed(self)

    async def _handshake(self) -> list[bytes] | None:
        """Greeting, version negotiation and startApi; return payloads that arrived behind startApi."""
        payloads: list[bytes] = []
        while not payloads:
            payloads = await self._read_payloads()
        low, high = parse_version_range(payloads.pop(0).decode(errors="replace"))
        if high < MIN_SERVER_VERSION or low > MAX_SERVER_VERSION:
            log.warning("client %s offers API versions %d..%d; this broker speaks %d..%d; closing",
                        self.peer, low, high, MIN_SERVER_VERSION, MAX_SERVER_VERSION)
            self.close()
            return None
        self.server_version = min(MAX_SERVER_VERSION, high)
        now = datetime.fromtimestamp(self.broker.clock.now_ns() / 1e9, tz=sessions.EASTERN)
        self.writer.write(handshake_reply(self.server_version, now.strftime("%Y%m%d %H:%M:%S %Z")))
        while not payloads:
            payloads = await self._read_payloads()
        fields = split_fields(payloads.pop(0))
        if not fields or fields[0] != str(requests.START_API):
            raise ProtocolError(f"expected startApi (71) after the handshake, got {fields[:3]}")
        try:
            client_id = int(fields[2])
        except (IndexError, ValueError):
            raise ProtocolError(f"startApi without a valid clientId: {fields}") from None
        self.broker.log_request(client_id, "startApi", fields[1:])
        if not self.broker.claim_client_id(client_id, self):
            log.warning("client %s: clientId %d is already in use; refusing", self.peer, client_id)
            self.error(-1, *CLIENT_ID_IN_USE)
            await asyncio.sleep(0)
            self.close()
            return None
        self.client_id = client_id
        log.info("client %d connected from %s at server version %d", client_id, self.peer, self.server_version)
        self.send(encode.managed_accounts(self.broker.account_id))
        self.send(encode.next_valid_id(self.broker.engine.next_valid_id(client_id)))
        for code, text in FARM_STATUS:
            self.error(-1, code, text)
        # A real TWS pushes the client's open orders right after the API starts.
        for order in self.broker.engine.open_orders(client_id):
            self._send_order(order)
        return payloads

    def _handle(self, payload: bytes) -> None:
        fields = split_fields(payload)
        try:
            msg_id = int(fields[0])
        except (IndexError, ValueError):
            self.error(-1, 321, f"Error validating request:-'{fields[:1]}' : cause - not a message id")
            return
        name = requests.NAMES.get(msg_id, f"message {msg_id}")
        assert self.client_id is not None
        self.broker.log_request(self.client_id, name, fields[1:])
        handler = self._dispatch.get(msg_id)
        if handler is None:
            log.info("client %d sent %s, which the paper broker does not serve", self.client_id, name)
            self.error(-1, 321, f"Error validating request:-'{msg_id}' : cause - the paper broker does not "
                                f"support {name}")
            return
        try:
            handler(fields)
        except RequestError as e:
            log.warning("client %d: bad %s: %s", self.client_id, name, e)
            self.error(e.req_id, 321, f"Error validating request:-'{msg_id}' : cause - {e}")
        except Exception as e:  # a server never dies on one bad message
            log.exception("client %d: %s failed", self.client_id, name)
            self.error(-1, 321, f"Error validating request:-'{msg_id}' : cause - {type(e).__name__}: {e}")

    def _handlers(self) -> dict[int, Callable[[list[str]], None]]:
        return {
            requests.PLACE_ORDER: self._place_order,
            requests.CANCEL_ORDER: self._cancel_order,
            requests.REQ_OPEN_ORDERS: self._req_open_orders,
            requests.REQ_ALL_OPEN_ORDERS: self._req_all_open_orders,
            requests.REQ_AUTO_OPEN_ORDERS: lambda f: None,
            requests.REQ_COMPLETED_ORDERS: self._req_completed_orders,
            requests.REQ_EXECUTIONS: self._req_executions,
            requests.REQ_POSITIONS: self._req_positions,
            requests.CANCEL_POSITIONS: self._cancel_positions,
            requests.REQ_ACCOUNT_UPDATES: self._req_account_updates,
            requests.REQ_ACCOUNT_UPDATES_MULTI: self._req_account_updates_multi,
            requests.CANCEL_ACCOUNT_UPDATES_MULTI: self._cancel_account_updates_multi,
            requests.REQ_ACCOUNT_SUMMARY: self._req_account_summary,
            requests.CANCEL_ACCOUNT_SUMMARY: lambda f: None,
            requests.REQ_CONTRACT_DETAILS: self._req_contract_details,
            requests.REQ_MKT_DATA: self._req_mkt_data,
            requests.CANCEL_MKT_DATA: self._cancel_mkt_data,
            requests.REQ_MARKET_DATA_TYPE: self._req_market_data_type,
            requests.REQ_CURRENT_TIME: self._req_current_time,
            requests.REQ_IDS: self._req_ids,
            requests.REQ_MANAGED_ACCTS: lambda f: self.send(encode.managed_accounts(self.broker.account_id)),
            requests.REQ_GLOBAL_CANCEL: self._req_global_cancel,
            requests.START_API: self._start_api_again,
        }

    # --- orders --------------------------------------------------------------------------------------------------

    def _send_order(self, order: BrokerOrder) -> None:
        self.send(encode.open_order(order, contracts.TQQQ, order.status, self.server_version))
        self.send(encode.order_status(order))

    def _place_order(self, fields: list[str]) -> None:
        assert self.client_id is not None
        ticket = requests.parse_place_order(fields, self.server_version)
        if ticket.what_if:
            self._answer_what_if(ticket)
            return
        self.broker.place_order(self.client_id, ticket)

    def _answer_what_if(self, ticket: requests.OrderTicket) -> None:
        """A whatIf order is never placed: answer with its margin impact (no margin model: the cash it needs)."""
        price = ticket.lmt_price or self.broker.engine.mark() or Decimal(0)
        qty = int(ticket.total_quantity or 0)
        order = BrokerOrder(
            perm_id=0, client_id=self.client_id or 0, order_id=ticket.order_id, account=self.broker.account_id,
            con_id=contracts.TQQQ.con_id, action=ticket.action, quantity=qty, order_type=ticket.order_type,
            limit=ticket.lmt_price, tif=ticket.tif or "DAY", outside_rth=ticket.outside_rth,
            order_ref=ticket.order_ref, placed_ns=self.broker.clock.now_ns(), seq=0,
        )
        equity = self.broker.engine.account.net_liquidation(self.broker.engine.mark())
        change = (price * qty).quantize(Decimal("0.01"))
        margins = [Decimal(0), Decimal(0), equity, change, change, Decimal(0), change, change, equity]
        commission = fixed_commission(qty, price * qty)
        self.send(encode.open_order(order, contracts.TQQQ, "PreSubmitted", self.server_version, commission,
                                    what_if_margins=margins))

    def _cancel_order(self, fields: list[str]) -> None:
        assert self.client_id is not None
        args = requests.read_simple(fields, "cancelOrder", ("version", "skip"), ("orderId", "int"))
        self.broker.cancel_order(self.client_id, args["orderId"])

    def _req_global_cancel(self, fields: list[str]) -> None:
        self.broker.global_cancel()

    def _req_open_orders(self, fields: list[str]) -> None:
        for order in self.broker.engine.open_orders(self.client_id):
            self._send_order(order)
        self.send(encode.open_order_end())

    def _req_all_open_orders(self, fields: list[str]) -> None:
        for order in self.broker.engine.open_orders():
            self._send_order(order)
        self.send(encode.open_order_end())

    def _req_completed_orders(self, fields: list[str]) -> None:
        since = self.broker.today_start_ns()
        for order in self.broker.engine.completed_orders(since):
            self.send(encode.completed_order(order, contracts.TQQQ, self.server_version))
        self.send(encode.completed_orders_end())

    def _req_executions(self, fields: list[str]) -> None:
        filt = requests.parse_req_executions(fields)
        for ex in self.broker.executions_matching(filt):
            self.send(encode.execution(filt.req_id, ex, contracts.TQQQ))
            self.send(encode.commission_report(ex))
        self.send(encode.execution_end(filt.req_id))

    # --- account -------------------------------------------------------------------------------------------------

    def send_positions(self) -> None:
        account = self.broker.engine.account
        self.send(encode.position(account, contracts.TQQQ))

    def _req_positions(self, fields: list[str]) -> None:
        self.positions_subscribed = True
        if self.broker.has_position_history():
            self.send_positions()
        self.send(encode.position_end())

    def _cancel_positions(self, fields: list[str]) -> None:
        self.positions_subscribed = False

    def send_account_updates(self) -> None:
        engine = self.broker.engine
        account, mark = engine.account, engine.mark()
        for key, value, currency in encode.account_values(account, mark):
            self.send(encode.account_value(key, value, currency, account.account_id))
        if self.broker.has_position_history():
            self.send(encode.portfolio(account, contracts.TQQQ, mark))
        self.send(encode.account_time(self.broker.clock.now_ns()))

    def _req_account_updates(self, fields: list[str]) -> None:
        args = requests.read_simple(fields, "reqAccountUpdates", ("version", "skip"), ("subscribe", "bool"),
                                    ("acctCode", "str"))
        self.account_updates_subscribed = args["subscribe"]
        if args["subscribe"]:
            self.send_account_updates()
            self.send(encode.account_download_end(self.broker.account_id))

    def send_account_multi(self, req_id: int, model: str) -> None:
        engine = self.broker.engine
        for key, value, currency in encode.account_values(engine.account, engine.mark()):
            self.send(encode.account_update_multi(req_id, self.broker.account_id, model, key, value, currency))

    def _req_account_updates_multi(self, fields: list[str]) -> None:
        args = requests.read_simple(fields, "reqAccountUpdatesMulti", ("version", "skip"), ("reqId", "int"),
                                    ("account", "str"), ("modelCode", "str"), ("ledgerAndNLV", "bool"))
        self.multi_subscriptions[args["reqId"]] = args["modelCode"]
        self.send_account_multi(args["reqId"], args["modelCode"])
        self.send(encode.account_update_multi_end(args["reqId"]))

    def _cancel_account_updates_multi(self, fields: list[str]) -> None:
        args = requests.read_simple(fields, "cancelAccountUpdatesMulti", ("version", "skip"), ("reqId", "int"))
        self.multi_subscriptions.pop(args["reqId"], None)

    def _req_account_summary(self, fields: list[str]) -> None:
        args = requests.read_simple(fields, "reqAccountSummary", ("version", "skip"), ("reqId", "int"),
                                    ("group", "str"), ("tags", "str"))
        wanted = {t.strip() for t in args["tags"].split(",") if t.strip()}
        engine = self.broker.engine
        for key, value, currency in encode.account_values(engine.account, engine.mark()):
            if key in wanted:
                self.send(encode.account_summary(args["reqId"], self.broker.account_id, key, value, currency))
        self.send(encode.account_summary_end(args["reqId"]))

    # --- contracts, market data, misc ----------------------------------------------------------------------------

    def _req_contract_details(self, fields: list[str]) -> None:
        req = requests.parse_req_contract_details(fields)
        c = req.contract
        inst = contracts.lookup(c.con_id, c.symbol, c.sec_type, c.currency)
        if inst is None:
            self.error(req.req_id, 200, "No security definition has been found for the request")
            return
        self.send(encode.contract_details(req.req_id, inst, self.server_version, self.broker.clock.now_ns()))
        self.send(encode.contract_details_end(req.req_id))

    def _req_market_data_type(self, fields: list[str]) -> None:
        args = requests.read_simple(fields, "reqMarketDataType", ("version", "skip"), ("type", "int"))
        if args["type"] not in (1, 2, 3, 4):
            raise RequestError(f"reqMarketDataType: type must be 1, 2, 3 or 4, was {args['type']}")
        self.market_data_type = args["type"]

    def _req_mkt_data(self, fields: list[str]) -> None:
        req = requests.parse_req_mkt_data(fields)
        c = req.contract
        inst = contracts.lookup(c.con_id, c.symbol, c.sec_type, c.currency)
        if inst is None:
            self.error(req.req_id, 200, "No security definition has been found for the request")
            return
        data_type = 3 if self.market_data_type in DELAYED_TYPES else 1
        self.send(encode.tick_req_params(req.req_id, inst))
        self.send(encode.market_data_type(req.req_id, data_type))
        last = self.broker.engine.last
        if last is not None:
            self._send_print(req.req_id, data_type, last.price, last.size)
        if req.snapshot or req.regulatory_snapshot:
            self.send(encode.tick_snapshot_end(req.req_id))
        else:
            self.mkt_data[req.req_id] = data_type

    def _cancel_mkt_data(self, fields: list[str]) -> None:
        args = requests.read_simple(fields, "cancelMktData", ("version", "skip"), ("reqId", "int"))
        self.mkt_data.pop(args["reqId"], None)

    def _send_print(self, req_id: int, data_type: int, price: Decimal, size: int) -> None:
        delayed = data_type in DELAYED_TYPES
        self.send(encode.tick_price(req_id, encode.TICK_DELAYED_LAST if delayed else encode.TICK_LAST, price, size))
        self.send(encode.tick_size(req_id, encode.TICK_DELAYED_LAST_SIZE if delayed else encode.TICK_LAST_SIZE,
                                   size))

    def send_print(self, price: Decimal, size: int) -> None:
        for req_id, data_type in self.mkt_data.items():
            self._send_print(req_id, data_type, price, size)

    def _req_current_time(self, fields: list[str]) -> None:
        self.send(encode.current_time(self.broker.clock.now_ns()))

    def _req_ids(self, fields: list[str]) -> None:
        assert self.client_id is not None
        self.send(encode.next_valid_id(self.broker.engine.next_valid_id(self.client_id)))

    def _start_api_again(self, fields: list[str]) -> None:
        raise RequestError("startApi: the API is already started on this connection")
