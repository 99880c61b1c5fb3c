from pack_agent.notices import NoticeAck, NoticeBook

DAY = 86400.0


def test_due_at_once_then_every_interval_up_to_the_cap():
    book = NoticeBook(DAY, max_attempts=3)
    n = book.open_notice("capacity-80", "advisory", 0.0)
    assert book.due(0.0) == [n]
    book.record_attempt(n, 0.0)
    assert book.due(DAY - 1) == []
    assert book.due(DAY) == [n]
    book.record_attempt(n, DAY)
    book.record_attempt(n, 2 * DAY)
    assert book.due(10 * DAY) == []  # capped


def test_ack_closes_only_the_matching_notice():
    book = NoticeBook(DAY, 5)
    n = book.open_notice("capacity-80", "advisory", 0.0)
    assert book.on_ack(NoticeAck(n.seq + 1, n.notice_id, "seen"), 1.0) is None
    assert book.on_ack(NoticeAck(n.seq, 0x0201, "seen"), 1.0) is None
    got = book.on_ack(NoticeAck(n.seq, n.notice_id, "service_booked"), 5.0)
    assert got is n and n.response == "service_booked" and n.acknowledged_at == 5.0
    assert book.due(100 * DAY) == []
    assert book.on_ack(NoticeAck(n.seq, n.notice_id, "seen"), 6.0) is None  # a repeat


def test_state_round_trip_keeps_cadence_and_sequence():
    book = NoticeBook(DAY, 5)
    n = book.open_notice("capacity-80", "advisory", 0.0)
    book.record_attempt(n, 0.0)
    again = NoticeBook(DAY, 5, book.to_state())
    assert again.due(DAY / 2) == []
    assert [x.seq for x in again.due(DAY)] == [n.seq]
    assert again.open_notice("x", "critical", 0).seq == n.seq + 1


def test_sequence_rolls_over_without_zero():
    book = NoticeBook(DAY, 5, {"next_seq": 255, "notices": []})
    assert book.open_notice("a", "advisory", 0).seq == 255
    assert book.open_notice("b", "advisory", 0).seq == 1


def test_clock_going_back_does_not_resend_early():
    book = NoticeBook(DAY, 5)
    n = book.open_notice("a", "advisory", 10 * DAY)
    book.record_attempt(n, 10 * DAY)
    assert book.due(2 * DAY) == []
    assert book.due(2 * DAY + DAY / 2) == []
    assert book.due(3 * DAY) == [n]
