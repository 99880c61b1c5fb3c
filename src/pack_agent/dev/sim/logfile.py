"""A scenario as a CAN log file: years of a virtual pack in a file any CAN tool reads.

python-can picks the writer from the suffix: ``.log`` (candump, absolute time
stamps), ``.asc`` (Vector), ``.blf``, ``.csv``, ``.trc``. The frames are exactly
what the virtual vehicle puts on a bus (``sim.vehicle.day_frames``), stamped in
simulated time, so replaying the file gives the agent the same decisions at the
same log times as the live simulation.

    python -m pack_agent.dev.sim.logfile ageing /tmp/ageing.log
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pack_agent.dev.sim.scenario import SCENARIOS, DayState, Scenario
from pack_agent.dev.sim.vehicle import day_frames

if TYPE_CHECKING:
    import can
    import cantools.database

ExtraFrames = Callable[["cantools.database.Database", DayState], Iterable["can.Message"]]


def reference_database() -> cantools.database.Database:
    from pack_agent.canbus.checks import load_and_check
    from pack_agent.config import load_config, reference_config_path

    return load_and_check(load_config(reference_config_path()))


def scenario_frames(
    scenario: Scenario,
    db: cantools.database.Database | None = None,
    extra: ExtraFrames | None = None,
) -> Iterator[can.Message]:
    """Every frame of the scenario, day by day, in time order (``extra`` adds frames to a
    day, e.g. alarm frames for a safety story)."""
    db = db or reference_database()
    for state in scenario.states():
        frames = list(day_frames(db, state))
        if extra is not None:
            frames += list(extra(db, state))
        yield from sorted(frames, key=lambda f: f.timestamp)


def write_log(
    path: str | Path,
    scenario: Scenario,
    db: cantools.database.Database | None = None,
    extra: ExtraFrames | None = None,
    channel: str = "can0",
) -> int:
    """Writes the scenario to ``path`` (format from the suffix); returns the frame count."""
    import can

    n = 0
    with can.Logger(str(path)) as writer:
        for frame in scenario_frames(scenario, db, extra):
            frame.channel = channel
            writer.on_message_received(frame)
            n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pack_agent.dev.sim.logfile", description="write a scenario as a CAN log"
    )
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("path", help="the log file: .log (candump), .asc, .blf, .csv, .trc")
    parser.add_argument("--channel", default="can0")
    args = parser.parse_args(argv)
    n = write_log(args.path, SCENARIOS[args.scenario], channel=args.channel)
    print(f"{args.path}: {n} frames of scenario '{args.scenario}'")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
