"""The owner-notice message catalogue: what each notice id means, in Chinese and English.

The texts live in a TOML data file (``data/notices.toml``, format in
docs/owner-notices.md) that head-unit software reads too: the agent sends only
the notice id and the service outlet, the head unit resolves the id here.
Pure: reads one file, no other I/O.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_CATALOGUE = Path(__file__).parents[1] / "data" / "notices.toml"
FORMAT = 1
LANGUAGES = ("zh", "en")
SEVERITIES = ("info", "advisory", "critical")
# what the owner sees when the configuration names no outlet or phone
FALLBACK = {
    "outlet": {
        "en": "ask your vehicle maker's service hotline",
        "zh": "请咨询车辆生产企业服务热线",
    },
    "phone": {"en": "see the maker's website or app", "zh": "见车辆生产企业官网或应用程序"},
}


class CatalogueError(ValueError):
    """The catalogue file is missing, not TOML, or an entry is incomplete."""


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


def load_catalogue(
    path: Path = DEFAULT_CATALOGUE, outlet: str = "", phone: str = ""
) -> dict[int, NoticeText]:
    """Every notice id to its texts, with ``{outlet}`` and ``{phone}`` filled in."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise CatalogueError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CatalogueError(f"{path}: not a UTF-8 TOML file: {exc}") from None
    if data.get("format") != FORMAT:
        raise CatalogueError(f"{path}: format = {data.get('format')!r}, expected {FORMAT}")
    notices = data.get("notices", {})
    ids = {key: _id(path, key) for key in notices}  # every key first: one clear error
    out = {ids[key]: _entry(path, key, entry, outlet, phone) for key, entry in notices.items()}
    if not out:
        raise CatalogueError(f'{path}: no [notices."0x...."] entries')
    return out


def _id(path: Path, key: str) -> int:
    try:
        nid = int(key, 0)
    except ValueError:
        raise CatalogueError(f"{path}: notices.{key}: the key must be a hex id (0x0101)") from None
    if not 0 < nid <= 0xFFFF:
        raise CatalogueError(f"{path}: notices.{key}: id must be 0x0001..0xFFFF")
    return nid


def _entry(path: Path, key: str, entry: Any, outlet: str, phone: str) -> NoticeText:
    where = f"{path}: notices.{key}"
    if not isinstance(entry, dict):
        raise CatalogueError(f"{where}: must be a table")
    severity = entry.get("severity")
    if severity not in SEVERITIES:
        raise CatalogueError(f"{where}.severity: {severity!r}, expected one of {SEVERITIES}")
    texts = {}
    for lang in LANGUAGES:
        t = entry.get(lang)
        if not isinstance(t, dict):
            raise CatalogueError(f"{where}.{lang}: missing")
        values = {
            "outlet": outlet or FALLBACK["outlet"][lang],
            "phone": phone or FALLBACK["phone"][lang],
        }
        fields = {}
        for name in ("title", "happened", "action", "now"):
            raw = t.get(name, "")
            if not isinstance(raw, str) or (name != "now" and not raw.strip()):
                raise CatalogueError(f"{where}.{lang}.{name}: missing or not text")
            try:
                fields[name] = raw.strip().format(**values)
            except (KeyError, IndexError, ValueError) as exc:
                raise CatalogueError(
                    f"{where}.{lang}.{name}: bad placeholder {exc} (only {{outlet}}, {{phone}})"
                ) from None
        if severity == "critical" and not fields["now"]:
            raise CatalogueError(f"{where}.{lang}.now: a critical notice says what to do now")
        texts[lang] = LangText(**fields)
    return NoticeText(int(key, 0), severity, str(entry.get("name", key)), texts)
