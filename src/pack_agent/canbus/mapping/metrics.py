"""What each metric's signal looks like in a database: the profiles the scoring reads.

Data, not logic: name parts that say it (strong and weak), units, a plausible
physical range, how many values a state takes, and name parts that mean something
else (a limit, a 12 V battery, a request).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    """What a metric's signal looks like in a database."""

    metric: str
    words: tuple[str, ...]  # strong name parts (any of them)
    weak_words: tuple[str, ...] = ()
    units: tuple[str, ...] = ()
    low: float | None = None  # plausible physical range: the signal's range should overlap it
    high: float | None = None
    max_distinct: int | None = None  # a state or flag takes few values
    avoid: tuple[str, ...] = ()  # name parts that mean something else
    what: str = ""


PROFILES: tuple[Profile, ...] = (
    Profile(
        "soh",
        ("soh", "stateofhealth", "deterioration", "sohc", "sohr"),
        ("health", "aging", "ageing", "degradation"),
        ("%",),
        0,
        100,
        avoid=(
            "soc",
            "charge",
            "limit",
            "min",
            "max",
            "request",
            "target",
            "algorithm",
            "controller",
            "anomaly",
            "twelve",
            "12v",
            "v12v",
            "lv",
            "aux",
        ),
        what="state of health, %",
    ),
    Profile(
        "capacity",
        ("capacity", "kapazitaet", "fullcapacity", "fullpackenergy"),
        ("cap", "energy", "nominal"),
        ("ah", "kwh", "wh"),
        0,
        2000,
        avoid=(
            "soc",
            "charge",
            "request",
            "limit",
            "percent",
            "v12v",
            "12v",
            "lv",
            "total",
            "discharge",
            "delta",
            "cell",
            "rated",
            "config",
            "configuration",
        ),
        what="usable capacity (Ah or kWh)",
    ),
    Profile(
        "soc",
        ("soc", "stateofcharge"),
        ("charge",),
        ("%",),
        0,
        100,
        avoid=("soh", "health", "limit", "target", "max", "min", "request"),
        what="state of charge, %",
    ),
    Profile(
        "pack_voltage",
        (
            "packvoltage",
            "hvvoltage",
            "batteryvoltage",
            "totalvoltage",
            "spannung",
            "vbatt",
            "vpack",
            "battvoltage",
        ),
        ("voltage", "volt"),
        ("v",),
        50,
        1500,
        avoid=(
            "cell",
            "min",
            "max",
            "minimum",
            "maximum",
            "limit",
            "limits",
            "lv",
            "12v",
            "v12v",
            "aux",
            "request",
            "target",
            "input",
            "bus",
            "link",
            "motor",
        ),
        what="pack voltage, V",
    ),
    Profile(
        "pack_current",
        ("packcurrent", "hvcurrent", "batterycurrent", "battcurrent", "strom", "ibatt", "ipack"),
        ("current",),
        ("a",),
        -2000,
        2000,
        avoid=(
            "limit",
            "limits",
            "max",
            "min",
            "maximum",
            "minimum",
            "request",
            "target",
            "lv",
            "12v",
            "v12v",
            "aux",
            "charger",
            "motor",
            "charge",
            "discharge",
        ),
        what="pack current, A",
    ),
    Profile(
        "ignition",
        (
            "ignition",
            "kl15",
            "klemme15",
            "terminal15",
            "ign",
            "keystate",
            "ignitionstatus",
            "klemmen",
        ),
        ("key", "terminal", "powermode"),
        (),
        0,
        15,
        max_distinct=8,
        avoid=("request", "counter", "crc", "checksum", "time"),
        what="ignition / terminal 15 state",
    ),
    Profile(
        "odometer",
        ("odometer", "odo", "mileage", "kilometerstand", "totaldistance"),
        ("distance", "km"),
        ("km",),
        0,
        2_000_000,
        avoid=("trip", "range", "remaining"),
        what="odometer, km",
    ),
    Profile(
        "thermal_event",
        ("thermalevent", "thermalrunaway", "runaway"),
        ("thermal", "overtemp", "overtemperature"),
        (),
        0,
        15,
        max_distinct=8,
        avoid=("counter", "crc", "system", "type", "mode", "pcb", "warning"),
        what="thermal-event alarm",
    ),
    Profile(
        "insulation_alarm",
        ("insulation", "isolation", "isofault", "insulationfault"),
        ("iso",),
        (),
        0,
        15,
        max_distinct=8,
        avoid=("resistance", "counter", "crc", "value", "sensor", "request", "mode"),
        what="insulation alarm",
    ),
)
PROFILE_BY_METRIC = {p.metric: p for p in PROFILES}
CODE_WORDS = ("packcode", "batterycode", "packid", "packserial", "serial", "code", "sn", "barcode")
