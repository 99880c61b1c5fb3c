"""The configuration: typed settings, loading from TOML, and the checks.

``settings`` holds the dataclasses and the loader, ``rules`` the rule
settings, ``markers`` the bounds the checks read, ``check`` the pydantic check
(imported only by processes that validate), ``isolated`` the check run in a
short-lived child so the daemon never imports pydantic. Imports nothing of the
project but ``errors`` (and, lazily, the notice catalogue to check texts).
Callers import from here.
"""

from pack_agent.config.load import load_config, parse_config
from pack_agent.config.settings import (
    BUILTIN_PREFIX,
    DATA_DIR,
    AgentConfig,
    BusSettings,
    E2ESettings,
    MqttSettings,
    NoticeSettings,
    TlsSettings,
    UdsRequest,
    UdsValue,
    as_data,
    reference_config_path,
    resolve_path,
)

__all__ = [
    "BUILTIN_PREFIX",
    "DATA_DIR",
    "AgentConfig",
    "BusSettings",
    "E2ESettings",
    "MqttSettings",
    "NoticeSettings",
    "TlsSettings",
    "UdsRequest",
    "UdsValue",
    "as_data",
    "load_config",
    "parse_config",
    "reference_config_path",
    "resolve_path",
]
