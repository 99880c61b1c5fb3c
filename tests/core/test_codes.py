"""Tests for pack_agent.core.codes: fields, every problem kind, date coding, cascade form."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pack_agent.core.codes import (
    BATTERY_TYPES,
    CASCADE_LENGTH,
    CODE_LENGTH,
    DAY_CODES,
    MAX_DATE,
    MIN_DATE,
    MONTH_CODES,
    YEAR_CODES,
    BatteryType,
    CodeProblem,
    InvalidCode,
    PackCode,
    ProductType,
    check_code,
    encode_date,
    make_cascade_code,
    make_code,
    normalise_raw,
    parse_code,
)

# Public example codes (domain.md; the second is the Tractus-X model's exampleValue).
EXAMPLE_PACK = "0RJPEA00HAU0AAF131001955"
EXAMPLE_MODULE = "X12MCPM27KLPCLX2M2382320"

# io.catenax.traction_battery_code 1.0.0/2.0.0 regular expression, both alternatives.
TRACTUS_X_REGULAR = (
    r"^[A-Z0-9]{3}[PMC][A-GZ][A-Z0-9]{2}[A-Z0-9]{7}"
    r"[1-9A-GH-NPR-Y][1-9A-C][0-9A-GH-NPR-Y][0-9]{7}$"
)
TRACTUS_X_CASCADE = (
    r"^[A-Z0-9]{3}[PMC][A-GZ][A-Z0-9]{2}[1-9A-GH-NPR-Y][1-9A-C][0-9A-GH-NPR-Y][0-9]{7}R[PMC]$"
)

ALPHANUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def with_chars(code: str, **at: str) -> str:
    """``code`` with characters replaced at 1-based positions given as p<N>=..."""
    chars = list(code)
    for key, ch in at.items():
        chars[int(key[1:]) - 1] = ch
    return "".join(chars)


def problems_of(text: str) -> list[CodeProblem]:
    with pytest.raises(InvalidCode) as info:
        parse_code(text)
    return info.value.problems


def only_problem(text: str) -> CodeProblem:
    problems = problems_of(text)
    assert len(problems) == 1, problems
    return problems[0]


# --- the public examples ----------------------------------------------------


def test_public_pack_example_parses_into_every_field() -> None:
    code = parse_code(EXAMPLE_PACK)
    assert code == PackCode(
        code=EXAMPLE_PACK,
        vendor="0RJ",
        product_type=ProductType.PACK,
        battery_type=BatteryType.E,
        specification="A0",
        traceability="0HAU0AA",
        production_date=dt.date(2025, 1, 3),
        serial="1001955",
        cascade=False,
        cascade_product_type=None,
    )


def test_public_tractus_x_example_parses_as_module_made_2040_02_21() -> None:
    code = parse_code(EXAMPLE_MODULE)
    assert code.vendor == "X12"
    assert code.product_type is ProductType.MODULE
    assert code.battery_type is BatteryType.C
    assert code.specification == "PM"
    assert code.traceability == "27KLPCL"
    # year X = 2040 (A=2020 ... H=2027, J=2028 ... P=2033, R=2034 ... X=2040),
    # month 2, day M = 21: a synthetic example, dated in the future.
    assert code.production_date == dt.date(2040, 2, 21)
    assert code.serial == "2382320"
    assert code.cascade is False


def test_to_dict_is_json_ready_with_iso_date_and_names() -> None:
    data = parse_code(EXAMPLE_PACK).to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data == {
        "code": EXAMPLE_PACK,
        "vendor": "0RJ",
        "product_type": "pack",
        "battery_type": "E",
        "battery_chemistry": "ternary (NCM/NCA)",
        "battery_type_verified": True,
        "specification": "A0",
        "traceability": "0HAU0AA",
        "production_date": "2025-01-03",
        "serial": "1001955",
        "cascade": False,
        "cascade_product_type": None,
    }


def test_public_examples_match_the_tractus_x_regex() -> None:
    assert re.match(TRACTUS_X_REGULAR, EXAMPLE_PACK)
    assert re.match(TRACTUS_X_REGULAR, EXAMPLE_MODULE)


# --- fields ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("letter", "member", "label"),
    [
        ("P", ProductType.PACK, "pack"),
        ("M", ProductType.MODULE, "module"),
        ("C", ProductType.CELL, "cell"),
    ],
)
def test_product_type(letter: str, member: ProductType, label: str) -> None:
    code = parse_code(with_chars(EXAMPLE_PACK, p4=letter))
    assert code.product_type is member
    assert member.value == letter
    assert member.label == label


@pytest.mark.parametrize(
    ("letter", "chemistry", "verified"),
    [
        ("A", "nickel-metal hydride", False),
        ("B", "lithium iron phosphate", True),
        ("C", "lithium manganese oxide", False),
        ("D", "lithium cobalt oxide", False),
        ("E", "ternary (NCM/NCA)", True),
        ("F", "supercapacitor", False),
        ("G", "lithium titanate", False),
        ("Z", "other", True),
    ],
)
def test_battery_type(letter: str, chemistry: str, verified: bool) -> None:
    code = parse_code(with_chars(EXAMPLE_PACK, p5=letter))
    assert code.battery_type is BatteryType(letter)
    assert code.battery_type.chemistry == chemistry
    assert code.battery_type.verified is verified
    assert BATTERY_TYPES[letter].chemistry == chemistry


def test_battery_type_enum_and_table_agree() -> None:
    assert {m.value for m in BatteryType} == set(BATTERY_TYPES) == set("ABCDEFGZ")


def test_vendor_spec_and_traceability_are_free_alphanumerics() -> None:
    code = parse_code("Z9ZCB9ZABCDEFG" + "A11" + "0000000")
    assert (code.vendor, code.specification, code.traceability) == ("Z9Z", "9Z", "ABCDEFG")
    assert code.serial == "0000000"  # leading zeros kept: the serial is text


def test_letters_i_o_q_are_fine_outside_the_date() -> None:
    # The skip rule is about date codes only; vendor/spec/trace are maker-defined.
    code = parse_code("IOQPBOQIOQIOQI" + "A11" + "1234567")
    assert code.vendor == "IOQ"


# --- year, month, day --------------------------------------------------------


@pytest.mark.parametrize(
    ("ch", "year"),
    [
        ("1", 2011), ("9", 2019), ("A", 2020), ("B", 2021), ("H", 2027),
        ("J", 2028), ("N", 2032), ("P", 2033), ("R", 2034), ("X", 2040), ("Y", 2041),
    ],
)  # fmt: skip
def test_year_codes(ch: str, year: int) -> None:
    assert YEAR_CODES[ch] == year
    assert parse_code(with_chars(EXAMPLE_PACK, p15=ch)).production_date.year == year


def test_year_code_table_is_complete_and_skips_i_o_q_z() -> None:
    assert list(YEAR_CODES.values()) == list(range(2011, 2042))
    assert not set("IOQZ0") & set(YEAR_CODES)


@pytest.mark.parametrize("ch", ["I", "O", "Q", "Z", "0"])
def test_bad_year_code(ch: str) -> None:
    problem = only_problem(with_chars(EXAMPLE_PACK, p15=ch))
    assert (problem.position, problem.rule) == ((15, 15), "year")
    assert repr(ch) in problem.message


@pytest.mark.parametrize(("ch", "month"), [("1", 1), ("9", 9), ("A", 10), ("B", 11), ("C", 12)])
def test_month_codes(ch: str, month: int) -> None:
    assert MONTH_CODES[ch] == month
    assert parse_code(with_chars(EXAMPLE_PACK, p16=ch)).production_date.month == month


@pytest.mark.parametrize("ch", ["0", "D", "I", "O", "Q", "Z"])
def test_bad_month_code(ch: str) -> None:
    problem = only_problem(with_chars(EXAMPLE_PACK, p16=ch))
    assert (problem.position, problem.rule) == ((16, 16), "month")


def test_problem_str_names_position_and_value() -> None:
    problem = only_problem(with_chars(EXAMPLE_PACK, p16="D"))
    assert str(problem) == "position 16: production month 'D' is not 1-9 or A-C"


@pytest.mark.parametrize(
    ("ch", "day"),
    [
        ("1", 1),
        ("9", 9),
        ("A", 10),
        ("H", 17),
        ("J", 18),
        ("N", 22),
        ("P", 23),
        ("R", 24),
        ("Y", 31),
    ],
)
def test_day_codes(ch: str, day: int) -> None:
    assert DAY_CODES[ch] == day
    assert parse_code(with_chars(EXAMPLE_PACK, p17=ch)).production_date.day == day


def test_day_code_table_is_complete_and_skips_i_o_q_z() -> None:
    assert list(DAY_CODES.values()) == list(range(1, 32))
    assert not set("IOQZ0") & set(DAY_CODES)


@pytest.mark.parametrize("ch", ["0", "I", "O", "Q", "Z"])
def test_bad_day_code(ch: str) -> None:
    # Tractus-X lets day '0' and 'I' through; the code table does not.
    problem = only_problem(with_chars(EXAMPLE_PACK, p17=ch))
    assert (problem.position, problem.rule) == ((17, 17), "day")


@pytest.mark.parametrize(
    ("date_code", "shown"),
    [("F2X", "2025-02-30"), ("F2W", "2025-02-29"), ("F4Y", "2025-04-31"), ("JBY", "2028-11-31")],
)
def test_impossible_calendar_date(date_code: str, shown: str) -> None:
    problem = only_problem(EXAMPLE_PACK[:14] + date_code + EXAMPLE_PACK[17:])
    assert (problem.position, problem.rule) == ((15, 17), "date")
    assert shown in problem.message
    assert str(problem).startswith("positions 15-17: ")


def test_leap_day_is_accepted_in_a_leap_year() -> None:
    code = parse_code(EXAMPLE_PACK[:14] + "E2W" + EXAMPLE_PACK[17:])
    assert code.production_date == dt.date(2024, 2, 29)


# --- encode_date ------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (dt.date(2011, 1, 1), "111"),
        (dt.date(2019, 9, 9), "999"),
        (dt.date(2020, 10, 10), "AAA"),
        (dt.date(2025, 1, 3), "F13"),
        (dt.date(2027, 12, 17), "HCH"),
        (dt.date(2028, 11, 18), "JBJ"),
        (dt.date(2033, 1, 23), "P1P"),
        (dt.date(2034, 1, 24), "R1R"),
        (dt.date(2040, 2, 21), "X2M"),
        (dt.date(2041, 12, 31), "YCY"),
    ],
)
def test_encode_date(day: dt.date, expected: str) -> None:
    assert encode_date(day) == expected


@pytest.mark.parametrize(
    "day", [dt.date(2010, 12, 31), dt.date(2042, 1, 1), dt.date(2050, 12, 31), dt.date(1999, 1, 1)]
)
def test_encode_date_outside_the_year_table_is_refused(day: dt.date) -> None:
    # The letters run out at Y = 2041; no wrap-around is documented, so none is guessed.
    with pytest.raises(ValueError, match="cannot be encoded"):
        encode_date(day)


def test_date_range_constants() -> None:
    assert MIN_DATE.isoformat() == "2011-01-01"
    assert MAX_DATE.isoformat() == "2041-12-31"


# --- character and length problems -----------------------------------------


@pytest.mark.parametrize("text", ["", "0RJPEA00HAU0AAF13100195", EXAMPLE_PACK + "5", "P" * 40])
def test_wrong_length(text: str) -> None:
    problem = only_problem(text)
    assert (problem.position, problem.rule) == (None, "length")
    assert f"length {len(text)}" in problem.message
    assert str(problem).startswith("code: ")


def test_lowercase_is_reported_per_position() -> None:
    problems = problems_of(EXAMPLE_PACK.lower())
    letters = [i for i, ch in enumerate(EXAMPLE_PACK, start=1) if ch.isalpha()]
    assert [p.position for p in problems] == [(i, i) for i in letters]
    assert {p.rule for p in problems} == {"character"}
    assert "lowercase" in problems[0].message


@pytest.mark.parametrize("ch", ["-", " ", "\x00", "É", "Ｅ", "ß", "\n"])
def test_illegal_character(ch: str) -> None:
    problem = only_problem(with_chars(EXAMPLE_PACK, p9=ch))
    assert (problem.position, problem.rule) == ((9, 9), "character")
    assert repr(ch) in problem.message


def test_illegal_character_in_a_field_is_reported_once() -> None:
    # '-' in the month is a character problem, not also a month problem
    problem = only_problem(with_chars(EXAMPLE_PACK, p16="-"))
    assert (problem.position, problem.rule) == ((16, 16), "character")


def test_wrong_length_still_reports_bad_characters() -> None:
    problems = problems_of("0rj-")
    assert [(p.position, p.rule) for p in problems] == [
        (None, "length"),
        ((2, 2), "character"),
        ((3, 3), "character"),
        ((4, 4), "character"),
    ]


# --- product type, battery type, serial -------------------------------------


@pytest.mark.parametrize("ch", ["X", "B", "0"])
def test_bad_product_type(ch: str) -> None:
    problem = only_problem(with_chars(EXAMPLE_PACK, p4=ch))
    assert (problem.position, problem.rule) == ((4, 4), "product_type")


@pytest.mark.parametrize("ch", ["H", "Y", "0", "P"])
def test_bad_battery_type(ch: str) -> None:
    problem = only_problem(with_chars(EXAMPLE_PACK, p5=ch))
    assert (problem.position, problem.rule) == ((5, 5), "battery_type")


def test_serial_letters_are_reported_per_position() -> None:
    problems = problems_of(EXAMPLE_PACK[:17] + "12A45B7")
    assert [(p.position, p.rule) for p in problems] == [((20, 20), "serial"), ((23, 23), "serial")]
    assert "'A' is not a digit" in problems[0].message


# --- all at once ------------------------------------------------------------


def test_every_problem_is_reported_at_once_in_position_order() -> None:
    bad = "0rjXH" + "A0" + "0HAU0AA" + "I" + "D" + "0" + "1A0195-"
    assert len(bad) == CODE_LENGTH
    problems = problems_of(bad)
    assert [(p.position, p.rule) for p in problems] == [
        ((2, 2), "character"),
        ((3, 3), "character"),
        ((4, 4), "product_type"),
        ((5, 5), "battery_type"),
        ((15, 15), "year"),
        ((16, 16), "month"),
        ((17, 17), "day"),
        ((19, 19), "serial"),
        ((24, 24), "character"),
    ]


def test_invalid_code_exception_carries_raw_and_problems() -> None:
    bad = with_chars(EXAMPLE_PACK, p4="X", p16="D")
    with pytest.raises(InvalidCode) as info:
        parse_code(bad)
    exc = info.value
    assert isinstance(exc, ValueError)
    assert exc.raw == bad
    assert [p.rule for p in exc.problems] == ["product_type", "month"]
    assert "position 4" in str(exc) and "position 16" in str(exc)


def test_parse_code_is_strict_about_padding() -> None:
    assert [(p.position, p.rule) for p in problems_of(EXAMPLE_PACK + "\x00")] == [
        (None, "length"),
        ((25, 25), "character"),
    ]
    assert [(p.position, p.rule) for p in problems_of(" " + EXAMPLE_PACK)] == [
        (None, "length"),
        ((1, 1), "character"),
    ]


def test_non_text_is_an_invalid_code_not_a_crash() -> None:
    with pytest.raises(InvalidCode) as info:
        parse_code(EXAMPLE_PACK.encode())  # type: ignore[arg-type]
    assert info.value.problems[0].rule == "type"
    assert check_code(None).valid is False  # type: ignore[arg-type]


# --- check_code -------------------------------------------------------------


def test_check_code_valid() -> None:
    report = check_code(EXAMPLE_PACK)
    assert report.valid is True
    assert report.code == EXAMPLE_PACK
    assert report.fields == parse_code(EXAMPLE_PACK)
    assert report.errors == []
    assert report.problems == ()
    data = report.to_dict()
    assert data["valid"] is True and data["errors"] == []
    assert data["production_date"] == "2025-01-03"


def test_check_code_invalid_keeps_what_could_be_read() -> None:
    bad = with_chars(EXAMPLE_PACK, p5="H", p16="D")
    report = check_code(bad)
    assert report.valid is False
    assert report.code == bad
    assert report.fields is None
    assert report.errors == [
        "position 5: battery type 'H' is not A-G or Z",
        "position 16: production month 'D' is not 1-9 or A-C",
    ]
    assert [p.rule for p in report.problems] == ["battery_type", "month"]
    data = report.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["vendor"] == "0RJ" and data["product_type"] == "pack"
    assert data["battery_type"] is None and data["battery_chemistry"] is None
    assert data["production_date"] is None
    assert data["serial"] == "1001955"


def test_check_code_wrong_length_has_no_fields() -> None:
    data = check_code("ABC").to_dict()
    assert data["valid"] is False
    assert all(data[k] is None for k in ("vendor", "product_type", "serial", "production_date"))


# --- normalise_raw ------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        EXAMPLE_PACK,
        EXAMPLE_PACK + "\x00" * 8,
        EXAMPLE_PACK + "   ",
        EXAMPLE_PACK + "\x00 \x00",
        (EXAMPLE_PACK + "\x00" * 8).encode("ascii"),
    ],
)
def test_normalise_raw_strips_trailing_padding(raw: str | bytes) -> None:
    assert normalise_raw(raw) == EXAMPLE_PACK
    assert parse_code(normalise_raw(raw)).serial == "1001955"


def test_normalise_raw_keeps_everything_else_for_the_parser_to_report() -> None:
    assert normalise_raw(" " + EXAMPLE_PACK) == " " + EXAMPLE_PACK
    assert normalise_raw("AB\x00CD\x00") == "AB\x00CD"
    assert normalise_raw(EXAMPLE_PACK.lower()) == EXAMPLE_PACK.lower()
    raw = EXAMPLE_PACK[:8].encode() + b"\xff" + EXAMPLE_PACK[9:].encode()
    problem = only_problem(normalise_raw(raw))
    assert (problem.position, problem.rule) == ((9, 9), "character")


# --- make_code ----------------------------------------------------------------


def test_make_code_rebuilds_the_public_example() -> None:
    made = make_code("0RJ", ProductType.PACK, "E", "A0", "0HAU0AA", dt.date(2025, 1, 3), 1001955)
    assert made == EXAMPLE_PACK


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"vendor": "0R"}, "vendor"),
        ({"product_type": "PP"}, "product_type"),
        ({"battery_type": ""}, "battery_type"),
        ({"spec": "A"}, "spec"),
        ({"trace": "0HAU0A"}, "trace"),
        ({"serial": 10_000_000}, "serial"),
        ({"serial": -1}, "serial"),
        ({"date": dt.date(2042, 1, 1)}, "cannot be encoded"),
    ],
)
def test_make_code_refuses_bad_parts(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {
        "vendor": "0RJ",
        "product_type": "P",
        "battery_type": "E",
        "spec": "A0",
        "trace": "0HAU0AA",
        "date": dt.date(2025, 1, 3),
        "serial": 1,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        make_code(**args)  # type: ignore[arg-type]


def test_make_code_refuses_a_letter_the_parser_rejects() -> None:
    with pytest.raises(InvalidCode) as info:
        make_code("0RJ", "X", "H", "A0", "0HAU0AA", dt.date(2025, 1, 3), 1)
    assert [p.rule for p in info.value.problems] == ["product_type", "battery_type"]


# --- cascade (second-life) form ------------------------------------------------

CASCADE_EXAMPLE = "ABCMB12" + "F13" + "0000042" + "R" + "P"


def test_cascade_form_parses() -> None:
    assert len(CASCADE_EXAMPLE) == CASCADE_LENGTH
    assert re.match(TRACTUS_X_CASCADE, CASCADE_EXAMPLE)
    code = parse_code(CASCADE_EXAMPLE)
    assert code.cascade is True
    assert code.vendor == "ABC"
    assert code.product_type is ProductType.MODULE
    assert code.battery_type is BatteryType.B
    assert code.specification == "12"
    assert code.traceability is None  # the cascade form has no traceability code
    assert code.production_date == dt.date(2025, 1, 3)
    assert code.serial == "0000042"
    assert code.cascade_product_type is ProductType.PACK
    data = code.to_dict()
    assert data["cascade"] is True and data["cascade_product_type"] == "pack"
    assert data["traceability"] is None


def test_make_cascade_code_round_trips() -> None:
    made = make_cascade_code(
        "ABC", ProductType.MODULE, BatteryType.B, "12", dt.date(2025, 1, 3), 42, "P"
    )
    assert made == CASCADE_EXAMPLE


def test_cascade_form_checks_its_date_at_positions_8_to_10() -> None:
    problems = problems_of("ABCMB12" + "IDO" + "0000042" + "RP")
    assert [(p.position, p.rule) for p in problems] == [
        ((8, 8), "year"),
        ((9, 9), "month"),
        ((10, 10), "day"),
    ]
    problem = only_problem("ABCMB12" + "F2X" + "0000042" + "RP")
    assert (problem.position, problem.rule) == ((8, 10), "date")


def test_cascade_form_serial_and_trailing_type() -> None:
    problems = problems_of("ABCMB12" + "F13" + "00000A2" + "RX")
    assert [(p.position, p.rule) for p in problems] == [
        ((16, 16), "serial"),
        ((19, 19), "cascade_product_type"),
    ]


def test_nineteen_characters_without_r_is_a_length_problem() -> None:
    problem = only_problem("ABCMB12" + "F13" + "0000042" + "XP")
    assert (problem.position, problem.rule) == (None, "length")
    assert "not 'R'" in problem.message


@pytest.mark.parametrize("suffix", ["RP", "RM", "RC", "R"])
def test_full_code_plus_r_suffix_is_not_accepted(suffix: str) -> None:
    # No source found supports "24-character code + R + type"; it stays invalid.
    assert only_problem(EXAMPLE_PACK + suffix).rule == "length"


# --- properties -----------------------------------------------------------------

dates = st.dates(min_value=MIN_DATE, max_value=MAX_DATE)
alnum = st.text(alphabet=ALPHANUM, min_size=1, max_size=1)


def fixed(n: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=ALPHANUM, min_size=n, max_size=n)


@given(dates)
def test_encode_date_round_trips_through_the_parser(day: dt.date) -> None:
    code = EXAMPLE_PACK[:14] + encode_date(day) + EXAMPLE_PACK[17:]
    assert parse_code(code).production_date == day


@given(st.dates(min_value=dt.date(2042, 1, 1), max_value=dt.date(2050, 12, 31)))
def test_dates_after_2041_cannot_be_encoded(day: dt.date) -> None:
    with pytest.raises(ValueError):
        encode_date(day)


@given(
    vendor=fixed(3),
    product=st.sampled_from(ProductType),
    battery=st.sampled_from(BatteryType),
    spec=fixed(2),
    trace=fixed(7),
    day=dates,
    serial=st.integers(0, 9_999_999),
)
def test_make_code_round_trips(
    vendor: str,
    product: ProductType,
    battery: BatteryType,
    spec: str,
    trace: str,
    day: dt.date,
    serial: int,
) -> None:
    code = make_code(vendor, product, battery, spec, trace, day, serial)
    assert re.match(TRACTUS_X_REGULAR, code)  # what we make, Tractus-X accepts
    parsed = parse_code(code)
    assert parsed == PackCode(
        code, vendor, product, battery, spec, trace, day, f"{serial:07d}", False, None
    )


@given(
    vendor=fixed(3),
    product=st.sampled_from(ProductType),
    battery=st.sampled_from(BatteryType),
    spec=fixed(2),
    day=dates,
    serial=st.integers(0, 9_999_999),
    after=st.sampled_from(ProductType),
)
def test_make_cascade_code_round_trips_property(
    vendor: str,
    product: ProductType,
    battery: BatteryType,
    spec: str,
    day: dt.date,
    serial: int,
    after: ProductType,
) -> None:
    code = make_cascade_code(vendor, product, battery, spec, day, serial, after)
    assert re.match(TRACTUS_X_CASCADE, code)
    parsed = parse_code(code)
    assert (parsed.vendor, parsed.product_type, parsed.battery_type) == (vendor, product, battery)
    assert (parsed.specification, parsed.production_date) == (spec, day)
    assert (parsed.serial, parsed.cascade, parsed.cascade_product_type) == (
        f"{serial:07d}",
        True,
        after,
    )


@given(st.text(max_size=40))
def test_random_text_raises_only_invalid_code(text: str) -> None:
    try:
        parse_code(text)
    except InvalidCode as exc:
        assert exc.problems
        assert all(isinstance(p, CodeProblem) for p in exc.problems)


@given(st.one_of(st.text(alphabet=ALPHANUM, min_size=24, max_size=24), st.text(max_size=30)))
def test_check_code_never_raises_and_agrees_with_parse_code(text: str) -> None:
    report = check_code(text)
    try:
        parsed = parse_code(text)
    except InvalidCode as exc:
        assert not report.valid and report.fields is None
        assert report.errors == [str(p) for p in exc.problems]
    else:
        assert report.valid and report.fields == parsed and report.errors == []
    json.dumps(report.to_dict())


@given(st.from_regex(TRACTUS_X_REGULAR, fullmatch=True))
def test_tractus_x_matches_fail_only_on_the_stricter_date_rules(text: str) -> None:
    # Tractus-X lets year 'I', day '0'/'I' and impossible dates through; we do not.
    report = check_code(text)
    assert {p.rule for p in report.problems} <= {"year", "day", "date"}
