"""Configuration: one TOML file, validated by pydantic.

The mapping from the agent's metrics (soh, soc, the pack code...) to DBC
signals lives here, not in code. ``load_config`` reports every problem at once,
each with its dotted key, so an operator fixes a file in one pass.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from pack_agent.errors import ConfigError
from pack_agent.ruleconfig import RULE_KINDS, ConsecutiveRule, RuleConfig, rule_problems

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

BUILTIN_PREFIX = "builtin:"
DATA_DIR = Path(__file__).parent / "data"
VIN_RE = re.compile(r"^[A-HJ-NPR-Z0-9]{17}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BusSettings(_Model):
    """One python-can bus; ``options`` are passed to ``can.Bus`` as they are."""

    name: str = "powertrain"
    interface: str = "socketcan"
    channel: str = "can0"
    bitrate: int | None = Field(default=None, gt=0)
    fd: bool = False
    data_bitrate: int | None = Field(default=None, gt=0)
    options: dict[str, Any] = Field(default_factory=dict)
    log_channel: int | str | None = Field(
        default=None, description="the channel/Bus column that means this bus in a recorded log"
    )


CAN_ID_MAX = 0x1FFFFFFF


class UdsRequest(_Model):
    """A UDS ReadDataByIdentifier (0x22) over ISO-TP, polled every ``interval_s``."""

    bus: str | None = None
    request_id: int = Field(ge=0, le=CAN_ID_MAX)
    response_id: int = Field(ge=0, le=CAN_ID_MAX)
    extended_id: bool = False
    did: int = Field(ge=0, le=0xFFFF)
    timeout_s: float = Field(default=1.0, gt=0)
    retries: int = Field(default=2, ge=0)
    interval_s: float = Field(default=60.0, gt=0)


class UdsValue(UdsRequest):
    """A number inside a DID's data: ``length`` bytes from ``start_byte`` (0 = the first
    byte after the DID), then ``raw * scale + offset``."""

    start_byte: int = Field(ge=0)
    length: int = Field(default=1, ge=1, le=8)
    byte_order: Literal["big", "little"] = "big"
    signed: bool = False
    scale: float = 1.0
    offset: float = 0.0
    minimum: float | None = None
    maximum: float | None = None


class SignalRef(_Model):
    """Where a metric comes from: a signal in a message, an arithmetic ``expression``
    over signals, or a UDS data identifier (exactly one of the three)."""

    message: str | None = None
    signal: str | None = None
    bus: str | None = None
    expression: str | None = None
    invalid_raw: list[int] = Field(default_factory=list)
    uds: UdsValue | None = None

    @field_validator("invalid_raw", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, int) else v

    def kind(self) -> str:
        return "uds" if self.uds else "expression" if self.expression else "signal"


class PackCodeSource(_Model):
    """The pack code as multiplexed pages of ASCII (one text signal per page, in code order),
    from a UDS data identifier, or not read at all."""

    source: Literal["pages", "uds", "none"] = "pages"
    uds: UdsRequest | None = None
    message: str = "BMS_PackCode"
    mux_signal: str = "PackCode_Page"
    pages: list[str] = Field(
        default_factory=lambda: [f"PackCode_Text{i}" for i in range(4)], min_length=1
    )
    confirmations: int = Field(default=2, ge=1, description="complete, equal sets needed")
    bus: str | None = None


# The original single rule form; every rule kind is in ruleconfig.py.
ScrapRule = ConsecutiveRule


class PolicySettings(_Model):
    """How the policy reads the stream: ignition gating, trend, persistence cadence."""

    ignition_metric: str = "ignition"
    ignition_on_values: list[float] = Field(default_factory=lambda: [2.0], min_length=1)
    ignition_window_s: float = Field(default=5.0, gt=0)
    trend_metric: str = "soh"
    trend_min_days: float = Field(default=60.0, gt=0)
    persist_interval_s: float = Field(default=3600.0, gt=0)


FollowUp = Literal["repeat", "slow", "stop"]


class NoticeSettings(_Model):
    """The owner notice on the head unit, its acknowledgement and its cadence
    (docs/owner-notices.md)."""

    message: str = "PA_OwnerNotice"
    ack_message: str = "HU_NoticeAck"
    text_message: str = "PA_NoticeText"
    bus: str | None = None
    catalogue: str = "builtin:notices.toml"
    repeat_interval_s: float = Field(default=86400.0, gt=0)
    critical_repeat_interval_s: float = Field(default=3600.0, gt=0)
    slow_repeat_interval_s: float = Field(default=7 * 86400.0, gt=0)
    repeat_on_ignition: bool = True
    ignition_on_min: float = 2.0
    max_attempts: int = Field(default=60, ge=1)
    max_per_period: int = Field(default=3, ge=1)
    critical_max_per_period: int = Field(default=12, ge=1)
    period_s: float = Field(default=86400.0, gt=0)
    after_seen: FollowUp = "slow"
    after_dismissed: FollowUp = "repeat"
    after_service_booked: FollowUp = "stop"
    critical_after_seen: FollowUp = "repeat"
    retry_interval_s: float = Field(default=5.0, gt=0)
    head_unit_silent_s: float = Field(default=7 * 86400.0, gt=0)
    service_outlet: str = ""
    service_phone: str = ""
    mqtt_copy: bool = False

    @field_validator("service_outlet", "service_phone")
    @classmethod
    def _no_newline(cls, v: str) -> str:
        if "\n" in v or "\0" in v:
            raise ValueError("must be one line (no line feed or NUL)")
        return v


class TlsSettings(_Model):
    ca_file: str
    cert_file: str | None = None
    key_file: str | None = None


class MqttSettings(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    topic_prefix: str = "pack-agent/v1"
    client_id: str | None = None
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive_s: int = Field(default=30, ge=5)
    max_inflight: int = Field(default=20, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    tls: TlsSettings | None = None
    allow_insecure: bool = False
    reconnect_min_s: float = Field(default=1.0, gt=0)
    reconnect_max_s: float = Field(default=60.0, gt=0)

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v or v.startswith("/") or v.endswith("/") or any(c in v for c in "+#"):
            raise ValueError("must be non-empty, without leading/trailing '/', '+' or '#'")
        return v


class StoreSettings(_Model):
    path: str = "/var/lib/pack-agent/pack-agent.db"
    max_events: int = Field(default=100_000, ge=100)
    synchronous: Literal["NORMAL", "FULL"] = Field(
        default="NORMAL", description="FULL also survives power loss, at a cost in writes"
    )


class HealthSettings(_Model):
    """How often a ``pack.health`` sample is published (the uplink stays cheap)."""

    publish_interval_s: float = Field(default=3600.0, gt=0)
    bms_timeout_s: float = Field(default=10.0, gt=0)


class DaemonSettings(_Model):
    """How the daemon runs under systemd: stop deadline, live status file."""

    shutdown_timeout_s: float = Field(
        default=5.0, gt=0, le=300, description="SIGTERM to exit, at most this long"
    )
    status_file: str | None = Field(
        default=None, description="live status JSON (tmpfs); None: $RUNTIME_DIRECTORY or /run"
    )
    status_interval_s: float = Field(default=5.0, gt=0)
    log_level: Literal["debug", "info", "warning", "error"] | None = None
    clock: Literal["system", "frames"] = Field(
        default="system", description="frames: time comes from the frames' time stamps"
    )


class AgentConfig(_Model):
    vin: str
    databases: list[str] = Field(min_length=1)
    strict_databases: bool = True
    buses: list[BusSettings] = Field(default_factory=lambda: [BusSettings()], min_length=1)
    metrics: dict[str, SignalRef] = Field(default_factory=dict)
    pack_code: PackCodeSource = Field(default_factory=PackCodeSource)
    rules: list[RuleConfig] = Field(default_factory=list)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    notice: NoticeSettings = Field(default_factory=NoticeSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    base_dir: Path = Field(default=Path("."), exclude=True)
    source: str = Field(default="configuration", exclude=True)

    @field_validator("vin")
    @classmethod
    def _vin(cls, v: str) -> str:
        if not VIN_RE.match(v):
            raise ValueError("a VIN is 17 characters, A-Z and 0-9 without I, O, Q")
        return v

    def database_paths(self) -> list[Path]:
        return [resolve_path(p, self.base_dir) for p in self.databases]

    def store_path(self) -> Path:
        return resolve_path(self.store.path, self.base_dir)

    def mqtt_settings(self) -> MqttSettings:
        """``[mqtt]`` with the ``tls`` files resolved against the configuration's folder."""
        tls = self.mqtt.tls
        if tls is None:
            return self.mqtt
        files = {
            k: None if v is None else str(resolve_path(v, self.base_dir))
            for k, v in tls.model_dump().items()
        }
        return self.mqtt.model_copy(update={"tls": TlsSettings(**files)})

    def bus_names(self) -> list[str]:
        return [b.name for b in self.buses]


def resolve_path(value: str, base_dir: Path) -> Path:
    """``builtin:NAME`` is a file shipped with pack-agent; other relative paths are
    taken from the configuration file's folder."""
    if value.startswith(BUILTIN_PREFIX):
        return DATA_DIR / value[len(BUILTIN_PREFIX) :]
    p = Path(value).expanduser()
    return p if p.is_absolute() else base_dir / p


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    # a rule's kind tag (rules[0].capacity.threshold) is noise in a key: drop it
    loc = tuple(
        p for i, p in enumerate(loc) if not (i == 2 and loc[0] == "rules" and p in RULE_KINDS)
    )
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def validation_problems(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        msg = err["msg"]
        loc = _loc(err["loc"])
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "union_tag_invalid":
            tag = err.get("ctx", {}).get("tag")
            loc, msg = f"{loc}.kind", f"unknown rule kind {tag!r} (kinds: {', '.join(RULE_KINDS)})"
        problems.append(f"{loc}: {msg}")
    return problems


def parse_config(
    data: dict[str, Any], base_dir: Path, source: str = "configuration"
) -> AgentConfig:
    try:
        cfg = AgentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc), source) from None
    cfg.base_dir = base_dir
    cfg.source = source
    problems = _cross_checks(cfg)
    if problems:
        raise ConfigError(problems, source)
    return cfg


def _cross_checks(cfg: AgentConfig) -> list[str]:
    problems: list[str] = []
    names = cfg.bus_names()
    if len(set(names)) != len(names):
        problems.append("buses: bus names must be unique")
    refs: list[tuple[str, str | None]] = [
        (f"metrics.{k}.bus", v.bus) for k, v in cfg.metrics.items()
    ]
    refs += [("pack_code.bus", cfg.pack_code.bus), ("notice.bus", cfg.notice.bus)]
    refs += [(f"metrics.{k}.uds.bus", v.uds.bus) for k, v in cfg.metrics.items() if v.uds]
    if cfg.pack_code.uds is not None:
        refs.append(("pack_code.uds.bus", cfg.pack_code.uds.bus))
    for key, bus in refs:
        if bus is not None and bus not in names:
            problems.append(f"{key}: no bus named {bus!r} (buses: {', '.join(names)})")
    for k, v in cfg.metrics.items():
        given = [
            n
            for n, x in (("message", v.message), ("expression", v.expression), ("uds", v.uds))
            if x is not None
        ]
        if len(given) != 1:
            problems.append(
                f"metrics.{k}: give exactly one of message+signal, expression or uds "
                f"(got {', '.join(given) or 'none'})"
            )
        elif v.message is not None and v.signal is None:
            problems.append(f"metrics.{k}.signal: required with message")
        if v.signal is not None and v.message is None:
            problems.append(f"metrics.{k}.message: required with signal")
        if v.invalid_raw and v.message is None:
            problems.append(f"metrics.{k}.invalid_raw: only for a message signal")
    if cfg.pack_code.source == "uds" and cfg.pack_code.uds is None:
        problems.append("pack_code.uds: required when pack_code.source is 'uds'")
    problems += rule_problems(cfg.rules, set(cfg.metrics), cfg.policy.trend_metric)
    problems += _notice_checks(cfg)
    if cfg.mqtt.reconnect_max_s < cfg.mqtt.reconnect_min_s:
        problems.append("mqtt.reconnect_max_s: must be >= mqtt.reconnect_min_s")
    return problems


def _notice_checks(cfg: AgentConfig) -> list[str]:
    """The catalogue loads, every rule's notice is in it with the rule's severity, and the
    outlet text fits the CAN text pages."""
    from pack_agent.catalogue import CatalogueError, load_catalogue
    from pack_agent.notices import MAX_TEXT_BYTES, default_notice_id, outlet_text

    n = cfg.notice
    try:
        catalogue = load_catalogue(resolve_path(n.catalogue, cfg.base_dir))
    except CatalogueError as exc:
        return [f"notice.catalogue: {exc}"]
    problems = []
    for i, rule in enumerate(cfg.rules):
        nid = rule.notice_id or default_notice_id(rule.severity)
        key = f"rules[{i}].notice_id" if rule.notice_id else f"rules[{i}].severity"
        entry = catalogue.get(nid)
        if entry is None:
            problems.append(f"{key}: notice 0x{nid:04X} is not in the catalogue {n.catalogue}")
        elif entry.severity != rule.severity:
            problems.append(
                f"{key}: notice 0x{nid:04X} is {entry.severity}, the rule is {rule.severity}"
            )
    size = len(outlet_text(n.service_outlet, n.service_phone).encode("utf-8"))
    if size > MAX_TEXT_BYTES:
        problems.append(
            f"notice.service_outlet: outlet and phone are {size} bytes of UTF-8, "
            f"at most {MAX_TEXT_BYTES} fit in the CAN text pages"
        )
    return problems


def load_config(path: str | Path) -> AgentConfig:
    """Read and validate a TOML file; raises ``ConfigError`` listing every problem."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"file not found: {p}"], str(p)) from None
    except OSError as exc:
        raise ConfigError([f"cannot read: {exc.strerror}"], str(p)) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError([f"not UTF-8 text (byte {exc.start})"], str(p)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], str(p)) from None
    return parse_config(data, p.resolve().parent, str(p))


def reference_config_path() -> Path:
    return DATA_DIR / "reference.toml"
