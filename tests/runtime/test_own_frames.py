"""The agent's own frames on a real bus (issue 15, item 1): the owner-notice, text and answer
frames come from their own namespace (``[notice] database``), never merged by name with the
vehicle's; an id the agent would transmit that a vehicle database also uses is refused; the
CAN channel can be turned off. Synthetic vehicle databases, the real daemon on a python-can
``virtual`` bus, replays of recorded logs, and ``pack-agent check-config`` as a user runs it.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import can
import cantools
import pytest
from cantools.database.can import Message, Signal

from agent_thread import RunningDaemon
from pack_agent.canbus.checks import load_all, load_and_check
from pack_agent.cli import main
from pack_agent.config import DATA_DIR, AgentConfig, as_data, load_config, reference_config_path
from pack_agent.config.load import dump_toml
from pack_agent.delivery.owner_channel import owner_notifiers
from pack_agent.dev.sim.head_unit import VirtualHeadUnit
from pack_agent.dev.sim.vehicle import code_pages
from pack_agent.errors import ConfigError
from pack_agent.runtime.replay import replay

CODE = "0RJPEA00HAU0AAF131001955"
AGENT_MESSAGES = ("PA_OwnerNotice", "HU_NoticeAck", "PA_NoticeText")
BUILTIN = "builtin:pack_agent_reference.dbc"


def vehicle_dbc(
    path: Path, extra: tuple[Message, ...] = (), replace: tuple[Message, ...] = ()
) -> Path:
    """A vehicle's own database: the reference vehicle's BMS and VCU frames without the
    agent's frames, ``replace`` taking the place of the messages of the same name, and
    ``extra`` messages of the vehicle's own."""
    ref = cantools.database.load_file(str(DATA_DIR / "pack_agent_reference.dbc"))
    replaced = {m.name: m for m in replace}
    messages = [replaced.get(m.name, m) for m in ref.messages if m.name not in AGENT_MESSAGES]
    db = cantools.database.can.Database(
        messages=messages + list(extra), nodes=ref.nodes, dbc_specifics=ref.dbc
    )
    path.write_text(db.as_dbc_string(), encoding="ascii")
    return path


def message(name: str, frame_id: int, *signals: str) -> Message:
    """A vehicle message of 16-bit little-endian signals scaled by 0.1."""
    return Message(
        frame_id=frame_id,
        name=name,
        length=8,
        signals=[
            Signal(name=s, start=16 * i, length=16, conversion=None, minimum=0, maximum=6553.5)
            for i, s in enumerate(signals)
        ],
    )


def kl15() -> Message:
    """A real compact EV's ignition status sits at 0x3C0, the default id of PA_OwnerNotice."""
    return Message(
        frame_id=0x3C0, name="KL15_Status", length=8, signals=[Signal("KL15_On", 0, 1)]
    )


def config_data(tmp_path: Path, databases: list[str], **notice: Any) -> dict[str, Any]:
    """The reference configuration on a virtual channel, with one quick rule (SOH below 80 %
    twice) and the notice settings given."""
    data = as_data(load_config(reference_config_path()))
    data["databases"] = databases
    data["buses"] = [
        {"name": "powertrain", "interface": "virtual", "channel": f"own-{uuid.uuid4().hex[:10]}"}
    ]
    data["store"]["path"] = str(tmp_path / "agent.db")
    data["mqtt"]["port"] = 1  # no broker: the events stay in the outbox
    data["health"] = {"publish_interval_s": 86400.0 * 1000, "bms_timeout_s": 86400.0 * 1000}
    data["rules"] = [
        {
            "id": "capacity-80",
            "metric": "soh",
            "below": 80.0,
            "consecutive": 2,
            "description_en": "test",
            "description_zh": "测试",
        }
    ]
    data["e2e"] = {}  # the synthetic vehicles send no E2E checksums
    data["notice"].update(mqtt_copy=False, head_unit_silent_s=86400.0 * 1000)
    data["notice"].update(notice)
    return data


def write_config(tmp_path: Path, data: dict[str, Any]) -> Path:
    p = tmp_path / "agent.toml"
    p.write_text(dump_toml(data), encoding="utf-8")
    return p


def check_config(path: Path, capture: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``pack-agent check-config FILE``: exit code, stdout, stderr (``capfd`` also sees what
    a library writes to the process's stderr)."""
    rc = main(["check-config", str(path)])
    out, err = capture.readouterr()
    return rc, out, err


def vehicle_frames(db: Any, soh_message: str, soh_signal: str, t: float) -> list[can.Message]:
    """What the BMS sends: the pack code (twice, confirmed), then two low SOH readings."""
    msg = db.get_message_by_name(soh_message)
    out = code_pages(db, CODE, t) + code_pages(db, CODE, t + 0.1)
    for _ in range(2):
        values = {s.name: 0 for s in msg.signals}
        values[soh_signal] = 75.0
        out.append(
            can.Message(
                arbitration_id=msg.frame_id,
                is_extended_id=False,
                data=msg.encode(values),
                timestamp=t,
            )
        )
    return out


def send(peer: can.BusABC, frame: can.Message) -> None:
    """One frame stamped now, then a pause: readings one instant apart are one sample to a
    rule."""
    frame.timestamp = time.time()
    peer.send(frame)
    time.sleep(0.05)


def frames_from_agent(peer: can.BusABC, wait_s: float) -> list[can.Message]:
    deadline = time.monotonic() + wait_s
    out = []
    while time.monotonic() < deadline:
        frame = peer.recv(0.05)
        if frame is not None:
            out.append(frame)
    return out


# -- two namespaces ---------------------------------------------------------------


def test_a_vehicle_message_named_like_the_reference_one_keeps_its_own_signals(
    tmp_path, capfd, caplog
):
    """An older configuration lists the built-in database beside the vehicle's, whose
    BMS_Health is another frame with other signals: the vehicle's is read, the clash is a
    finding of the check (not an "Overwriting message" line on stderr), and the agent's
    own notice still goes out."""
    dbc = vehicle_dbc(tmp_path / "vehicle.dbc", replace=(message("BMS_Health", 0x4A1, "Veh_SOH"),))
    data = config_data(tmp_path, [str(dbc), BUILTIN])
    data["metrics"] = {
        "soh": {"message": "BMS_Health", "signal": "Veh_SOH"},
        "ignition": {"message": "VCU_Vehicle", "signal": "VCU_Ignition"},
    }
    path = write_config(tmp_path, data)

    rc, out, err = check_config(path, capfd)
    assert rc == 0, out
    assert "databases[1]: message 'BMS_Health' of builtin:pack_agent_reference.dbc is also " \
        "in databases[0] (vehicle.dbc): the vehicle's is used" in out
    assert "need not be in databases" in out
    assert "Overwriting" not in err

    cfg = load_config(path)
    dbs = load_all(cfg)
    assert dbs.vehicle.get_message_by_name("BMS_Health").frame_id == 0x4A1
    # the messages both files describe alike are no finding; the agent's own are not the
    # vehicle's
    assert len(dbs.findings) == 1
    assert dbs.findings[0].startswith("databases[1]: message 'BMS_Health' of builtin:")
    assert not {m.name for m in dbs.vehicle.messages} & set(AGENT_MESSAGES)
    assert dbs.notice is not None
    assert dbs.notice.get_message_by_name("PA_OwnerNotice").frame_id == 0x3C0

    peer = can.Bus(interface="virtual", channel=cfg.buses[0].channel)
    agent = RunningDaemon(cfg, clock=time.time)
    try:
        for f in vehicle_frames(dbs.vehicle, "BMS_Health", "Veh_SOH", time.time()):
            send(peer, f)
        agent.wait_for(lambda a: "owner.notified" in a.types())
        seen = frames_from_agent(peer, 0.3)
    finally:
        agent.stop()
        peer.shutdown()
    assert agent.daemon.agent.tracker.latest["soh"].value == pytest.approx(75.0)
    logged = [r for r in caplog.records if "message 'BMS_Health' of builtin" in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelname == "WARNING"  # the daemon says it once
    notified = next(e.data for e in agent.events if e.type == "owner.notified")
    assert notified["channel"] == "can" and notified["rule_id"] == "capacity-80"
    assert 0x3C0 in {f.arbitration_id for f in seen}


def test_the_agents_frames_need_no_listing_in_databases(tmp_path):
    """The vehicle namespace holds the vehicle's files only; the notice namespace is the
    built-in database on its own."""
    dbc = vehicle_dbc(tmp_path / "vehicle.dbc")
    cfg = load_config(write_config(tmp_path, config_data(tmp_path, [str(dbc)])))
    dbs = load_all(cfg)
    names = {m.name for m in dbs.vehicle.messages}
    assert "BMS_Health" in names and not names & set(AGENT_MESSAGES)
    assert dbs.notice is not None and set(AGENT_MESSAGES) <= {m.name for m in dbs.notice.messages}
    assert dbs.findings == []


def test_a_mapped_message_in_two_vehicle_files_is_an_error_an_unmapped_one_a_finding(tmp_path):
    first = vehicle_dbc(tmp_path / "a.dbc", extra=(message("Extra_Info", 0x555, "Extra_X"),))
    second = tmp_path / "b.dbc"
    db = cantools.database.can.Database(
        messages=[message("BMS_Health", 0x4A1, "Other_SOH"), message("Extra_Info", 0x556, "Y")]
    )
    second.write_text(db.as_dbc_string(), encoding="ascii")
    cfg = load_config(write_config(tmp_path, config_data(tmp_path, [str(first), str(second)])))
    with pytest.raises(ConfigError) as info:
        load_all(cfg)
    assert info.value.problems == [
        "databases[1]: message 'BMS_Health' is also in databases[0] (a.dbc): the mapping "
        "cannot tell which one is meant; keep one of the files or rename it"
    ]

    data = config_data(tmp_path, [str(first), str(second)])
    data["metrics"] = {"ignition": {"message": "VCU_Vehicle", "signal": "VCU_Ignition"}}
    data["rules"] = []
    dbs = load_all(load_config(write_config(tmp_path, data)))
    assert any(
        f.startswith("databases[1]: message 'Extra_Info' is also in databases[0] (a.dbc)")
        for f in dbs.findings
    ), dbs.findings


def test_cantools_warnings_are_findings_not_stderr(tmp_path, capfd):
    """Two vehicle messages on one id (neither mapped): cantools' warning comes back as a
    finding of the check, named by its file's key."""
    dbc = vehicle_dbc(
        tmp_path / "vehicle.dbc",
        extra=(message("Body_One", 0x600, "A"), message("Body_Two", 0x600, "B")),
    )
    path = write_config(tmp_path, config_data(tmp_path, [str(dbc)]))
    rc, out, err = check_config(path, capfd)
    assert rc == 0, out
    assert "warning: databases[0]: cantools: Overwriting message 'Body_One' with 'Body_Two'" in out
    assert "Overwriting" not in err


# -- ids on one bus -----------------------------------------------------------------


def test_a_vehicle_frame_on_the_notice_id_is_refused_naming_both(tmp_path, capsys):
    dbc = vehicle_dbc(tmp_path / "vehicle.dbc", extra=(kl15(),))
    path = write_config(tmp_path, config_data(tmp_path, [str(dbc)]))
    rc, out, _ = check_config(path, capsys)
    assert rc == 1
    assert (
        "notice.message: the agent would transmit 'PA_OwnerNotice' at frame id 0x3C0 on bus "
        "'powertrain', the id of 'KL15_Status' in databases[0] (vehicle.dbc)"
    ) in out
    assert "[notice] message_id (0x3C3 is free in every database)" in out
    assert "the maker's own head-unit messages" in out
    # the same with the older listing of the built-in database: still refused
    old = write_config(tmp_path, config_data(tmp_path, [str(dbc), BUILTIN]))
    rc, out, _ = check_config(old, capsys)
    assert rc == 1 and "'KL15_Status' in databases[0] (vehicle.dbc)" in out


def test_an_answer_id_used_by_the_vehicle_is_a_finding(tmp_path):
    dbc = vehicle_dbc(tmp_path / "vehicle.dbc", extra=(message("Seat_Heat", 0x3C1, "Level"),))
    dbs = load_all(load_config(write_config(tmp_path, config_data(tmp_path, [str(dbc)]))))
    assert any(
        f.startswith(
            "notice.ack_message: the agent reads answers from 'HU_NoticeAck' at frame id 0x3C1 "
            "on bus 'powertrain', the id of 'Seat_Heat' in databases[0] (vehicle.dbc)"
        )
        and "[notice] ack_message_id" in f
        for f in dbs.findings
    ), dbs.findings


def test_override_ids_are_checked(tmp_path):
    dbc = vehicle_dbc(tmp_path / "vehicle.dbc")
    data = config_data(tmp_path, [str(dbc)], message_id=0x20000000)
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, data))
    assert any(p.startswith("notice.message_id:") for p in info.value.problems)
    data = config_data(tmp_path, [str(dbc)], message_id=0x3D0, ack_message_id=0x3D0)
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, data))
    assert "notice.ack_message_id: 0x3D0 is already notice.message_id" in info.value.problems
    # an override onto the id of another of the agent's own messages
    data = config_data(tmp_path, [str(dbc)], message_id=0x3C1)
    with pytest.raises(ConfigError) as info:
        load_all(load_config(write_config(tmp_path, data)))
    assert any("has frame id 0x3C1, like 'PA_OwnerNotice'" in p for p in info.value.problems)


def test_moved_ids_carry_the_notice_and_the_answer_over_a_virtual_bus(tmp_path, capsys):
    """KL15 at 0x3C0: the notice moves to 0x3D0 and the answer to 0x3D1; the daemon sends
    the notice on 0x3D0 only, the head unit answers on 0x3D1 and the answer is recorded."""
    dbc = vehicle_dbc(tmp_path / "vehicle.dbc", extra=(kl15(),))
    data = config_data(tmp_path, [str(dbc)], message_id=0x3D0, ack_message_id=0x3D1)
    path = write_config(tmp_path, data)
    rc, out, _ = check_config(path, capsys)
    assert rc == 0, out
    cfg = load_config(path)
    dbs = load_all(cfg)
    assert dbs.notice is not None
    hu = VirtualHeadUnit(dbs.notice, response="seen", delay_s=0.0)
    peer = can.Bus(interface="virtual", channel=cfg.buses[0].channel)
    agent = RunningDaemon(cfg, clock=time.time)
    seen: list[can.Message] = []
    try:
        ignition = dbs.vehicle.get_message_by_name("KL15_Status")
        kl15_on = ignition.encode({"KL15_On": 1})
        peer.send(can.Message(arbitration_id=0x3C0, is_extended_id=False, data=kl15_on))
        for f in vehicle_frames(dbs.vehicle, "BMS_Health", "BMS_SOH", time.time()):
            send(peer, f)
        deadline = time.monotonic() + 10
        while "owner.acknowledged" not in agent.types() and time.monotonic() < deadline:
            frame = peer.recv(0.05)
            if frame is not None:
                seen.append(frame)
                hu.on_frame(frame, time.time())
            for answer in hu.answers_due(time.time() + 1):
                peer.send(answer)
    finally:
        agent.stop()
        peer.shutdown()
    notifier, _ = owner_notifiers(cfg, "powertrain", None, dbs.notice)  # type: ignore[arg-type]
    assert notifier is not None and notifier.frame_ids("powertrain") == [(0x3D1, False)]
    ids = {f.arbitration_id for f in seen}
    assert 0x3D0 in ids and 0x3C0 not in ids  # KL15's id stays the vehicle's
    assert hu.shown and hu.shown[0].notice_id == 0x0101
    acked = [e.data for e in agent.events if e.type == "owner.acknowledged"]
    assert acked and acked[0]["channel"] == "can" and acked[0]["response"] == "seen"


# -- no CAN channel to the head unit ------------------------------------------------


def test_without_the_can_channel_the_mqtt_copy_is_the_notice(tmp_path, capsys):
    """A head unit reached through the maker's app: nothing is transmitted on the bus (so
    KL15 at 0x3C0 is no clash), the owner.notice event is the notice and owner.notified
    says channel "mqtt"."""
    dbc = vehicle_dbc(tmp_path / "vehicle.dbc", extra=(kl15(),))
    path = write_config(tmp_path, config_data(tmp_path, [str(dbc)], channel="none"))
    rc, out, _ = check_config(path, capsys)
    assert rc == 0 and "owner notice: MQTT copy only" in out, out
    cfg = load_config(path)
    dbs = load_all(cfg)
    assert dbs.notice is None
    peer = can.Bus(interface="virtual", channel=cfg.buses[0].channel)
    agent = RunningDaemon(cfg, clock=time.time)
    try:
        for f in vehicle_frames(dbs.vehicle, "BMS_Health", "BMS_SOH", time.time()):
            send(peer, f)
        agent.wait_for(lambda a: "owner.notice" in a.types())
        sent = frames_from_agent(peer, 0.3)
    finally:
        agent.stop()
        peer.shutdown()
    assert sent == []  # the agent transmitted nothing
    notified = [e.data for e in agent.events if e.type == "owner.notified"]
    assert [n["channel"] for n in notified] == ["mqtt"]
    copy = next(e.data for e in agent.events if e.type == "owner.notice")
    assert copy["notice_id"] == 0x0101 and copy["texts"]
    assert agent.daemon.agent.notice_status()["channels"] == ["mqtt"]


def write_log(path: Path, frames: list[can.Message]) -> Path:
    writer = can.ASCWriter(str(path))
    for f in frames:
        writer.on_message_received(f)
    writer.stop()
    return path


def replay_frames(db: Any, t0: float) -> list[can.Message]:
    out = []
    for i, f in enumerate(vehicle_frames(db, "BMS_Health", "BMS_SOH", t0)):
        f.timestamp = t0 + i
        out.append(f)
    return out


@pytest.mark.parametrize("channel", ["can", "none"])
def test_replay_says_which_channel_carried_the_notice(tmp_path, channel):
    dbc = vehicle_dbc(tmp_path / "vehicle.dbc")
    cfg = load_config(write_config(tmp_path, config_data(tmp_path, [str(dbc)], channel=channel)))
    log = write_log(tmp_path / "drive.asc", replay_frames(load_and_check(cfg), 1_800_000_000.0))
    events = replay(cfg, log).events
    notified = [e.data["channel"] for e in events if e.type == "owner.notified"]
    assert notified == (["replay"] if channel == "can" else ["mqtt"])
    assert ("owner.notice" in {e.type for e in events}) == (channel == "none")


def test_reference_configuration_keeps_one_file_for_both(tmp_path):
    """The reference vehicle speaks the built-in database: it is both namespaces, no
    finding, no clash (the agent's messages in the vehicle's list are its own)."""
    cfg: AgentConfig = load_config(reference_config_path())
    dbs = load_all(cfg)
    assert dbs.findings == []
    assert dbs.vehicle.get_message_by_name("BMS_Health").frame_id == 0x3A1
    assert dbs.notice is not None and dbs.notice is not dbs.vehicle


def test_the_mapping_assistant_moves_the_agents_frames_off_the_vehicles_ids(tmp_path, capsys):
    """`pack-agent map` on a vehicle whose KL15 sits at 0x3C0: the starter configuration
    moves the notice frame to a free id and `check-config` accepts it."""
    dbc = vehicle_dbc(tmp_path / "vehicle.dbc", extra=(kl15(),))
    out = tmp_path / "starter.toml"
    assert main(["map", str(dbc), "--out", str(out)]) == 0, capsys.readouterr().out
    text = out.read_text(encoding="utf-8")
    assert "message_id = 0x3C3" in text and "builtin:" not in text
    assert "text_message_id" not in text and "ack_message_id" not in text
    capsys.readouterr()
    rc, printed, _ = check_config(out, capsys)
    assert rc == 0, printed
    dbs = load_all(load_config(out))
    assert dbs.notice is not None
    assert dbs.notice.get_message_by_name("PA_OwnerNotice").frame_id == 0x3C3


def test_a_vehicle_database_that_describes_the_agents_frames_is_no_clash(tmp_path):
    """A maker's copy of the reference database (the agent's frames in it, same names and
    ids) is the agent's frames described, not another sender; a frame of another name on
    the same id still is one."""
    copy = tmp_path / "copy.dbc"
    copy.write_bytes((DATA_DIR / "pack_agent_reference.dbc").read_bytes())
    dbs = load_all(load_config(write_config(tmp_path, config_data(tmp_path, [str(copy)]))))
    assert dbs.findings == []
    text = copy.read_text(encoding="cp1252").replace("PA_OwnerNotice", "Body_Status")
    copy.write_text(text, encoding="cp1252")
    data = config_data(tmp_path, [str(copy)])
    with pytest.raises(ConfigError) as info:
        load_all(load_config(write_config(tmp_path, data)))
    assert any("the id of 'Body_Status' in databases[0]" in p for p in info.value.problems)


def test_without_the_can_channel_the_app_answers_and_no_silence_is_reported(tmp_path):
    """CAN channel off, in simulated time: each attempt is an owner.notice event with
    owner.notified on "mqtt", nothing reaches the bus, a week without any head unit is no
    "head_unit_silent", and the app's answer (the backend's owner.answer command) is the
    proof on "app"."""
    from test_agent_notices import DAY, HOUR, T0, Rig
    from test_commands import command

    r = Rig(tmp_path, response="seen", head_unit_silent_s=DAY)
    try:
        r.cfg.notice.channel = "none"  # (Rig's own `channel` is its bus's)
        r.restart()
        r.decide(T0)
        r.run(T0, T0 + 8 * DAY, 6 * HOUR)
        notified = r.of("owner.notified")
        assert len(notified) >= 2 and {n["channel"] for n in notified} == {"mqtt"}
        assert len(r.of("owner.notice")) == len(notified)
        assert r.hu.shown == [] and r.hu_bus.recv(0) is None  # nothing on the bus
        assert r.of("owner.notice_failed") == []
        (notice,) = r.agent.notice_status()["open"]
        answer = command(
            r, "owner.answer", T0 + 8 * DAY + HOUR, id="a-1", seq=notice["seq"],
            notice_id=notice["notice_id"], response="service_booked",
        )  # fmt: skip
        assert answer["status"] == "applied"
        (ack,) = r.of("owner.acknowledged")
        assert ack["channel"] == "app" and ack["response"] == "service_booked"
    finally:
        r.close()
