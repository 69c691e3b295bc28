"""The simulated exchange's one clock: the broker's sessions, fills and timestamps and the stream's prints all read it.

Two modes. Free-running (the standalone broker, `manual` prices): simulated time = wall time + an offset, so
``set()`` moves it and it keeps ticking. Driven (a replay or scripted source): the market source sets the time of
each print with ``advance_to()``, and between prints the clock does not move by itself.
"""

from __future__ import annotations

import threading
import time


class SimClock:
    """Thread-safe simulated UTC clock in nanoseconds."""

    def __init__(self, start_ns: int | None = None, driven: bool = False) -> None:
        self._lock = threading.Lock()
        self._driven = driven
        self._offset_ns = 0 if start_ns is None else start_ns - time.time_ns()
        self._driven_ns = start_ns if start_ns is not None else time.time_ns()

    @property
    def driven(self) -> bool:
        return self._driven

    def now_ns(self) -> int:
        """Return the simulated time (UTC nanoseconds)."""
        with self._lock:
            if self._driven:
                return self._driven_ns
            return time.time_ns() + self._offset_ns

    def set(self, ts_ns: int) -> None:
        """Move the clock to ``ts_ns`` (forwards or backwards: the `time` control verb)."""
        with self._lock:
            self._driven_ns = ts_ns
            self._offset_ns = ts_ns - time.time_ns()

    def advance_to(self, ts_ns: int) -> None:
        """Move the clock forwards to ``ts_ns``; never backwards (a driven source's next print)."""
        with self._lock:
            if self._driven:
                self._driven_ns = max(self._driven_ns, ts_ns)
            else:
                now = time.time_ns() + self._offset_ns
                if ts_ns > now:
                    self._offset_ns = ts_ns - time.time_ns()
