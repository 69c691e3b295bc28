"""PaperBroker: the TCP server that the unmodified ib_insync / ib_async connect to, around the order engine.

Runs on one asyncio loop. It accepts connections (one per clientId), routes the engine's events to the owning
client as TWS message sequences, feeds market prints to the engine and to market-data subscribers, persists the
state after every change, and offers the control operations used by tests, the demo and fault drills.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from core import sessions
from core.matching import round_cent
from sim.broker import contracts, encode
from sim.broker.account import Account
from sim.broker.engine import Engine
from sim.broker.orders import (
    BrokerOrder,
    ClientError,
    Event,
    Execution,
    OrderAcknowledged,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderWarning,
    PortfolioChanged,
)
from sim.broker.requests import ExecutionFilter, OrderTicket
from sim.broker.session import ClientSession
from sim.broker.store import Store, restore, snapshot
from sim.clock import SimClock

log = logging.getLogger("sim.broker")

CONNECTIVITY = {
    1100: "Connectivity between IB and Trader Workstation has been lost.",
    1101: "Connectivity between IB and Trader Workstation has been restored - data lost.",
    1102: "Connectivity between IB and Trader Workstation has been restored - data maintained.",
}
# How many requests the requests report keeps (oldest dropped first).
REQUEST_LOG_SIZE = 20_000


class BadControlArgument(ValueError):
    """A control operation got an argument it cannot use (a ValueError: the control server answers with the usage)."""


def parse_time(text: str) -> int:
    """An ISO 8601 time with an offset (or Z) -> UTC nanoseconds."""
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadControlArgument(f"time {text!r} is not ISO 8601, e.g. 2025-06-02T09:30:00-04:00") from None
    if dt.tzinfo is None:
        raise BadControlArgument(f"time {text!r} has no UTC offset; add one, e.g. 2025-06-02T09:30:00-04:00")
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


def iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, tz=UTC).isoformat(timespec="milliseconds")


class PaperBroker:
    """A simulated TWS paper account on one asyncio loop."""

    def __init__(
        self,
        clock: SimClock,
        state_dir: Path,
        account: str = "DU1234567",
        starting_cash: Decimal | float | str = Decimal("1000000"),
        partial_fills: bool = False,
        tick_interval: float = 1.0,
    ) -> None:
        self.clock = clock
        self.store = Store(Path(state_dir))
        state = self.store.load()
        if state is not None:
            self.engine = restore(state, partial_fills)
            if state.account_id != account:
                log.warning("state directory %s holds account %s; keeping it (asked for %s)",
                            state_dir, state.account_id, account)
            log.info("restored %d orders and %d executions from %s", len(state.orders), len(state.executions),
                     self.store.path)
        else:
            self.engine = Engine(
                Account(account, Decimal(str(starting_cash))), epoch_s=int(time.time()), partial_fills=partial_fills
            )
        self.account_id = self.engine.account.account_id
        self.tick_interval = tick_interval
        self.sessions: dict[int, ClientSession] = {}
        self._connections: set[ClientSession] = set()
        self._server: asyncio.AbstractServer | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._reopen: asyncio.Task[None] | None = None
        self._requests: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_SIZE)
        self.host = "127.0.0.1"
        self.port = 0
        self.outage_until: float | None = None
        # Set by the control verb mute-next: the next new order's acknowledgement is not sent (see mute_next).
        self._mute_next_ack = False

    # --- life cycle ----------------------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on ``host:port`` (0 = a free port); return the bound port."""
        self.host = host
        await self._listen(port)
        self._ticker = asyncio.get_running_loop().create_task(self._tick())
        self._dispatch(self.engine.advance(self.clock.now_ns()))
        log.info("paper broker %s listening on %s:%d", self.account_id, host, self.port)
        return self.port

    async def _listen(self, port: int) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for task in (self._ticker, self._reopen):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._server is not None:
            self._server.close()
        self.drop()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None
        self._save()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = ClientSession(self, reader, writer)
        self._connections.add(session)
        try:
            await session.run()
        finally:
            self._connections.discard(session)

    async def _tick(self) -> None:
        """Let simulated time act on its own (DAY expiry, session opens) while no prints arrive."""
        while True:
            await asyncio.sleep(self.tick_interval)
            try:
                self.advance()
            except Exception:  # the ticker must survive anything one order does
                log.exception("time step failed")

    # --- sessions ------------------------------------------------------------------------------------------------

    def claim_client_id(self, client_id: int, session: ClientSession) -> bool:
        if client_id in self.sessions:
            return False
        self.sessions[client_id] = session
        return True

    def session_closed(self, session: ClientSession) -> None:
        if session.client_id is not None and self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]
            self.log_request(session.client_id, "disconnected", [])

    def log_request(self, client_id: int, name: str, fields: list[str]) -> None:
        now = self.clock.now_ns()
        self._requests.append(
            {"time": iso(now), "ts_ns": now, "client_id": client_id, "request": name, "fields": list(fields)}
        )

    # --- orders --------------------------------------------------------------------------------------------------

    def place_order(self, client_id: int, ticket: OrderTicket) -> None:
        events = self.engine.place(client_id, ticket, self.clock.now_ns())
        if self._mute_next_ack and any(isinstance(e, OrderAcknowledged) for e in events):
            self._mute_next_ack = False
            # The order works in the book, but its client never hears that it arrived (a lost acknowledgement):
            # it stays PendingSubmit there until a later report about it (a fill, the cancel's confirmation).
            events = [e for e in events if not isinstance(e, OrderAcknowledged)]
            log.warning("mute-next: the acknowledgement of orderId %d (client %d) was not sent",
                        ticket.order_id, client_id)
        self._dispatch(events)

    def cancel_order(self, client_id: int, order_id: int) -> None:
        self._dispatch(self.engine.cancel(client_id, order_id, self.clock.now_ns()))

    def global_cancel(self) -> None:
        self._dispatch(self.engine.global_cancel(self.clock.now_ns()))

    def today_start_ns(self) -> int:
        """Midnight US/Eastern of the simulated day: 'today' for executions and completed orders, as in TWS."""
        today = sessions.eastern_date(self.clock.now_ns())
        return int(datetime(today.year, today.month, today.day, tzinfo=sessions.EASTERN).timestamp()) * 10**9

    def executions_matching(self, f: ExecutionFilter) -> list[Execution]:
        since = self.today_start_ns()
        if f.time.strip():
            with contextlib.suppress(ValueError, IndexError, KeyError):
                parts = f.time.strip().split(" ")
                naive = datetime.strptime(" ".join(parts[:2]).replace("-", " "), "%Y%m%d %H:%M:%S")
                zone = sessions.EASTERN if len(parts) < 3 else ZoneInfo(parts[2])
                since = max(since, int(naive.replace(tzinfo=zone).timestamp()) * 10**9)
        side = {"BUY": "BOT", "SELL": "SLD"}.get(f.side.upper(), f.side.upper())
        return [
            ex for ex in self.engine.executions
            if ex.ts_ns >= since
            and (f.client_id == 0 or ex.client_id == f.client_id)
            and f.account in ("", ex.account)
            and f.symbol.upper() in ("", contracts.TQQQ.symbol)
            and f.sec_type.upper() in ("", contracts.TQQQ.sec_type)
            and (not side or ex.side == side)
        ]

    def has_position_history(self) -> bool:
        return self.engine.account.position != 0 or bool(self.engine.executions)

    # --- the market ----------------------------------------------------------------------------------------------

    def on_print(self, price: Decimal | float | str, size: int = 100, ts_ns: int | None = None) -> None:
        """One trade print from the market source: ticks to subscribers, then triggers and fills."""
        try:
            p = round_cent(Decimal(str(price)))
        except InvalidOperation:
            raise BadControlArgument(f"price {price!r} is not a number") from None
        if not p.is_finite() or p <= 0:
            raise BadControlArgument(f"price must be positive, was {price!r}")
        if int(size) < 0:
            raise BadControlArgument(f"size must not be negative, was {size!r}")
        if ts_ns is not None:
            self.clock.advance_to(ts_ns)
        for session in list(self.sessions.values()):
            session.send_print(p, int(size))
        self._dispatch(self.engine.on_print(p, int(size), self.clock.now_ns()))

    def advance(self) -> None:
        """Apply the passage of simulated time (expiry, session opens)."""
        self._dispatch(self.engine.advance(self.clock.now_ns()))

    # --- events -> wire ------------------------------------------------------------------------------------------

    def _dispatch(self, events: list[Event]) -> None:
        if not events:
            return
        # Durable before visible: a client never hears of an order or fill that a crash could still lose.
        self._save()
        for event in events:
            try:
                self._route(event)
            except Exception:  # one client's broken socket must not stop the others' events
                log.exception("could not deliver %s", type(event).__name__)

    def _session_of(self, client_id: int) -> ClientSession | None:
        return self.sessions.get(client_id)

    def _route(self, event: Event) -> None:
        inst = contracts.TQQQ
        match event:
            case OrderAcknowledged(order=order):
                if (s := self._session_of(order.client_id)) is not None:
                    s.send(encode.open_order(order, inst, order.status, s.server_version))
                    s.send(encode.order_status(order))
            case OrderWarning(order=order, code=code, text=text):
                if (s := self._session_of(order.client_id)) is not None:
                    s.error(order.order_id, code, text)
            case OrderRejected(client_id=client_id, order_id=order_id, code=code, text=text):
                if (s := self._session_of(client_id)) is not None:
                    s.error(order_id, code, text)
            case OrderCancelled(order=order, reason=reason):
                if (s := self._session_of(order.client_id)) is not None:
                    s.send(encode.order_status(order))
                    s.error(order.order_id, 202, f"Order Canceled - reason:{reason}")
            case OrderFilled(order=order, execution=ex):
                if (s := self._session_of(order.client_id)) is not None:
                    self._send_fill(s, order, ex)
            case ClientError(client_id=client_id, req_id=req_id, code=code, text=text):
                if (s := self._session_of(client_id)) is not None:
                    s.error(req_id, code, text)
            case PortfolioChanged():
                for s in list(self.sessions.values()):
                    if s.positions_subscribed:
                        s.send_positions()
                    if s.account_updates_subscribed:
                        s.send_account_updates()
                    for req_id, model in s.multi_subscriptions.items():
                        s.send_account_multi(req_id, model)

    def _send_fill(self, s: ClientSession, order: BrokerOrder, ex: Execution) -> None:
        """A fill as a real TWS sends it (tws-protocol.md section 7), final or partial."""
        inst = contracts.TQQQ
        s.send(encode.execution(-1, ex, inst))
        if order.done:
            s.send(encode.open_order(order, inst, order.status, s.server_version))
            s.send(encode.order_status(order))
            s.send(encode.open_order(order, inst, order.status, s.server_version, commission=order.commission))
            s.send(encode.order_status(order))
        else:
            s.send(encode.order_status(order))
        s.send(encode.commission_report(ex))

    def _save(self) -> None:
        self.store.save(snapshot(self.engine))

    # --- control -------------------------------------------------------------------------------------------------

    def drop(self) -> int:
        """Close every client socket (as a crashing TWS would); return how many were open."""
        dropped = list(self._connections)
        for session in dropped:
            session.close()
        return len(dropped)

    async def outage(self, seconds: float) -> dict[str, Any]:
        """Close every client and refuse connections for ``seconds`` of wall time (TWS's nightly restart)."""
        seconds = float(seconds)
        if seconds <= 0:
            raise BadControlArgument(f"outage needs a positive number of seconds, was {seconds}")
        if self._server is not None:
            self._server.close()
            self._server = None
        dropped = self.drop()
        self.outage_until = time.monotonic() + seconds
        if self._reopen is not None:
            self._reopen.cancel()
        self._reopen = asyncio.get_running_loop().create_task(self._reopen_after(seconds))
        return {"dropped": dropped, "refusing_for": seconds}

    async def _reopen_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        while True:
            try:
                await self._listen(self.port)
                break
            except OSError as e:  # the port is briefly taken: keep the outage going rather than die
                log.error("outage over but %s:%d cannot be bound again (%s); retrying in 1 s", self.host, self.port, e)
                await asyncio.sleep(1.0)
        self.outage_until = None
        log.info("outage over: listening again on %s:%d", self.host, self.port)

    def connectivity(self, code: int) -> int:
        """Send connectivity error 1100, 1101 or 1102 to every client; return how many got it."""
        code = int(code)
        if code not in CONNECTIVITY:
            raise BadControlArgument(f"connectivity code must be 1100, 1101 or 1102, was {code}")
        for s in list(self.sessions.values()):
            s.error(-1, code, CONNECTIVITY[code])
        return len(self.sessions)

    def reject_next(self, code: int = 201) -> int:
        """Reject the next new order with error ``code`` (default 201)."""
        code = int(code)
        if code <= 0:
            raise BadControlArgument(f"reject-next needs a positive error code, was {code}")
        self.engine.reject_next = code
        return code

    def mute_next(self) -> bool:
        """Withhold the acknowledgement (openOrder, orderStatus) of the next new order, as a lost message would."""
        self._mute_next_ack = True
        return True

    def set_time(self, when: str | int) -> str:
        """Move the simulated clock (an ISO 8601 time with offset, or UTC nanoseconds) and apply its effects."""
        ts = int(when) if isinstance(when, int) else parse_time(str(when))
        self.clock.set(ts)
        self.advance()
        return iso(self.clock.now_ns())

    def orders_report(self) -> list[dict[str, Any]]:
        """Every order ever received, with its status history and fills."""
        executions = {ex.exec_id: ex for ex in self.engine.executions}
        return [
            _order_report(order, executions)
            for order in sorted(self.engine.orders.values(), key=lambda o: o.seq)
        ]

    def requests_report(self, client_id: int | None = None) -> list[dict[str, Any]]:
        """The requests each client sent, oldest first."""
        return [r for r in self._requests if client_id is None or r["client_id"] == client_id]

    def status(self) -> dict[str, Any]:
        engine = self.engine
        return {
            "host": self.host,
            "port": self.port,
            "account": self.account_id,
            "time": iso(self.clock.now_ns()),
            "session": sessions.session_at(self.clock.now_ns()).value,
            "clients": sorted(self.sessions),
            "open_orders": len(engine.open_orders()),
            "position": engine.account.position,
            "cash": str(engine.account.cash.quantize(Decimal("0.01"))),
            "last_price": str(engine.last.price) if engine.last else None,
            "outage": self.outage_until is not None,
        }


def _order_report(order: BrokerOrder, executions: dict[str, Execution]) -> dict[str, Any]:
    return {
        "perm_id": order.perm_id,
        "order_id": order.order_id,
        "client_id": order.client_id,
        "order_ref": order.order_ref,
        "action": order.action,
        "quantity": order.quantity,
        "type": order.order_type,
        "limit": str(order.limit) if order.limit is not None else None,
        "tif": order.tif,
        "outside_rth": order.outside_rth,
        "conditions": [
            {"type": "price", "is_more": c.is_more, "price": str(c.price), "con_id": c.con_id,
             "exchange": c.exchange, "trigger_method": c.trigger_method, "conjunction": c.conjunction}
            for c in order.conditions
        ],
        "conditions_ignore_rth": order.conditions_ignore_rth,
        "conditions_cancel_order": order.conditions_cancel_order,
        "status": order.status,
        "filled": order.filled,
        "avg_fill_price": str(order.avg_fill_price.quantize(Decimal("0.0001"))) if order.filled else None,
        "history": [{"time": iso(h.ts_ns), "ts_ns": h.ts_ns, "status": h.status, "note": h.note}
                    for h in order.history],
        "fills": [
            {"exec_id": ex.exec_id, "time": iso(ex.ts_ns), "shares": ex.shares, "price": str(ex.price),
             "commission": str(ex.commission)}
            for ex in (executions[e] for e in order.exec_ids if e in executions)
        ],
    }
