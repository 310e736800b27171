"""Registration, driven through the real form with CSRF on."""

from __future__ import annotations

import datetime as dt

import lxml.html
import pytest
import webtest
from pyramid.i18n import make_localizer
from sqlalchemy import func, select, text

from idp.forms.register import MESSAGES, REQUIRED
from idp.i18n import LOCALES
from idp.identifiers import InvalidIdentifier
from idp.models import CaptchaChallenge, OutboxMessage, User
from idp.services.captcha import _token_hash
from idp.services.passwords import BcryptPasswordService
from tests.app import captcha_answer, environ, make_app
from tests.factories import count
from tests.registration import VALID, fill, open_form, temporary_password_from

LOCALE_DIRS = [str(__import__("idp").__path__[0] + "/locale")]


def translated(message, locale: str) -> str:
    return make_localizer(locale, LOCALE_DIRS).translate(message)


def field_errors(page, name: str) -> list[str]:
    tree = lxml.html.fromstring(page.text)
    return [
        li.text_content().strip()
        for li in tree.xpath(f'//*[@id="{name}-field"]//ul[@class="field-errors"]/li')
    ]


def user_by_email(dbsession, email):
    return dbsession.scalars(select(User).where(User.email == email)).one_or_none()


@pytest.mark.parametrize("lang", LOCALES)
def test_register_page_in_both_languages(testapp, lang):
    page = testapp.get(f"/register?lang={lang}")
    heading = {"ms": "Daftar idMe", "en": "Register for idMe"}[lang]
    assert heading in page.text
    form = page.forms["register-form"]
    assert form["csrf_token"].value
    (images,) = form.fields["security_image"]
    assert len(images.options) >= 48
    assert len(page.html.select(".image-choice img")) == len(images.options)
    assert "captcha_answer" not in form.fields  # the captcha is off in this app


def test_home_links_to_registration(testapp):
    page = testapp.get("/")
    assert page.click(linkid="register-link").forms["register-form"]


def test_registration_creates_the_account_and_emails_a_temporary_password(
    testapp, dbsession, mailbox
):
    done = fill(open_form(testapp, "en")).submit().maybe_follow()
    assert done.request.path == "/register/done"
    assert "Check your email" in done.text

    user = user_by_email(dbsession, "aisyah.ahmad@example.com.my")
    assert user.identifier == "080512145678"
    assert user.identifier_kind == "mykad"
    assert user.phone == "+60123456789"
    assert user.full_name == "Nur Aisyah binti Ahmad"
    assert user.institution == "SK Taman Melati"
    assert (user.security_image, user.security_phrase) == (
        "cat",
        "Nasi lemak kegemaran saya",
    )
    assert user.locale == "en"
    assert user.must_change_password is True
    assert user.roles == []
    lifetime = user.temp_password_expires_at - user.created_at
    assert lifetime == dt.timedelta(hours=72)

    (message,) = mailbox("aisyah.ahmad@example.com.my")
    assert message["To"] == "aisyah.ahmad@example.com.my"
    assert message["Subject"].startswith("Your idMe temporary password / ")
    assert message["Content-Language"] == "en, ms"
    plain = message.get_body(("plain",)).get_content()
    assert plain.index("Dear Nur Aisyah") < plain.index("Kepada Nur Aisyah")
    assert "XXXXXX-XX-5678" in plain
    assert "080512" not in plain  # the identity number is masked
    password = temporary_password_from(message)
    assert password not in user.password_hash
    assert BcryptPasswordService(rounds=4).verify(password, user.password_hash)


def test_passport_holders_register_with_country_and_number(testapp, dbsession):
    form = fill(
        open_form(testapp),
        id_type="passport",
        mykad="",
        passport_number=" a1234567 ",
        category="public",
        institution="",
    )
    form["passport_country"] = "IDN"
    form.submit(status=303)
    user = user_by_email(dbsession, "aisyah.ahmad@example.com.my")
    assert (user.identifier_kind, user.identifier) == ("passport", "IDN:A1234567")
    assert user.institution is None
    assert user.category == "public"


FIELD_CASES = [
    ("category", "", MESSAGES["category"]),
    ("category", "is_admin", MESSAGES["category"]),
    ("mykad", "", REQUIRED),
    ("mykad", "080532-14-5678", InvalidIdentifier("mykad.date").message),
    ("mykad", "12345", InvalidIdentifier("mykad.length").message),
    ("full_name", "", REQUIRED),
    ("full_name", "Al", MESSAGES["full_name.length"]),
    ("full_name", "Ali <b>bold</b>", MESSAGES["full_name.characters"]),
    ("email", "not-an-email", None),
    ("email_confirm", "someone.else@example.com.my", MESSAGES["email_confirm"]),
    ("phone", "12345", None),
    ("phone", "", REQUIRED),
    ("institution", "", REQUIRED),
    ("security_image", "../../certs/signing", MESSAGES["security_image"]),
    ("security_phrase", "ab", MESSAGES["security_phrase.length"]),
    ("security_phrase", "x" * 41, MESSAGES["security_phrase.length"]),
]


@pytest.mark.parametrize("lang", LOCALES)
@pytest.mark.parametrize(("field", "value", "message"), FIELD_CASES)
def test_each_field_error_is_shown_beside_its_field_and_input_is_kept(
    testapp, dbsession, field, value, message, lang
):
    from idp.contact import normalise_email, normalise_phone

    if message is None:
        normalise = {"email": normalise_email, "phone": normalise_phone}[field]
        try:
            normalise(value)
        except ValueError as exc:
            message = exc.message
    page = fill(open_form(testapp, lang), **{field: value}).submit(status=400)

    assert translated(message, lang) in field_errors(page, field)
    kept = page.forms["register-form"]
    for name, typed in VALID.items():
        if name != field:
            assert kept[name].value == typed, name
    assert count(dbsession, User) == 0
    assert count(dbsession, OutboxMessage) == 0


def test_passport_needs_a_known_country(testapp, dbsession):
    form = fill(
        open_form(testapp, "en"), id_type="passport", passport_number="A1234567"
    )
    form["passport_country"].force_value("XXX")
    page = form.submit(status=400)
    expected = translated(InvalidIdentifier("passport.country").message, "en")
    assert expected in field_errors(page, "passport_country")
    assert count(dbsession, User) == 0


def test_reset_button_clears_the_form(testapp, dbsession):
    page = fill(open_form(testapp, "en"), full_name="Al").submit(status=400)
    form = page.forms["register-form"]
    assert form["email"].value == VALID["email"]
    cleared = form.submit("action", index=1).follow()
    fresh = cleared.forms["register-form"]
    for name in (
        "full_name",
        "email",
        "email_confirm",
        "phone",
        "mykad",
        "institution",
    ):
        assert fresh[name].value == "", name
    assert fresh["security_image"].value is None
    assert count(dbsession, User) == 0


@pytest.mark.postgresql
def test_auth_05_duplicate_identity_number_gets_the_same_page_and_the_owner_a_notice(
    testapp, dbsession, mailbox
):
    """AUTH-05: "already registered" is never said; the owner is told by email."""
    first = fill(open_form(testapp, "en")).submit(status=303)
    owner = user_by_email(dbsession, "aisyah.ahmad@example.com.my")
    owner.created_at -= dt.timedelta(hours=2)
    dbsession.flush()

    again = fill(
        open_form(testapp, "en"),
        mykad="080512145678",
        email="intruder@example.net",
        email_confirm="intruder@example.net",
    ).submit(status=303)

    assert again.location == first.location
    assert again.follow().text == first.follow().text
    assert count(dbsession, User) == 1
    assert mailbox("intruder@example.net") == []
    notices = mailbox("aisyah.ahmad@example.com.my")
    assert [m["Subject"].split(" / ")[0] for m in notices] == [
        "Your idMe temporary password",
        "Someone tried to register with your idMe details",
    ]


@pytest.mark.postgresql
def test_data_02_email_case_and_dashes_are_the_same_person(testapp, dbsession, mailbox):
    """DATA-02: spelling variants of one identity number or email make one user."""
    fill(open_form(testapp)).submit(status=303)
    variants = [
        # The same email in capitals, with another identity number.
        {"mykad": "111111-11-1111", "email": "AISYAH.AHMAD@EXAMPLE.COM.MY"},
        # The same identity number without dashes, with another email.
        {"mykad": "080512145678", "email": "other@example.com.my"},
    ]
    for variant in variants:
        variant["email_confirm"] = variant["email"].lower()
        fill(open_form(testapp), **variant).submit(status=303)
    assert count(dbsession, User) == 1
    # A control: a different person does register.
    other = {"mykad": "090101-10-1234", "email": "other@example.com.my"}
    fill(open_form(testapp), **other, email_confirm=other["email"]).submit(status=303)
    assert count(dbsession, User) == 2


@pytest.mark.postgresql
def test_owner_notice_is_sent_at_most_once_a_day_and_not_right_after_registering(
    testapp, dbsession, mailbox
):
    fill(open_form(testapp)).submit(status=303)
    duplicate = {"email": "x@example.net", "email_confirm": "x@example.net"}
    fill(open_form(testapp), **duplicate).submit(status=303)
    assert len(mailbox("aisyah.ahmad@example.com.my")) == 1  # within the first hour

    owner = user_by_email(dbsession, "aisyah.ahmad@example.com.my")
    owner.created_at -= dt.timedelta(days=3)
    dbsession.flush()
    for _ in range(3):
        fill(open_form(testapp), **duplicate).submit(status=303)
    assert len(mailbox("aisyah.ahmad@example.com.my")) == 2


def test_web_10_extra_fields_are_ignored(testapp, dbsession):
    """WEB-10: role, is_admin and the like posted with the form change nothing."""
    form = fill(open_form(testapp))
    fields = form.submit_fields()
    extras = [
        ("role", "admin"),
        ("roles", "admin"),
        ("is_admin", "true"),
        ("must_change_password", "false"),
        ("locked_until", "2099-01-01"),
        ("password_hash", "x"),
        ("locale", "en"),
    ]
    testapp.post("/register?lang=ms", fields + extras, status=303)
    user = user_by_email(dbsession, "aisyah.ahmad@example.com.my")
    assert user.roles == []
    assert user.must_change_password is True
    assert user.locked_until is None
    assert user.locale == "ms"
    assert user.password_hash.startswith("$2b$")


def test_web_06_typed_markup_is_escaped_when_shown_back(testapp, dbsession):
    """WEB-06: script typed into the name or phrase comes back as text."""
    attack = '"><script>alert(1)</script>'
    page = fill(
        open_form(testapp), full_name=attack, security_phrase=attack[:40]
    ).submit(status=400)
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert page.forms["register-form"]["security_phrase"].value == attack


def test_web_06_a_phrase_with_markup_is_stored_as_typed_and_mail_is_escaped(
    testapp, dbsession, mailbox
):
    """WEB-06: markup is data: stored as typed, escaped in the HTML mail."""
    fill(
        open_form(testapp), full_name="Siti O'Neil", security_phrase="<b>hi</b>"
    ).submit(status=303)
    user = user_by_email(dbsession, "aisyah.ahmad@example.com.my")
    assert user.security_phrase == "<b>hi</b>"
    (message,) = mailbox()
    html = message.get_body(("html",)).get_content()
    assert "Siti O&#39;Neil" in html
    assert "Siti O'Neil" in message.get_body(("plain",)).get_content()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("full_name", "Ali\r\nbin Abu"),
        ("email", "a@example.com\r\nBcc: victim@example.com"),
        ("security_phrase", "abc\u202edef"),
    ],
)
def test_web_09_line_breaks_and_invisible_characters_are_refused(
    testapp, dbsession, field, value
):
    """WEB-09: CR/LF (and bidi overrides) never reach a stored value or a header."""
    values = {field: value}
    if field == "email":
        values["email_confirm"] = value
    fill(open_form(testapp, "en"), **values).submit(status=400)
    assert count(dbsession, User) == 0
    assert count(dbsession, OutboxMessage) == 0
    # The control: the same field without the line break is accepted.
    clean = {
        name: v.replace("\r\n", " ").replace("\u202e", "") for name, v in values.items()
    }
    if field == "email":
        clean = {}
    fill(open_form(testapp, "en"), **clean).submit(status=303)
    assert count(dbsession, User) == 1


def test_web_01_registration_without_csrf_token_is_refused(testapp, dbsession):
    """WEB-01: a cross-site POST to the registration form writes nothing."""
    form = fill(open_form(testapp))
    fields = [(n, v) for n, v in form.submit_fields() if n != "csrf_token"]
    page = testapp.post("/register", fields, status=403)
    assert "csrf" in page.text
    assert count(dbsession, User) == 0
    token = form["csrf_token"].value
    testapp.post("/register", [*fields, ("csrf_token", token)], status=303)
    assert count(dbsession, User) == 1


def test_web_12_other_methods_are_refused(testapp, dbsession):
    """WEB-12: PUT and DELETE on the registration route get 405 and write nothing."""
    for method in (testapp.put, testapp.delete):
        response = method("/register", status=405)
        assert "POST" in response.headers["Allow"]
    assert count(dbsession, User) == 0


def test_data_09_no_secret_is_stored_in_clear(testapp, dbsession, mailbox):
    """DATA-09: the temporary password never appears in the database."""
    fill(open_form(testapp)).submit(status=303)
    password = temporary_password_from(mailbox()[0])
    dump = "\n".join(
        str(row)
        for table in ("users", "mail_outbox", "idp_sessions", "one_time_tokens")
        for row in dbsession.execute(text(f"SELECT * FROM {table}"))
    )
    assert password not in dump
    assert "Kata laluan sementara" not in dump  # the body is sealed too
    assert "aisyah.ahmad@example.com.my" in dump  # the control: data is there


# The captcha, with the app that has it on.


def captcha_form(captcha_testapp, lang="en"):
    form = open_form(captcha_testapp, lang)
    return fill(form), form["captcha_token"].value


def test_captcha_right_answer_registers(captcha_testapp, captcha_app, dbsession):
    form, token = captcha_form(captcha_testapp)
    form["captcha_answer"] = " ".join(
        captcha_answer(captcha_app, token)
    )  # spaces are ignored
    form.submit(status=303)
    assert count(dbsession, User) == 1


def test_captcha_wrong_answer_is_refused_and_a_new_challenge_shown(
    captcha_testapp, captcha_app, dbsession
):
    form, token = captcha_form(captcha_testapp)
    answer = captcha_answer(captcha_app, token)
    form["captcha_answer"] = "".join(str((int(d) + 1) % 10) for d in answer)
    page = form.submit(status=400)
    assert translated(MESSAGES["captcha"], "en") in field_errors(page, "captcha_answer")
    again = page.forms["register-form"]
    assert again["captcha_token"].value != token
    assert again["captcha_answer"].value == ""
    assert again["full_name"].value == VALID["full_name"]
    assert count(dbsession, User) == 0


@pytest.mark.parametrize("missing", ["captcha_answer", "captcha_token", "both"])
def test_auth_20_captcha_fields_left_out_count_as_wrong(
    captcha_testapp, captcha_app, dbsession, missing
):
    """AUTH-20: a POST without the captcha fields is refused like a wrong answer."""
    form, token = captcha_form(captcha_testapp)
    form["captcha_answer"] = captcha_answer(captcha_app, token)
    dropped = {"captcha_answer", "captcha_token"} if missing == "both" else {missing}
    fields = [(n, v) for n, v in form.submit_fields() if n not in dropped]
    captcha_testapp.post("/register", fields, status=400)
    assert count(dbsession, User) == 0


@pytest.mark.postgresql
def test_auth_19_a_solved_captcha_cannot_be_replayed(
    captcha_testapp, captcha_app, dbsession
):
    """AUTH-19: a challenge is consumed by its first check, even a failed form."""
    form, token = captcha_form(captcha_testapp)
    form["captcha_answer"] = captcha_answer(captcha_app, token)
    form["phone"] = "12"
    fields = form.submit_fields()
    captcha_testapp.post("/register", fields, status=400)
    fixed = [(n, VALID["phone"] if n == "phone" else v) for n, v in fields]
    page = captcha_testapp.post("/register", fixed, status=400)
    assert field_errors(page, "captcha_answer")
    assert count(dbsession, User) == 0


def test_auth_19_a_wrong_guess_uses_up_the_challenge(
    captcha_testapp, captcha_app, dbsession
):
    """AUTH-19: no second guess at the same challenge."""
    form, token = captcha_form(captcha_testapp)
    form["captcha_answer"] = (
        "000000" if captcha_answer(captcha_app, token) != "000000" else "1"
    )
    fields = form.submit_fields()
    captcha_testapp.post("/register", fields, status=400)
    right = [
        (n, captcha_answer(captcha_app, token) if n == "captcha_answer" else v)
        for n, v in fields
    ]
    captcha_testapp.post("/register", right, status=400)
    assert count(dbsession, User) == 0


def test_auth_19_an_expired_captcha_is_refused(captcha_testapp, captcha_app, dbsession):
    """AUTH-19: past its lifetime a challenge is refused, even answered right."""
    form, token = captcha_form(captcha_testapp)
    challenge = dbsession.scalars(
        select(CaptchaChallenge).where(
            CaptchaChallenge.token_hash == _token_hash(token)
        )
    ).one()
    challenge.expires_at = challenge.created_at - dt.timedelta(seconds=1)
    dbsession.flush()
    form["captcha_answer"] = captcha_answer(captcha_app, token)
    form.submit(status=400)
    assert count(dbsession, User) == 0


def test_captcha_picture_and_sound(captcha_testapp, captcha_app, dbsession):
    page = captcha_testapp.get("/register?lang=en")
    token = page.forms["register-form"]["captcha_token"].value
    image = captcha_testapp.get(f"/captcha/{token}.png")
    assert image.content_type == "image/png"
    assert image.body.startswith(b"\x89PNG")
    assert image.headers["Cache-Control"] == "no-store"
    for locale in LOCALES:
        sound = captcha_testapp.get(f"/captcha/{token}.{locale}.wav")
        assert sound.content_type == "audio/wav"
        assert sound.body[:4] == b"RIFF"
    captcha_testapp.get(f"/captcha/{token}.fr.wav", status=404)
    captcha_testapp.get("/captcha/not-a-token.png", status=404)
    # A used challenge shows nothing more.
    form = fill(page.forms["register-form"])
    form["captcha_answer"] = captcha_answer(captcha_app, token)
    form.submit(status=303)
    captcha_testapp.get(f"/captcha/{token}.png", status=404)


@pytest.mark.postgresql
def test_captcha_store_holds_no_token_or_answer(
    captcha_testapp, captcha_app, dbsession
):
    """DATA-09: a database dump does not give away captcha tokens or answers."""
    token = open_form(captcha_testapp)["captcha_token"].value
    answer = captcha_answer(captcha_app, token)
    rows = [str(r) for r in dbsession.execute(text("SELECT * FROM captcha_challenges"))]
    assert len(rows) == 1
    assert token not in rows[0]
    assert answer not in rows[0]


@pytest.fixture(scope="module")
def limited_app(settings, db_engine):
    return make_app({**settings, "ratelimit.register.address": "2/3600"}, db_engine)


def test_registrations_from_one_address_are_limited(limited_app, tm, dbsession):
    """Bots on one address cannot create accounts without end; others still can."""
    first = webtest.TestApp(limited_app, extra_environ=environ(tm, dbsession))
    for number in range(2):
        values = {"mykad": f"080512-14-{number:04d}", "email": f"m{number}@example.my"}
        fill(open_form(first), **values, email_confirm=values["email"]).submit(
            status=303
        )
    values = {"mykad": "080512-14-0009", "email": "m9@example.my"}
    page = fill(open_form(first, "en"), **values, email_confirm=values["email"]).submit(
        status=429
    )
    assert page.html.select_one("#register-throttled")
    assert page.forms["register-form"]["email"].value == "m9@example.my"
    assert count(dbsession, User) == 2
    # The control: another address registers.
    other = webtest.TestApp(
        limited_app, extra_environ=environ(tm, dbsession, REMOTE_ADDR="203.0.113.5")
    )
    fill(open_form(other), **values, email_confirm=values["email"]).submit(status=303)
    assert count(dbsession, User) == 3


@pytest.mark.postgresql
@pytest.mark.parametrize(
    "step",
    ["temporary password", "after the user row", "composing mail", "sealing mail"],
)
def test_data_03_a_fault_at_any_step_of_registration_leaves_no_rows(
    committing_testapp, db_engine, monkeypatch, step
):
    """DATA-03: Half-written user: a crash mid-registration writes nothing."""
    from sqlalchemy import select

    from idp.models import OutboxMessage, User
    from idp.services import mail
    from idp.services.users import UserService

    def boom(*args, **kwargs):
        raise RuntimeError(f"injected fault: {step}")

    target = {
        "temporary password": (UserService, "issue_temporary_password"),
        "after the user row": (mail, "temporary_password"),
        "composing mail": (mail.Composer, "compose"),
        "sealing mail": (mail.OutboxCodec, "seal"),
    }[step]
    monkeypatch.setattr(*target, boom)

    def counts() -> tuple[int, int]:
        with db_engine.connect() as conn:
            return tuple(
                conn.scalar(select(func.count()).select_from(model))
                for model in (User, OutboxMessage)
            )

    form = fill(committing_testapp.get("/register").forms["register-form"])
    page = form.submit(expect_errors=True)
    assert page.status_int == 500
    assert "injected fault" not in page.text
    assert counts() == (0, 0)

    # Control: without the fault the same form registers one user, one mail.
    monkeypatch.undo()
    form = fill(committing_testapp.get("/register").forms["register-form"])
    assert form.submit().status_int == 303
    assert counts() == (1, 1)


def test_registration_suggests_a_phrase_that_is_kept_if_untouched(testapp, dbsession):
    """AUTH-26: the form offers a phrase from the decoy generator; kept, it is stored."""
    offered = {open_form(testapp)["security_phrase"].value for _ in range(5)}
    assert len(offered) > 1
    form = open_form(testapp)
    suggested = form["security_phrase"].value
    fill(form, security_phrase=suggested)
    form.submit(status=303)
    user = user_by_email(dbsession, "aisyah.ahmad@example.com.my")
    assert user.security_phrase == suggested
