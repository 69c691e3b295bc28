"""One client's conversation with the stream, as a pure function: (state, request) -> (state, replies, close).

Alpaca's rules (docs: streaming-market-data): the server greets, the client must ``auth`` within 10 s, then
``subscribe`` / ``unsubscribe`` channel lists; the acknowledgement lists every channel's current symbols. Errors:
400 a request that is not a msgpack map with a known action, 401 subscribing before auth, 402 a wrong key or
secret (the connection stays open for another try), 403 a second auth, 405 more symbols than the plan allows,
406 the key is already connected elsewhere (then closed), 409 a feed the key's plan does not include (then closed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sim.stream.wire import error_message

# Channels a client may subscribe to; corrections and cancelErrors follow trades (as Alpaca acknowledges them).
SUBSCRIBABLE = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds")
FOLLOW_TRADES = ("corrections", "cancelErrors")
FEEDS = {"/v2/iex": "iex", "/v2/sip": "sip", "/v2/delayed_sip": "delayed_sip"}
SYMBOL_LIMIT = 30  # symbols per connection on Alpaca's free plan


@dataclass
class Session:
    """What the server knows about one connection."""

    feed: str
    authenticated: bool = False
    key: str | None = None
    subscriptions: dict[str, set[str]] = field(default_factory=lambda: {c: set() for c in SUBSCRIBABLE})

    def wants(self, channel: str, symbol: str) -> bool:
        subs = self.subscriptions[channel]
        return symbol in subs or "*" in subs

    def ack(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"T": "subscription"}
        for channel in SUBSCRIBABLE:
            msg[channel] = sorted(self.subscriptions[channel])
        for channel in FOLLOW_TRADES:
            msg[channel] = sorted(self.subscriptions["trades"])
        return msg


@dataclass(frozen=True)
class Policy:
    """The server's rules for this stream: the key pair it accepts and what the key's plan includes."""

    api_key: str
    api_secret: str
    sip_entitled: bool = True
    symbol_limit: int = SYMBOL_LIMIT


@dataclass(frozen=True)
class Outcome:
    replies: list[dict[str, Any]]
    close: bool = False


def _error(code: int, close: bool = False) -> Outcome:
    return Outcome([error_message(code)], close)


def handle(session: Session, request: Any, policy: Policy, key_in_use: Callable[[str], bool]) -> Outcome:
    """Apply one decoded client request to ``session`` (mutated in place) and say what to answer."""
    if not isinstance(request, dict) or not isinstance(request.get("action"), str):
        return _error(400)
    action = request["action"]
    if action == "auth":
        return _auth(session, request, policy, key_in_use)
    if action in ("subscribe", "unsubscribe"):
        if not session.authenticated:
            return _error(401)
        return _subscribe(session, request, policy, add=action == "subscribe")
    return _error(400)


def _auth(
    session: Session, request: dict[str, Any], policy: Policy, key_in_use: Callable[[str], bool]
) -> Outcome:
    if session.authenticated:
        return _error(403)
    key, secret = request.get("key"), request.get("secret")
    if key != policy.api_key or secret != policy.api_secret:
        return _error(402)
    if key_in_use(key):
        return _error(406, close=True)
    if session.feed == "sip" and not policy.sip_entitled:
        return _error(409, close=True)
    session.authenticated = True
    session.key = key
    return Outcome([{"T": "success", "msg": "authenticated"}])


def _subscribe(session: Session, request: dict[str, Any], policy: Policy, add: bool) -> Outcome:
    changes: dict[str, list[str]] = {}
    for channel, symbols in request.items():
        if channel == "action" or channel in FOLLOW_TRADES:
            continue
        if channel not in SUBSCRIBABLE:
            return _error(400)
        if not isinstance(symbols, list) or not all(isinstance(s, str) and s for s in symbols):
            return _error(400)
        changes[channel] = symbols
    if add:
        total = {s for c in SUBSCRIBABLE for s in session.subscriptions[c]}
        total.update(s for symbols in changes.values() for s in symbols)
        if len(total) > policy.symbol_limit:
            return _error(405)
    for channel, symbols in changes.items():
        if add:
            session.subscriptions[channel].update(symbols)
        else:
            session.subscriptions[channel].difference_update(symbols)
    return Outcome([session.ack()])
