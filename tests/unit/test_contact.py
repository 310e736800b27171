"""Email and mobile number normalisation."""

import pytest

from idp.contact import InvalidContact, normalise_email, normalise_phone


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("012-345 6789", "+60123456789"),
        ("0123456789", "+60123456789"),
        ("60123456789", "+60123456789"),
        ("+60 12-345 6789", "+60123456789"),
        ("011-2345 6789", "+601123456789"),
        ("(012) 345.6789", "+60123456789"),
        ("012\t345\n6789", "+60123456789"),  # whitespace is dropped, not kept
        ("+65 8123 4567", "+6581234567"),
        ("0065 8123 4567", "+6581234567"),
        ("+44 7700 900123", "+447700900123"),
    ],
)
def test_phone_numbers_are_stored_in_e164(typed, stored):
    assert normalise_phone(typed) == stored


@pytest.mark.parametrize(
    ("typed", "code"),
    [
        ("", "phone.format"),
        ("abc", "phone.format"),
        ("+0123456789", "phone.format"),
        ("+1234", "phone.format"),
        ("+1234567890123456", "phone.format"),
        ("٠١٢٣٤٥٦٧٨٩", "phone.format"),  # Arabic-Indic digits
        ("03-1234 5678", "phone.malaysian"),  # a landline
        ("012-345", "phone.malaysian"),
        ("012-3456 78901", "phone.malaysian"),
    ],
)
def test_bad_phone_numbers_are_refused_with_a_code(typed, code):
    with pytest.raises(InvalidContact) as caught:
        normalise_phone(typed)
    assert caught.value.code == code


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("Ali@Example.MY", "ali@example.my"),
        ("  guru.besar+idme@sekolah.edu.my ", "guru.besar+idme@sekolah.edu.my"),
        ("o'neil@example.com", "o'neil@example.com"),
    ],
)
def test_emails_are_lower_cased(typed, stored):
    assert normalise_email(typed) == stored


@pytest.mark.parametrize(
    "typed",
    [
        "",
        "ali",
        "ali@",
        "@example.com",
        "ali@example",
        "ali..abu@example.com",
        ".ali@example.com",
        "ali@-example.com",
        "ali@example.com\nBcc: victim@example.com",
        "ali@exa\rmple.com",
        '"ali"@example.com',
        "ali@[127.0.0.1]",
        "ali abu@example.com",
        "a" * 65 + "@example.com",
        "ali@" + "a" * 250 + ".com",
        "alí@example.com",
    ],
)
def test_bad_emails_are_refused(typed):
    with pytest.raises(InvalidContact) as caught:
        normalise_email(typed)
    assert caught.value.code == "email.format"
