"""The message catalogue: complete in both languages, in step with the reference DBC, and
every mistake in a maker's own file named with its entry."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import cantools
import pytest

from pack_agent.config import DATA_DIR
from pack_agent.core.catalogue import (
    DEFAULT_CATALOGUE,
    OWNERSHIPS,
    CatalogueError,
    NoticeValues,
    default_notice_for,
    fits,
    load_catalogue,
)
from pack_agent.core.notices import MAX_TEXT_BYTES

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


VALUES = NoticeValues(
    outlet="OUTLET",
    phone="PHONE",
    procedure="https://maker.example/battery",
    emergency_phone="EMERGENCY",
    within_days=90,
)
SHIPPED = load_catalogue(values=VALUES)
REACHED = [e for e in SHIPPED.values() if e.causes != ("forecast",)]


def every_rendering(values: NoticeValues = VALUES):
    """Each shipped entry, for each pack ownership, each language: (entry, own, lang, text)."""
    for entry in SHIPPED.values():
        for own in OWNERSHIPS:
            done = entry.render(replace(values, ownership=own))
            for lang, text in done.texts.items():
                yield entry, own, lang, text


def test_shipped_catalogue_is_complete_in_chinese_and_english():
    assert {hex(i) for i in SHIPPED} == {
        *(f"0x10{i}" for i in range(1, 10)),
        "0x201",
        "0x202",
        "0x203",
    }
    for entry, own, lang, t in every_rendering():
        where = (hex(entry.notice_id), own, lang)
        assert entry.severity == ("advisory" if entry.notice_id >> 8 == 1 else "critical")
        assert entry.causes and entry.articles, where
        assert t.title and t.happened and t.action, where
        assert bool(t.now) == (entry.severity == "critical"), where
        assert "{" not in t.body and "  " not in t.body, where
        assert (lang == "en") == t.body.isascii(), where


def test_catalogue_and_dbc_value_table_agree():
    db = cantools.database.load_file(str(DATA_DIR / "pack_agent_reference.dbc"), strict=True)
    sig = db.get_message_by_name("PA_OwnerNotice").get_signal_by_name("PA_NoticeId")
    choices = {int(k): str(v) for k, v in sig.choices.items() if int(k)}
    assert choices == {nid: e.name for nid, e in load_catalogue().items()}


def test_every_notice_points_to_the_makers_procedure_and_the_ebike_ban():
    """Art. 15(3): the maker's published procedure; Art. 22 in every notice."""
    for entry, own, lang, t in every_rendering():
        where = (hex(entry.notice_id), own, lang)
        assert "https://maker.example/battery" in t.action, where
        assert ("electric bicycle" if lang == "en" else "电动自行车") in t.action, where


def test_an_owned_pack_scrapped_with_the_vehicle_keeps_its_battery():
    """Art. 21, in every advisory notice of conditions reached, for an owned pack."""
    for entry in REACHED:
        if entry.severity == "advisory":
            done = entry.render(VALUES)
            assert "missing components" in done.texts["en"].action, hex(entry.notice_id)
            assert "缺少部件" in done.texts["zh"].action, hex(entry.notice_id)


def test_texts_say_no_more_than_the_measures_and_the_measurements():
    banned = [
        "unlicensed",
        "qualif",
        "资质",
        "driven normally",
        "正常行驶",
        "range is reduced",
        "months",
        "数月",
        "towing",
        "拖车",
        "must go to",
        "须交",
    ]
    for entry, own, lang, t in every_rendering():
        for word in banned:
            assert word not in t.body, (hex(entry.notice_id), own, lang, word)


def test_an_insulation_fault_is_not_said_to_be_the_packs_end_of_life():
    done = SHIPPED[0x0203]
    assert "high-voltage system as a whole" in done.texts["en"].happened
    for lang, phrase in (("en", "scrapping conditions"), ("zh", "报废条件")):
        assert phrase not in done.texts[lang].body


def test_the_early_notice_gives_the_configured_horizon():
    for days, en, zh in ((90, "within 90 days", "90天内"), (45.5, "within 45.5 days", "45.5天内")):
        done = SHIPPED[0x0102].render(replace(VALUES, within_days=days))
        assert en in done.texts["en"].happened and zh in done.texts["zh"].happened


def test_critical_notices_give_their_own_emergency_contact_not_the_outlet():
    for entry, _own, lang, t in every_rendering():
        if entry.severity == "critical":
            assert "EMERGENCY" in t.now and "OUTLET" not in t.now, (hex(entry.notice_id), lang)
    bare = SHIPPED[0x0201].render(replace(VALUES, emergency_phone=""))
    assert "Roadside" not in bare.texts["en"].now and "119" in bare.texts["en"].now


def test_a_swapped_or_leased_pack_goes_back_to_its_operator():
    for entry in SHIPPED.values():
        swap = entry.render(replace(VALUES, ownership="swap_operator")).texts
        lease = entry.render(replace(VALUES, ownership="lease")).texts
        assert "battery-swap operator" in swap["en"].action, hex(entry.notice_id)
        assert "换电服务企业" in swap["zh"].action, hex(entry.notice_id)
        assert "lessor" in lease["en"].action and "出租方" in lease["zh"].action
        assert "missing components" not in swap["en"].action + lease["en"].action


def test_without_an_outlet_the_owner_is_sent_to_the_makers_published_list():
    """No circular fallback: the maker posts its outlets (Art. 15(2)); no 'ask the hotline,
    see the website' loop, no empty 'Service outlet: ,'."""
    entry = load_catalogue()[0x0101]
    en, zh = entry.texts["en"].action, entry.texts["zh"].action
    assert "posts the addresses and contact details of its recycling service outlets" in en
    assert "公布回收服务网点的地址和联系方式" in zh
    assert "hotline" not in en and "热线" not in zh and "outlet: ," not in en


def test_notice_values_travel_as_text_lines():
    for values in (VALUES, NoticeValues("A", "B"), NoticeValues(ownership="lease")):
        assert NoticeValues.from_text(values.to_text()) == values
    assert NoticeValues("Outlet", "123").to_text() == "Outlet\n123"  # the first format
    assert NoticeValues().to_text() == ""
    assert len(VALUES.to_text().encode()) <= MAX_TEXT_BYTES


def rule(kind: str, severity: str = "advisory", **kw):
    return SimpleNamespace(id=kw.pop("id", kind), kind=kind, severity=severity, **kw)


@pytest.mark.parametrize(
    ("r", "expected"),
    [
        (rule("capacity", metric="soh"), 0x0101),
        (rule("consecutive", metric="soh"), 0x0101),
        (rule("forecast"), 0x0102),
        (rule("resistance", metric="internal_resistance"), 0x0104),
        (rule("age"), 0x0105),
        (rule("usage", metric="full_cycles"), 0x0106),
        (rule("safety", metric="end_of_life"), 0x0107),
        (rule("safety", metric="cell_volt_delta"), 0x0108),
        (rule("safety", "critical", metric="cell_volt_delta"), 0x0201),
        (rule("safety", "critical", metric="thermal_event"), 0x0202),
        (rule("safety", "critical", metric="insulation_alarm"), 0x0203),
    ],
)
def test_every_rule_kind_gets_the_notice_of_its_cause(r, expected):
    assert default_notice_for(r, {r.id: r}, SHIPPED) == expected
    assert fits(SHIPPED[expected], r, {r.id: r}) is not None
    if expected != 0x0101:
        assert fits(SHIPPED[0x0101], r, {r.id: r}) is None  # never the capacity text


def test_combinations_speak_of_what_they_combine():
    a, b = rule("capacity", id="a", metric="soh"), rule("resistance", id="b", metric="r")
    both = {"a": a, "b": b}
    same = rule("any", id="c", rules=["a", "a"])
    mixed = rule("all", id="d", rules=["a", "b"])
    assert default_notice_for(same, {**both, "c": same}, SHIPPED) == 0x0101
    assert default_notice_for(mixed, {**both, "d": mixed}, SHIPPED) == 0x0109
    crit = rule("any", "critical", id="e", rules=["a"])
    assert default_notice_for(crit, {**both, "e": crit}, SHIPPED) is None  # none fits


def test_a_custom_catalogue_loads(tmp_path):
    cat = load_catalogue(write(tmp_path, GOOD), outlet="X", phone="9")
    assert cat[0x0101].texts["zh"].action == "去 X，9"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("format = 1", "format = 3"), "format = 3, expected one of"),
        (("format = 1", "format = 2"), "fragments.zh: missing"),
        (('"0x0101"]', '"hello"]'), "notices.hello: the key must be a hex id"),
        (('severity = "advisory"', 'severity = "loud"'), "notices.0x0101.severity: 'loud'"),
        (('title = "Title"\n', ""), "notices.0x0101.en.title: missing"),
        (('{phone}"\n[', '{owner}"\n['), "notices.0x0101.zh.action: bad placeholder 'owner'"),
        (('{phone}"\n[', '{art22}"\n['), "notices.0x0101.zh.action: bad placeholder 'art22'"),
        (('name = "A"', 'name = "A"\nfor = "capacity"'), "notices.0x0101.for: must be a list"),
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
