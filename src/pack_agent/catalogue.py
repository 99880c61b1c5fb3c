"""The owner-notice message catalogue (texts in Chinese and English) read from a data file."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_CATALOGUE = Path(__file__).parent / "data" / "notices.toml"


@dataclass(frozen=True)
class NoticeText:
    notice_id: int
    severity: str
    title_en: str
    title_zh: str
    body_en: str
    body_zh: str


def load_catalogue(path: Path = DEFAULT_CATALOGUE, outlet: str = "") -> dict[int, NoticeText]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    out: dict[int, NoticeText] = {}
    for key, entry in data.get("notices", {}).items():
        nid = int(key, 0)
        place = outlet or "ask your vehicle maker's service hotline / 请咨询车辆生产企业服务热线"
        out[nid] = NoticeText(
            notice_id=nid,
            severity=entry["severity"],
            title_en=entry["title_en"],
            title_zh=entry["title_zh"],
            body_en=entry["body_en"].format(outlet=place),
            body_zh=entry["body_zh"].format(outlet=place),
        )
    return out
