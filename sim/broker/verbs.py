"""The paper broker's control verbs, registered on a :class:`sim.control.ControlServer`."""

from __future__ import annotations

from typing import Any

from sim.broker.server import PaperBroker
from sim.control import ControlServer, UsageError


def register_broker_verbs(server: ControlServer, broker: PaperBroker) -> None:
    """Add price, time, drop, outage, connectivity, reject-next, orders and requests."""

    def price(p: Any, size: Any = 100) -> dict[str, Any]:
        try:
            n = int(size)
        except (TypeError, ValueError):
            raise UsageError(f"size must be a whole number of shares, was {size!r}") from None
        broker.on_print(str(p), n)
        last = broker.engine.last
        return {"price": str(last.price) if last else None, "size": n, "time": broker.status()["time"]}

    def time_(when: Any = None) -> str:
        if when is None:
            return str(broker.status()["time"])
        return broker.set_time(str(when))

    def requests(client_id: Any = None) -> list[dict[str, Any]]:
        return broker.requests_report(None if client_id is None else int(client_id))

    server.register("price", price, "price P [SIZE]", "a trade print at P (size 100 unless given)")
    server.register("time", time_, "time [ISO]", "show or move the simulated clock (ISO 8601 with offset)")
    server.register("drop", broker.drop, "drop", "close every client socket")
    server.register("outage", broker.outage, "outage SECONDS",
                    "close every client and refuse connections for SECONDS (TWS's nightly restart)")
    server.register("connectivity", broker.connectivity, "connectivity 1100|1101|1102",
                    "send a connectivity error to every client")
    server.register("reject-next", broker.reject_next, "reject-next [CODE]",
                    "reject the next new order with error CODE (201 unless given)")
    server.register("mute-next", broker.mute_next, "mute-next",
                    "take the next new order but never send its acknowledgement (a lost message)")
    server.register("orders", broker.orders_report, "orders", "every order ever received, with history and fills")
    server.register("requests", requests, "requests [CLIENT_ID]", "the requests the clients sent, with times")
