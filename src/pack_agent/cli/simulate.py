"""`pack-agent simulate`: the virtual vehicle alone on any python-can bus.

Point a real agent, candump or ``cantools monitor`` at it. Two clocks:

- fast (default): a whole simulated day in one burst of frames, ``--speed`` days
  per second; on a ``virtual`` bus the frames carry simulated time stamps, so an
  agent that takes time from frames (the demo) lives through years in seconds.
- ``--follow STATUS_FILE`` (fast mode): never more than ``--lead-days`` ahead of the
  agent whose status file that is (``[daemon] clock = "frames"``): an agent that reads
  slower than ``--speed`` (a loaded machine) still answers the head unit in time.
- ``--realtime``: every message at its DBC cycle time (``GenMsgCycleTime``) with
  wall-clock time stamps, as a real BMS sends; one scenario day every
  ``--day-seconds``.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from typing import Any

HELP = "run the virtual vehicle (BMS, VCU, head unit) alone on a CAN bus"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bus-interface", default="socketcan", help="python-can interface (default socketcan)"
    )
    parser.add_argument("--channel", default="vcan0", help="the channel (default vcan0)")
    parser.add_argument("--scenario", default="ageing", help="see --list-scenarios")
    parser.add_argument("--list-scenarios", action="store_true", help="list them and exit")
    parser.add_argument(
        "--speed", type=float, default=100.0, help="fast mode: simulated days per second"
    )
    parser.add_argument(
        "--realtime", action="store_true", help="frames at their DBC cycle times, wall clock"
    )
    parser.add_argument(
        "--day-seconds", type=float, default=10.0, help="real time: wall seconds per scenario day"
    )
    parser.add_argument("--days", type=int, help="stop after this many days")
    parser.add_argument(
        "--head-unit",
        default="seen",
        choices=["seen", "dismissed", "service_booked", "none"],
        help="how the virtual head unit answers owner notices (default seen)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no line per day")
    parser.add_argument(
        "--follow",
        metavar="STATUS_FILE",
        help="fast mode: wait for the agent whose [daemon] status_file this is (its clock "
        "from the frames) whenever it is more than --lead-days behind",
    )
    parser.add_argument(
        "--lead-days",
        type=float,
        default=5.0,
        help="with --follow: how far ahead of the agent's frame time (default 5)",
    )


FOLLOW_STALL_S = 60.0  # the agent's frame time did not move this long: it is not reading


def follower(path: str, lead_s: float, stop: threading.Event) -> Callable[[float], None]:
    """``sync(t)`` for the virtual vehicle: returns once the agent's status file says it
    has read up to ``t - lead_s`` (or ``stop`` is set); fails, naming the file, when its
    frame time stays still for ``FOLLOW_STALL_S`` (the agent stopped or never started)."""
    from pathlib import Path

    from pack_agent.errors import PackAgentError
    from pack_agent.runtime.status import read_status

    status = Path(path)

    def frame_time() -> float | None:
        agent = (read_status(status) or {}).get("agent")
        value = agent.get("frame_time") if isinstance(agent, dict) else None
        return float(value) if isinstance(value, (int, float)) else None

    def sync(t: float) -> None:
        seen, moved = frame_time(), time.monotonic()
        while not stop.is_set() and (seen is None or seen < t - lead_s):
            if time.monotonic() - moved > FOLLOW_STALL_S:
                raise PackAgentError(
                    f"--follow {path}: the agent's frame time has not moved for "
                    f"{FOLLOW_STALL_S:g} s (at {seen}, the simulator at {t})"
                )
            stop.wait(0.02)
            now = frame_time()
            if now != seen:
                seen, moved = now, time.monotonic()

    return sync


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import signal

    import can

    from pack_agent.canbus.checks import load_and_check
    from pack_agent.config import load_config, reference_config_path
    from pack_agent.core.events import utc_from_timestamp
    from pack_agent.dev.sim import SCENARIOS, VirtualHeadUnit, VirtualVehicle
    from pack_agent.dev.sim.scenario import DAY, DayState
    from pack_agent.errors import BusError, PackAgentError

    if args.list_scenarios:
        for name, sc in SCENARIOS.items():
            print(f"{name:<18} {sc.days:5d} days  {sc.description}")
        return 0
    if args.scenario not in SCENARIOS:
        raise PackAgentError(
            f"--scenario: unknown scenario {args.scenario!r} (choose from {', '.join(SCENARIOS)})"
        )
    if args.speed <= 0 or args.day_seconds <= 0:
        raise PackAgentError("--speed and --day-seconds must be > 0")
    if args.follow and (args.realtime or args.lead_days < 0):
        raise PackAgentError("--follow: only in fast mode (not --realtime), --lead-days >= 0")
    scenario = SCENARIOS[args.scenario]
    if args.days is not None:
        scenario = dataclasses.replace(scenario, days=max(1, args.days))
    config = load_config(reference_config_path())
    db = load_and_check(config)
    # simulated time travels in the frames' time stamps where the interface can carry them
    # (an agent with [daemon] clock = "frames" lives through the scenario's days)
    keeps_time = args.bus_interface in ("virtual", "localbus")
    options: dict[str, Any] = {"preserve_timestamps": True} if keeps_time else {}
    if args.follow and args.bus_interface == "localbus":
        # an agent starved of CPU for 250 ms must not lose the frames sent meanwhile (it
        # would then never reach the time the simulator waits for): wait for it to read
        options["backpressure_s"] = FOLLOW_STALL_S
    try:
        bus = can.Bus(interface=args.bus_interface, channel=args.channel, **options)
    except Exception as exc:
        raise BusError(
            f"--bus-interface {args.bus_interface} --channel {args.channel}: cannot open: {exc}"
        ) from exc
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    def on_day(s: DayState) -> None:
        if args.quiet:
            return
        when = utc_from_timestamp(s.time).strftime("%Y-%m-%d")
        fault = f"  ALARM {s.fault}" if s.fault else ""
        print(f"day {s.day:4d} {when}  code {s.code}  SOH {s.soh:5.1f} %{fault}", flush=True)

    response = None if args.head_unit == "none" else args.head_unit
    delay = args.day_seconds / 2 if args.realtime else 2 * DAY
    head_unit = VirtualHeadUnit(db, response=response, delay_s=delay)
    print(
        f"simulating '{scenario.name}' ({scenario.description}) on "
        f"{args.bus_interface}:{args.channel}, "
        + (
            f"real time, {args.day_seconds:g} s per day"
            if args.realtime
            else f"{args.speed:g} days/s"
        )
        + "; Ctrl-C stops",
        flush=True,
    )
    sync = follower(args.follow, args.lead_days * DAY, stop) if args.follow else None
    vehicle = VirtualVehicle(
        bus, db, scenario, head_unit, pace_s=1.0 / args.speed, on_day=on_day, sync=sync
    )
    try:
        if args.realtime:
            vehicle.run_realtime(args.day_seconds, stop)
        else:
            vehicle.run(stop)
    except can.CanError as exc:
        raise BusError(f"{args.bus_interface}:{args.channel}: {exc}") from exc
    finally:
        bus.shutdown()
    if head_unit.shown:
        print(f"head unit showed {len(head_unit.shown)} notice(s)")
    return 130 if stop.is_set() else 0
