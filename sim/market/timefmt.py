"""Times as the sim's users write and read them: ISO 8601 with an offset in, UTC ISO 8601 out."""

from __future__ import annotations

from datetime import UTC, datetime

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_start(text: str, key: str = "sim.start") -> int:
    """Return UTC nanoseconds for an ISO 8601 time with an offset (``2025-06-02T10:00:00-04:00``)."""
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{key} must be ISO 8601 like 2025-06-02T10:00:00-04:00, was {text!r}") from None
    if dt.tzinfo is None:
        raise ValueError(f"{key} needs a UTC offset (e.g. -04:00 for New York in summer, or Z), was {text!r}")
    return datetime_ns(dt)


def datetime_ns(dt: datetime) -> int:
    """Return UTC nanoseconds for an aware datetime, exactly (no float)."""
    delta = dt - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def iso_utc(ts_ns: int) -> str:
    """Format UTC nanoseconds as ISO 8601 UTC with microseconds (``2025-04-30T14:16:00.000000Z``)."""
    dt = datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=UTC).replace(
        microsecond=(ts_ns // 1000) % 1_000_000
    )
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
