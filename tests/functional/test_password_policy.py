"""The password policy through the real forms (AUTH-31, AUTH-32).

Every place a password is chosen (the forced change after registration, the
emailed reset, "Akaun saya") refuses the security phrase and the weak long
passwords of issue 11, each with its own reason in Malay and English; the
security-phrase form refuses a phrase equal to the password. Each attack has
a control that differs only in the attack and is accepted.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import lxml.html
import pytest
from pyramid.i18n import TranslationString, make_localizer

from idp.services.passwords import BcryptPasswordService
from tests.factories import display, make_user
from tests.registration import register, temporary_password_from
from tests.signin import sign_in
from tests.weak_passwords import ISSUE_11, ISSUE_11_SERVICE_NAMES

LOCALE_DIRS = [str(__import__("idp").__path__[0] + "/locale")]
HASHER = BcryptPasswordService(rounds=4)
PASSWORD = "kopi o kosong tanpa gula"
PHRASE = "Nasi lemak kegemaran saya"
# Random four-word passphrases: what the policy must keep accepting.
GOOD = [
    "gajah biru minum kopi susu",
    "kerusi-lembu-awan-merah",
    "Payung merah bawah hujan 1987",
    "lantern oyster gravel violet",
]
# The phrase as a stranger reads it at sign-in, and close variants of it.
PHRASE_VARIANTS = [
    "Nasi lemak kegemaran saya",
    "nasi lemak kegemaran saya",
    "NASI LEMAK KEGEMARAN SAYA",
    "nasilemakkegemaransaya",
    "  Nasi  lemak kegemaran   saya ",
    "nasi-lemak-kegemaran-saya",
    "Nasi lemak kegemaran saya 2024",
]
REASONS = {
    "repetition": "Do not repeat a character or a group of characters.",
    "sequence": "Do not use a sequence such as abcdef or 123456.",
    "keyboard": (
        "Do not use keys next to each other on the keyboard, such as qwerty or "
        "1qaz2wsx."
    ),
    "date": "Do not use a date or a number such as an identity number.",
    "common_word": (
        "Do not use a common word or password with numbers or symbols added."
    ),
    "common": "This password is too common and easy to guess. Choose another.",
    "service_name": (
        "Do not build your password from the name of this service, such as "
        "idMe, KPM or MOE."
    ),
    "phrase": "Do not use your security phrase, or part of it, in your password.",
}
PHRASE_IS_PASSWORD = "Your security phrase must not be your password or part of it."
WEAK = [*ISSUE_11, *ISSUE_11_SERVICE_NAMES]


def translated(message: str, locale: str) -> str:
    return make_localizer(locale, LOCALE_DIRS).translate(
        TranslationString(message, domain="idp")
    )


def field_errors(page, name: str) -> list[str]:
    tree = lxml.html.fromstring(page.text)
    return [
        li.text_content().strip()
        for li in tree.xpath(f'//*[@id="{name}-field"]//ul[@class="field-errors"]/li')
    ]


def submit_new(client, path: str, form_id: str, password: str, **extra):
    form = client.get(path).forms[form_id]
    for name, value in extra.items():
        form[name] = value
    form["password"] = form["password_confirm"] = password
    return form.submit(expect_errors=True)


@pytest.fixture
def user(dbsession):
    return make_user(
        dbsession,
        identifier="080512145678",
        email="aisyah.ahmad@example.com.my",
        full_name="Nur Aisyah binti Ahmad",
        security_phrase=PHRASE,
        password=PASSWORD,
        locale="en",
    )


@pytest.fixture
def signed_in(testapp, user):
    sign_in(testapp, display(user), PASSWORD)
    return testapp


def change(client, password: str, lang: str = "en"):
    """Akaun saya's password change, typed as the user does."""
    return submit_new(
        client,
        f"/account/password?lang={lang}",
        "account-password-form",
        password,
        current_password=PASSWORD,
    )


# AUTH-31: the phrase shown at sign-in is not a password


def test_auth_31_phrase_refused_at_the_first_change_after_registration(
    testapp, dbsession, mailbox
):
    """AUTH-31: register with a phrase, sign in, try the phrase as the password."""
    register(testapp, "en", security_phrase=PHRASE)
    (message,) = mailbox("aisyah.ahmad@example.com.my")
    temporary = temporary_password_from(message)
    landed = sign_in(testapp, "080512-14-5678", temporary)
    assert landed.location.endswith("/password/new")

    for variant in PHRASE_VARIANTS:
        page = submit_new(
            testapp, "/password/new?lang=en", "new-password-form", variant
        )
        assert page.status_int == 400, variant
        assert REASONS["phrase"] in field_errors(page, "password"), variant
    page = submit_new(testapp, "/password/new?lang=ms", "new-password-form", PHRASE)
    assert translated(REASONS["phrase"], "ms") in field_errors(page, "password")
    assert translated(REASONS["phrase"], "ms") != REASONS["phrase"]

    # The control: a passphrase that is not the phrase is accepted.
    page = submit_new(testapp, "/password/new", "new-password-form", GOOD[0])
    assert page.status_int == 303


def test_auth_31_phrase_refused_at_reset(testapp, user, dbsession, mailbox):
    """AUTH-31: the emailed reset refuses the phrase as the new password."""
    form = testapp.get("/password/forgot?lang=en").forms["reset-request-form"]
    form["email"] = user.email
    form.submit(status=303)
    body = mailbox(user.email)[-1].get_body(("plain",)).get_content()
    link = re.search(r"https://\S+/password/reset/[A-Za-z0-9_-]+", body).group(0)
    testapp.get(urlsplit(link).path, status=303)
    form = testapp.get("/password/reset").forms["reset-verify-form"]
    form["email"] = user.email
    form["identifier"] = display(user)
    form.submit(status=303)

    for variant in PHRASE_VARIANTS[:4]:
        page = submit_new(testapp, "/password/reset/new", "reset-new-form", variant)
        assert page.status_int == 400, variant
        assert REASONS["phrase"] in field_errors(page, "password")
    assert HASHER.verify(PASSWORD, user.password_hash)

    page = submit_new(testapp, "/password/reset/new", "reset-new-form", GOOD[1])
    assert page.status_int == 303
    assert HASHER.verify(GOOD[1], user.password_hash)


def test_auth_31_phrase_refused_at_account_password_change(signed_in, user):
    """AUTH-31: Akaun saya refuses the phrase and its variants as the password."""
    for variant in PHRASE_VARIANTS:
        page = change(signed_in, variant)
        assert page.status_int == 400, variant
        assert REASONS["phrase"] in field_errors(page, "password"), variant
    assert HASHER.verify(PASSWORD, user.password_hash)

    assert change(signed_in, GOOD[2]).status_int == 303
    assert HASHER.verify(GOOD[2], user.password_hash)


def _security(client, phrase: str, current: str = PASSWORD, lang: str = "en"):
    form = client.get(f"/account/security?lang={lang}").forms["account-security-form"]
    form["security_image"] = "rocket"
    form["security_phrase"] = phrase
    form["current_password"] = current
    return form.submit(expect_errors=True)


@pytest.mark.parametrize(
    "phrase",
    [PASSWORD, PASSWORD.upper(), "kopi  o kosong tanpa gula", "kopiokosongtanpagula"],
)
def test_auth_31_phrase_equal_to_the_password_refused(signed_in, user, phrase):
    """AUTH-31: the reverse: a new phrase that is the current password."""
    page = _security(signed_in, phrase)
    assert page.status_int == 400
    assert PHRASE_IS_PASSWORD in field_errors(page, "security_phrase")
    assert (user.security_image, user.security_phrase) == ("cat", PHRASE)

    page = _security(signed_in, phrase, lang="ms")
    assert translated(PHRASE_IS_PASSWORD, "ms") in field_errors(page, "security_phrase")
    assert translated(PHRASE_IS_PASSWORD, "ms") != PHRASE_IS_PASSWORD


def test_auth_31_control_another_phrase_is_saved(signed_in, user):
    assert _security(signed_in, "Roti canai pagi Ahad").status_int == 303
    assert (user.security_image, user.security_phrase) == (
        "rocket",
        "Roti canai pagi Ahad",
    )


# AUTH-32: weak long passwords


@pytest.mark.parametrize(("password", "reason"), WEAK, ids=[w for w, _ in WEAK])
def test_auth_32_weak_long_password_refused_with_its_reason(
    signed_in, user, password, reason
):
    """AUTH-32: each weak password of issue 11 is refused, saying why, ms and en."""
    assert len(password) >= 12
    page = change(signed_in, password)
    assert page.status_int == 400
    assert REASONS[reason] in field_errors(page, "password")
    page = change(signed_in, password, lang="ms")
    assert page.status_int == 400
    assert translated(REASONS[reason], "ms") in field_errors(page, "password")
    assert translated(REASONS[reason], "ms") != REASONS[reason]
    assert HASHER.verify(PASSWORD, user.password_hash)


def test_auth_32_own_name_and_number_refused(signed_in, user):
    """AUTH-32: the user's own name and identity number, with digits added."""
    for password in ["nuraisyah2008", "080512145678ab", "aisyah.ahmad2024"]:
        page = change(signed_in, password)
        assert page.status_int == 400, password
        assert (
            "Do not use your name, email address or identity number in your password."
            in field_errors(page, "password")
        )


@pytest.mark.parametrize("password", GOOD)
def test_auth_32_control_random_passphrases_accepted(signed_in, user, password):
    assert change(signed_in, password).status_int == 303
    assert HASHER.verify(password, user.password_hash)


# The hint before submitting


@pytest.mark.parametrize("lang", ["ms", "en"])
def test_password_fields_carry_the_hint_in_the_page_language(signed_in, user, lang):
    page = signed_in.get(f"/account/password?lang={lang}")
    tree = lxml.html.fromstring(page.text)
    (field,) = tree.xpath('//input[@id="password"]')
    assert field.get("data-policy-repetition") == translated(
        REASONS["repetition"], lang
    )
    assert field.get("data-policy-sequence") == translated(REASONS["sequence"], lang)
    assert field.get("data-policy-keyboard") == translated(REASONS["keyboard"], lang)
    too_short = TranslationString(
        "Use at least ${min} characters.", domain="idp", mapping={"min": 12}
    )
    assert field.get("data-policy-too-short") == make_localizer(
        lang, LOCALE_DIRS
    ).translate(too_short)
    assert "kpm" in field.get("data-policy-words").split()
    assert tree.xpath('//script[@src="/static/js/password-policy.js"]')
    # The phrase itself is never put on the page for the script.
    assert PHRASE.casefold() not in page.text.casefold()
