from pack_agent.core.readings import Reading
from pack_agent.core.tracker import PackTracker

A = "0RJPEA00HAU0AAF131001955"
B = "0RJPEA00HAU0AAJ5K0004242"


def trip(t: PackTracker, at: float) -> None:
    """A trip: BMS frames after a silence longer than the timeout (10 s here)."""
    t.on_frame(at)
    assert t.awake_since == at


def test_identified_then_same_then_replaced_after_two_trips():
    t = PackTracker(None, 10)
    trip(t, 0.0)
    [(kind, data)] = t.on_code(A, 0.0)
    assert kind == "pack.identified" and data["pack_code"] == A and data["valid"] is True
    assert data["fields"]["product_type"] in ("pack", "P")
    assert t.on_code(A, 0.0) == []
    assert t.on_code(B, 1.0) == []  # trip 1 with B: not yet a replacement
    assert t.code == A and not t.attributed
    assert t.on_code(B, 5.0) == []  # the same trip again: still one trip
    trip(t, 100.0)
    [(kind, data)] = t.on_code(B, 100.0)  # trip 2 with B, A never in between
    assert kind == "pack.replaced" and data["valid"] is True and data["errors"] == []
    assert data["previous_code"] == A and data["pack_code"] == B
    assert t.code == B and t.attributed


def test_replacement_is_seen_across_a_restart():
    t = PackTracker(A, 10)  # the code the store remembered
    trip(t, 0.0)
    assert t.on_code(A, 0.0) == []
    assert t.on_code(B, 1.0) == []
    saved = t.to_state()
    t2 = PackTracker(A, 10, state=saved)  # a reboot: the trip count is kept
    assert not t2.attributed
    trip(t2, 50.0)
    assert t2.on_code(B, 50.0)[0][0] == "pack.replaced"


def test_readings_under_another_code_are_never_the_known_packs():
    t = PackTracker(A, 10)
    trip(t, 0.0)
    t.on_code(A, 0.0)
    t.on_reading(Reading("soh", 91, 1.0))
    t.on_code(B, 2.0)  # another pack presents itself
    t.on_reading(Reading("soh", 55, 3.0))
    assert t.latest["soh"].value == 91  # B's 55 % is not A's
    assert t.health_snapshot(4.0) == {"pack_code": A, "metrics": {"soh": 91}}


def test_a_short_lived_different_code_is_forgotten():
    t = PackTracker(A, 10, replaced_after_trips=2)
    trip(t, 0.0)
    t.on_code(B, 0.0)  # a glitch, or a pack tried and taken out
    trip(t, 100.0)
    assert t.on_code(A, 100.0) == [] and t.attributed
    trip(t, 200.0)
    assert t.on_code(B, 200.0) == []  # counting starts again: one trip
    assert t.code == A


def test_replacement_trips_are_configurable():
    t = PackTracker(A, 10, replaced_after_trips=3)
    for at in (0.0, 100.0):
        trip(t, at)
        assert t.on_code(B, at) == []
    trip(t, 200.0)
    assert t.on_code(B, 200.0)[0][0] == "pack.replaced"


def test_an_invalid_code_that_persists_is_a_replacement_with_its_errors():
    bad = "0RJXEA00HAU0AAZ131001955"  # forged or corrupted
    t = PackTracker(A, 10)
    trip(t, 0.0)
    [(kind, data)] = t.on_code(bad, 0.0)
    assert kind == "pack.code_invalid" and not t.attributed and t.code == A
    trip(t, 100.0)
    events = t.on_code(bad, 100.0)
    [(kind, data)] = [e for e in events if e[0] == "pack.replaced"]
    assert data["pack_code"] == bad and data["previous_code"] == A
    assert data["valid"] is False and len(data["errors"]) >= 2 and data["fields"] is None


def test_an_uncoded_first_pack_is_not_taken_at_once():
    t = PackTracker(None, 10)
    trip(t, 0.0)
    [(kind, _)] = t.on_code("", 0.0)
    assert kind == "pack.code_invalid" and t.code is None
    trip(t, 100.0)
    [(kind, data)] = t.on_code("", 100.0)
    assert kind == "pack.identified" and data["valid"] is False and t.code == ""


def test_a_module_code_is_not_the_packs():
    module = A[:3] + "M" + A[4:]
    t = PackTracker(A, 10)
    trip(t, 0.0)
    [(kind, data)] = t.on_code(module, 0.0)
    assert kind == "pack.code_invalid"
    assert any(e.startswith("position 4:") and "module" in e for e in data["errors"])
    assert not t.attributed


def test_a_production_date_after_the_vehicles_date_is_reported():
    import datetime as dt

    now = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc).timestamp()
    future = "0RJPEA00HAU0AAJ5K0004242"  # made 2028-05-19
    t = PackTracker(None, 10)
    trip(t, now)
    [(kind, data)] = t.on_code(future, now)
    assert kind == "pack.identified" and data["valid"] is True
    assert data["production_date_in_future"] is True
    assert data["warnings"] == ["production date 2028-05-19 is after the vehicle's date 2026-06-01"]
    later = dt.datetime(2029, 1, 1, tzinfo=dt.timezone.utc).timestamp()
    t2 = PackTracker(None, 10)
    trip(t2, later)
    [(_, data)] = t2.on_code(future, later)
    assert data["production_date_in_future"] is False and data["warnings"] == []


def test_invalid_code_reported_once_with_every_reason():
    t = PackTracker(A, 10)
    bad = "0RJXEA00HAU0AAZ131001955"
    [(kind, data)] = t.on_code(bad, 0.0)
    assert kind == "pack.code_invalid" and data["raw"] == bad
    assert len(data["errors"]) >= 2
    assert t.on_code(bad, 0.0) == []
    assert t.code == A  # a forged or garbled code never replaces the known pack


def test_silence_and_recovery():
    t = PackTracker(A, 10)
    assert t.check_silence(100) == []  # nothing heard yet: nothing to miss
    t.on_reading(Reading("soh", 90, 100))
    assert t.check_silence(105) == []
    [(kind, _)] = t.check_silence(111)
    assert kind == "bms.silent" and t.bms_silent
    assert t.check_silence(200) == []
    [(kind, _)] = t.on_reading(Reading("soh", 90, 201))
    assert kind == "bms.recovered"


def test_stale_readings_are_not_fresh():
    t = PackTracker(A, 10)
    t.on_reading(Reading("soh", 90, 100))
    assert t.fresh("soh", 105).value == 90
    assert t.fresh("soh", 111) is None
    assert t.health_snapshot(111)["metrics"] == {}


def test_a_reading_is_judged_by_its_own_time():
    t = PackTracker(A, 10, max_age={"soh": 700})
    assert not t.is_stale(Reading("soc", 50, 100), 110)
    assert t.is_stale(Reading("soc", 50, 100), 110.5)  # older than bms_timeout_s
    assert t.is_stale(Reading("soc", 50, 200), 100)  # from the future: a clock jump
    assert not t.is_stale(Reading("soh", 90, 100), 700)  # a polled metric lives longer
    t.on_reading(Reading("soh", 90, 100))
    assert t.fresh("soh", 750) is not None and t.fresh("soh", 801) is None
    assert t.health_snapshot(801)["metrics"] == {}


def test_polled_source_silence_is_per_source_and_reported_once():
    t = PackTracker(A, 10)
    [(kind, data)] = t.on_source_failure("uds:soh", 100, "no answer")
    assert kind == "bms.silent" and data["source"] == "uds:soh"
    assert t.on_source_failure("uds:soh", 160, "no answer") == []
    assert t.on_source_failure("uds:pack_code", 160, "no answer")[0][0] == "bms.silent"
    assert t.on_source_answer("uds:other", 170) == []
    [(kind, data)] = t.on_source_answer("uds:soh", 170)
    assert kind == "bms.recovered" and data["source"] == "uds:soh"
    assert t.on_source_answer("uds:soh", 180) == []


def test_a_wake_up_is_the_first_frame_after_a_silence():
    t = PackTracker(A, 10)
    assert t.awake_since is None and not t.heard_lately(0.0)
    t.on_frame(100.0)
    t.on_frame(105.0)  # within the timeout: the same wake-up
    assert t.awake_since == 100.0 and t.heard_lately(115.0) and not t.heard_lately(115.1)
    t.on_frame(200.0)  # 95 s of silence
    assert t.awake_since == 200.0


def test_heard_lately_covers_the_longest_freshness_of_a_polled_metric():
    t = PackTracker(A, 10, max_age={"soh": 700})
    t.on_reading(Reading("soh", 90.0, 100.0))
    assert t.heard_lately(799.0) and not t.heard_lately(801.0)


def test_the_code_heard_time_and_a_rebase():
    t = PackTracker(A, 10)
    assert t.on_code(A, 50.0) == [] and t.code_heard_at == 50.0  # the same pack, heard again
    t.on_frame(5000.0)  # a stamp from a clock that was ahead
    t.rebase(60.0)
    assert t.awake_since == 60.0 and t.code_heard_at == 50.0
    t.on_code(A, 4000.0)
    t.rebase(70.0)
    assert t.code_heard_at is None  # heard on the abandoned line: not since the wake-up


def test_an_ignition_cycle_is_a_trip_too():
    t = PackTracker(A, 3 * 86400)  # a long BMS timeout: no wake-up between days
    trip(t, 0.0)
    assert t.on_code(B, 10.0) == []
    t.on_frame(86400.0)  # the next day, no silence longer than the timeout
    assert t.on_code(B, 86400.0) == []
    t.on_trip_start(86401.0)  # ignition Off->On
    assert t.on_code(B, 86402.0)[0][0] == "pack.replaced"


def test_after_a_wake_up_readings_wait_for_the_code():
    """The first seconds of a trip come before the code: they are held, then given to the
    known pack if it is the one presented, never if another code is."""
    t = PackTracker(A, 10, code_wait_s=60)
    trip(t, 0.0)
    t.on_code(A, 0.0)
    trip(t, 1000.0)
    t.on_reading(Reading("soh", 55, 1000.5))
    assert t.awaiting_code(1000.5) and "soh" not in t.latest
    t.hold(Reading("soh", 55, 1000.5))
    t.on_code(B, 1007.0)  # another pack
    assert [r.value for r in t.release(1007.0, code_heard=True)] == [55]
    assert not t.attributed and "soh" not in t.latest
    trip(t, 2000.0)
    t.on_reading(Reading("soh", 90, 2000.5))
    t.hold(Reading("soh", 90, 2000.5))
    assert t.release(2030.0) == []  # still waiting
    assert [r.value for r in t.release(2061.0)] == [90]  # no code came: the wait is over
    t.on_code(A, 2062.0)
    assert t.attributed


# -- bms.silent: only while the vehicle is awake -----------------------------------------


def _quiet_bms(ignition_mapped: bool = True) -> PackTracker:
    t = PackTracker(None, 10.0, ignition_mapped=ignition_mapped)
    t.on_reading(Reading("soh", 90.0, 100.0))
    return t


def test_a_car_that_parks_is_asleep_not_a_silent_bms() -> None:
    """Everything stops together (the ignition frame too, then overdue: unknown)."""
    t = _quiet_bms()
    t.on_vehicle_reading(Reading("ignition", 0.0, 100.5))  # key-off
    assert t.check_silence(200.0, ignition=None) == []
    assert t.check_silence(150.0, ignition=False) == []
    assert t.on_frame(9000.0) == []  # the next morning: no bms.recovered either


def test_the_ignition_on_makes_a_quiet_bms_silent() -> None:
    t = _quiet_bms()
    assert t.check_silence(105.0, ignition=True) == []  # within the timeout
    [(kind, data)] = t.check_silence(111.0, ignition=True)
    assert kind == "bms.silent" and data["silent_for_s"] == 11.0
    assert t.on_frame(120.0) == [("bms.recovered", {"pack_code": None})]


def test_other_frames_flowing_longer_than_the_timeout_make_it_silent() -> None:
    """The ignition unknown (not mapped, or overdue): other ECUs' frames still flowing
    more than the timeout after the BMS's last one say the vehicle is awake."""
    t = _quiet_bms(ignition_mapped=False)
    t.on_other_frame(105.0)
    assert t.check_silence(112.0, ignition=None) == []  # they stopped soon after
    t.on_other_frame(111.0)
    [(kind, _)] = t.check_silence(112.0, ignition=None)
    assert kind == "bms.silent"


def test_the_ignition_off_wins_over_other_frames() -> None:
    t = _quiet_bms()
    t.on_other_frame(130.0)  # the VCU keeps talking a while after key-off
    assert t.check_silence(131.0, ignition=False) == []


def test_with_no_ignition_and_no_other_frame_silence_alone_counts() -> None:
    """Nothing can tell a parked car from a silent BMS: as before (check-config says)."""
    t = _quiet_bms(ignition_mapped=False)
    [(kind, _)] = t.check_silence(111.0)
    assert kind == "bms.silent"


def test_a_reading_from_another_bus_is_no_witness() -> None:
    """The odometer on the body bus says nothing of the BMS's bus being awake."""
    t = _quiet_bms(ignition_mapped=False)
    t.on_vehicle_reading(Reading("odometer", 1000.0, 111.0), on_bms_bus=False)
    assert t.latest["odometer"].value == 1000.0
    [(kind, _)] = t.check_silence(112.0)  # no witness at all: silence alone, as before
    assert kind == "bms.silent"
    t2 = _quiet_bms()  # an ignition mapped, unknown now, and no frame on the BMS's bus
    t2.on_vehicle_reading(Reading("odometer", 1000.0, 111.0), on_bms_bus=False)
    assert t2.check_silence(112.0) == []
