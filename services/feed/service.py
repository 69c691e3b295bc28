"""The feed service: Alpaca trades in, ``Tick`` and ``FeedStatus`` (and alerts) out on the bus.

Three tasks in one asyncio loop:

- the stream (alpaca-py's own receive loop, services.feed.stream): its trade handler only stamps the receive time
  and hands the raw map to a bounded queue, so a handler never holds up the socket;
- the pump: parse (services.feed.convert), judge (services.feed.filter), number and publish each print;
- the monitor: a ``FeedStatus`` whenever connected / stale / reason change and every ``status_interval``, exactly
  when the feed turns stale (no polling), and an alert summing up the bad prints dropped since the last one; the
  same state rides on the feed's heartbeat (``Heartbeat.status``: ``ok``, ``stale: ...``, ``down: ...``).

Faults: alpaca-py reconnects on its own (its backoff; ``data_timeout`` for a silent socket). A refused login (402,
406) raises an alert naming the cause while alpaca-py keeps retrying; 409 (insufficient subscription, after which
alpaca-py's loop returns) and any other end of the stream that we did not ask for are fatal: ``FeedFatal``, so the
process exits non-zero and supervisord decides. Cancelling ``run()`` (SIGTERM) stops the stream, publishes what was
already received, and a last ``FeedStatus``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Protocol

from gridbot.alerts import AlertSink
from gridbot.config import Config, ConfigError, alpaca_keys
from proto import topics
from proto.messages import FeedStatus, Message, Severity
from services.feed.convert import MalformedTrade, to_tick, trade_from_raw
from services.feed.filter import DropReason, PrintFilter
from services.feed.health import FeedHealth, HealthReport
from services.feed.stream import AlpacaTradeStream, stream_url

log = logging.getLogger("feed")

SENDER = "feed"
# Seconds a stop may take: alpaca-py's close handshake, then the task is cancelled (SIGTERM must finish in ~1-2 s).
STOP_TIMEOUT = 1.0
# Dropped prints logged one by one per status interval; the rest are only counted (a garbage flood must not flood
# the log), and the alert after each interval gives the totals.
DROPS_LOGGED_PER_INTERVAL = 20


class Publishes(Protocol):
    """The part of bus.Publisher the feed uses."""

    # What the feed's heartbeat says of it (Heartbeat.status): see heartbeat_status.
    status: str

    def publish(self, topic: str, msg: Message) -> object: ...


class FeedFatal(Exception):
    """The feed cannot go on (e.g. 409: the key's plan lacks the feed); restarting will not help by itself."""


def stream_keys(cfg: Config) -> tuple[str, str]:
    """The key pair: the sim's test pair in sim mode, else from the environment (never logged)."""
    if cfg.general.mode == "sim":
        return cfg.sim.api_key, cfg.sim.api_secret
    keys = alpaca_keys()
    if keys is None:
        raise ConfigError(
            f"general.mode = '{cfg.general.mode}' needs Alpaca keys: set APCA_API_KEY_ID and APCA_API_SECRET_KEY "
            "in the environment or in .env at the project root"
        )
    return keys


def check_settings(cfg: Config) -> tuple[PrintFilter, FeedHealth]:
    """Validate the [feed] keys the config loader cannot judge alone; return the filter and health they make."""
    feed = cfg.feed
    where = f"config file '{cfg.source or 'config/defaults.toml'}'"
    if feed.status_interval <= 0:
        raise ConfigError(f"{where}: feed.status_interval must be a positive number of seconds, was {feed.status_interval}")
    if feed.queue_limit < 1:
        raise ConfigError(f"{where}: feed.queue_limit must be at least 1, was {feed.queue_limit}")
    if feed.data_timeout < 0:
        raise ConfigError(f"{where}: feed.data_timeout must be >= 0 seconds (0 = off), was {feed.data_timeout}")
    try:
        return PrintFilter(Decimal(repr(feed.jump_band)), feed.jump_confirm), FeedHealth(feed.stale_after)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None


def describe_refusal(code: int | None, text: str, feed: str) -> tuple[Severity, str]:
    """An operator's sentence for a refused login: what happened and what to do."""
    if code == 402:
        return "critical", (
            f"Alpaca refused the key pair (402 {text}): check APCA_API_KEY_ID / APCA_API_SECRET_KEY "
            "(sim.api_key / sim.api_secret in sim mode); retrying"
        )
    if code == 406:
        return "warning", (
            f"Alpaca refused a second connection for this key pair (406 {text}): another program uses the same "
            "keys, or Alpaca has not yet dropped an old connection (about 90 s); retrying"
        )
    if code == 409:
        return "critical", (
            f"the key's plan does not include the '{feed}' feed (409 {text}): set feed.feed = \"iex\" or "
            "upgrade the Alpaca data plan; the feed stops"
        )
    return "warning", f"the stream refused the login ({code or 'no code'}: {text}); retrying"


def heartbeat_status(report: HealthReport) -> str:
    """The feed's heartbeat status: "ok" while connected with fresh prints, else "stale: ..." or "down: ..."."""
    if not report.connected:
        return f"down: {report.reason}"
    if report.stale:
        return f"stale: {report.reason}"
    return "ok"


class FeedService:
    """Runs one symbol's feed until cancelled (clean stop) or until a fatal fault (raises FeedFatal)."""

    def __init__(self, cfg: Config, publisher: Publishes, key_id: str, secret: str) -> None:
        feed = cfg.feed
        self._filter, self._health = check_settings(cfg)
        self._cfg = cfg
        self._publisher = publisher
        publisher.status = heartbeat_status(self._health.report(time.monotonic()))  # "down: ..." until connected
        self._alerts = AlertSink.from_config(cfg, SENDER, publisher)
        self._symbol = cfg.general.symbol
        self._topic = topics.tick(self._symbol)
        self._queue: asyncio.Queue[tuple[Mapping[str, Any], int, float]] = asyncio.Queue(feed.queue_limit)
        self._changed = asyncio.Event()
        self._fatal: str | None = None
        self._fatal_event = asyncio.Event()
        self._alerted_refusal: int | None = None
        self._published = 0
        self._frame_faults = 0
        self._drops_reported = 0
        self._drops_logged = 0
        self.url = stream_url(feed.feed, feed.url)
        self._stream = AlpacaTradeStream(
            url=self.url,
            key_id=key_id,
            secret=secret,
            symbol=self._symbol,
            data_timeout=feed.data_timeout,
            on_trade=self._on_trade,
            events=self,
        )

    # ------------------------------------------------------------------------------------------------ run

    async def run(self) -> None:
        """Run until cancelled; raise FeedFatal when the stream cannot go on."""
        log.info("feed %s for %s from %s", self._cfg.feed.feed, self._symbol, self.url)
        stream_task = self._stream.start()
        pump = asyncio.create_task(self._pump(), name="feed-pump")
        monitor = asyncio.create_task(self._monitor(), name="feed-monitor")
        fatal_wait = asyncio.create_task(self._fatal_event.wait(), name="feed-fatal")
        try:
            await asyncio.wait({stream_task, pump, monitor, fatal_wait}, return_when=asyncio.FIRST_COMPLETED)
            if self._fatal is None:
                self._fatal = self._why_ended(stream_task, pump, monitor)
            self._alert("critical", "feed_fatal", self._fatal)
        finally:
            fatal_wait.cancel()
            await self._shutdown(pump, monitor)
        raise FeedFatal(self._fatal)

    def _why_ended(self, *tasks: asyncio.Task[Any]) -> str:
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                return f"{task.get_name()} failed: {task.exception()!r}"
        return "the Alpaca stream ended on its own (see the log above: a refused subscription?)"

    async def _shutdown(self, pump: asyncio.Task[None], monitor: asyncio.Task[None]) -> None:
        await self._stream.stop(STOP_TIMEOUT)
        monitor.cancel()
        pump.cancel()
        await asyncio.gather(pump, monitor, return_exceptions=True)
        # Finish the prints in hand: they were received before the stop, so they are published.
        while not self._queue.empty():
            self._handle(*self._queue.get_nowait())
        self._health.on_disconnected(self._fatal or "stopped")
        self._publish_status(time.monotonic())
        log.info("feed stopped: %d ticks published, %d prints dropped", self._published, self._filter.dropped_total)

    # ------------------------------------------------------------------------------------------------ prints

    def _on_trade(self, raw: dict[str, Any]) -> None:
        """alpaca-py's trade handler (inside its receive loop): stamp and hand off, never wait."""
        try:
            self._queue.put_nowait((raw, time.time_ns(), time.monotonic()))
        except asyncio.QueueFull:
            self._filter.count_drop(DropReason.OVERFLOW)
            self._log_drop(DropReason.OVERFLOW, f"hand-off queue full ({self._cfg.feed.queue_limit})")

    async def _pump(self) -> None:
        while True:
            item = await self._queue.get()
            self._handle(*item)

    def _handle(self, raw: Mapping[str, Any], receive_ts_ns: int, receive_mono: float) -> None:
        try:
            trade = trade_from_raw(raw)
            if trade.symbol != self._symbol:
                raise MalformedTrade(f"trade for {trade.symbol!r}, subscribed to {self._symbol!r} only")
        except MalformedTrade as e:
            self._filter.count_drop(DropReason.MALFORMED)
            self._log_drop(DropReason.MALFORMED, str(e))
            return
        verdict = self._filter.check(trade.price, trade.exchange_ts_ns)
        if verdict.reason is not None:
            self._log_drop(verdict.reason, f"price {trade.price} at {trade.exchange_ts_ns} ns")
            return
        if verdict.reanchored:
            log.warning("accepted a new price level at %s after %d agreeing prints", trade.price,
                        self._cfg.feed.jump_confirm)
        self._published += 1
        self._publisher.publish(self._topic, to_tick(trade, receive_ts_ns, self._published, time.time_ns()))
        if self._health.on_print(receive_mono):
            self._changed.set()

    def _log_drop(self, reason: DropReason, detail: str) -> None:
        if self._drops_logged < DROPS_LOGGED_PER_INTERVAL:
            self._drops_logged += 1
            log.warning("dropped a bad print (%s): %s", reason.value, detail)

    # ------------------------------------------------------------------------------------------------ status

    async def _monitor(self) -> None:
        interval = self._cfg.feed.status_interval
        last_key: tuple[bool, bool, str] | None = None
        next_periodic = time.monotonic()
        while True:
            now = time.monotonic()
            report = self._health.report(now)
            if report.change_key != last_key or now >= next_periodic:
                self._publish_status(now)
                last_key = report.change_key
            if now >= next_periodic:
                self._report_drops()
                next_periodic = now + interval
            wake_at = next_periodic
            stale_at = self._health.stale_at()
            if stale_at is not None and stale_at >= now:
                # Just past the threshold, so the report then says stale.
                wake_at = min(wake_at, stale_at + 1e-3)
            self._changed.clear()
            try:
                async with asyncio.timeout(max(0.0, wake_at - time.monotonic())):
                    await self._changed.wait()
            except TimeoutError:
                pass

    def _publish_status(self, now: float) -> None:
        report = self._health.report(now)
        # The heartbeat (every second) carries the stream's state too, so that a monitor that did not hear the last
        # FeedStatus (published on a change and every feed.status_interval) still knows it.
        self._publisher.status = heartbeat_status(report)
        self._publisher.publish(
            topics.FEED_STATUS,
            FeedStatus(
                ts_ns=time.time_ns(),
                connected=report.connected,
                stale=report.stale,
                reason=report.reason,
                feed=self._cfg.feed.feed,
                last_print_age_s=report.last_print_age_s,
                prints=self._published,
                dropped=self._filter.dropped_total,
            ),
        )

    def _report_drops(self) -> None:
        total = self._filter.dropped_total
        if total > self._drops_reported:
            by_reason = ", ".join(f"{r.value} {n}" for r, n in sorted(self._filter.dropped.items()))
            self._alert(
                "warning",
                "bad_prints",
                f"dropped {total - self._drops_reported} bad prints in the last "
                f"{self._cfg.feed.status_interval:g} s (since start: {by_reason})",
            )
            self._drops_reported = total
        self._drops_logged = 0

    def _alert(self, severity: Severity, code: str, text: str) -> None:
        # The log, the bus, and for a critical one the operator's alert command (gridbot.alerts).
        self._alerts.alert(severity, code, text)

    # ------------------------------------------------------------------------------------------------ stream events

    def stream_connected(self) -> None:
        log.info("stream connected and logged in; subscribing to %s trades", self._symbol)
        self._alerted_refusal = None
        self._health.on_connected()
        self._changed.set()

    def stream_lost(self, reason: str) -> None:
        if self._health.connected:
            log.warning("stream lost: %s", reason)
        self._health.on_disconnected(reason)
        self._changed.set()

    def stream_refused(self, code: int | None, text: str) -> None:
        severity, sentence = describe_refusal(code, text, self._cfg.feed.feed)
        self._health.on_disconnected(sentence)
        self._changed.set()
        if code == 409:
            self._go_fatal(sentence)
        elif code != self._alerted_refusal:
            # One alert per cause until the stream connects again (alpaca-py retries every few seconds).
            self._alerted_refusal = code
            self._alert(severity, f"stream_refused_{code or 'unknown'}", sentence)

    def stream_error(self, code: int | None, text: str) -> None:
        if code == 409:
            self._go_fatal(describe_refusal(code, text, self._cfg.feed.feed)[1])
        else:
            self._alert("warning", f"stream_error_{code or 'unknown'}", f"the stream sent error {code}: {text}")

    def stream_fault(self, text: str) -> None:
        self._frame_faults += 1
        log.warning("stream fault #%d (frame skipped, connection kept): %s", self._frame_faults, text)

    def _go_fatal(self, reason: str) -> None:
        if self._fatal is None:
            self._fatal = reason
            self._fatal_event.set()
