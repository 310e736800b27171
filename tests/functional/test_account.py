""" "Akaun saya": profile, password, security image and sessions, through real pages.

Users are made directly in the database and sign in through the real
three-step sign-in. A second (or third) browser is a second ``TestApp`` on
the same app, transaction and database session, with its own cookies.
"""

from __future__ import annotations

import pytest
import webtest
from sqlalchemy import select

from idp.models import AuditEvent, IdpSession, OutboxMessage, User
from idp.sessions import COOKIE_NAME
from tests import factories
from tests.app import environ
from tests.factories import count, display, events
from tests.signin import sign_in

PASSWORD = "a long enough passphrase 1"
NEW_PASSWORD = "sebuah frasa laluan baharu 7"
FIREFOX_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"
)
CHROME_ANDROID = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36"
)
PAGES = [
    "/account",
    "/account/password",
    "/account/security",
    "/account/email",
    "/account/sessions",
]
A = {
    "identifier": "080512145678",
    "full_name": "Nur Aisyah binti Ahmad",
    "email": "aisyah@example.com.my",
    "category": "student",
}


def make_user(dbsession, **values) -> User:
    """A (``values`` change who), with this module's PASSWORD."""
    return factories.make_user(dbsession, password=PASSWORD, **{**A, **values})


@pytest.fixture
def user(dbsession) -> User:
    """A, the user signed in on ``testapp``."""
    return make_user(dbsession)


@pytest.fixture
def other(dbsession) -> User:
    """B, another user whose account A must never reach."""
    return make_user(
        dbsession,
        identifier="090203105432",
        full_name="Muthu a/l Rajan",
        email="muthu@example.com.my",
        category="educator",
        security_image="rocket",
        security_phrase="Teh tarik kurang manis",
        locale="en",
    )


@pytest.fixture
def browser(app, tm, dbsession):
    """Another browser on the same app: ``browser(**environ)`` opens one."""

    def open_browser(**extra) -> webtest.TestApp:
        return webtest.TestApp(app, extra_environ=environ(tm, dbsession, **extra))

    return open_browser


@pytest.fixture
def signed_in(testapp, user):
    """``testapp`` as A's browser (Firefox on Windows), signed in, in English."""
    testapp.extra_environ["HTTP_USER_AGENT"] = FIREFOX_WINDOWS
    testapp.get("/?lang=en")
    sign_in(testapp, user, PASSWORD, lang=None)
    return testapp


def templates_sent(dbsession, recipient: str) -> list[str]:
    return list(
        dbsession.scalars(
            select(OutboxMessage.template)
            .where(OutboxMessage.recipient == recipient)
            .order_by(OutboxMessage.id)
        )
    )


def is_signed_out(client) -> bool:
    response = client.get("/account", status=(200, 303))
    return response.status_int == 303 and "/login?next=" in response.location


# Every page, both languages


@pytest.mark.parametrize(
    ("lang", "texts"),
    [
        (
            "ms",
            {
                "/account": ["Nama penuh", "Murid / pelajar", "Imej dan frasa"],
                "/account/password": ['id="current_password"'],
                "/account/security": ["Imej keselamatan", "Frasa keselamatan"],
                "/account/email": ["Tukar e-mel", "Alamat e-mel baharu"],
                "/account/sessions": ["192.0.2.10"],
            },
        ),
        (
            "en",
            {
                "/account": ["My account", "Full name", "Student", "Sign out"],
                "/account/password": ["Change password", "Current password"],
                "/account/security": ["Change your security image and phrase"],
                "/account/email": ["Change email", "New email address again"],
                "/account/sessions": ["Recent sign-ins", "Sign out of all sessions"],
            },
        ),
    ],
)
def test_every_account_page_in_both_languages(testapp, user, lang, texts):
    testapp.get(f"/?lang={lang}")
    sign_in(testapp, user, PASSWORD, lang=None)
    for path in PAGES:
        response = testapp.get(path)
        assert f'<html lang="{lang}">' in response.text
        for text in texts[path]:
            assert text in response.text, (path, text)


def test_profile_shows_masked_number_and_security_image(signed_in, user):
    page = signed_in.get("/account")
    assert "XXXXXX-XX-5678" in page.text
    assert "080512" not in page.text
    assert "Nur Aisyah binti Ahmad" in page.text
    assert "aisyah@example.com.my" in page.text
    assert "+60123456789" in page.text
    assert "SK Taman Melati" in page.text
    assert page.html.find(id="profile-category").text == "Student"
    assert page.html.find(id="profile-language").text == "Bahasa Melayu"
    assert "security-images/cat.svg" in page.text
    assert "Nasi lemak kegemaran saya" in page.text
    for link in ("/account/password", "/account/security", "/account/sessions"):
        assert f'href="{link}"' in page.text
    assert 'id="logout-link" href="/logout"' in page.text


@pytest.mark.parametrize("path", PAGES)
def test_anonymous_visitor_is_sent_to_sign_in_and_back(testapp, user, path):
    """WEB-11: the account pages need a signed-in user; sign-in brings them back."""
    response = testapp.get(path, status=303)
    assert response.location.endswith(f"/login?next={path.replace('/', '%2F')}")
    # Control: signing in from there lands on the page asked for.
    landed = sign_in(testapp, user, PASSWORD, start=response.location, lang=None)
    assert landed.location.endswith(path)
    assert landed.follow().status_int == 200


# Changing the password


def _password_form(client, current=PASSWORD, new=NEW_PASSWORD, again=None):
    form = client.get("/account/password").forms["account-password-form"]
    form["current_password"] = current
    form["password"] = new
    form["password_confirm"] = new if again is None else again
    return form


def test_wrong_current_password_is_refused_and_counted(signed_in, user, dbsession):
    before = user.password_hash
    response = _password_form(signed_in, current="not my password at all").submit(
        status=400
    )
    assert "Your current password is wrong." in response.text
    assert user.password_hash == before
    assert events(dbsession, "password.changed") == []
    assert "password-changed" not in templates_sent(dbsession, user.email)
    # Control: the right current password is accepted.
    _password_form(signed_in).submit(status=303)
    assert user.password_hash != before


@pytest.mark.parametrize(
    ("new", "again", "message"),
    [
        ("pendek", None, "Use at least 12 characters."),
        ("aisyah punya laluan", None, "email or name"),
        (
            NEW_PASSWORD,
            "sebuah frasa yang lain 8",
            "The two passwords are not the same.",
        ),
    ],
)
def test_new_password_must_meet_the_policy(signed_in, user, new, again, message):
    before = user.password_hash
    response = _password_form(signed_in, new=new, again=again).submit(status=400)
    assert message in response.text
    assert user.password_hash == before


def test_web_02_password_change_rotates_session_and_ends_the_others(
    signed_in, user, browser, dbsession, mailbox
):
    """WEB-02: a password change gives this browser a new session id and signs out
    every other browser; this one stays signed in."""
    phone = browser(HTTP_USER_AGENT=CHROME_ANDROID, REMOTE_ADDR="198.51.100.7")
    sign_in(phone, user, PASSWORD, lang=None)
    old_cookie = signed_in.cookies[COOKIE_NAME]
    # Control: before the change, both browsers are signed in.
    assert not is_signed_out(phone)

    response = _password_form(signed_in).submit(status=303)

    assert response.location.endswith("/account")
    page = response.follow()
    assert "Your password has been changed." in page.text
    assert signed_in.cookies[COOKIE_NAME] != old_cookie
    assert not is_signed_out(signed_in)
    assert is_signed_out(phone)
    planted = browser()
    planted.set_cookie(COOKIE_NAME, old_cookie)
    assert is_signed_out(planted)
    assert count(dbsession, IdpSession, IdpSession.user_id == user.id) == 1
    (changed,) = events(dbsession, "password.changed")
    assert changed.subject_user_id == user.id
    assert changed.detail == {"how": "account"}
    assert templates_sent(dbsession, user.email)[-1] == "password-changed"
    assert (
        "XXXXXX-XX-5678" in mailbox(user.email)[-1].get_body(("plain",)).get_content()
    )
    # The new password signs in; the old one no longer does.
    sign_in(browser(), user, password=NEW_PASSWORD, lang=None)
    refused = browser()
    form = refused.get("/login").forms["login-form"]
    form["identifier"] = display(user)
    form = form.submit().follow().forms["image-form"]
    form["confirm"] = True
    form = form.submit().follow().forms["password-form"]
    form["password"] = PASSWORD
    form.submit(status=400)


def test_repeated_wrong_current_passwords_lock_the_account(signed_in, user, dbsession):
    """AUTH-21: guessing the current password is limited like sign-in, then locks."""
    for _attempt in range(9):
        _password_form(signed_in, current="a wrong guess each time").submit(status=400)
    # Control: nine wrong guesses leave the account open.
    assert user.locked_until is None
    assert not is_signed_out(signed_in)

    response = _password_form(signed_in, current="a wrong guess each time").submit(
        status=303
    )

    assert response.location.endswith("/")
    assert "locked" in response.follow().text
    assert user.locked_until is not None
    (locked,) = events(dbsession, "account.locked")
    assert locked.detail["reason"] == "account-password"
    assert "account-locked" in templates_sent(dbsession, user.email)
    assert count(dbsession, IdpSession, IdpSession.user_id == user.id) == 0
    assert is_signed_out(signed_in)


# The security image and phrase


def _security_form(
    client, image="rocket", phrase="Roti canai pagi Ahad", current=PASSWORD
):
    form = client.get("/account/security").forms["account-security-form"]
    form["security_image"] = image
    form["security_phrase"] = phrase
    if current is not None:
        form["current_password"] = current
    return form


def test_security_page_picker_holds_the_whole_catalogue(signed_in):
    from idp.security_images import CATALOGUE

    form = signed_in.get("/account/security").forms["account-security-form"]
    assert len(CATALOGUE) == 64
    assert form["security_image"].options[0] == ("cat", True, None)
    assert [value for value, _checked, _text in form["security_image"].options] == [
        image.id for image in CATALOGUE
    ]
    assert form["security_phrase"].value == "Nasi lemak kegemaran saya"


@pytest.mark.parametrize(
    "current", [None, "", "not my password at all"], ids=["absent", "empty", "wrong"]
)
def test_auth_21_image_change_needs_the_current_password(
    signed_in, user, dbsession, current
):
    """AUTH-21: the image and phrase change only with the current password."""
    form = _security_form(signed_in, current=current)
    response = form.submit(status=400)
    field = response.html.find(id="current_password-field")
    assert "has-error" in field["class"]
    assert (user.security_image, user.security_phrase) == (
        "cat",
        "Nasi lemak kegemaran saya",
    )
    assert events(dbsession, "security_image.changed") == []
    assert "security-image-changed" not in templates_sent(dbsession, user.email)
    # Control: with the current password the same change goes through.
    _security_form(signed_in).submit(status=303)
    assert (user.security_image, user.security_phrase) == (
        "rocket",
        "Roti canai pagi Ahad",
    )


def test_auth_21_posted_id_of_another_user_changes_only_the_signed_in_user(
    signed_in, user, other, dbsession, mailbox
):
    """AUTH-21: a user_id/id field naming B changes A's image only; A is told by email."""
    form = _security_form(signed_in, phrase="  Roti   canai pagi Ahad ")
    fields = [*form.submit_fields(), ("user_id", str(other.id)), ("id", str(other.id))]

    response = signed_in.post("/account/security", fields, status=303)

    assert response.location.endswith("/account")
    assert "Your security image and phrase have been saved." in response.follow().text
    assert (user.security_image, user.security_phrase) == (
        "rocket",
        "Roti canai pagi Ahad",
    )
    assert (other.security_image, other.security_phrase) == (
        "rocket",
        "Teh tarik kurang manis",
    )
    (changed,) = events(dbsession, "security_image.changed")
    assert changed.subject_user_id == user.id
    assert changed.actor_user_id == user.id
    assert changed.detail == {"changed": ["image", "phrase"]}
    assert templates_sent(dbsession, user.email) == ["security-image-changed"]
    assert templates_sent(dbsession, other.email) == []
    body = mailbox(user.email)[0].get_body(("plain",)).get_content()
    assert "XXXXXX-XX-5678" in body


@pytest.mark.parametrize(
    ("image", "phrase", "message"),
    [
        ("not-an-image", "Roti canai pagi Ahad", "Choose your security image."),
        ("rocket", "ab", "Your security phrase must have 3 to 40 characters."),
        ("rocket", "x" * 41, "Your security phrase must have 3 to 40 characters."),
        (
            "rocket",
            "Roti\u202ecanai",
            "Remove the line breaks and invisible characters.",
        ),
        ("rocket", "", "This field is required."),
    ],
)
def test_security_image_and_phrase_follow_the_registration_rules(
    signed_in, user, image, phrase, message
):
    form = signed_in.get("/account/security").forms["account-security-form"]
    fields = dict(form.submit_fields())
    fields.update(
        security_image=image, security_phrase=phrase, current_password=PASSWORD
    )
    response = signed_in.post("/account/security", fields, status=400)
    assert message in response.text
    assert (user.security_image, user.security_phrase) == (
        "cat",
        "Nasi lemak kegemaran saya",
    )


# Sign-ins and sessions


def test_sessions_page_lists_sign_ins_and_browsers(signed_in, user, browser):
    phone = browser(HTTP_USER_AGENT=CHROME_ANDROID, REMOTE_ADDR="198.51.100.7")
    sign_in(phone, user, PASSWORD, lang=None)

    page = signed_in.get("/account/sessions")

    sign_ins = page.html.find(id="sign-ins").find("tbody").find_all("tr")
    assert len(sign_ins) == 2
    # Newest first: the phone signed in last.
    assert "198.51.100.7" in sign_ins[0].text
    assert "192.0.2.10" in sign_ins[1].text
    active = page.html.find(id="active-sessions").find("tbody").find_all("tr")
    assert len(active) == 2
    (mine,) = (row for row in active if "current-session" in (row.get("class") or []))
    assert "Firefox on Windows" in mine.text
    assert "This browser" in mine.text
    (theirs,) = (row for row in active if row is not mine)
    assert "Chrome on Android" in theirs.text
    assert "198.51.100.7" in theirs.text
    assert "This browser" not in theirs.text


def test_sessions_page_shows_at_most_ten_sign_ins_newest_first(
    signed_in, user, dbsession
):
    from idp.services.audit import AuditLog

    log = AuditLog(dbsession)
    for number in range(12):
        log.record(
            "login.success",
            subject_user_id=user.id,
            client_address=f"203.0.113.{number}",
            detail={"user_agent": CHROME_ANDROID} if number == 11 else None,
        )
    rows = signed_in.get("/account/sessions").html.find(id="sign-ins").tbody("tr")
    assert len(rows) == 10
    assert "203.0.113.11" in rows[0].text
    assert "Chrome on Android" in rows[0].text
    assert "203.0.113.2" in rows[-1].text


def test_sign_out_of_all_sessions_ends_every_session_of_the_user(
    signed_in, user, other, browser, dbsession
):
    """WEB-11: "sign out of all sessions" ends every session of A, this one too,
    and never B's, whatever id is posted."""
    phone = browser(HTTP_USER_AGENT=CHROME_ANDROID, REMOTE_ADDR="198.51.100.7")
    sign_in(phone, user, PASSWORD, lang=None)
    someone_else = browser(REMOTE_ADDR="198.51.100.9")
    sign_in(someone_else, other, PASSWORD, lang=None)
    form = signed_in.get("/account/sessions").forms["signout-all-form"]
    fields = [*form.submit_fields("action"), ("user_id", str(other.id))]

    response = signed_in.post("/account/sessions", fields, status=303)

    assert response.location.endswith("/")
    assert "You have been signed out of every session." in response.follow().text
    assert is_signed_out(signed_in)
    assert is_signed_out(phone)
    # Control: B, signed in elsewhere, is untouched.
    assert not is_signed_out(someone_else)
    assert count(dbsession, IdpSession, IdpSession.user_id == user.id) == 0
    assert count(dbsession, IdpSession, IdpSession.user_id == other.id) == 1
    (ended,) = events(dbsession, "sessions.ended")
    assert ended.subject_user_id == user.id
    assert ended.detail == {"how": "account", "count": 2}


def test_sessions_post_without_the_action_changes_nothing(signed_in, user, dbsession):
    form = signed_in.get("/account/sessions").forms["signout-all-form"]
    signed_in.post("/account/sessions", dict(form.submit_fields()), status=400)
    assert not is_signed_out(signed_in)
    assert events(dbsession, "sessions.ended") == []


# CSRF and other users' ids


FORMS = [
    ("/account/password", "account-password-form", None),
    ("/account/security", "account-security-form", None),
    ("/account/email", "account-email-form", None),
    ("/account/sessions", "signout-all-form", "action"),
]


def _filled(client, path, form_id):
    if form_id == "account-password-form":
        return _password_form(client)
    if form_id == "account-security-form":
        return _security_form(client)
    if form_id == "account-email-form":
        form = client.get(path).forms[form_id]
        form["email"] = form["email_confirm"] = "aisyah.baharu@example.com.my"
        form["current_password"] = PASSWORD
        return form
    return client.get(path).forms[form_id]


@pytest.mark.parametrize(("path", "form_id", "button"), FORMS)
def test_web_01_account_forms_without_csrf_token_are_refused(
    signed_in, user, dbsession, path, form_id, button
):
    """WEB-01: every account form posted without its CSRF token gets 403 and
    writes nothing."""
    form = _filled(signed_in, path, form_id)
    fields = [
        (name, value)
        for name, value in form.submit_fields(button)
        if name != "csrf_token"
    ]
    before = (
        user.password_hash,
        user.security_image,
        user.security_phrase,
        count(dbsession, AuditEvent),
        count(dbsession, OutboxMessage),
        count(dbsession, IdpSession, IdpSession.user_id == user.id),
    )

    response = signed_in.post(path, fields, status=403)

    assert 'data-error-code="csrf"' in response.text
    after = (
        user.password_hash,
        user.security_image,
        user.security_phrase,
        count(dbsession, AuditEvent),
        count(dbsession, OutboxMessage),
        count(dbsession, IdpSession, IdpSession.user_id == user.id),
    )
    assert after == before
    # Control: the same form with its token is accepted.
    assert form.submit(button, status=303).status_int == 303


@pytest.mark.parametrize("path", PAGES)
def test_web_11_account_urls_take_no_user_id(signed_in, user, other, path):
    """WEB-11: another user's id in an account URL still shows only A's account."""
    for query in (f"user={other.id}", f"user_id={other.id}", f"id={other.id}"):
        page = signed_in.get(f"{path}?{query}")
        assert other.full_name not in page.text
        assert other.email not in page.text
        assert "Teh tarik kurang manis" not in page.text
    # Control: A's own details are what the profile shows.
    profile = signed_in.get(f"/account?user={other.id}")
    assert user.full_name in profile.text
    assert user.email in profile.text
    assert signed_in.get(f"/account/{other.id}", status=404).status_int == 404


# The browser names


@pytest.mark.parametrize(
    ("agent", "expected"),
    [
        (FIREFOX_WINDOWS, "Firefox on Windows"),
        (CHROME_ANDROID, "Chrome on Android"),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.5 Safari/605.1.15",
            "Safari on macOS",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, "
            "like Gecko) Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0",
            "Edge on Windows",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
            "Safari on iOS",
        ),
        ("curl/8.5.0", "Unknown browser"),
        ("", "Unknown browser"),
        (None, "Unknown browser"),
    ],
)
def test_browser_is_described_in_a_few_words(agent, expected):
    from pyramid.i18n import Localizer

    from idp.views.account import describe_browser

    described = describe_browser(agent)
    assert Localizer("en", None).translate(described) == expected
