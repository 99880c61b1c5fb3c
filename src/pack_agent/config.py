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


class SignalRef(_Model):
    """Where a metric comes from: a signal in a message of the loaded databases."""

    message: str
    signal: str
    bus: str | None = None


class PackCodeSource(_Model):
    """The pack code as multiplexed pages of ASCII: one text signal per page, in code order."""

    message: str = "BMS_PackCode"
    mux_signal: str = "PackCode_Page"
    pages: list[str] = Field(
        default_factory=lambda: [f"PackCode_Text{i}" for i in range(4)], min_length=1
    )
    confirmations: int = Field(default=2, ge=1, description="complete, equal sets needed")
    bus: str | None = None


class ScrapRule(_Model):
    """A scrapping condition: ``consecutive`` samples of ``metric`` below ``below``,
    taken at least ``sample_interval_s`` apart."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    metric: str = "soh"
    below: float
    consecutive: int = Field(default=5, ge=2, description="never decide on one reading")
    sample_interval_s: float = Field(
        default=0.0, ge=0, description="readings closer together than this count once"
    )
    severity: Literal["advisory", "critical"] = "advisory"
    description_en: str
    description_zh: str


class NoticeSettings(_Model):
    """The owner notice on the head unit and its acknowledgement."""

    message: str = "PA_OwnerNotice"
    ack_message: str = "HU_NoticeAck"
    bus: str | None = None
    repeat_interval_s: float = Field(default=86400.0, gt=0)
    max_attempts: int = Field(default=30, ge=1)
    service_outlet: str = ""


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


class AgentConfig(_Model):
    vin: str
    databases: list[str] = Field(min_length=1)
    buses: list[BusSettings] = Field(default_factory=lambda: [BusSettings()], min_length=1)
    metrics: dict[str, SignalRef] = Field(default_factory=dict)
    pack_code: PackCodeSource = Field(default_factory=PackCodeSource)
    rules: list[ScrapRule] = Field(default_factory=list)
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
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def validation_problems(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        problems.append(f"{_loc(err['loc'])}: {msg}")
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
    for key, bus in refs:
        if bus is not None and bus not in names:
            problems.append(f"{key}: no bus named {bus!r} (buses: {', '.join(names)})")
    ids = [r.id for r in cfg.rules]
    for dup in sorted({i for i in ids if ids.count(i) > 1}):
        problems.append(f"rules: rule id {dup!r} is used more than once")
    for i, rule in enumerate(cfg.rules):
        if rule.metric not in cfg.metrics:
            problems.append(f"rules[{i}].metric: {rule.metric!r} is not a mapped metric")
    if cfg.mqtt.reconnect_max_s < cfg.mqtt.reconnect_min_s:
        problems.append("mqtt.reconnect_max_s: must be >= mqtt.reconnect_min_s")
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
