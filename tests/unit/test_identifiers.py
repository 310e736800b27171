"""Unit tests for idp.identifiers: MyKad/MyKid numbers and passports."""

import dataclasses
import datetime
import pickle

import pytest
from pyramid.i18n import TranslationString

from idp.identifiers import (
    COUNTRIES,
    ERROR_CODES,
    MYKAD_PLACES,
    Identifier,
    InvalidIdentifier,
    mykad_birth_date,
    parse_identifier,
    parse_mykad,
    parse_passport,
)

# The place-of-birth codes JPN has allocated, restated here independently of
# the module's table: 01-16 and 21-59 for states, then foreign and special
# codes. Everything else (00, 17-20, 69, 70, 73, 80, 81, 94-97) is unallocated.
ALLOCATED_PLACES = {
    *range(1, 17),
    *range(21, 60),
    *range(60, 69),
    71,
    72,
    *range(74, 80),
    *range(82, 94),
    98,
    99,
}
UNALLOCATED_PLACES = sorted(set(range(100)) - ALLOCATED_PLACES)


def assert_refused(func, *args, code):
    with pytest.raises(InvalidIdentifier) as info:
        func(*args)
    assert info.value.code == code


# --- MyKad: accepted forms -------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("900101145678", "900101145678"),
        ("900101-14-5678", "900101145678"),
        ("  900101-14-5678  ", "900101145678"),
        ("\t900101145678\n", "900101145678"),
        ("\u00a0900101145678\u3000", "900101145678"),  # NBSP, ideographic space
        ("050607-10-0012", "050607100012"),
        ("991231-01-9999", "991231019999"),
        ("000101-16-0000", "000101160000"),
    ],
)
def test_parse_mykad_accepts(text, expected):
    assert parse_mykad(text) == expected


@pytest.mark.parametrize(
    "yymmdd",
    [
        "000229",  # 2000 is a leap year (1900 is not)
        "960229",  # 1996 and 2096
        "040229",  # 1904 and 2004
        "240229",  # 1924 and 2024
        "680229",  # 1968 (2068 too)
        "000131",
        "000430",
        "001231",
        "990228",
    ],
)
def test_parse_mykad_accepts_real_dates(yymmdd):
    assert parse_mykad(f"{yymmdd}-14-1234") == f"{yymmdd}141234"


@pytest.mark.parametrize("place", sorted(ALLOCATED_PLACES))
def test_parse_mykad_accepts_every_allocated_place(place):
    assert parse_mykad(f"900101-{place:02d}-1234") == f"900101{place:02d}1234"


# --- MyKad: refusals -------------------------------------------------------


@pytest.mark.parametrize("place", UNALLOCATED_PLACES)
def test_parse_mykad_refuses_unallocated_place(place):
    assert_refused(parse_mykad, f"900101-{place:02d}-1234", code="mykad.place")


@pytest.mark.parametrize(
    "yymmdd",
    [
        "901301",  # month 13
        "900001",  # month 0
        "900132",  # day 32
        "900100",  # day 0
        "900230",  # Feb 30
        "000230",  # Feb 30, even in a leap year
        "900431",  # Apr 31
        "901131",  # Nov 31
        "010229",  # 1901 and 2001 are both common years
        "990229",  # 1999 and 2099 are both common years
        "230229",  # 1923 and 2023
    ],
)
def test_parse_mykad_refuses_impossible_dates(yymmdd):
    assert_refused(parse_mykad, f"{yymmdd}-14-1234", code="mykad.date")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "90010114567",  # 11 digits
        "9001011456789",  # 13 digits
        "900101-14-567",
        "900101-14-56789",
        "-",
        "--",
        "9" * 24,
    ],
)
def test_parse_mykad_refuses_wrong_length(text):
    assert_refused(parse_mykad, text, code="mykad.length")


@pytest.mark.parametrize(
    "text",
    [
        "90010114567A",
        "A00101145678",
        "900101-14-567O",  # letter O, not zero
        "900101 14 5678",  # internal spaces
        "900101 145678",
        "9001011456 78",
        "900101\t145678",
        "900101.14.5678",
        "900101/14/5678",
        "+900101145678",
        "900101\u201314\u20135678",  # en dashes
        "900101\u221214\u22125678",  # minus signs
        # Arabic-Indic digits for 900101145678
        "\u0669\u0660\u0660\u0661\u0660\u0661\u0661\u0664\u0665\u0666\u0667\u0668",
        # Fullwidth digits for 900101-14-5678
        "\uff19\uff10\uff10\uff11\uff10\uff11-\uff11\uff14-\uff15\uff16\uff17\uff18",
        "90010114567\uff18",  # a single fullwidth digit
        "90010114567\u0668",  # a single Arabic-Indic digit
        "90010114567\u06f8",  # a single Extended Arabic-Indic digit
        "90010114567\u096e",  # a single Devanagari digit
        "90010114567\u00b2",  # superscript two: str.isdigit() is True
        "90010114567\U0001d7d6",  # mathematical bold digit eight
    ],
)
def test_parse_mykad_refuses_non_ascii_digits_and_other_characters(text):
    assert_refused(parse_mykad, text, code="mykad.digits")


@pytest.mark.parametrize(
    "text",
    [
        "900101-145678",  # only the first dash
        "90010114-5678",  # only the second dash
        "9001-01-145678",  # dashes in the wrong places
        "900101--145678",
        "90010-114-5678",
        "-900101145678",
        "900101145678-",
        "-900101-14-5678",
        "900101-14-5678-",
        "900101-14-56-78",  # three dashes
        "9-0-0-1-0-1-1-4-5-6-7-8",
    ],
)
def test_parse_mykad_refuses_misplaced_dashes(text):
    assert_refused(parse_mykad, text, code="mykad.format")


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("90010A", "mykad.digits"),  # bad character beats bad length
        ("901301-00-1234", "mykad.date"),  # bad date beats bad place
        ("901301-145678", "mykad.format"),  # bad dashes beat bad date
        ("90130114567", "mykad.length"),  # bad length beats bad date
    ],
)
def test_parse_mykad_error_precedence(text, code):
    assert_refused(parse_mykad, text, code=code)


def test_place_table_shape():
    assert set(MYKAD_PLACES) == {f"{n:02d}" for n in ALLOCATED_PLACES}
    for name in MYKAD_PLACES.values():
        assert isinstance(name, str)
        assert name.strip()
    assert MYKAD_PLACES["14"] == MYKAD_PLACES["54"]
    assert MYKAD_PLACES["66"] == "Singapore"


# --- MyKad: birth date -----------------------------------------------------


@pytest.mark.parametrize(
    ("number", "today", "expected"),
    [
        ("900101145678", datetime.date(2024, 6, 1), datetime.date(1990, 1, 1)),
        ("050607100012", datetime.date(2024, 6, 1), datetime.date(2005, 6, 7)),
        ("240601100012", datetime.date(2024, 6, 1), datetime.date(2024, 6, 1)),
        ("240602100012", datetime.date(2024, 6, 1), datetime.date(1924, 6, 2)),
        ("991231019999", datetime.date(2024, 6, 1), datetime.date(1999, 12, 31)),
        ("000101160000", datetime.date(2024, 6, 1), datetime.date(2000, 1, 1)),
        ("000229141234", datetime.date(2024, 6, 1), datetime.date(2000, 2, 29)),
        ("960229141234", datetime.date(2024, 6, 1), datetime.date(1996, 2, 29)),
        ("040229141234", datetime.date(2024, 6, 1), datetime.date(2004, 2, 29)),
        ("040229141234", datetime.date(2003, 1, 1), datetime.date(1904, 2, 29)),
        # 1900-02-29 does not exist: 2000 even if "today" is before it.
        ("000229141234", datetime.date(1999, 1, 1), datetime.date(2000, 2, 29)),
        ("900101-14-5678", datetime.date(2024, 6, 1), datetime.date(1990, 1, 1)),
    ],
)
def test_mykad_birth_date_chooses_century(number, today, expected):
    assert mykad_birth_date(number, today=today) == expected


def test_mykad_birth_date_defaults_to_today():
    today = datetime.date.today()
    next_year = (today.year + 1) % 100
    assert mykad_birth_date("000101141234") == datetime.date(2000, 1, 1)
    assert mykad_birth_date(f"{next_year:02d}0101141234").year == (today.year + 1 - 100)


@pytest.mark.parametrize(
    ("number", "code"),
    [
        ("010229141234", "mykad.date"),
        ("12345", "mykad.length"),
        ("900101001234", "mykad.place"),
    ],
)
def test_mykad_birth_date_refuses_invalid_numbers(number, code):
    with pytest.raises(InvalidIdentifier) as info:
        mykad_birth_date(number, today=datetime.date(2024, 6, 1))
    assert info.value.code == code


# --- Passports -------------------------------------------------------------


@pytest.mark.parametrize(
    ("country", "number", "expected"),
    [
        ("GBR", "123456789", "GBR:123456789"),
        ("gbr", "123456789", "GBR:123456789"),
        ("Gbr", "ab1234567", "GBR:AB1234567"),
        ("  sgp ", "  e1234567z\t", "SGP:E1234567Z"),
        ("MYS", "A12345678", "MYS:A12345678"),
        ("IDN", "12345", "IDN:12345"),  # 5 characters: the shortest
        ("USA", "A" * 20, "USA:" + "A" * 20),  # 20: the longest
        ("DEU", "C01X00T47", "DEU:C01X00T47"),
    ],
)
def test_parse_passport_accepts(country, number, expected):
    assert parse_passport(country, number) == expected


@pytest.mark.parametrize(
    "number",
    [
        "",
        "   ",
        "1234",  # too short
        "A" * 21,  # too long
        " 1234 ",  # too short once stripped
        "AB 123456",  # internal space
        "AB-123456",  # dash
        "AB_123456",
        "AB.123456",
        "AB/123456",
        "ABC12345\u00df",  # sharp s: "ß".upper() is "SS"
        "\u0131BC12345",  # dotless i, which upper-cases to I
        "\ufb01BC12345",  # ligature fi: upper() is "FI"
        "\uff21\uff22\uff23\uff11\uff12\uff13",  # fullwidth ABC123
        "AB\u0661\u0662\u0663\u0664\u0665",  # Arabic-Indic digits
        "\u00c9B123456",  # É
        "\u0410B123456",  # Cyrillic A
    ],
)
def test_parse_passport_refuses_number(number):
    assert_refused(parse_passport, "GBR", number, code="passport.number")


@pytest.mark.parametrize(
    "country",
    [
        None,
        "",
        "   ",
        "UK",
        "GB",
        "GBRR",
        "XXX",  # not assigned
        "ANT",  # withdrawn (Netherlands Antilles)
        "YUG",  # withdrawn
        "XKX",  # Kosovo: user-assigned, not ISO 3166-1
        "D",  # ICAO's code for Germany, not ISO 3166-1
        "123",
        "G B",
        "\u0131DN",  # dotless i: upper-cases to IDN
        "\uff27\uff22\uff32",  # fullwidth GBR
    ],
)
def test_parse_passport_refuses_country(country):
    assert_refused(parse_passport, country, "123456789", code="passport.country")


def test_parse_passport_checks_country_before_number():
    assert_refused(parse_passport, "XXX", "1", code="passport.country")


def test_countries_list():
    assert len(COUNTRIES) == 249
    assert isinstance(COUNTRIES, frozenset)
    for code in COUNTRIES:
        assert len(code) == 3
        assert all("A" <= ch <= "Z" for ch in code)
    assert {"MYS", "SGP", "IDN", "BRN", "THA", "GBR", "USA", "CHN", "IND"} <= COUNTRIES
    assert {"ANT", "YUG", "SCG", "CSK", "SUN", "XKX", "UNO"}.isdisjoint(COUNTRIES)


# --- parse_identifier and Identifier ---------------------------------------


@pytest.mark.parametrize("country", [None, "", "   "])
def test_parse_identifier_without_country_is_mykad(country):
    ident = parse_identifier(" 900101-14-5678 ", country)
    assert ident == Identifier("mykad", "900101145678")
    assert ident.kind == "mykad"
    assert ident.value == "900101145678"


def test_parse_identifier_default_country_is_mykad():
    assert parse_identifier("900101145678").kind == "mykad"


def test_parse_identifier_with_country_is_passport():
    ident = parse_identifier(" ab1234567 ", "gbr")
    assert ident == Identifier("passport", "GBR:AB1234567")
    assert ident.kind == "passport"
    assert ident.value == "GBR:AB1234567"


def test_parse_identifier_with_country_takes_digits_as_passport():
    assert parse_identifier("900101145678", "MYS").value == "MYS:900101145678"


@pytest.mark.parametrize(
    ("text", "country", "code"),
    [
        ("AB1234567", None, "mykad.digits"),
        ("12345", None, "mykad.length"),
        ("901301-14-5678", None, "mykad.date"),
        ("900101-00-5678", None, "mykad.place"),
        ("900101-145678", "", "mykad.format"),
        ("AB1234567", "ZZZ", "passport.country"),
        ("900101-14-5678", "MYS", "passport.number"),
        ("AB12", "GBR", "passport.number"),
    ],
)
def test_parse_identifier_errors(text, country, code):
    assert_refused(parse_identifier, text, country, code=code)


@pytest.mark.parametrize(
    ("ident", "display", "masked"),
    [
        (Identifier("mykad", "900101145678"), "900101-14-5678", "XXXXXX-XX-5678"),
        (Identifier("mykad", "000229010001"), "000229-01-0001", "XXXXXX-XX-0001"),
        (Identifier("passport", "GBR:123456789"), "GBR 123456789", "GBR ****6789"),
        (Identifier("passport", "MYS:A1234567"), "MYS A1234567", "MYS ****4567"),
        (Identifier("passport", "FRA:12345"), "FRA 12345", "FRA ****45"),
        (Identifier("passport", "FRA:123456"), "FRA 123456", "FRA ****456"),
        (Identifier("passport", "FRA:1234567"), "FRA 1234567", "FRA ****567"),
        (Identifier("passport", "FRA:" + "Z" * 20), "FRA " + "Z" * 20, "FRA ****ZZZZ"),
    ],
)
def test_display_and_masked(ident, display, masked):
    assert ident.display == display
    assert ident.masked == masked


def test_country_and_number():
    mykad = Identifier("mykad", "900101145678")
    passport = Identifier("passport", "GBR:123456789")
    assert mykad.country is None
    assert mykad.number == "900101145678"
    assert passport.country == "GBR"
    assert passport.number == "123456789"


def test_masked_mykad_hides_birth_date_and_place():
    masked = parse_identifier("900101-14-5678").masked
    assert "900101" not in masked
    assert "14" not in masked.replace("5678", "")


def test_repr_does_not_leak_the_number():
    for ident in (
        Identifier("mykad", "900101145678"),
        Identifier("passport", "GBR:123456789"),
    ):
        text = repr(ident) + str(ident)
        assert ident.value not in text
        assert ident.number not in text
        assert ident.masked in text


def test_identifier_is_frozen_and_hashable():
    ident = Identifier("mykad", "900101145678")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ident.value = "000101160000"
    assert {ident, Identifier("mykad", "900101145678")} == {ident}
    assert ident != Identifier("passport", "MYS:900101145678")


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("email", "900101145678"),
        ("mykad", "900101-14-5678"),
        ("mykad", "90010114567"),
        ("mykad", "90010114567\uff18"),
        ("passport", "123456789"),
        ("passport", "gbr:123456789"),
        ("passport", "GBR:ab1234567"),
        ("passport", "ZZZ:123456789"),
        ("passport", "GBR:1234"),
        ("passport", "GBR:12 345"),
    ],
)
def test_identifier_refuses_unnormalised_values(kind, value):
    with pytest.raises(ValueError) as info:
        Identifier(kind, value)
    assert not isinstance(info.value, InvalidIdentifier)


# --- InvalidIdentifier -----------------------------------------------------


def test_error_codes():
    assert {
        "mykad.length",
        "mykad.digits",
        "mykad.format",
        "mykad.date",
        "mykad.place",
        "passport.country",
        "passport.number",
    } == ERROR_CODES


@pytest.mark.parametrize("code", sorted(ERROR_CODES))
def test_invalid_identifier_carries_code_and_translation_string(code):
    exc = InvalidIdentifier(code)
    assert isinstance(exc, ValueError)
    assert exc.code == code
    assert isinstance(exc.message, TranslationString)
    assert exc.message.domain == "idp"
    assert exc.message.endswith(".")
    assert str(exc) == str(exc.message)
    assert code in repr(exc)
    copy = pickle.loads(pickle.dumps(exc))  # noqa: S301 -- our own bytes
    assert (type(copy), copy.code, copy.message) == (type(exc), code, exc.message)


def test_invalid_identifier_messages_are_distinct():
    messages = {str(InvalidIdentifier(code).message) for code in ERROR_CODES}
    assert len(messages) == len(ERROR_CODES)


def test_invalid_identifier_refuses_unknown_code():
    with pytest.raises(ValueError, match="unknown"):
        InvalidIdentifier("mykad.nonsense")


def test_error_does_not_echo_the_input():
    with pytest.raises(InvalidIdentifier) as info:
        parse_mykad("900101-00-5678")
    assert "5678" not in str(info.value)
    assert "5678" not in repr(info.value)
    assert info.value.message == "The 7th and 8th digits of the identity card " + (
        "number are not a place-of-birth code in use."
    )


def test_length_message_is_the_documented_msgid():
    with pytest.raises(InvalidIdentifier) as info:
        parse_mykad("123")
    assert info.value.message == "The identity card number must have 12 digits."
