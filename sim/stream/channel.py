"""One feed path's fan-out: the clients on it, the bars it builds, and (for delayed_sip) its 15-minute delay line.

Sending is synchronous and cheap: each message is packed once per publish, clients that want the same channels
share one frame, and frames go straight to each socket's write buffer (no task per client). A client whose write
buffer grows past ``max_buffer`` bytes is too slow: it gets Alpaca's 407 and is disconnected, so one stuck reader
never holds the market back.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

from sim.market.prints import Print
from sim.stream.bars import BarBuilder
from sim.stream.session import Session
from sim.stream.wire import error_message, frame, pack_bar, pack_messages, pack_quote, pack_trade

log = logging.getLogger("sim.stream")

TRADE, QUOTE, BAR = 0, 1, 2
MAX_MESSAGES_PER_FRAME = 500  # keeps a frame far below alpaca-py's 1 MiB message limit


@dataclass(eq=False)
class Client:
    """One websocket connection and its counters (for `status`)."""

    conn: ServerConnection
    session: Session
    peer: str
    user_agent: str
    connected_at: str
    frames_sent: int = 0
    messages_sent: int = 0
    dropped_slow: bool = False

    def wanted(self, symbol: str) -> tuple[bool, bool, bool]:
        s = self.session
        if not s.authenticated:
            return False, False, False
        return s.wants("trades", symbol), s.wants("quotes", symbol), s.wants("bars", symbol)

    def write_buffer(self) -> int:
        transport = self.conn.transport
        return transport.get_write_buffer_size() if transport is not None else 0

    def describe(self) -> dict[str, Any]:
        return {
            "peer": self.peer,
            "feed": self.session.feed,
            "authenticated": self.session.authenticated,
            "subscriptions": {c: sorted(s) for c, s in self.session.subscriptions.items() if s},
            "user_agent": self.user_agent,
            "connected_at": self.connected_at,
            "frames_sent": self.frames_sent,
            "messages_sent": self.messages_sent,
            "write_buffer_bytes": self.write_buffer(),
        }


@dataclass(eq=False)
class Channel:
    """The clients of one feed path and the messages they are sent."""

    feed: str
    symbol: str
    exchange: str
    max_buffer: int
    delay_ns: int = 0
    clients: set[Client] = field(default_factory=set)
    bars: BarBuilder = field(default_factory=BarBuilder)
    pending: deque[tuple[Print, int]] = field(default_factory=deque)
    prints_sent: int = 0

    def publish(self, prints: Sequence[Print], first_id: int, now_ns: int, silent: bool) -> None:
        """Stream ``prints`` (trade ids ``first_id``...) now, or after the delay for a delayed feed."""
        if self.delay_ns:
            self.pending.extend((p, first_id + i) for i, p in enumerate(prints))
            self.release(now_ns, silent)
        else:
            self._send(((p, first_id + i) for i, p in enumerate(prints)), now_ns, silent)

    def release(self, now_ns: int, silent: bool) -> None:
        """Send the delayed prints whose delay has passed at ``now_ns``."""
        due = now_ns - self.delay_ns
        out: list[tuple[Print, int]] = []
        while self.pending and self.pending[0][0].ts_ns <= due:
            out.append(self.pending.popleft())
        self._send(out, due, silent)  # also completes a delayed minute bar when the clock has moved on

    def _send(self, prints: Iterable[tuple[Print, int]], now_ns: int, silent: bool) -> None:
        want_quotes = want_bars = False
        groups: dict[tuple[bool, bool, bool], list[Client]] = {}
        for c in self.clients:
            key = c.wanted(self.symbol)
            if any(key):
                groups.setdefault(key, []).append(c)
                want_quotes |= key[1]
                want_bars |= key[2]
        if silent:  # a mute socket: the market goes on (bars keep counting), nothing reaches the clients
            groups, want_bars = {}, False
        items: list[tuple[int, bytes]] = []
        for p, trade_id in prints:
            done = self.bars.add(p)
            if done is not None and want_bars:
                items.append((BAR, pack_bar(self.symbol, done)))
            if not groups:
                continue
            if want_quotes:
                items.append((QUOTE, pack_quote(self.symbol, p, self.exchange)))
            items.append((TRADE, pack_trade(self.symbol, p, trade_id, self.exchange)))
            self.prints_sent += 1
        done = self.bars.flush(now_ns)
        if done is not None and want_bars:
            items.append((BAR, pack_bar(self.symbol, done)))
        if not items:
            return
        for key, clients in groups.items():
            selected = [b for kind, b in items if key[kind]]
            for i in range(0, len(selected), MAX_MESSAGES_PER_FRAME):
                chunk = selected[i : i + MAX_MESSAGES_PER_FRAME]
                data = frame(chunk)
                for c in clients:
                    self.send_raw(c, data, len(chunk))

    def send_raw(self, c: Client, data: bytes, messages: int = 1, text: bool = False) -> None:
        """Write one frame to ``c`` without waiting; a client that cannot keep up gets 407 and is dropped."""
        conn = c.conn
        if conn.protocol.state is not State.OPEN or c.dropped_slow:
            return
        try:
            if text:
                conn.protocol.send_text(data)
            else:
                conn.protocol.send_binary(data)
            conn.send_data()
        except Exception as e:  # a socket that died under us: its handler cleans up
            log.warning("stream: write to %s failed: %s", c.peer, e)
            return
        c.frames_sent += 1
        c.messages_sent += messages
        if c.write_buffer() > self.max_buffer:
            c.dropped_slow = True
            log.warning(
                "stream: %s is too slow (%d bytes unsent): 407 and disconnect", c.peer, c.write_buffer()
            )
            try:
                conn.protocol.send_binary(pack_messages(error_message(407)))
                conn.send_data()
            finally:
                if conn.transport is not None:
                    conn.transport.abort()

    def backlog(self) -> int:
        """Return the largest unsent byte count of any client (the driver's back-pressure when unpaced)."""
        return max((c.write_buffer() for c in self.clients), default=0)
