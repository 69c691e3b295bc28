"""SequenceTracker: gaps within an incarnation, restarts, repeats, per-topic counting (pure)."""

from __future__ import annotations

from bus.sequence import SeqCheck, SequenceTracker


def test_consecutive_messages_are_fine_and_the_first_is_a_baseline() -> None:
    tracker = SequenceTracker()

    results = [tracker.observe("feed", 100, "md.tick.TQQQ", seq) for seq in (57, 58, 59)]

    assert results == [SeqCheck(), SeqCheck(), SeqCheck()]


def test_a_jump_is_a_gap_naming_the_expected_and_received_numbers() -> None:
    tracker = SequenceTracker()
    tracker.observe("feed", 100, "md.tick.TQQQ", 1)
    tracker.observe("feed", 100, "md.tick.TQQQ", 2)

    check = tracker.observe("feed", 100, "md.tick.TQQQ", 7)
    after = tracker.observe("feed", 100, "md.tick.TQQQ", 8)

    assert check.gap == (3, 7)
    assert check.restarted_from is None
    assert after == SeqCheck()


def test_sequences_are_counted_per_topic_so_filtered_topics_are_no_gap() -> None:
    tracker = SequenceTracker()

    tracker.observe("statekeeper", 5, "state.update", 1)
    tracker.observe("statekeeper", 5, "hb.statekeeper", 1)
    tracker.observe("statekeeper", 5, "hb.statekeeper", 2)
    check = tracker.observe("statekeeper", 5, "state.update", 2)

    assert check == SeqCheck()


def test_a_new_incarnation_is_a_restart_not_a_gap_and_resets_every_topic() -> None:
    tracker = SequenceTracker()
    tracker.observe("executor", 100, "order.event", 40)
    tracker.observe("executor", 100, "broker.event", 9)

    restart = tracker.observe("executor", 200, "order.event", 1)
    other_topic = tracker.observe("executor", 200, "broker.event", 3)

    assert restart == SeqCheck(restarted_from=100)
    assert other_topic == SeqCheck()  # a baseline in the new incarnation
    assert tracker.incarnation("executor") == 200


def test_a_repeat_or_an_older_number_is_a_duplicate_and_does_not_move_the_mark() -> None:
    tracker = SequenceTracker()
    tracker.observe("feed", 1, "md.tick.TQQQ", 10)

    assert tracker.observe("feed", 1, "md.tick.TQQQ", 10).duplicate
    assert tracker.observe("feed", 1, "md.tick.TQQQ", 4).duplicate
    assert tracker.observe("feed", 1, "md.tick.TQQQ", 11) == SeqCheck()


def test_untracked_topics_report_restarts_but_no_gaps() -> None:
    tracker = SequenceTracker()
    tracker.observe("feed", 1, "hb.feed", 1, track=False)

    assert tracker.observe("feed", 1, "hb.feed", 9, track=False) == SeqCheck()
    assert tracker.observe("feed", 2, "hb.feed", 1, track=False) == SeqCheck(restarted_from=1)


def test_a_heartbeat_reveals_lost_latest_messages_once() -> None:
    tracker = SequenceTracker()
    tracker.observe("statekeeper", 5, "state.update", 1)
    tracker.observe("statekeeper", 5, "state.update", 2)

    assert tracker.check_tail("statekeeper", 5, "state.update", 2) is None  # nothing missed
    assert tracker.check_tail("statekeeper", 5, "state.update", 4) == (3, 5)  # 3 and 4 lost
    assert tracker.check_tail("statekeeper", 5, "state.update", 4) is None  # reported once
    assert tracker.observe("statekeeper", 5, "state.update", 5) == SeqCheck()  # and not again by the next one


def test_a_heartbeat_says_nothing_without_a_baseline_or_for_another_incarnation() -> None:
    tracker = SequenceTracker()
    tracker.observe("statekeeper", 5, "state.update", 1)

    assert tracker.check_tail("statekeeper", 5, "alert", 9) is None
    assert tracker.check_tail("statekeeper", 6, "state.update", 9) is None
