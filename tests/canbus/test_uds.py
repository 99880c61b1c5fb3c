"""UDS ReadDataByIdentifier over ISO-TP: pure parsing, and the real daemon polling the
virtual BMS's diagnostic server on a python-can virtual bus."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import can
import pytest

from agent_thread import RunningDaemon
from pack_agent.canbus.uds import (
    UdsNegativeResponse,
    UdsProtocolError,
    UdsWrongDid,
    extract_value,
    parse_response,
    read_request,
)
from pack_agent.config import AgentConfig, UdsValue, parse_config, reference_config_path
from pack_agent.config.load import tomllib
from pack_agent.dev.sim.uds_server import VirtualUdsBms, hyundai_0105_record, pack_code_record

CODE = "0RJPEA00HAU0AAF131001955"
CODE_DID = 0xF1A0
SOH_DID = 0x0105


def test_request_and_positive_response():
    assert read_request(0x0105) == b"\x22\x01\x05"
    assert parse_response(0x0105, b"\x62\x01\x05abc") == b"abc"


def test_negative_and_foreign_responses():
    with pytest.raises(UdsNegativeResponse) as err:
        parse_response(0x0105, b"\x7f\x22\x31")
    assert err.value.nrc == 0x31 and "requestOutOfRange" in str(err.value)
    with pytest.raises(UdsWrongDid):
        parse_response(0x0105, b"\x62\x01\x06ab")
    with pytest.raises(UdsProtocolError):
        parse_response(0x0105, b"\x50\x01")


def test_extract_value_scales_and_checks_range():
    spec = UdsValue(
        request_id=0x7E4,
        response_id=0x7EC,
        did=SOH_DID,
        start_byte=24,
        length=2,
        scale=0.1,
        minimum=0,
        maximum=110,
    )
    assert extract_value(spec, hyundai_0105_record(87.3)) == pytest.approx(87.3)
    with pytest.raises(ValueError, match="outside"):
        extract_value(spec, hyundai_0105_record(150.0))
    with pytest.raises(ValueError, match="data bytes"):
        extract_value(spec, b"\0" * 10)


def uds_config(tmp_path: Path, channel: str) -> AgentConfig:
    data: dict[str, Any] = tomllib.loads(reference_config_path().read_text(encoding="utf-8"))
    data["buses"] = [{"name": "powertrain", "interface": "virtual", "channel": channel}]
    link = {
        "request_id": 0x7E4,
        "response_id": 0x7EC,
        "timeout_s": 0.3,
        "retries": 1,
        "interval_s": 0.2,
    }
    data["metrics"] = {
        "soh": {
            "uds": {
                **link,
                "did": SOH_DID,
                "start_byte": 24,
                "length": 2,
                "scale": 0.1,
                "minimum": 0,
                "maximum": 110,
            }
        },
    }
    data["pack_code"] = {"source": "uds", "confirmations": 2, "uds": {**link, "did": CODE_DID}}
    # one quick rule on the only metric here: these tests are about UDS, not the policy
    data["rules"] = [
        {
            "id": "capacity-80",
            "metric": "soh",
            "below": 80.0,
            "consecutive": 3,
            "description_en": "test",
            "description_zh": "测试",
        }
    ]
    data["mqtt"] = {"port": 1}  # no broker: events stay in the store, that is fine here
    data["store"] = {"path": str(tmp_path / "agent.db")}
    data["health"] = {"bms_timeout_s": 5, "publish_interval_s": 3600}
    return parse_config(data, reference_config_path().parent, "test")


def test_daemon_reads_code_and_soh_by_uds_and_decides(tmp_path):
    channel = f"uds-{uuid.uuid4().hex[:10]}"
    soh = {"value": 90.0}
    bms_bus = can.Bus(interface="virtual", channel=channel)
    bms = VirtualUdsBms(
        bms_bus,
        0x7E4,
        0x7EC,
        {CODE_DID: pack_code_record(CODE), SOH_DID: lambda: hyundai_0105_record(soh["value"])},
    ).start()
    agent = RunningDaemon(uds_config(tmp_path, channel))
    try:
        agent.wait_for(lambda a: "pack.identified" in a.types())
        ident = next(e for e in agent.events if e.type == "pack.identified")
        assert ident.data["pack_code"] == CODE
        agent.wait_for(lambda a: a.daemon.agent.tracker.latest.get("soh") is not None)
        assert agent.daemon.agent.tracker.latest["soh"].value == pytest.approx(90.0)
        soh["value"] = 75.0  # three polls below 80 %: the rule decides, once
        agent.wait_for(lambda a: "scrap.condition_met" in a.types())
        decision = next(e for e in agent.events if e.type == "scrap.condition_met")
        assert decision.data["statistic"]["max"] == pytest.approx(75.0)
        assert decision.data["pack_code"] == CODE
    finally:
        agent.stop()
        bms.stop()
        bms_bus.shutdown()


def test_negative_response_is_counted_and_silence_is_per_source(tmp_path):
    channel = f"uds-{uuid.uuid4().hex[:10]}"
    bms_bus = can.Bus(interface="virtual", channel=channel)
    bms = VirtualUdsBms(bms_bus, 0x7E4, 0x7EC, {SOH_DID: hyundai_0105_record(91.0)})
    bms.refuse[CODE_DID] = 0x22  # conditionsNotCorrect
    bms.start()
    agent = RunningDaemon(uds_config(tmp_path, channel))
    try:
        counts = agent.daemon.agent.uds_counts
        agent.wait_for(lambda a: counts["uds:pack_code negative"] >= 2)
        assert "pack.identified" not in agent.types()
        assert "bms.silent" not in agent.types()  # a refusal is an answer
        bms.answering = False
        agent.wait_for(lambda a: a.types().count("bms.silent") >= 2)
        silent = {e.data["source"] for e in agent.events if e.type == "bms.silent"}
        assert silent == {"uds:soh", "uds:pack_code"}
        before = len(agent.events)
        bms.answering = True
        agent.wait_for(lambda a: a.types().count("bms.recovered") >= 2)
        assert agent.types()[before:].count("bms.silent") == 0
    finally:
        agent.stop()
        bms.stop()
        bms_bus.shutdown()


def test_a_late_uds_answer_never_feeds_the_rules(tmp_path):
    from pack_agent.canbus.checks import load_and_check
    from pack_agent.canbus.decoder import Decoder
    from pack_agent.canbus.uds import UdsResult, jobs_from_config
    from pack_agent.runtime.agent import Agent
    from pack_agent.store import Store

    cfg = uds_config(tmp_path, "unused")
    soh_job = next(j for j in jobs_from_config(cfg) if j.target == "soh")
    with Store(tmp_path / "late.db") as store:
        agent = Agent(cfg, Decoder(cfg, load_and_check(cfg)), store)
        max_age = agent.tracker.max_age("soh")
        assert max_age == pytest.approx(0.2 + 2 * 0.3 + 5)
        now = 1_000_000.0
        for i in range(5):  # five low readings, each delivered too late
            t = now + i * 100
            agent.handle_uds(UdsResult(soh_job, "value", t - max_age - 1, value=70.0), t)
        assert agent.stale_readings == 5
        assert "soh" not in agent.tracker.latest
        assert store.pending_count() == 0  # no decision, no event
        agent.handle_uds(UdsResult(soh_job, "value", now + 500, value=70.0), now + 501)
        assert agent.tracker.latest["soh"].value == 70.0


def test_the_virtual_vehicle_bms_answers_its_scenario_over_uds():
    from pack_agent.canbus.checks import load_and_check
    from pack_agent.config import load_config
    from pack_agent.dev.sim import SCENARIOS, VirtualVehicle
    from pack_agent.dev.sim.uds_server import vehicle_dids

    db = load_and_check(load_config(reference_config_path()))
    bus = can.Bus(interface="virtual", channel=f"uds-{uuid.uuid4().hex[:10]}")
    try:
        vehicle = VirtualVehicle(bus, db, SCENARIOS["healthy"])
        bms = VirtualUdsBms(bus, 0x7E4, 0x7EC, vehicle_dids(vehicle))
        assert bms.answer(b"\x22\x01\x05") == b"\x7f\x22\x22"  # not started: refused
        vehicle.day = SCENARIOS["healthy"].states()[3]
        code = parse_response(CODE_DID, bms.answer(b"\x22\xf1\xa0"))
        assert code.rstrip(b"\0").decode() == vehicle.day.code
        spec = UdsValue(
            request_id=0x7E4, response_id=0x7EC, did=SOH_DID, start_byte=24, length=2, scale=0.1
        )
        soh = extract_value(spec, parse_response(SOH_DID, bms.answer(b"\x22\x01\x05")))
        assert soh == pytest.approx(vehicle.day.soh)
        assert bms.answer(b"\x22\x12\x34") == b"\x7f\x22\x31"
        assert bms.answer(b"\x10\x03") == b"\x7f\x10\x11"
    finally:
        bus.shutdown()
