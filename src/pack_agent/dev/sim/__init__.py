"""The virtual vehicle: a BMS, a VCU and a head unit that speak the reference CAN database.

The demo and most integration tests run on it; ``pack-agent simulate`` puts it
on any python-can bus so real tools can be pointed at it.
"""

from pack_agent.dev.sim.head_unit import Shown, VirtualHeadUnit
from pack_agent.dev.sim.scenario import SCENARIOS, Scenario
from pack_agent.dev.sim.vehicle import VirtualVehicle

__all__ = ["SCENARIOS", "Scenario", "Shown", "VirtualHeadUnit", "VirtualVehicle"]
