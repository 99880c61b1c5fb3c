"""Loading a configuration: TOML in, checked ``AgentConfig`` out, every problem at once.

``load_config`` reports every problem at once, each with its dotted key, so an
operator fixes a file in one pass. pydantic does the type checks (``check``)
and is imported only by ``parse_config``; the daemon runs that in a child
process (``isolated``) so pydantic never stays in its memory. The checks that
span sections (bus names, rule metrics, notice texts) are here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pack_agent.config.rules import rule_problems
from pack_agent.config.settings import AgentConfig, resolve_path
from pack_agent.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def parse_config(
    data: dict[str, Any], base_dir: Path, source: str = "configuration"
) -> AgentConfig:
    """Validate plain data (a parsed TOML file); raises ``ConfigError`` listing every
    problem. Imports pydantic (``check``); the daemon calls
    ``isolated.load_config_isolated`` so pydantic never enters its memory."""
    from pack_agent.config.check import validate

    migrated, warnings = migrate_deprecated(data)
    cfg = validate(migrated, source)
    cfg.base_dir = base_dir
    cfg.source = source
    cfg.warnings = warnings
    problems = _cross_checks(cfg)
    if problems:
        raise ConfigError(problems, source)
    _uds_limits(cfg)
    return cfg


def _uds_limits(cfg: AgentConfig) -> None:
    """A UDS metric's own ``minimum``/``maximum`` guard its answers too: the tighter of
    them and ``uds.minimum``/``uds.maximum`` is the one the poller checks."""
    for ref in cfg.metrics.values():
        u = ref.uds
        if u is None:
            continue
        if ref.minimum is not None:
            u.minimum = ref.minimum if u.minimum is None else max(u.minimum, ref.minimum)
        if ref.maximum is not None:
            u.maximum = ref.maximum if u.maximum is None else min(u.maximum, ref.maximum)


# old key -> new key. The old one still loads; a warning names the new one.
DEPRECATED_KEYS: dict[tuple[str, str], tuple[str, str]] = {
    ("policy", "ignition_metric"): ("ignition", "metric"),
    ("policy", "ignition_on_values"): ("ignition", "on_values"),
    ("policy", "ignition_window_s"): ("ignition", "window_s"),
    ("notice", "ignition_on_min"): ("ignition", "on_min"),
}


def migrate_deprecated(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Renamed keys moved to their new place (a copy; ``data`` is left as it is), with one
    warning each that names the new key. A new key given too wins over the old one."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    warnings: list[str] = []
    for (old_sec, old_key), (new_sec, new_key) in DEPRECATED_KEYS.items():
        section = out.get(old_sec)
        if not isinstance(section, dict) or old_key not in section:
            continue
        value = section.pop(old_key)
        target = out.setdefault(new_sec, {})
        if not isinstance(target, dict):
            continue  # a wrong type: the check reports it
        old, new = f"{old_sec}.{old_key}", f"{new_sec}.{new_key}"
        if new_key == "on_min" and "on_values" in target:
            warnings.append(
                f"{old}: deprecated and ignored: {new_sec}.on_values (given, or from "
                "policy.ignition_on_values) says when the ignition is on, for the notices too"
            )
        elif new_key in target:
            warnings.append(f"{old}: deprecated and ignored: {new} is given")
        else:
            target[new_key] = value
            if new_key == "on_min":  # the notices' threshold becomes the one definition
                warnings.append(
                    f"{old}: deprecated, read as {new} (the policy's gate uses it too); "
                    f"write {new} or {new_sec}.on_values"
                )
            else:
                warnings.append(f"{old}: deprecated, read as {new}; write {new}")
    return out, warnings


def _cross_checks(cfg: AgentConfig) -> list[str]:
    problems: list[str] = []
    names = cfg.bus_names()
    if len(set(names)) != len(names):
        problems.append("buses: bus names must be unique")
    refs: list[tuple[str, str | None]] = [
        (f"metrics.{k}.bus", v.bus) for k, v in cfg.metrics.items()
    ]
    refs += [("pack_code.bus", cfg.pack_code.bus), ("notice.bus", cfg.notice.bus)]
    refs += [(f"e2e.{k}.bus", v.bus) for k, v in cfg.e2e.items()]
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
        if v.invalid_raw and v.uds is not None:
            problems.append(f"metrics.{k}.invalid_raw: not for a UDS value (use minimum/maximum)")
        if isinstance(v.invalid_raw, dict) and v.expression is None:
            problems.append(
                f"metrics.{k}.invalid_raw: a table (operand -> raw values) is only for an "
                "expression; give a list"
            )
        if v.minimum is not None and v.maximum is not None and v.minimum > v.maximum:
            problems.append(f"metrics.{k}.minimum: must be <= maximum")
    pc = cfg.pack_code
    if pc.source == "uds" and pc.uds is None:
        problems.append("pack_code.uds: required when pack_code.source is 'uds'")
    if pc.source == "j1939":
        for key in ("j1939_pgn", "j1939_source_address"):
            if getattr(pc, key) is None:
                problems.append(f"pack_code.{key}: required when pack_code.source is 'j1939'")
    if pc.page_signals and pc.page_count is None:
        problems.append("pack_code.page_count: required with pack_code.page_signals")
    if pc.page_signals and pc.source != "pages":
        problems.append("pack_code.page_signals: only with source = 'pages'")
    problems += rule_problems(cfg.rules, set(cfg.metrics), cfg.policy.trend_metric)
    problems += _ignition_checks(cfg)
    if cfg.policy.trend_metric not in cfg.metrics and not any(
        p.startswith("policy.trend_metric") for p in problems
    ):
        finding = (
            f"policy.trend_metric: {cfg.policy.trend_metric!r} is not a mapped metric "
            f"(mapped: {', '.join(sorted(cfg.metrics)) or 'none'})"
        )
        if cfg.policy.trend_metric != "soh":  # a name the file chose
            problems.append(finding)
        else:  # the default, in a file that maps no SOH: pack.health carries no trend
            cfg.warnings.append(finding + ": pack.health carries no SOH trend")
    problems += _notice_checks(cfg)
    if cfg.mqtt.reconnect_max_s < cfg.mqtt.reconnect_min_s:
        problems.append("mqtt.reconnect_max_s: must be >= mqtt.reconnect_min_s")
    return problems


def resolve_notices(cfg: AgentConfig) -> list[str]:
    """Fill ``cfg.notice_ids`` (each rule's notice: its ``notice_id`` or the catalogue
    entry of its cause) for a configuration changed after it was checked; the problems
    found, as the check would report them."""
    cfg.notice_ids.clear()
    return _notice_checks(cfg)


def _ignition_checks(cfg: AgentConfig) -> list[str]:
    """The ignition metric is mapped (or, left at its default, the gate is off: a finding),
    and ``on_values`` or ``on_min``, not both. Values against the signal: ``dbc``."""
    ign = cfg.ignition
    problems: list[str] = []
    if ign.on_min is not None and ign.on_values is not None:
        problems.append("ignition.on_min: give ignition.on_values or ignition.on_min, not both")
    if ign.metric not in cfg.metrics:
        mapped = ", ".join(sorted(cfg.metrics)) or "none"
        finding = f"ignition.metric: {ign.metric!r} is not a mapped metric (mapped: {mapped})"
        if ign.metric != "ignition":  # a name the file chose
            problems.append(finding)
        else:
            cfg.warnings.append(
                f"{finding}: rules with ignition_on_only judge every reading, notices are "
                "shown without waiting for the ignition, and bms.silent cannot tell a parked "
                "car from a silent BMS"
            )
    elif cfg.metrics[ign.metric].uds is not None:
        problems.append(f"ignition.metric: {ign.metric!r} is a UDS value; map a CAN signal")
    return problems


def _notice_checks(cfg: AgentConfig) -> list[str]:
    """The catalogue loads; every rule's notice is in it, has the rule's severity and
    speaks of the rule's cause (the entry's ``for``); a rule without ``notice_id`` gets the
    entry that fits it (``cfg.notice_ids``); the text lines fit the CAN text pages."""
    from pack_agent.core.catalogue import (
        CatalogueError,
        default_notice_for,
        fits,
        load_catalogue,
        rule_causes,
    )
    from pack_agent.core.notices import MAX_TEXT_BYTES, text_bytes

    n = cfg.notice
    try:
        catalogue = load_catalogue(resolve_path(n.catalogue, cfg.base_dir))
    except CatalogueError as exc:
        return [f"notice.catalogue: {exc}"]
    problems = []
    by_id = {r.id: r for r in cfg.rules}
    for i, rule in enumerate(cfg.rules):
        kind, metric = rule_causes(rule)
        cause = f"{kind} rule" + (f" on {metric!r}" if metric else "")
        if not rule.notice_id:
            nid = default_notice_for(rule, by_id, catalogue)
            if nid is None:
                problems.append(
                    f"rules[{i}].notice_id: no {rule.severity} notice in the catalogue "
                    f"{n.catalogue} speaks of a {cause}: name one"
                )
            else:
                cfg.notice_ids[rule.id] = nid
            continue
        nid, key = rule.notice_id, f"rules[{i}].notice_id"
        entry = catalogue.get(nid)
        if entry is None:
            problems.append(f"{key}: notice 0x{nid:04X} is not in the catalogue {n.catalogue}")
        elif entry.severity != rule.severity:
            problems.append(
                f"{key}: notice 0x{nid:04X} is {entry.severity}, the rule is {rule.severity}"
            )
        elif fits(entry, rule, by_id) is None:
            problems.append(
                f"{key}: notice 0x{nid:04X} ({entry.name}) speaks of "
                f"{', '.join(entry.causes)}, not of a {cause}"
            )
        else:
            cfg.notice_ids[rule.id] = nid
    ids: dict[int, str] = {}
    for id_key in ("message_id", "text_message_id", "ack_message_id"):
        value = getattr(n, id_key)
        if value is not None and value in ids:
            problems.append(f"notice.{id_key}: 0x{value:X} is already notice.{ids[value]}")
        elif value is not None:
            ids[value] = id_key
    if n.key_file is not None:
        try:
            read_key(resolve_path(n.key_file, cfg.base_dir))
        except ValueError as exc:
            problems.append(f"notice.key_file: {exc}")
    size = text_bytes(n, (getattr(r, "within_days", None) for r in cfg.rules))
    if size > MAX_TEXT_BYTES:
        problems.append(
            f"notice.service_outlet: outlet, phone, procedure_url and emergency_phone are "
            f"{size} bytes of UTF-8, at most {MAX_TEXT_BYTES} fit in the CAN text pages"
        )
    return problems


KEY_BYTES = 16  # AES-128, as AUTOSAR SecOC's CMAC


def read_key(path: Path) -> bytes:
    """The head unit's shared key: 16 raw bytes, or 32 hexadecimal digits (a line feed
    after them is allowed). Raises ``ValueError`` saying what is wrong."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) == KEY_BYTES:
        return raw
    text = raw.strip()
    if len(text) == 2 * KEY_BYTES:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    raise ValueError(
        f"{path} must hold a {KEY_BYTES}-byte AES key: {KEY_BYTES} raw bytes or "
        f"{2 * KEY_BYTES} hexadecimal digits (it has {len(raw)} bytes)"
    )


def load_config(path: str | Path) -> AgentConfig:
    """Read and validate a TOML file; raises ``ConfigError`` listing every problem."""
    p = Path(path)
    return parse_config(read_toml(p), p.resolve().parent, str(p))


def read_toml(p: Path) -> dict[str, Any]:
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"file not found: {p}"], str(p)) from None
    except OSError as exc:
        raise ConfigError([f"cannot read: {exc.strerror}"], str(p)) from None
    try:
        data: dict[str, Any] = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError([f"not UTF-8 text (byte {exc.start})"], str(p)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], str(p)) from None
    except RecursionError:
        raise ConfigError(["not valid TOML: nested too deeply"], str(p)) from None
    return data


def dump_toml(data: dict[str, Any]) -> str:
    """Plain configuration data (``as_data``) as TOML that ``read_toml`` reads back.

    ``None`` is left out: TOML has no null, and a missing key is its default."""
    import tomli_w

    return tomli_w.dumps(_without_none(data))


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_without_none(v) for v in value if v is not None]
    return value
