"""The mapping assistant: which signals of an unknown BMS database carry what the agent needs.

An integrator facing a new vehicle has a DBC of hundreds of messages and no map
to the agent's metrics. ``propose`` reads what the database says of each signal
(name, comment, unit, range, value table, the message's cycle time) and scores
it against each metric's profile; ``Evidence`` from a recorded log then checks
every candidate against the data (an SOH that stays in 40-105 % and moves
slowly, an ignition that takes a few values, an odometer that never goes back).
A candidate that the log contradicts is never proposed: the next one is tried,
and the contradiction is reported with the values seen. ``starter_toml`` writes
a configuration that passes ``pack-agent check-config``; the CLI is
``pack-agent map``.

Names are matched on word parts, so ``BMS_SOH``, ``LB_Capacity_Deterioration_Rate``
and ``StateOfHealth`` all split into comparable words. Every proposal carries
its reasons; confidence is a rough 0-1 score, not a probability.
"""

from pack_agent.canbus.mapping.evidence import Seen, check_against_log, contradiction
from pack_agent.canbus.mapping.metrics import PROFILES, Profile
from pack_agent.canbus.mapping.profiles import (
    PROPOSE_AT,
    Candidate,
    CodeCandidate,
    Proposal,
    propose,
    words,
)
from pack_agent.canbus.mapping.starter import ignition_on_values, load, report, starter_toml

__all__ = [
    "PROFILES",
    "PROPOSE_AT",
    "Candidate",
    "CodeCandidate",
    "Profile",
    "Proposal",
    "Seen",
    "check_against_log",
    "contradiction",
    "ignition_on_values",
    "load",
    "propose",
    "report",
    "starter_toml",
    "words",
]
