"""The scrapping-condition rules as configuration: one dataclass per rule kind.

No standard fixes one number (see docs/policy.md), so every threshold, window
and confirmation is the vehicle maker's choice. ``kind`` selects the model; a
rule without ``kind`` is the original ``consecutive`` form, so older files keep
working. ``rule_problems`` is the cross-check that needs the whole file
(mapped metrics, references between rules, cycles).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Union

from annotated_types import Ge, Gt, Le, MinLen

from pack_agent.config.markers import Tagged, matches

Comparison = Literal["below", "above", "at_least", "at_most"]
Severity = Literal["advisory", "critical"]
RULE_KINDS = (
    "consecutive",
    "capacity",
    "resistance",
    "usage",
    "age",
    "safety",
    "any",
    "all",
    "forecast",
)

RuleId = Annotated[
    str, matches(r"[a-z0-9][a-z0-9_.-]*", "lower-case letters, digits, '_', '.', '-'")
]
NoticeId = Annotated[int, Ge(1), Le(0xFFFF)]


@dataclass(kw_only=True)
class _RuleBase:
    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "forbid", "allow_inf_nan": False}

    id: RuleId
    description_en: str
    description_zh: str
    severity: Severity = "advisory"
    notice_id: NoticeId | None = None  # catalogue id; default by severity
    notify: bool = True  # open an owner notice when met
    publish: bool = True  # publish an event when met


@dataclass(kw_only=True)
class ConsecutiveRule(_RuleBase):
    """The original form: ``consecutive`` samples below ``below``, at most one per
    ``sample_interval_s``."""

    kind: Literal["consecutive"] = "consecutive"
    metric: str = "soh"
    below: float
    consecutive: Annotated[int, Ge(2)] = 5  # never decide on one reading
    sample_interval_s: Annotated[float, Ge(0)] = 0.0


@dataclass(kw_only=True)
class _WindowRule(_RuleBase):
    """A robust statistic over a window of daily aggregates, held for ``persistence_days``."""

    threshold: float
    window_days: Annotated[int, Ge(1), Le(366)] = 30
    min_readings: Annotated[int, Ge(2)] = 10  # never decide on one reading
    min_span_days: Annotated[int, Ge(1)] = 7
    persistence_days: Annotated[float, Ge(0)] = 0.0
    ignition_on_only: bool = True


@dataclass(kw_only=True)
class CapacityRule(_WindowRule):
    """SOH (or capacity against ``rated_capacity``, in percent) below ``threshold``."""

    kind: Literal["capacity"]
    metric: str = "soh"
    comparison: Literal["below"] = "below"
    rated_capacity: Annotated[float, Gt(0)] | None = None


@dataclass(kw_only=True)
class ResistanceRule(_WindowRule):
    """Internal-resistance growth (percent) above ``threshold`` against a baseline: the
    pack's first judged window (``"first"``) or a configured beginning-of-life value."""

    kind: Literal["resistance"]
    metric: str = "internal_resistance"
    comparison: Literal["above"] = "above"
    baseline: Literal["first"] | Annotated[float, Gt(0)] = "first"


@dataclass(kw_only=True)
class UsageRule(_RuleBase):
    """A lifetime counter (full cycles, energy throughput, odometer) at or past a line."""

    kind: Literal["usage"]
    metric: str
    comparison: Comparison = "at_least"
    threshold: float
    confirm_readings: Annotated[int, Ge(2)] = 5
    confirm_s: Annotated[float, Ge(0)] = 60.0


@dataclass(kw_only=True)
class AgeRule(_RuleBase):
    """Pack age in years from the production date in the GB/T 34014 code."""

    kind: Literal["age"]
    threshold: Annotated[float, Gt(0)]  # years
    confirm_days: Annotated[float, Ge(0)] = 1.0


@dataclass(kw_only=True)
class SafetyRule(_RuleBase):
    """A safety condition: no waiting beyond a short confirmation (``confirm_readings``
    in a row spanning ``confirm_s``). Never gated by the ignition."""

    kind: Literal["safety"]
    severity: Severity = "critical"
    metric: str
    comparison: Comparison
    threshold: float
    confirm_readings: Annotated[int, Ge(2)] = 3
    confirm_s: Annotated[float, Ge(0)] = 2.0


@dataclass(kw_only=True)
class CombinationRule(_RuleBase):
    """Met when any (or all) of ``rules`` are met; its evidence is theirs."""

    kind: Literal["any", "all"]
    rules: Annotated[list[str], MinLen(1)]


@dataclass(kw_only=True)
class ForecastRule(_RuleBase):
    """An early notice: the SOH trend crosses ``rule``'s threshold within ``within_days``."""

    kind: Literal["forecast"]
    rule: str
    within_days: Annotated[float, Gt(0)] = 90.0
    min_history_days: Annotated[float, Gt(0)] = 180.0
    persistence_days: Annotated[float, Ge(0)] = 7.0
    notice_id: NoticeId | None = 0x0102  # the catalogue's early notice


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("kind", "consecutive"))
    return str(getattr(value, "kind", "consecutive"))


RuleConfig = Annotated[
    Union[  # noqa: UP007 (a runtime alias: X | Y of Annotated needs Python 3.10+ typing)
        ConsecutiveRule,
        CapacityRule,
        ResistanceRule,
        UsageRule,
        AgeRule,
        SafetyRule,
        CombinationRule,
        ForecastRule,
    ],
    Tagged(
        {
            "consecutive": ConsecutiveRule,
            "capacity": CapacityRule,
            "resistance": ResistanceRule,
            "usage": UsageRule,
            "age": AgeRule,
            "safety": SafetyRule,
            "any": CombinationRule,
            "all": CombinationRule,
            "forecast": ForecastRule,
        },
        _kind,
    ),
]


def rule_metric(rule: Any) -> str | None:
    """The metric a rule reads, or None (age, combinations, forecasts)."""
    return getattr(rule, "metric", None)


def rule_problems(rules: list[Any], metrics: set[str], trend_metric: str) -> list[str]:
    """Problems that need the whole file: unmapped metrics, unknown or cyclic references."""
    problems: list[str] = []
    ids = [r.id for r in rules]
    for dup in sorted({i for i in ids if ids.count(i) > 1}):
        problems.append(f"rules: rule id {dup!r} is used more than once")
    by_id = {r.id: r for r in rules}
    for i, rule in enumerate(rules):
        metric = rule_metric(rule)
        if metric is not None and metric not in metrics:
            problems.append(f"rules[{i}].metric: {metric!r} is not a mapped metric")
        if isinstance(rule, _WindowRule) and rule.min_span_days > rule.window_days:
            problems.append(f"rules[{i}].min_span_days: must be <= window_days")
        if isinstance(rule, CombinationRule):
            for j, ref in enumerate(rule.rules):
                if ref == rule.id:
                    problems.append(f"rules[{i}].rules[{j}]: a rule cannot refer to itself")
                elif ref not in by_id:
                    problems.append(f"rules[{i}].rules[{j}]: no rule with id {ref!r}")
        if isinstance(rule, ForecastRule):
            target = by_id.get(rule.rule)
            if not isinstance(target, CapacityRule):
                problems.append(f"rules[{i}].rule: {rule.rule!r} is not a capacity rule")
            elif target.metric != trend_metric or target.rated_capacity is not None:
                problems.append(
                    f"rules[{i}].rule: {rule.rule!r} must judge the trend metric "
                    f"{trend_metric!r} directly (policy.trend_metric)"
                )
            if trend_metric not in metrics:
                problems.append(f"policy.trend_metric: {trend_metric!r} is not a mapped metric")
    cycle = _find_cycle(rules)
    if cycle:
        i = ids.index(cycle[0])
        problems.append(f"rules[{i}].rules: combinations form a cycle: {' -> '.join(cycle)}")
    return problems


def _find_cycle(rules: list[Any]) -> list[str] | None:
    graph = {r.id: list(r.rules) for r in rules if isinstance(r, CombinationRule)}
    state: dict[str, int] = {}  # 1 visiting, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph.get(node, ()):
            if nxt == node:
                continue  # reported as a self-reference
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if state.get(nxt) is None and nxt in graph:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def combination_order(rules: list[Any]) -> list[CombinationRule]:
    """Combinations, each after the combinations it refers to (config has no cycles)."""
    combos = {r.id: r for r in rules if isinstance(r, CombinationRule)}
    out: list[CombinationRule] = []
    seen: set[str] = set()

    def add(rid: str) -> None:
        if rid in seen:
            return
        seen.add(rid)
        for ref in combos[rid].rules:
            if ref in combos:
                add(ref)
        out.append(combos[rid])

    for rid in combos:
        add(rid)
    return out
