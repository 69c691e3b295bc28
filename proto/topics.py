"""Topic names on the bus. Subscribers filter on prefixes, so related topics share one."""

from __future__ import annotations

MD_TICK_PREFIX = "md.tick."
FEED_STATUS = "md.status"
ORDER_EVENT = "order.event"
BROKER_EVENT = "broker.event"
STATE_UPDATE = "state.update"
ALERT = "alert"
CONTROL = "control"
HEARTBEAT_PREFIX = "hb."


def tick(symbol: str) -> str:
    """``md.tick.TQQQ``."""
    return MD_TICK_PREFIX + symbol


def heartbeat(service: str) -> str:
    """``hb.executor``."""
    return HEARTBEAT_PREFIX + service
