"""The virtual BMS, VCU and head unit on a python-can bus.

Frames carry simulated time in their timestamps (the bus is opened with
``preserve_timestamps`` where the interface supports it), so an agent that
takes time from frames lives through years in seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pack_agent.database import encode_message
from pack_agent.sim.head_unit import Shown, VirtualHeadUnit  # noqa: F401 - re-exported
from pack_agent.sim.scenario import DayState, Scenario

if TYPE_CHECKING:
    import can
    import cantools.database


encode = encode_message  # frames for the simulator, tests and benches


def code_pages(db: cantools.database.Database, code: str, t: float) -> list[can.Message]:
    """The 24-character code as four ``BMS_PackCode`` pages, six ASCII characters each."""
    out = []
    for page in range(4):
        chunk = code[page * 6 : page * 6 + 6].encode("ascii").ljust(6, b"\0")
        values = {
            "PackCode_Page": page,
            "PackCode_PackIndex": 0,
            f"PackCode_Text{page}": int.from_bytes(chunk, "little"),
        }
        out.append(encode(db, "BMS_PackCode", values, t + page * 0.01))
    return out


def alarm_values(s: DayState) -> dict[str, Any]:
    """``BMS_Alarms`` for the day: every flag 0 normally; a thermal event or an
    insulation failure when the scenario says so (GB/T 32960.3 alarm levels)."""
    values: dict[str, Any] = {
        "BMS_MaxAlarmLevel": 0,
        "BMS_CellVoltDelta": 14,
        "BMS_InsulationResistance": 12000,
    }
    if s.fault == "thermal":
        values.update(
            BMS_AlarmThermalEvent=1, BMS_AlarmOverTemp=1, BMS_AlarmTempDiff=1, BMS_MaxAlarmLevel=4
        )
    elif s.fault == "insulation":
        values.update(BMS_AlarmInsulation=1, BMS_InsulationResistance=20, BMS_MaxAlarmLevel=3)
    return values


def cyclic_values(s: DayState) -> dict[str, dict[str, Any]]:
    """The values of every cyclic message (except the code pages) on one day."""
    hot = s.fault == "thermal"
    return {
        "BMS_Health": {
            "BMS_SOH": s.soh,
            "BMS_Capacity": s.capacity_ah,
            "BMS_InternalResistance": s.resistance_mohm,
            "BMS_FullCycles": s.full_cycles,
            "BMS_EndOfLife": 0,
        },
        "BMS_Status": {
            "BMS_SOC": s.soc,
            "BMS_PackVoltage": 355.0,
            "BMS_PackCurrent": 12.5,
            "BMS_TempMax": 96 if hot else 31,
            "BMS_TempMin": 24,
        },
        "BMS_Alarms": alarm_values(s),
        "BMS_CellVoltage": {
            "BMS_CellVoltMax": 3702,
            "BMS_CellVoltMin": 3688,
            "BMS_CellVoltMaxNo": 17,
            "BMS_CellVoltMinNo": 42,
        },
        "VCU_Vehicle": {"VCU_Odometer": s.odometer_km, "VCU_Ignition": 2},
    }


def day_frames(db: cantools.database.Database, s: DayState) -> list[can.Message]:
    """One simulated day: the code (twice, to be confirmed), health, status and vehicle."""
    t = s.time
    frames = code_pages(db, s.code, t) + code_pages(db, s.code, t + 1.0)
    frames.append(
        encode(
            db,
            "BMS_Health",
            {
                "BMS_SOH": s.soh,
                "BMS_Capacity": s.capacity_ah,
                "BMS_InternalResistance": s.resistance_mohm,
                "BMS_FullCycles": s.full_cycles,
                "BMS_EndOfLife": 0,
            },
            t + 2.0,
        )
    )
    frames.append(
        encode(
            db,
            "BMS_Status",
            {"BMS_SOC": s.soc, "BMS_PackVoltage": 355.0, "BMS_PackCurrent": 12.5},
            t + 2.1,
        )
    )
    frames.append(
        encode(db, "VCU_Vehicle", {"VCU_Odometer": s.odometer_km, "VCU_Ignition": 2}, t + 2.2)
    )
    frames.append(encode(db, "BMS_Alarms", alarm_values(s), t + 2.3))
    return frames


class VirtualVehicle:
    """Plays a scenario onto a bus, day by day, and runs the head unit on the same bus."""

    def __init__(
        self,
        bus: can.BusABC,
        db: cantools.database.Database,
        scenario: Scenario,
        head_unit: VirtualHeadUnit | None = None,
        pace_s: float = 0.0,
        on_day: Callable[[DayState], None] | None = None,
    ) -> None:
        self.bus = bus
        self.db = db
        self.scenario = scenario
        self.head_unit = head_unit
        self.pace_s = pace_s
        self.on_day = on_day
        self.day: DayState | None = None

    def run(self, stop: threading.Event | None = None) -> None:
        for state in self.scenario.states():
            if stop is not None and stop.is_set():
                return
            self.day = state
            for frame in day_frames(self.db, state):
                self.bus.send(frame)
            self.serve_head_unit(state.time + 3.0)
            if self.on_day is not None:
                self.on_day(state)
            if self.pace_s:
                time.sleep(self.pace_s)
            self.serve_head_unit(state.time + 4.0)

    def run_realtime(
        self,
        day_s: float,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Real time: every cyclic message at its DBC cycle time (``GenMsgCycleTime``),
        stamped with wall time; the scenario moves on one day every ``day_s`` seconds.
        The code pages go out one per cycle, 0, 1, 2, 3 in turn, as the DBC says."""
        stop = stop or threading.Event()
        cycles = {
            m.name: m.cycle_time / 1000.0
            for m in self.db.messages
            if m.cycle_time and m.senders and set(m.senders) & {"BMS", "VCU"}
        }
        page = 0
        for state in self.scenario.states():
            if stop.is_set():
                return
            self.day = state
            if self.on_day is not None:
                self.on_day(state)
            values = cyclic_values(state)
            start = clock()
            due = dict.fromkeys(cycles, start)
            while not stop.is_set():
                now = clock()
                if now - start >= day_s:
                    break
                for name, at in due.items():
                    if now < at:
                        continue
                    due[name] = max(at + cycles[name], now)  # never a burst to catch up
                    if name == "BMS_PackCode":
                        frame = code_pages(self.db, state.code, now)[page]
                        page = (page + 1) % 4
                    elif name in values:
                        frame = encode(self.db, name, values[name], now)
                    else:
                        continue
                    self.bus.send(frame)
                self.serve_head_unit(now)
                stop.wait(max(0.0, min(min(due.values()), start + day_s) - clock()))

    def serve_head_unit(self, now: float) -> None:
        if self.head_unit is None:
            return
        while True:
            frame = self.bus.recv(0)
            if frame is None:
                break
            self.head_unit.on_frame(frame, now)
        for answer in self.head_unit.answers_due(now):
            self.bus.send(answer)
