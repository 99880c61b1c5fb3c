"""Configuration: one TOML file, read into plain dataclasses.

The mapping from the agent's metrics (soh, soc, the pack code...) to DBC
signals lives here, not in code. Reading a file and checking it is ``load``;
the annotations here are all pydantic (``check``) needs. The seam, at ~420 lines:
the ``[notice]``, ``[mqtt]`` and ``[store]`` sections could move to a module each.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from annotated_types import Ge, Gt, Le, MinLen

from pack_agent.config.markers import Check, OneOrMany, Secret, matches
from pack_agent.config.rules import RuleConfig

BUILTIN_PREFIX = "builtin:"
DATA_DIR = Path(__file__).parents[1] / "data"
VIN_RE = re.compile(r"^[A-HJ-NPR-Z0-9]{17}$")
CAN_ID_MAX = 0x1FFFFFFF
MASKED = "**********"

Positive = Annotated[float, Gt(0)]
CanId = Annotated[int, Ge(0), Le(CAN_ID_MAX)]
OneLine = Annotated[
    str, Check(lambda v: "\n" not in v and "\0" not in v, "must be one line (no line feed or NUL)")
]
# a file name: a NUL would reach the operating system as a traceback, not a key's error
PathText = Annotated[str, Check(lambda v: "\0" not in v, "must not contain a NUL character")]
TopicPrefix = Annotated[
    str,
    Check(
        lambda v: bool(v) and v[0] != "/" and v[-1] != "/" and not any(c in v for c in "+#"),
        "must be non-empty, without leading/trailing '/', '+' or '#'",
    ),
]
Vin = Annotated[
    str, matches(VIN_RE.pattern[1:-1], "a VIN is 17 characters, A-Z and 0-9 without I, O, Q")
]

RawValues = Annotated[list[int], OneOrMany()]

# Every section refuses keys it does not know (a typo is an error, not a silent default),
# and every number is finite: an infinite interval or a NaN threshold is refused.
_STRICT: dict[str, Any] = {"extra": "forbid", "allow_inf_nan": False}


@dataclass
class BusSettings:
    """One python-can bus; ``options`` are passed to ``can.Bus`` as they are."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    name: str = "powertrain"
    interface: str = "socketcan"
    channel: str = "can0"
    bitrate: Annotated[int, Gt(0)] | None = None
    fd: bool = False
    data_bitrate: Annotated[int, Gt(0)] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    # the channel/Bus column that means this bus in a recorded log
    log_channel: int | str | None = None


@dataclass(kw_only=True)
class UdsRequest:
    """A UDS ReadDataByIdentifier (0x22) over ISO-TP, polled every ``interval_s``."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    bus: str | None = None
    request_id: CanId
    response_id: CanId
    extended_id: bool = False
    did: Annotated[int, Ge(0), Le(0xFFFF)]
    timeout_s: Positive = 1.0
    retries: Annotated[int, Ge(0)] = 2
    interval_s: Positive = 60.0


@dataclass(kw_only=True)
class UdsValue(UdsRequest):
    """A number inside a DID's data: ``length`` bytes from ``start_byte`` (0 = the first
    byte after the DID), then ``raw * scale + offset``."""

    start_byte: Annotated[int, Ge(0)]
    length: Annotated[int, Ge(1), Le(8)] = 1
    byte_order: Literal["big", "little"] = "big"
    signed: bool = False
    scale: float = 1.0
    offset: float = 0.0
    minimum: float | None = None
    maximum: float | None = None


@dataclass
class SignalRef:
    """Where a metric comes from: a signal in a message, an arithmetic ``expression``
    over signals, or a UDS data identifier (exactly one of the three)."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    message: str | None = None
    signal: str | None = None
    bus: str | None = None
    expression: str | None = None
    # raw values that mean "not available" (0x7FF): dropped, never a reading. For an
    # expression: a list applies to every operand, a table to the operands it names
    invalid_raw: RawValues | dict[str, RawValues] = field(default_factory=list)
    # the metric's own plausible range (after scaling or the expression): outside, dropped
    minimum: float | None = None
    maximum: float | None = None
    uds: UdsValue | None = None

    def kind(self) -> str:
        return "uds" if self.uds else "expression" if self.expression else "signal"


@dataclass
class PackCodeSource:
    """Where the pack code comes from: pages of ASCII in one message (a DBC multiplexer
    with one text signal per page, or a plain page-index signal with one-byte character
    signals), a J1939 transport-protocol broadcast, a UDS data identifier, or nowhere.
    ``format`` says whether it is a GB/T 34014 code or a maker's serial (identity and
    swap detection without GB/T validation)."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    source: Literal["pages", "j1939", "uds", "none"] = "pages"
    format: Literal["gbt34014", "serial"] = "gbt34014"
    uds: UdsRequest | None = None
    message: str = "BMS_PackCode"
    mux_signal: str = "PackCode_Page"
    pages: Annotated[list[str], MinLen(1)] = field(
        default_factory=lambda: [f"PackCode_Text{i}" for i in range(4)]
    )
    # a page-index signal that is not a DBC multiplexer: each page is these one-byte signals
    page_signals: list[str] = field(default_factory=list)
    page_count: Annotated[int, Ge(1), Le(64)] | None = None
    first_page: Annotated[int, Ge(0), Le(255)] = 0
    j1939_pgn: Annotated[int, Ge(0), Le(0x3FFFF)] | None = None
    j1939_source_address: Annotated[int, Ge(0), Le(0xFD)] | None = None
    j1939_field: Annotated[int, Ge(0), Le(63)] | None = None  # the n-th "*"-separated field
    confirmations: Annotated[int, Ge(1)] = 2  # complete, equal sets needed
    bus: str | None = None
    # a different code (valid or not) presented in this many trips (BMS wake-ups) in a
    # row, the known code never in between, is a replaced pack (docs/configuration.md)
    replaced_after_trips: Annotated[int, Ge(1)] = 2


E2EProfile = Literal[
    "autosar_p1", "autosar_p2", "autosar_p4", "autosar_p5", "crc8_j1850", "xor", "sum"
]


@dataclass(kw_only=True)
class E2ESettings:
    """``[e2e.<message>]``: the checksum and alive counter a received message carries
    (pack_agent.canbus.e2e, docs/security.md). A frame that fails is dropped and counted."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    profile: E2EProfile
    crc_signal: str
    counter_signal: str | None = None
    data_id: Annotated[int, Ge(0), Le(0xFFFFFFFF)] = 0
    data_ids: list[Annotated[int, Ge(0), Le(0xFF)]] = field(default_factory=list)  # autosar_p2
    max_delta: Annotated[int, Ge(1), Le(0xFFFF)] = 1  # counter steps allowed (lost frames)
    # good frames in a row needed after a refused one before a frame is taken again
    min_ok: Annotated[int, Ge(1), Le(16)] = 2
    bus: str | None = None


@dataclass
class IgnitionSettings:
    """The ignition, defined once for the policy's gate, the owner notices and the BMS
    silence watch (docs/configuration.md, ``[ignition]``).

    A state: it holds its last value until a new frame changes it, while its frame is
    at most ``stale_cycles`` cycles overdue (the cycle: ``cycle_s``, else the DBC's
    ``GenMsgCycleTime``, else measured)."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    metric: str = "ignition"
    # values (or value-table labels, "KeyOn") that mean On, or ``on_min``: every value
    # from it (a terminal-15 voltage); neither: [2] (0 Off, 1 Acc, 2 On, 3 Start)
    on_values: Annotated[list[float | str], MinLen(1)] | None = None
    on_min: float | None = None
    stale_cycles: Annotated[float, Ge(1)] = 3.0
    cycle_s: Positive | None = None
    # a reading that comes before the state is known waits this long for it
    window_s: Positive = 5.0

    DEFAULT_ON: ClassVar[tuple[float, ...]] = (2.0,)

    def on(self) -> list[float | str]:
        """``on_values``, or the default when neither it nor ``on_min`` is given."""
        return list(self.on_values) if self.on_values is not None else list(self.DEFAULT_ON)


@dataclass
class PolicySettings:
    """How the policy reads the stream: trend, persistence cadence (the ignition gate:
    ``[ignition]``)."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    trend_metric: str = "soh"
    trend_min_days: Positive = 60.0
    persist_interval_s: Positive = 3600.0


FollowUp = Literal["repeat", "slow", "stop"]


@dataclass
class NoticeSettings:
    """The owner notice on the head unit, its acknowledgement and its cadence
    (docs/owner-notices.md)."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    message: str = "PA_OwnerNotice"
    ack_message: str = "HU_NoticeAck"
    text_message: str = "PA_NoticeText"
    bus: str | None = None
    catalogue: PathText = "builtin:notices.toml"
    repeat_interval_s: Positive = 86400.0
    critical_repeat_interval_s: Positive = 3600.0
    slow_repeat_interval_s: Positive = 7 * 86400.0
    repeat_on_ignition: bool = True
    max_attempts: Annotated[int, Ge(1)] = 60
    max_per_period: Annotated[int, Ge(1)] = 3
    critical_max_per_period: Annotated[int, Ge(1)] = 12
    period_s: Positive = 86400.0
    after_seen: FollowUp = "slow"
    after_dismissed: FollowUp = "repeat"
    after_service_booked: FollowUp = "stop"
    critical_after_seen: FollowUp = "repeat"
    retry_interval_s: Positive = 5.0
    head_unit_silent_s: Positive = 7 * 86400.0
    service_outlet: OneLine = ""
    service_phone: OneLine = ""
    # the maker's published maintenance, replacement and recycling procedure (Art. 15(3)):
    # a URL or an app page, shown in every notice and sent to the head unit
    procedure_url: OneLine = ""
    emergency_phone: OneLine = ""  # roadside service for critical notices (never the outlet)
    pack_ownership: Literal["owner", "swap_operator", "lease"] = "owner"  # who takes it back
    mqtt_copy: bool = False
    # a 16-byte AES-128 key shared with the head unit: answers then need a valid MAC
    key_file: PathText | None = None
    # how many answers refused for a bad MAC end an attempt's challenge (blind guessing)
    max_bad_macs: Annotated[int, Ge(1), Le(1000)] = 8
    # the agent's own frames (docs/can-database.md): their database, loaded on its own and
    # never merged with the vehicle's; their ids; "none": no head unit on CAN, the MQTT copy
    # (owner.notice) is the notice
    database: str = "builtin:pack_agent_reference.dbc"
    channel: Literal["can", "none"] = "can"
    message_id: CanId | None = None
    text_message_id: CanId | None = None
    ack_message_id: CanId | None = None


@dataclass
class TlsSettings:
    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    ca_file: PathText
    cert_file: PathText | None = None
    key_file: PathText | None = None


@dataclass
class MqttSettings:
    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    host: str = "127.0.0.1"
    port: Annotated[int, Ge(1), Le(65535)] = 1883
    topic_prefix: TopicPrefix = "pack-agent/v1"
    client_id: str | None = None
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive_s: Annotated[int, Ge(5), Le(65535)] = 30  # MQTT's field is 16 bits
    max_inflight: Annotated[int, Ge(1), Le(65535)] = 20
    username: str | None = None
    password: Secret | None = None
    tls: TlsSettings | None = None
    allow_insecure: bool = False
    reconnect_min_s: Positive = 1.0
    reconnect_max_s: Positive = 60.0
    # MQTT v5: an event the broker routed to no subscriber (PUBACK 0x10) stays in the outbox
    require_subscriber: bool = False


@dataclass
class StoreSettings:
    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    path: PathText = "/var/lib/pack-agent/pack-agent.db"
    max_events: Annotated[int, Ge(100)] = 100_000
    # FULL also survives power loss, at a cost in writes
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    # under this many bytes free on the store's volume, pack.health samples are refused
    # and the rest is kept for essential events (store.space_low says so)
    reserve_bytes: Annotated[int, Ge(0)] = 8 * 1024 * 1024


@dataclass
class HealthSettings:
    """How often a ``pack.health`` sample is published (the uplink stays cheap)."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    publish_interval_s: Positive = 3600.0
    bms_timeout_s: Positive = 10.0


@dataclass
class DaemonSettings:
    """How the daemon runs under systemd: stop deadline, live status file."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    shutdown_timeout_s: Annotated[float, Gt(0), Le(300)] = 5.0  # SIGTERM to exit, at most
    # live status JSON (tmpfs); None: $RUNTIME_DIRECTORY or /run
    status_file: PathText | None = None
    status_interval_s: Positive = 5.0
    log_level: Literal["debug", "info", "warning", "error"] | None = None
    # frames: time comes from the frames' time stamps
    clock: Literal["system", "frames"] = "system"


@dataclass(kw_only=True)
class AgentConfig:
    """The whole file. ``base_dir`` and ``source`` are not keys: they say where the
    file was read from (relative paths in it are taken from its folder)."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _STRICT

    vin: Vin
    databases: list[PathText]  # the vehicle's; [] where every reading comes over UDS
    strict_databases: bool = True
    buses: Annotated[list[BusSettings], MinLen(1)] = field(default_factory=lambda: [BusSettings()])
    metrics: dict[str, SignalRef] = field(default_factory=dict)
    pack_code: PackCodeSource = field(default_factory=PackCodeSource)
    e2e: dict[str, E2ESettings] = field(default_factory=dict)  # message name -> protection
    rules: list[RuleConfig] = field(default_factory=list)
    ignition: IgnitionSettings = field(default_factory=IgnitionSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    notice: NoticeSettings = field(default_factory=NoticeSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    base_dir: Path = field(default=Path("."), init=False, compare=False)
    source: str = field(default="configuration", init=False, compare=False)
    # rule id -> the catalogue notice it shows (its notice_id, else the fitting default);
    # filled by the configuration check (config.load), not a key
    notice_ids: dict[str, int] = field(default_factory=dict, init=False, compare=False)
    # findings that do not stop the agent (deprecated keys, DBC ranges...): printed by
    # check-config, logged by the daemon at start
    warnings: list[str] = field(default_factory=list, init=False, compare=False)

    def database_paths(self) -> list[Path]:
        return [resolve_path(p, self.base_dir) for p in self.databases]

    def store_path(self) -> Path:
        return resolve_path(self.store.path, self.base_dir)

    def mqtt_settings(self) -> MqttSettings:
        """``[mqtt]`` with the ``tls`` files resolved against the configuration's folder."""
        tls = self.mqtt.tls
        if tls is None:
            return self.mqtt

        def resolved(value: str | None) -> str | None:
            return None if value is None else str(resolve_path(value, self.base_dir))

        ca_file = str(resolve_path(tls.ca_file, self.base_dir))
        files = TlsSettings(ca_file, resolved(tls.cert_file), resolved(tls.key_file))
        return replace(self.mqtt, tls=files)

    def bus_names(self) -> list[str]:
        return [b.name for b in self.buses]


def as_data(cfg: Any, reveal_secrets: bool = False) -> Any:
    """A configuration (or one section) as the plain data a file would give: dicts,
    lists, strings and numbers, ready to change and validate again (tests, the demo).
    Passwords read ``**********`` unless ``reveal_secrets`` (output gets shared)."""
    if isinstance(cfg, Secret):
        return cfg.get_secret_value() if reveal_secrets else MASKED
    if is_dataclass(cfg):
        return {
            f.name: as_data(getattr(cfg, f.name), reveal_secrets) for f in fields(cfg) if f.init
        }
    if isinstance(cfg, dict):
        return {k: as_data(v, reveal_secrets) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [as_data(v, reveal_secrets) for v in cfg]
    return cfg


def resolve_path(value: str, base_dir: Path) -> Path:
    """``builtin:NAME`` is a file shipped with pack-agent; other relative paths are
    taken from the configuration file's folder."""
    if value.startswith(BUILTIN_PREFIX):
        return DATA_DIR / value[len(BUILTIN_PREFIX) :]
    p = Path(value).expanduser()
    return p if p.is_absolute() else base_dir / p


def reference_config_path() -> Path:
    return DATA_DIR / "reference.toml"
