"""Per-sender sequence tracking: which messages a subscriber missed, and which senders restarted. Pure logic.

Every published message carries its sender's ``incarnation`` (the sender's start time in ns) and a sequence number
that counts the messages the sender published *on that topic*: 1, 2, 3 ... Counting per topic, not per sender, is
what makes gap detection work with ZeroMQ's prefix subscriptions: a subscriber to ``state.update`` never receives
the statekeeper's heartbeats or alerts, so a per-sender count would jump on every one of them.

A lost message is revealed by the next one on its topic; a heartbeat carries the sender's last number per topic,
so the loss of a topic's latest messages is found within a heartbeat too (``check_tail``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SeqCheck:
    """What one message's header says about the stream it belongs to."""

    # The sender's previous incarnation when this message shows that the sender restarted, else None.
    restarted_from: int | None = None
    # (expected, got) when messages were lost just before this one, else None.
    gap: tuple[int, int] | None = None
    # The sequence number was already seen (or is older): the message is a repeat and is skipped.
    duplicate: bool = False


OK = SeqCheck()


class SequenceTracker:
    """Remembers the last sequence number per (sender, topic) and the incarnation per sender."""

    def __init__(self) -> None:
        self._incarnations: dict[str, int] = {}
        self._last: dict[tuple[str, str], int] = {}

    def observe(self, sender: str, incarnation: int, topic: str, seq: int, track: bool = True) -> SeqCheck:
        """Record one message and say whether it reveals a restart, a gap or a repeat.

        ``track=False`` records only the incarnation (for topics the caller does not follow, such as heartbeats
        it reads only for liveness). The first message seen on a topic, or after a restart, is a baseline, not a
        gap: a subscriber that joins late or a sender that restarts begins where it finds the stream.
        """
        restarted_from = None
        known = self._incarnations.get(sender)
        if known != incarnation:
            self._incarnations[sender] = incarnation
            if known is not None:
                restarted_from = known
                self._forget(sender)
        if not track:
            return OK if restarted_from is None else SeqCheck(restarted_from=restarted_from)
        key = (sender, topic)
        last = self._last.get(key)
        if last is not None and seq <= last:
            return SeqCheck(restarted_from=restarted_from, duplicate=True)
        self._last[key] = seq
        gap = (last + 1, seq) if last is not None and seq != last + 1 else None
        if restarted_from is None and gap is None:
            return OK
        return SeqCheck(restarted_from=restarted_from, gap=gap)

    def check_tail(self, sender: str, incarnation: int, topic: str, last_published: int) -> tuple[int, int] | None:
        """Compare what ``sender`` says it last published on ``topic`` with what we saw (from its heartbeat).

        Return (expected, next) when we missed the latest ``next - expected`` messages: the hole is recorded as
        seen, so the next message on the topic is not reported again. Nothing is reported for a topic without a
        baseline or for another incarnation than the one we follow.
        """
        if self._incarnations.get(sender) != incarnation:
            return None
        key = (sender, topic)
        last = self._last.get(key)
        if last is None or last_published <= last:
            return None
        self._last[key] = last_published
        return (last + 1, last_published + 1)

    def incarnation(self, sender: str) -> int | None:
        return self._incarnations.get(sender)

    def _forget(self, sender: str) -> None:
        for key in [k for k in self._last if k[0] == sender]:
            del self._last[key]
