"""alpaca-py's StockDataStream inside our own asyncio loop, with its connection's life made visible.

The only module of the system that imports ``alpaca``. The recipe (docs/feed.md, alpaca-protocol.md section 2):
subscribe before the stream runs (``subscribe_*`` from inside a running loop deadlocks), run the private
``_run_forever()`` as a task (``run()`` calls ``asyncio.run`` and cannot live in our loop), stop with ``stop_ws()``
then ``close()`` (``stop_ws`` alone is noticed only after the next frame or a 5 s receive timeout).

alpaca-py tells nobody when it connects, drops, is refused (402/406/409) or reads garbage: it only logs. A subclass
overrides three private hooks to report those moments to a ``StreamEvents`` listener and then defers to the
library, whose reconnect loop and backoff stay in charge. The pins are exact (pyproject.toml) and the tests run the
unmodified client against the simulated exchange, so a library upgrade that moves these hooks fails a test.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

import websockets
from alpaca.common.enums import BaseURL
from alpaca.data.live.stock import StockDataStream

log = logging.getLogger(__name__)

# Alpaca's error texts (docs "streaming market data") -> codes. alpaca-py raises ValueError(text) when the server
# refuses the login, so the code is recovered from the text.
ERROR_CODES_BY_TEXT = {
    "invalid syntax": 400,
    "not authenticated": 401,
    "auth failed": 402,
    "already authenticated": 403,
    "auth timeout": 404,
    "symbol limit exceeded": 405,
    "connection limit exceeded": 406,
    "slow client": 407,
    "v2 not enabled": 408,
    "insufficient subscription": 409,
    "invalid subscribe action for this feed": 410,
    "internal error": 500,
}


def error_code(text: str) -> int | None:
    """The Alpaca error code an error text stands for, or None if it is not one of Alpaca's."""
    lowered = text.lower()
    for known, code in ERROR_CODES_BY_TEXT.items():
        if known in lowered:
            return code
    return None


def stream_url(feed: str, url: str) -> str:
    """The websocket URL: ``url`` if configured, else Alpaca's own for ``feed`` (iex, sip, delayed_sip)."""
    return url or f"{BaseURL.MARKET_DATA_STREAM.value}/v2/{feed}"


class StreamEvents(Protocol):
    """What the stream reports; called on the loop thread, from inside alpaca-py's receive loop: never block."""

    def stream_connected(self) -> None:
        """Logged in and subscribed (again, after a reconnect)."""

    def stream_lost(self, reason: str) -> None:
        """The connection is gone or could not be made; alpaca-py will retry with its backoff."""

    def stream_refused(self, code: int | None, text: str) -> None:
        """The server refused the login (402 bad key, 406 connection limit, 409 insufficient subscription)."""

    def stream_error(self, code: int | None, text: str) -> None:
        """An error frame arrived on an open connection (alpaca-py only logs it)."""

    def stream_fault(self, text: str) -> None:
        """A frame could not be read (garbage); alpaca-py drops it and keeps the connection."""


class _ObservedStockDataStream(StockDataStream):
    """StockDataStream that reports connects, drops, refusals and bad frames to ``events``."""

    def __init__(self, events: StreamEvents, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._events = events
        self.stopping = False

    async def _start_ws(self) -> None:
        try:
            await super()._start_ws()
        except ValueError as e:
            # _auth raises ValueError(the server's text) on a refusal, or "connected message not received".
            self._events.stream_refused(error_code(str(e)), str(e))
            raise
        except Exception as e:
            self._events.stream_lost(f"cannot connect: {type(e).__name__}: {e}")
            raise
        self._events.stream_connected()

    async def _consume(self) -> bool:
        try:
            silent = await super()._consume()
        except websockets.WebSocketException as e:
            self._events.stream_lost("stopped" if self.stopping else f"stream dropped: {type(e).__name__}: {e}")
            raise
        except Exception as e:
            # A frame that is not msgpack, or not an array of maps; the library logs it and reads on.
            self._events.stream_fault(f"unreadable frame: {type(e).__name__}: {e}")
            raise
        if silent:
            self._events.stream_lost(f"no market data for {self._data_timeout:g} s (data_timeout); reconnecting")
        else:
            self._events.stream_lost("stopped")
        return silent

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        if isinstance(msg, dict) and msg.get("T") == "error":
            text = str(msg.get("msg", ""))
            code = msg.get("code")
            self._events.stream_error(code if isinstance(code, int) else error_code(text), text)
        await super()._dispatch(msg)


class AlpacaTradeStream:
    """One symbol's trades from Alpaca (or the sim), delivered as raw wire maps to ``on_trade``.

    ``on_trade`` runs inside the receive loop: it must only hand the map off (a queue), never wait.
    """

    def __init__(
        self,
        *,
        url: str,
        key_id: str,
        secret: str,
        symbol: str,
        data_timeout: float | None,
        on_trade: Callable[[dict[str, Any]], None],
        events: StreamEvents,
    ) -> None:
        self.url = url
        self._stream = _ObservedStockDataStream(
            events,
            api_key=key_id,
            secret_key=secret,
            raw_data=True,
            url_override=url,
            data_timeout=data_timeout if data_timeout and data_timeout > 0 else None,
        )

        async def handle_trade(msg: Any) -> None:
            on_trade(msg)

        # Before the stream runs: subscribe_* from inside the running loop would deadlock.
        self._stream.subscribe_trades(handle_trade, symbol)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[None]:
        """Start the stream in the running loop; the task ends on stop() or when alpaca-py gives up (409)."""
        if self._task is None:
            self._task = asyncio.create_task(self._stream._run_forever(), name="alpaca-stream")
        return self._task

    async def stop(self, timeout: float) -> None:
        """Stop within ``timeout`` seconds: signal the loop, close the socket, wait for the task (else cancel it)."""
        self._stream.stopping = True
        task = self._task
        try:
            async with asyncio.timeout(timeout):
                await self._stream.stop_ws()
                await self._stream.close()
                if task is not None:
                    await task
        except TimeoutError:
            log.warning("alpaca stream did not stop within %.1f s; cancelling it", timeout)
        except Exception:
            log.exception("alpaca stream failed while stopping")
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
