"""The owner-notice message catalogue: what each notice id means, in Chinese and English.

The texts live in a TOML data file (``data/notices.toml``, format in
docs/owner-notices.md) that head-unit software reads too: the agent sends only
the notice id and the values that fill it (``NoticeValues``: the service outlet,
the maker's procedure, the emergency contact, who takes the pack back, the
horizon of an early notice), the head unit resolves the id here and fills the
texts with the same ``render``. Each entry declares the rule kinds (or
``kind:metric``) it speaks of, so a configuration cannot send a notice about
another cause (``fits``, ``default_notice_for``).
Pure: reads one file, no other I/O.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_CATALOGUE = Path(__file__).parents[1] / "data" / "notices.toml"
FORMATS = (1, 2)  # 1: {outlet} and {phone} only, no fragments, no `for`
FORMAT = 2
LANGUAGES = ("zh", "en")
SEVERITIES = ("info", "advisory", "critical")
OWNERSHIPS = ("owner", "swap_operator", "lease")
TEXT_FIELDS = ("title", "happened", "action", "now")
# Fragments (``[fragments.<lang>]``, format 2): sentences that depend on what is
# configured; each has an ``_unset`` form used when its value is empty.
FRAGMENTS = ("outlet_line", "procedure_line", "emergency_line", "art22", "art21")
_FRAGMENT_NEEDS = {
    "outlet_line": ("outlet", "phone"),
    "procedure_line": ("procedure",),
    "emergency_line": ("emergency_phone",),
}
VALUE_PLACEHOLDERS = ("outlet", "phone", "procedure", "emergency_phone", "within_days")
PLACEHOLDERS = VALUE_PLACEHOLDERS + FRAGMENTS
COMBINATIONS = ("any", "all")


class CatalogueError(ValueError):
    """The catalogue file is missing, not TOML, or an entry is incomplete."""


@dataclass(frozen=True)
class NoticeValues:
    """What fills a notice's placeholders: configured once (``[notice]``) except
    ``within_days``, the early notice's horizon, which is its rule's. On CAN they travel
    as the ``PA_NoticeText`` lines (``to_text``/``from_text``)."""

    outlet: str = ""
    phone: str = ""
    procedure: str = ""
    emergency_phone: str = ""
    ownership: str = "owner"
    within_days: float | None = None

    def to_text(self) -> str:
        """The lines sent in the text pages: outlet, phone, procedure, emergency phone,
        pack ownership ('' for owner), horizon in days; trailing empty lines left off,
        '' when nothing is set. A head unit that reads only the first two lines (the
        outlet and phone of the first format) still reads them."""
        days = "" if self.within_days is None else _days(self.within_days)
        owner = "" if self.ownership == "owner" else self.ownership
        lines = [self.outlet, self.phone, self.procedure, self.emergency_phone, owner, days]
        while lines and not lines[-1]:
            lines.pop()
        if len(lines) == 1:
            lines.append("")  # the outlet alone: still one line feed (the first format)
        return "\n".join(lines)

    @classmethod
    def from_text(cls, text: str) -> NoticeValues:
        """The text pages' lines back (missing lines are unset; an unknown ownership or a
        horizon that is not a number is left at its default)."""
        lines = text.split("\n") + [""] * 6
        ownership = lines[4] if lines[4] in OWNERSHIPS else "owner"
        try:
            days = float(lines[5]) if lines[5] else None
        except ValueError:
            days = None
        return cls(lines[0], lines[1], lines[2], lines[3], ownership, days)


def _days(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@dataclass(frozen=True)
class LangText:
    """One notice in one language: the headline, what happened, what to do (and, for a
    critical notice, what to do right now)."""

    title: str
    happened: str
    action: str
    now: str = ""

    @property
    def body(self) -> str:
        return " ".join(p for p in (self.now, self.happened, self.action) if p)


@dataclass(frozen=True)
class NoticeText:
    notice_id: int
    severity: str
    name: str
    texts: dict[str, LangText]
    causes: tuple[str, ...] = ()  # rule kinds or kind:metric; () = any (a format-1 entry)
    articles: tuple[str, ...] = ()
    # per language: field (or field_<ownership>) -> the template; fragments likewise
    templates: Mapping[str, Mapping[str, str]] = field(default_factory=dict, repr=False)
    fragments: Mapping[str, Mapping[str, str]] = field(default_factory=dict, repr=False)

    @property
    def title_en(self) -> str:
        return self.texts["en"].title

    @property
    def title_zh(self) -> str:
        return self.texts["zh"].title

    @property
    def body_en(self) -> str:
        return self.texts["en"].body

    @property
    def body_zh(self) -> str:
        return self.texts["zh"].body

    def as_dict(self) -> dict[str, Any]:
        """The texts as they go out in an ``owner.notice`` event."""
        return {
            lang: {"title": t.title, "happened": t.happened, "action": t.action, "now": t.now}
            for lang, t in self.texts.items()
        }

    def render(self, values: NoticeValues) -> NoticeText:
        """The same entry with its texts filled from ``values``."""
        texts = {
            lang: _render_lang(self.templates[lang], self.fragments.get(lang, {}), values)
            for lang in self.templates
        }
        return replace(self, texts=texts)


def _pick(table: Mapping[str, str], name: str, ownership: str) -> str:
    """``name_<ownership>`` where the catalogue has one, else ``name``."""
    return table.get(f"{name}_{ownership}", table.get(name, ""))


def _fill(template: str, values: Mapping[str, str]) -> str:
    text = template.format(**values)
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def _render_lang(
    templates: Mapping[str, str], fragments: Mapping[str, str], v: NoticeValues
) -> LangText:
    raw = {
        "outlet": v.outlet,
        "phone": v.phone,
        "procedure": v.procedure,
        "emergency_phone": v.emergency_phone,
        "within_days": "{within_days}" if v.within_days is None else _days(v.within_days),
    }
    values = dict(raw)
    for name in FRAGMENTS:
        needs = _FRAGMENT_NEEDS.get(name, ())
        unset = bool(needs) and not any(raw[k] for k in needs)
        template = _pick(fragments, f"{name}_unset" if unset else name, v.ownership)
        values[name] = _fill(template, raw)
    return LangText(**{f: _fill(_pick(templates, f, v.ownership), values) for f in TEXT_FIELDS})


# -- which notice speaks of which cause ------------------------------------------------


def rule_causes(rule: Any) -> tuple[str, str | None]:
    """A rule's kind and the metric it judges (None for kinds without one)."""
    return str(getattr(rule, "kind", "consecutive")), getattr(rule, "metric", None)


def fits(
    entry: NoticeText, rule: Any, rules: Mapping[str, Any], _seen: frozenset[str] = frozenset()
) -> int | None:
    """How well ``entry`` speaks of ``rule``'s cause: 3 for its kind and metric, 2 for its
    kind; for any/all, the worst fit of the rules it combines, else 1 when the entry is
    for combinations as such; 0 for an entry that declares no cause (a format-1
    catalogue); None when the entry speaks of another cause."""
    if not entry.causes:
        return 0
    kind, metric = rule_causes(rule)
    if kind in COMBINATIONS:
        seen = _seen | {getattr(rule, "id", "")}  # a cycle is the rules check's to report
        parts = [rules.get(rid) for rid in getattr(rule, "rules", []) if rid not in seen]
        scores = [fits(entry, p, rules, seen) if p is not None else None for p in parts]
        if scores and all(s is not None for s in scores):
            return min(s for s in scores if s is not None)
        return 1 if kind in entry.causes else None
    if metric is not None and f"{kind}:{metric}" in entry.causes:
        return 3
    if kind in entry.causes:
        return 2
    return None


def default_notice_for(
    rule: Any, rules: Mapping[str, Any], catalogue: Mapping[int, NoticeText]
) -> int | None:
    """The entry a rule without ``notice_id`` shows: of the same severity, the one that
    speaks of its cause most exactly (kind:metric over kind, then the entry that speaks
    of fewest causes, then the lowest id); None when none does."""
    best: tuple[int, int, int] | None = None
    for nid in sorted(catalogue):
        entry = catalogue[nid]
        if entry.severity != getattr(rule, "severity", "advisory"):
            continue
        score = fits(entry, rule, rules)
        if score is None:
            continue
        rank = (score, -len(entry.causes), -nid)
        if best is None or rank > best:
            best = rank
    return None if best is None else -best[2]


# -- loading -----------------------------------------------------------------------


def load_catalogue(
    path: Path = DEFAULT_CATALOGUE,
    outlet: str = "",
    phone: str = "",
    values: NoticeValues | None = None,
) -> dict[int, NoticeText]:
    """Every notice id to its texts, filled from ``values`` (or just ``outlet`` and
    ``phone``); ``NoticeText.render`` fills them again for other values."""
    values = values or NoticeValues(outlet=outlet, phone=phone)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise CatalogueError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CatalogueError(f"{path}: not a UTF-8 TOML file: {exc}") from None
    fmt = data.get("format")
    if fmt not in FORMATS:
        raise CatalogueError(f"{path}: format = {fmt!r}, expected one of {FORMATS}")
    fragments = _fragments(path, data.get("fragments", {})) if fmt >= 2 else {}
    notices = data.get("notices", {})
    ids = {key: _id(path, key) for key in notices}  # every key first: one clear error
    out = {
        ids[key]: _entry(path, fmt, key, entry, fragments, values) for key, entry in notices.items()
    }
    if not out:
        raise CatalogueError(f'{path}: no [notices."0x...."] entries')
    return out


def _fragments(path: Path, raw: Any) -> dict[str, dict[str, str]]:
    where = f"{path}: fragments"
    if not isinstance(raw, dict):
        raise CatalogueError(f"{where}: must be a table")
    out: dict[str, dict[str, str]] = {}
    for lang in LANGUAGES:
        table = raw.get(lang)
        if not isinstance(table, dict):
            raise CatalogueError(f"{where}.{lang}: missing")
        for name in FRAGMENTS:
            forms = [name] + ([f"{name}_unset"] if name in _FRAGMENT_NEEDS else [])
            for form in forms:
                if not isinstance(table.get(form), str):
                    raise CatalogueError(f"{where}.{lang}.{form}: missing or not text")
        for key, text in table.items():
            if not isinstance(text, str):
                raise CatalogueError(f"{where}.{lang}.{key}: not text")
            _check_placeholders(f"{where}.{lang}.{key}", text, VALUE_PLACEHOLDERS)
        out[lang] = dict(table)
    return out


def _check_placeholders(where: str, text: str, allowed: tuple[str, ...]) -> None:
    try:
        text.format(**{k: "" for k in allowed})
    except (KeyError, IndexError, ValueError) as exc:
        names = ", ".join(f"{{{a}}}" for a in allowed)
        raise CatalogueError(f"{where}: bad placeholder {exc} (only {names})") from None


def _id(path: Path, key: str) -> int:
    try:
        nid = int(key, 0)
    except ValueError:
        raise CatalogueError(f"{path}: notices.{key}: the key must be a hex id (0x0101)") from None
    if not 0 < nid <= 0xFFFF:
        raise CatalogueError(f"{path}: notices.{key}: id must be 0x0001..0xFFFF")
    return nid


def _strings(where: str, raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, str) and x for x in raw):
        raise CatalogueError(f"{where}: must be a list of text")
    return tuple(raw)


def _entry(
    path: Path,
    fmt: int,
    key: str,
    entry: Any,
    fragments: dict[str, dict[str, str]],
    values: NoticeValues,
) -> NoticeText:
    where = f"{path}: notices.{key}"
    if not isinstance(entry, dict):
        raise CatalogueError(f"{where}: must be a table")
    severity = entry.get("severity")
    if severity not in SEVERITIES:
        raise CatalogueError(f"{where}.severity: {severity!r}, expected one of {SEVERITIES}")
    causes = _strings(f"{where}.for", entry.get("for"))
    if fmt >= 2 and not causes:
        raise CatalogueError(f"{where}.for: required: the rule kinds (or kind:metric) it is for")
    allowed = PLACEHOLDERS if fmt >= 2 else ("outlet", "phone")
    templates: dict[str, dict[str, str]] = {}
    for lang in LANGUAGES:
        t = entry.get(lang)
        if not isinstance(t, dict):
            raise CatalogueError(f"{where}.{lang}: missing")
        table: dict[str, str] = {}
        for name, raw in t.items():
            base = name
            for own in OWNERSHIPS[1:]:
                base = base.removesuffix(f"_{own}")
            if base not in TEXT_FIELDS:
                continue  # room for a head unit's own keys
            if not isinstance(raw, str):
                raise CatalogueError(f"{where}.{lang}.{name}: missing or not text")
            _check_placeholders(f"{where}.{lang}.{name}", raw, allowed)
            table[name] = raw
        for name in ("title", "happened", "action"):
            if not table.get(name, "").strip():
                raise CatalogueError(f"{where}.{lang}.{name}: missing or not text")
        if severity == "critical" and not table.get("now", "").strip():
            raise CatalogueError(f"{where}.{lang}.now: a critical notice says what to do now")
        templates[lang] = table
    text = NoticeText(
        notice_id=int(key, 0),
        severity=severity,
        name=str(entry.get("name", key)),
        texts={},
        causes=causes,
        articles=_strings(f"{where}.articles", entry.get("articles")),
        templates=templates,
        fragments=fragments,
    )
    return text.render(values)
