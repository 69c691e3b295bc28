"""The feed's health: connected or not, how old the last good print is, stale or not, and why. Pure.

Ages are measured on the receiving machine's monotonic clock from when the last good print *arrived*, never from
the exchange timestamp: the simulated exchange replays 2025 prints with 2025 timestamps, and a real feed's clock
is not ours. Times are seconds (``float``) of a monotonic clock the caller passes in.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HealthReport:
    connected: bool
    stale: bool
    reason: str
    last_print_age_s: float | None

    @property
    def change_key(self) -> tuple[bool, bool, str]:
        """What counts as a change worth an immediate FeedStatus (the age alone is not)."""
        return (self.connected, self.stale, self.reason)


class FeedHealth:
    """Tracks the stream's connection and the arrival of good prints."""

    def __init__(self, stale_after_s: float) -> None:
        if not stale_after_s > 0:
            raise ValueError(f"feed.stale_after must be a positive number of seconds, was {stale_after_s}")
        self._stale_after = stale_after_s
        self._connected = False
        self._down_reason = "not connected yet"
        self._last_print: float | None = None

    @property
    def connected(self) -> bool:
        return self._connected

    def on_connected(self) -> None:
        self._connected = True
        self._down_reason = ""

    def on_disconnected(self, reason: str) -> None:
        self._connected = False
        self._down_reason = reason

    def on_print(self, now: float) -> bool:
        """Note a good print's arrival; return True when this ends a stale spell (worth a status now)."""
        was_stale = self._last_print is None or now - self._last_print > self._stale_after
        self._last_print = now
        return was_stale

    def report(self, now: float) -> HealthReport:
        # Milliseconds are plenty for an operator or a strategy deciding whether a price is fresh.
        age = None if self._last_print is None else round(max(0.0, now - self._last_print), 3)
        if not self._connected:
            return HealthReport(False, True, self._down_reason or "disconnected", age)
        if age is None:
            return HealthReport(True, True, "connected, no print yet", None)
        if age > self._stale_after:
            return HealthReport(True, True, f"no print for more than {self._stale_after:g} s", age)
        return HealthReport(True, False, "", age)

    def stale_at(self) -> float | None:
        """When (monotonic seconds) the feed turns stale if no print arrives; None if it is not fresh now."""
        if not self._connected or self._last_print is None:
            return None
        return self._last_print + self._stale_after
