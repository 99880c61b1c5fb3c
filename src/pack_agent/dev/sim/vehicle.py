"""The virtual BMS, VCU and head unit on a python-can bus.

Frames carry simulated time in their timestamps (the bus is opened with
``preserve_timestamps`` where the interface supports it), so an agent that
takes time from frames lives through years in seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pack_agent.dev.sim.head_unit import Shown, VirtualHeadUnit  # noqa: F401 - re-exported
from pack_agent.dev.sim.protect import encode
from pack_agent.dev.sim.scenario import DayState, Scenario

if TYPE_CHECKING:
    import can
    import cantools.database


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


def alarm_values(s: DayState, at: float | None = None, fault: str | None = None) -> dict[str, Any]:
    """``BMS_Alarms`` at time ``at`` (None: any time of the day): every flag 0 normally; a
    thermal event or an insulation failure when the scenario says so (GB/T 32960.3 alarm
    levels). ``fault`` forces one (a stray frame)."""
    values: dict[str, Any] = {
        "BMS_MaxAlarmLevel": 0,
        "BMS_CellVoltDelta": 14,
        "BMS_InsulationResistance": 12000,
    }
    if fault is None and (s.fault if at is None else s.faulty(at)):
        fault = s.fault
    if fault == "thermal":
        values.update(
            BMS_AlarmThermalEvent=1, BMS_AlarmOverTemp=1, BMS_AlarmTempDiff=1, BMS_MaxAlarmLevel=4
        )
    elif fault == "insulation":
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
        "BMS_Lifetime": {"BMS_EnergyThroughput": _throughput(s)},
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


# VCU_Ignition (reference DBC): 0 Off, 1 Acc, 2 On, 3 Start
IGNITION_OFF, IGNITION_ACC, IGNITION_ON = 0, 1, 2
ALARM_CYCLE_S = 0.5  # BMS_Alarms every 500 ms (GenMsgCycleTime)
FAULT_BURST_S = 40.0  # after an alarm starts, its frames at full rate for this long...
FAULT_STEP_S = 60.0  # ...then one a minute while the car stands


@dataclass(frozen=True)
class Burst:
    """Frames sent together. ``settle``: the agent may answer them at once (a decision, a
    notice at ignition-on, a repeat), so the head unit reads the bus only after the agent
    has read them."""

    frames: list[can.Message]
    settle: bool = True


def day_bursts(db: cantools.database.Database, s: DayState) -> list[Burst]:
    """One simulated day as bursts of frames, in time order. Each trip: ignition On, the
    code (twice, to be confirmed), health, status and alarms; ignition Off at its end. A
    stray alarm frame is one frame between clean ones; a real fault is reported at the
    full 500 ms rate, then (the driver stops: ignition Acc) once a minute until Off."""
    bursts: list[Burst] = []
    trips: tuple[tuple[float, float | None], ...] = s.trips or ((s.time, None),)  # always On
    for k, (on, end) in enumerate(trips):
        off = float("inf") if end is None else end
        odo_on = s.odometer_km + 48.3 * k / len(trips)
        odo_off = s.odometer_km + 48.3 * (k + 1) / len(trips)
        ignition_on = {"VCU_Odometer": odo_on, "VCU_Ignition": IGNITION_ON}
        # the first 2.3 s after the wake-up; the VCU's ignition On arrives last (the agent
        # holds the readings that came before it for ``ignition.window_s``)
        wake = [
            *code_pages(db, s.code, on),
            *code_pages(db, s.code, on + 1.0),
            encode(db, "BMS_Health", _health(s), on + 2.0),
            encode(db, "BMS_Status", _status(s), on + 2.1),
            encode(db, "VCU_Vehicle", ignition_on, on + 2.2),
            encode(db, "BMS_Alarms", alarm_values(s, on + 2.3), on + 2.3),
            encode(db, "BMS_Lifetime", {"BMS_EnergyThroughput": _throughput(s)}, on + 2.3),
        ]
        bursts.append(Burst(wake))
        if s.glitch is not None and on < s.glitch[0] < off:
            g, fault = s.glitch
            stray = [
                encode(db, "BMS_Alarms", alarm_values(s, g, fault), g),
                encode(db, "BMS_Alarms", alarm_values(s, g + 0.5), g + 0.5),
                encode(db, "BMS_Alarms", alarm_values(s, g + 1.0), g + 1.0),
            ]
            bursts.append(Burst(stray))
        if s.fault_from is not None and on < s.fault_from < off:
            f = s.fault_from
            n = int(FAULT_BURST_S / ALARM_CYCLE_S) + 1
            times = [f + i * ALARM_CYCLE_S for i in range(n)]
            bursts.append(Burst([encode(db, "BMS_Alarms", alarm_values(s, t), t) for t in times]))
            t = f + s.stop_after_fault_s
            while end is not None and t < off:
                vcu = {"VCU_Odometer": odo_on, "VCU_Ignition": IGNITION_ACC}
                alarm = encode(db, "BMS_Alarms", alarm_values(s, t + 0.1), t + 0.1)
                bursts.append(Burst([encode(db, "VCU_Vehicle", vcu, t), alarm]))
                t += FAULT_STEP_S
            odo_off = odo_on
        if end is None:
            continue
        vcu = {"VCU_Odometer": odo_off, "VCU_Ignition": IGNITION_OFF}
        sleep = [
            encode(db, "VCU_Vehicle", vcu, off),
            encode(db, "BMS_Alarms", alarm_values(s, off + 0.1), off + 0.1),
        ]
        bursts.append(Burst(sleep, settle=False))  # advisory notices wait for the next On
    return bursts


def day_frames(db: cantools.database.Database, s: DayState) -> list[can.Message]:
    """Every frame of one simulated day, in time order (see ``day_bursts``)."""
    return [frame for burst in day_bursts(db, s) for frame in burst.frames]


def _health(s: DayState) -> dict[str, Any]:
    return {
        "BMS_SOH": s.soh,
        "BMS_Capacity": s.capacity_ah,
        "BMS_InternalResistance": s.resistance_mohm,
        "BMS_FullCycles": s.full_cycles,
        "BMS_EndOfLife": 0,
    }


def _throughput(s: DayState) -> int:
    """Lifetime MWh: the cycles times a 60 kWh pack, rounded down (as the DBC says)."""
    return min(int(s.full_cycles * 0.06), 8189)


def _status(s: DayState) -> dict[str, Any]:
    return {"BMS_SOC": s.soc, "BMS_PackVoltage": 355.0, "BMS_PackCurrent": 12.5}


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
        sync: Callable[[float], None] | None = None,
    ) -> None:
        self.bus = bus
        self.db = db
        self.scenario = scenario
        self.head_unit = head_unit
        self.pace_s = pace_s
        self.on_day = on_day
        self.sync = sync  # waits until the agent has read the frames up to a time
        self.day: DayState | None = None

    def run(self, stop: threading.Event | None = None) -> None:
        """Every day's bursts (``day_bursts``); after each, the head unit reads what the
        agent sent, and answers when its answer is due (``answer_delay_s`` after a showing).
        A day takes at least ``pace_s`` of wall time."""
        for state in self.scenario.states():
            if stop is not None and stop.is_set():
                return
            self.day = state
            started = time.monotonic()
            if self.on_day is not None:
                self.on_day(state)
            last = state.time
            for burst in day_bursts(self.db, state):
                self._answer_until(burst.frames[0].timestamp)
                for frame in burst.frames:
                    self.bus.send(frame)
                last = burst.frames[-1].timestamp
                if self.sync is not None and burst.settle:
                    self.sync(last)
                self.serve_head_unit(last + 0.5)
            if self.pace_s:
                time.sleep(max(0.0, started + self.pace_s - time.monotonic()))
            self.serve_head_unit(last + 1.0)

    def _answer_until(self, t: float) -> None:
        """The head unit's answers due before ``t``, each sent at its own time."""
        while self.head_unit is not None:
            due = self.head_unit.next_answer_at()
            if due is None or due >= t:
                return
            self.serve_head_unit(due)

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
