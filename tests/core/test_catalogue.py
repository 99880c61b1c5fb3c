"""The message catalogue: complete in both languages, in step with the reference DBC, and
every mistake in a maker's own file named with its entry."""

from __future__ import annotations

from pathlib import Path

import cantools
import pytest

from pack_agent.config import DATA_DIR
from pack_agent.core.catalogue import DEFAULT_CATALOGUE, CatalogueError, load_catalogue

GOOD = """format = 1
[notices."0x0101"]
severity = "advisory"
name = "A"
[notices."0x0101".zh]
title = "标题"
happened = "发生了"
action = "去 {outlet}，{phone}"
[notices."0x0101".en]
title = "Title"
happened = "Happened"
action = "Go to {outlet}, {phone}"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "notices.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_shipped_catalogue_is_complete_in_chinese_and_english():
    cat = load_catalogue(outlet="OUTLET", phone="PHONE")
    assert {hex(i) for i in cat} == {"0x101", "0x102", "0x103", "0x201", "0x202", "0x203"}
    for nid, entry in cat.items():
        assert entry.severity == ("advisory" if nid >> 8 == 1 else "critical")
        for lang, t in entry.texts.items():
            assert t.title and t.happened and t.action, (hex(nid), lang)
            if nid != 0x0102:  # the early notice is a forecast, not yet the conditions
                assert "OUTLET" in t.action and "PHONE" in t.action, (hex(nid), lang)
            assert bool(t.now) == (entry.severity == "critical"), (hex(nid), lang)
            assert "{" not in t.body
        assert any("\u4e00" <= c <= "\u9fff" for c in entry.body_zh)
        assert entry.body_en.isascii()


def test_catalogue_and_dbc_value_table_agree():
    db = cantools.database.load_file(str(DATA_DIR / "pack_agent_reference.dbc"), strict=True)
    sig = db.get_message_by_name("PA_OwnerNotice").get_signal_by_name("PA_NoticeId")
    choices = {int(k): str(v) for k, v in sig.choices.items() if int(k)}
    assert choices == {nid: e.name for nid, e in load_catalogue().items()}


def test_without_an_outlet_the_owner_is_sent_to_the_maker():
    entry = load_catalogue()[0x0101]
    assert "service hotline" in entry.body_en and "服务热线" in entry.body_zh


def test_a_custom_catalogue_loads(tmp_path):
    cat = load_catalogue(write(tmp_path, GOOD), outlet="X", phone="9")
    assert cat[0x0101].texts["zh"].action == "去 X，9"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("format = 1", "format = 2"), "format = 2, expected 1"),
        (('"0x0101"]', '"hello"]'), "notices.hello: the key must be a hex id"),
        (('severity = "advisory"', 'severity = "loud"'), "notices.0x0101.severity: 'loud'"),
        (('title = "Title"\n', ""), "notices.0x0101.en.title: missing"),
        (('{phone}"\n[', '{owner}"\n['), "notices.0x0101.zh.action: bad placeholder 'owner'"),
        (('severity = "advisory"', 'severity = "critical"'), "0x0101.zh.now: a critical notice"),
        (('[notices."0x0101".en]', '[notices."0x0101".fr]'), "notices.0x0101.en: missing"),
        (('happened = "Happened"', "happened = ["), "not a UTF-8 TOML file"),
    ],
)
def test_mistakes_are_named(tmp_path, change, message):
    old, new = change
    assert old in GOOD
    with pytest.raises(CatalogueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_catalogue(write(tmp_path, GOOD.replace(old, new, 1)))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CatalogueError, match=r"nope\.toml: cannot read"):
        load_catalogue(tmp_path / "nope.toml")


def test_default_path_is_the_shipped_file():
    assert DEFAULT_CATALOGUE == DATA_DIR / "notices.toml"
