"""NoticeBook: the cadence, the caps, ignition-on, the answers' follow-ups, failures, state."""

from __future__ import annotations

import pytest

from pack_agent.config import NoticeSettings
from pack_agent.core.notices import (
    ATTEMPTS_EXHAUSTED,
    HEAD_UNIT_SILENT,
    Cadence,
    Notice,
    NoticeAck,
    NoticeBook,
)

DAY = 86400.0
HOUR = 3600.0


def book(**kw: object) -> NoticeBook:
    return NoticeBook(Cadence(**kw))  # type: ignore[arg-type]


def attempt(b: NoticeBook, n: Notice, t: float) -> None:
    """A whole attempt: started and delivered on the one channel."""
    assert n in b.due(t), f"not due at {t}"
    b.start_attempt(n, t, ["can"])
    b.delivered(n, "can")


def test_cadence_defaults_match_the_configuration_defaults():
    assert Cadence.from_settings(NoticeSettings()) == Cadence()


def test_due_at_once_then_every_interval_up_to_the_cap():
    b = book(max_attempts=3)
    n = b.open_notice("capacity-80", "advisory", 0.0)
    attempt(b, n, 0.0)
    assert b.due(DAY - 1) == []
    attempt(b, n, DAY)
    attempt(b, n, 2 * DAY)
    assert b.due(10 * DAY) == []  # capped


def test_critical_repeats_sooner_with_its_own_cap():
    b = book(critical_repeat_interval_s=HOUR, critical_max_per_period=4, period_s=DAY)
    n = b.open_notice("thermal", "critical", 0.0)
    assert n.notice_id == 0x0201
    for i in range(4):
        attempt(b, n, i * HOUR)
    assert b.due(5 * HOUR) == []  # four in the last 24 h
    assert b.due(DAY - 1) == []
    assert b.due(DAY) == [n]  # the first attempt left the window


def test_ignition_on_shows_again_within_the_per_period_cap():
    b = book(max_per_period=3)
    n = b.open_notice("capacity-80", "advisory", 0.0)
    attempt(b, n, 0.0)
    assert b.due(HOUR) == []
    assert b.on_ignition_on() == [n]
    attempt(b, n, HOUR)
    assert b.on_ignition_on() == [n]
    attempt(b, n, 2 * HOUR)
    assert b.on_ignition_on() == [n]
    assert b.due(3 * HOUR) == []  # three today already
    assert b.due(DAY) == [n]  # the window moved on


def test_ignition_off_holds_attempts_until_on():
    b = book()
    n = b.open_notice("capacity-80", "advisory", 0.0)
    assert b.due(0.0, vehicle_on=False) == []
    assert b.due(0.0, vehicle_on=None) == [n]  # ignition not mapped: do not wait for it
    attempt(b, n, 0.0)
    assert b.due(2 * DAY, vehicle_on=False) == []
    assert b.due(2 * DAY, vehicle_on=True) == [n]


def test_repeat_on_ignition_can_be_switched_off():
    b = book(repeat_on_ignition=False)
    n = b.open_notice("capacity-80", "advisory", 0.0)
    attempt(b, n, 0.0)
    assert b.on_ignition_on() == []
    assert b.due(HOUR) == []


def test_a_channel_that_cannot_deliver_does_not_hold_the_others():
    b = book()
    n = b.open_notice("capacity-80", "advisory", 0.0)
    b.start_attempt(n, 0.0, ["can", "mqtt"])
    b.delivered(n, "mqtt")
    assert b.due(DAY - 1) == []
    assert b.due(DAY) == [n]  # can still owes attempt 1: attempt 2 starts anyway
    b.start_attempt(n, DAY, ["can", "mqtt"])
    assert n.attempts == 2 and n.undelivered == ["can", "mqtt"]


def test_ack_matches_sequence_and_id_only():
    b = book()
    n = b.open_notice("capacity-80", "advisory", 0.0)
    assert b.on_ack(NoticeAck(n.seq, n.notice_id, "seen"), 1.0) is None  # never shown yet
    attempt(b, n, 0.0)
    assert b.on_ack(NoticeAck(n.seq + 1, n.notice_id, "seen"), 1.0) is None
    assert b.on_ack(NoticeAck(n.seq, 0x0201, "seen"), 1.0) is None
    assert b.on_ack(NoticeAck(n.seq, n.notice_id, "seen"), 5.0) is n
    assert n.response == "seen" and n.acknowledged_at == 5.0
    assert b.on_ack(NoticeAck(n.seq, n.notice_id, "seen"), 6.0) is None  # the same, again


def test_service_booked_stops_and_closes():
    b = book()
    n = b.open_notice("capacity-80", "advisory", 0.0)
    attempt(b, n, 0.0)
    b.on_ack(NoticeAck(n.seq, n.notice_id, "service_booked"), 10.0)
    assert not n.open and n.closed_reason == "service_booked" and n.follow_up == "stop"
    assert b.on_ignition_on() == []
    assert b.due(100 * DAY) == []
    assert b.on_ack(NoticeAck(n.seq, n.notice_id, "seen"), 11.0) is None


def test_seen_reminds_slowly_and_not_at_ignition():
    b = book(slow_repeat_interval_s=7 * DAY)
    n = b.open_notice("capacity-80", "advisory", 0.0)
    attempt(b, n, 0.0)
    b.on_ack(NoticeAck(n.seq, n.notice_id, "seen"), DAY)
    assert n.open and n.follow_up == "slow"
    assert b.on_ignition_on() == []
    assert b.due(7 * DAY) == []  # a week from the answer, not from the attempt
    assert b.due(8 * DAY) == [n]
    attempt(b, n, 8 * DAY)
    # a second answer to the reminder: service booked closes it
    assert b.on_ack(NoticeAck(n.seq, n.notice_id, "service_booked"), 8 * DAY + 60) is n
    assert not n.open and n.acknowledged_at == DAY


def test_seen_on_a_critical_notice_keeps_repeating():
    b = book(critical_repeat_interval_s=HOUR)
    n = b.open_notice("thermal", "critical", 0.0)
    attempt(b, n, 0.0)
    b.on_ack(NoticeAck(n.seq, n.notice_id, "seen"), 60.0)
    assert n.follow_up == "repeat"
    assert b.due(HOUR + 60) == [n]


def test_dismissed_shows_again_at_the_next_ignition_on():
    b = book()
    n = b.open_notice("capacity-80", "advisory", 0.0)
    attempt(b, n, 0.0)
    b.on_ack(NoticeAck(n.seq, n.notice_id, "dismissed"), 60.0)
    assert n.follow_up == "repeat" and n.open
    assert b.due(HOUR) == []
    assert b.on_ignition_on() == [n]
    assert b.due(HOUR) == [n]


@pytest.mark.parametrize(
    ("setting", "response", "follow_up"),
    [
        ("after_seen", "seen", "stop"),
        ("after_dismissed", "dismissed", "slow"),
        ("after_service_booked", "service_booked", "repeat"),
    ],
)
def test_each_answer_follow_up_is_configurable(setting, response, follow_up):
    b = book(**{setting: follow_up})
    n = b.open_notice("capacity-80", "advisory", 0.0)
    attempt(b, n, 0.0)
    b.on_ack(NoticeAck(n.seq, n.notice_id, response), 1.0)
    assert n.follow_up == follow_up and n.open == (follow_up != "stop")


def test_silent_head_unit_and_exhausted_attempts_are_reported_once():
    b = book(max_attempts=3, head_unit_silent_s=2.5 * DAY)
    n = b.open_notice("capacity-80", "advisory", 0.0)
    for d in range(3):
        attempt(b, n, d * DAY)
    assert b.failures(2 * DAY, None) == []
    assert b.failures(2.5 * DAY, None) == [(n, HEAD_UNIT_SILENT)]
    assert b.failures(2.6 * DAY, None) == []
    assert b.failures(3 * DAY, None) == [(n, ATTEMPTS_EXHAUSTED)]
    assert b.failures(30 * DAY, None) == []


def test_a_head_unit_heard_recently_is_not_silent():
    b = book(head_unit_silent_s=2 * DAY)
    n = b.open_notice("capacity-80", "advisory", 0.0)
    attempt(b, n, 0.0)
    assert b.failures(2.5 * DAY, head_unit_heard_at=1.5 * DAY) == []
    assert b.failures(3.5 * DAY, head_unit_heard_at=1.5 * DAY) == [(n, HEAD_UNIT_SILENT)]


def test_an_answered_notice_is_not_a_failure():
    b = book(max_attempts=1, head_unit_silent_s=DAY)
    n = b.open_notice("capacity-80", "advisory", 0.0)
    attempt(b, n, 0.0)
    b.on_ack(NoticeAck(n.seq, n.notice_id, "dismissed"), 10.0)
    assert b.failures(50 * DAY, None) == []


def test_state_round_trip_keeps_cadence_caps_answers_and_sequence():
    b = book(max_per_period=2)
    n = b.open_notice("capacity-80", "advisory", 0.0)
    attempt(b, n, 0.0)
    b.on_ignition_on()
    attempt(b, n, HOUR)
    b.on_ack(NoticeAck(n.seq, n.notice_id, "dismissed"), 2 * HOUR)
    b.on_ignition_on()
    again = NoticeBook(b.cadence, b.to_state())
    (m,) = again.notices
    assert m == n
    assert again.due(3 * HOUR) == []  # the cap of 2 a day survived the restart
    assert again.due(DAY) == [m]  # the pending ignition-on too
    assert again.open_notice("x", "critical", 0).seq == n.seq + 1


def test_sequence_rolls_over_without_zero():
    b = NoticeBook(Cadence(), {"next_seq": 255, "notices": []})
    assert b.open_notice("a", "advisory", 0).seq == 255
    assert b.open_notice("b", "advisory", 0).seq == 1


def test_clock_going_back_does_not_resend_early():
    b = book()
    n = b.open_notice("a", "advisory", 10 * DAY)
    attempt(b, n, 10 * DAY)
    assert b.due(2 * DAY) == []
    assert b.due(2 * DAY + DAY / 2) == []
    assert b.due(3 * DAY) == [n]


def test_clear_returns_the_open_notices_and_keeps_the_closed():
    b = book()
    done = b.open_notice("a", "advisory", 0.0)
    attempt(b, done, 0.0)
    b.on_ack(NoticeAck(done.seq, done.notice_id, "service_booked"), 1.0)
    live = b.open_notice("b", "critical", 2.0, notice_id=0x0202)
    assert live.notice_id == 0x0202
    assert b.clear() == [live]
    assert b.notices == [done]


def test_a_critical_notice_is_not_held_by_the_ignition():
    b = book()
    n = b.open_notice("thermal", "critical", 0.0)
    assert b.due(0.0, vehicle_on=False) == [n]


def test_a_notice_stored_before_follow_ups_existed_stays_closed_by_its_answer():
    old = {
        "notice_id": 0x0101,
        "severity": "advisory",
        "rule_id": "capacity-80",
        "seq": 4,
        "opened_at": 0.0,
        "attempts": 2,
        "last_attempt": DAY,
        "acknowledged_at": DAY + 5,
        "response": "seen",
    }
    unanswered = dict(old, seq=5, acknowledged_at=None, response=None)
    b = NoticeBook(Cadence(), {"next_seq": 6, "notices": [old, unanswered]})
    assert [n.seq for n in b.active()] == [5]
    assert b.notices[0].closed_at == DAY + 5 and b.notices[0].closed_reason == "seen"
