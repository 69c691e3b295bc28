"""The feed's health: connection, staleness by arrival time, and what counts as a change."""

from __future__ import annotations

import pytest

from services.feed.health import FeedHealth


def test_before_anything_it_is_disconnected_and_stale() -> None:
    h = FeedHealth(10.0)
    r = h.report(0.0)
    assert (r.connected, r.stale, r.last_print_age_s) == (False, True, None)
    assert r.reason == "not connected yet"
    assert h.stale_at() is None


def test_connected_without_prints_is_stale() -> None:
    h = FeedHealth(10.0)
    h.on_connected()
    r = h.report(1.0)
    assert (r.connected, r.stale, r.reason) == (True, True, "connected, no print yet")


def test_a_print_makes_it_fresh_until_stale_after_passes() -> None:
    h = FeedHealth(10.0)
    h.on_connected()
    assert h.on_print(100.0) is True  # ends the stale spell
    assert h.on_print(101.0) is False
    assert h.stale_at() == 111.0
    fresh = h.report(111.0)
    assert (fresh.stale, fresh.reason, fresh.last_print_age_s) == (False, "", 10.0)
    stale = h.report(111.5)
    assert stale.stale and stale.reason == "no print for more than 10 s"
    assert stale.last_print_age_s == pytest.approx(10.5)


def test_the_age_alone_is_not_a_change_but_staleness_is() -> None:
    h = FeedHealth(10.0)
    h.on_connected()
    h.on_print(0.0)
    assert h.report(1.0).change_key == h.report(9.0).change_key
    assert h.report(9.0).change_key != h.report(10.5).change_key
    assert h.report(10.5).change_key == h.report(500.0).change_key


def test_a_disconnect_keeps_the_age_and_says_why() -> None:
    h = FeedHealth(10.0)
    h.on_connected()
    h.on_print(0.0)
    h.on_disconnected("stream dropped: ConnectionClosedError")
    r = h.report(2.0)
    assert (r.connected, r.stale, r.reason, r.last_print_age_s) == (
        False, True, "stream dropped: ConnectionClosedError", 2.0,
    )
    assert h.stale_at() is None
    h.on_connected()
    assert not h.report(3.0).stale


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_a_non_positive_threshold_is_refused_with_the_key_name(bad: float) -> None:
    with pytest.raises(ValueError, match="feed.stale_after"):
        FeedHealth(bad)
