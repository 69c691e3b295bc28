"""Which peers are alive, from when each last sent anything. Pure logic: the caller passes the clock."""

from __future__ import annotations


class PeerTable:
    """Last-seen times per sender; a peer silent for ``down_after`` seconds is down."""

    def __init__(self, down_after: float) -> None:
        if down_after <= 0:
            raise ValueError(f"down_after must be positive seconds, was {down_after!r}")
        self.down_after = down_after
        self._last_seen: dict[str, float] = {}

    def seen(self, sender: str, now: float) -> None:
        self._last_seen[sender] = now

    def age(self, sender: str, now: float) -> float | None:
        """Seconds since ``sender`` was last heard from; None if never."""
        last = self._last_seen.get(sender)
        return None if last is None else max(0.0, now - last)

    def alive(self, sender: str, now: float) -> bool:
        age = self.age(sender, now)
        return age is not None and age < self.down_after

    def ages(self, now: float) -> dict[str, float]:
        """Every peer ever heard from, with seconds since it was last heard from."""
        return {sender: max(0.0, now - last) for sender, last in sorted(self._last_seen.items())}
