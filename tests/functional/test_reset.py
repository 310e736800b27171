"""Forgot password ("Lupa Kata Laluan"), driven through the real forms with CSRF on.

Reset links come from the captured email, never from the database.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
import webtest
from pyramid.i18n import TranslationString, make_localizer
from sqlalchemy import func, select, text

from idp.db import utcnow
from idp.forms.login import MESSAGES as LOGIN_MESSAGES
from idp.forms.register import MESSAGES as FORM_MESSAGES
from idp.forms.reset import MISMATCH
from idp.i18n import LOCALES
from idp.models import AuditEvent, IdpSession, OneTimeToken, OutboxMessage, User
from idp.services.mail import Outbox
from idp.services.passwords import BcryptPasswordService
from idp.services.ratelimit import REGISTRY_LIMITS, DatabaseRateLimiter
from idp.services.tokens import RESET_LIFETIME
from idp.services.users import PasswordChange, UserService
from idp.sessions import hash_token
from tests.app import TEST_BASE_URL, captcha_answer, environ, make_app
from tests.factories import NEW_PASSWORD, count, events
from tests.password_reset import (
    LINK,
    ask,
    choose,
    link_for,
    open_link,
    reset,
    reset_links,
    verify,
)

LOCALE_DIRS = [str(__import__("idp").__path__[0] + "/locale")]
HASHER = BcryptPasswordService(rounds=4)
OLD_PASSWORD = "kopi o kosong tanpa gula"
AISYAH = {"identifier": "080512145678", "email": "aisyah.ahmad@example.com.my"}
BADRUL = {"identifier": "070303105511", "email": "badrul.hisham@example.com.my"}
SENT = "If this email is registered, a link has been sent to it."


def translated(message, locale: str) -> str:
    if not isinstance(message, TranslationString):
        message = TranslationString(message, domain="idp")
    return make_localizer(locale, LOCALE_DIRS).translate(message)


def make_user(dbsession, *, identifier, email, **values) -> User:
    now = utcnow()
    fields = {
        "identifier_kind": "mykad",
        "full_name": "Nur Aisyah binti Ahmad",
        "phone": "+60123456789",
        "category": "student",
        "institution": "SK Taman Melati",
        "locale": "en",
        "security_image": "cat",
        "security_phrase": "Nasi lemak kegemaran saya",
        "password_hash": HASHER.hash(OLD_PASSWORD),
        "password_changed_at": now - dt.timedelta(days=30),
        "created_at": now - dt.timedelta(days=60),
        **values,
    }
    user = User(identifier=identifier, email=email, **fields)
    dbsession.add(user)
    dbsession.flush()
    return user


@pytest.fixture
def aisyah(dbsession) -> User:
    return make_user(dbsession, **AISYAH)


@pytest.fixture
def browser(app, tm, dbsession):
    """Another browser (its own cookies) on the same app and transaction."""

    def build(application=app, **extra):
        return webtest.TestApp(
            application, extra_environ=environ(tm, dbsession, **extra)
        )

    return build


def display(number: str) -> str:
    return f"{number[:6]}-{number[6:8]}-{number[8:]}"


def failures(app, dbsession, identifier: str) -> int:
    """The sign-in failures counted against ``identifier``."""
    limiter = DatabaseRateLimiter(
        dbsession, app.registry.settings["idp.hmac_key"], app.registry[REGISTRY_LIMITS]
    )
    return limiter.check("login.identifier", identifier).count


def field_errors(page, name: str) -> list[str]:
    return [
        li.get_text(strip=True)
        for li in page.html.select(f"#{name}-field ul.field-errors li")
    ]


def is_link_error(page) -> bool:
    return page.status_int == 400 and 'data-error-code="reset_link"' in page.text


def password_is(dbsession, user: User, password: str) -> bool:
    dbsession.refresh(user)
    return HASHER.verify(password, user.password_hash)


# The whole flow


@pytest.mark.parametrize("lang", LOCALES)
def test_reset_from_the_emailed_link_sets_the_new_password_and_ends_sessions(
    testapp, dbsession, mailbox, app, lang
):
    user = make_user(
        dbsession,
        locale=lang,
        locked_until=utcnow() + dt.timedelta(minutes=10),
        **AISYAH,
    )
    elsewhere = IdpSession(
        token_hash=hash_token("a session on another computer"),
        user_id=user.id,
        authn_at=utcnow(),
        authn_method="password+security-image",
        expires_at=utcnow() + dt.timedelta(hours=1),
    )
    dbsession.add(elsewhere)
    dbsession.flush()

    page = testapp.get(f"/password/forgot?lang={lang}")
    assert f'<html lang="{lang}">' in page.text
    assert translated("Send reset link", lang) in page.text
    form = page.forms["reset-request-form"]
    form["email"] = " Aisyah.Ahmad@Example.com.my "
    asked = form.submit(status=303)
    assert asked.location == f"{TEST_BASE_URL}/password/forgot/sent"
    sent = asked.follow()
    assert translated(SENT, lang) in sent.text

    (message,) = mailbox(user.email)
    assert message["Content-Language"] == {"ms": "ms, en", "en": "en, ms"}[lang]
    (link,) = reset_links(mailbox, user.email)
    assert link.startswith(f"{TEST_BASE_URL}/password/reset/")

    opened = open_link(testapp, link, status=303)
    assert opened.location == f"{TEST_BASE_URL}/password/reset"
    verify_page = opened.follow()
    assert translated("Confirm that it is you", lang) in verify_page.text
    form = verify_page.forms["reset-verify-form"]
    form["email"] = "AISYAH.AHMAD@example.com.my"
    form["identifier"] = display(user.identifier)
    verified = form.submit(status=303)
    assert verified.location == f"{TEST_BASE_URL}/password/reset/new"

    new_page = verified.follow()
    assert translated("Reset password", lang) in new_page.text
    form = new_page.forms["reset-new-form"]
    form["password"] = form["password_confirm"] = NEW_PASSWORD
    done = form.submit(status=303)
    assert done.location == f"{TEST_BASE_URL}/login"

    assert password_is(dbsession, user, NEW_PASSWORD)
    assert not HASHER.verify(OLD_PASSWORD, user.password_hash)
    assert user.locked_until is None
    assert user.password_changed_at > utcnow() - dt.timedelta(minutes=1)
    assert count(dbsession, IdpSession, IdpSession.user_id == user.id) == 0
    templates = dbsession.scalars(
        select(OutboxMessage.template)
        .where(OutboxMessage.recipient == user.email)
        .order_by(OutboxMessage.id)
    ).all()
    assert templates == ["password-reset", "password-changed"]
    (event,) = events(dbsession, "password.reset")
    assert event.subject_user_id == user.id
    assert event.client_address == "192.0.2.10"
    # The flow is over: its state went with the old session.
    assert testapp.get("/password/reset/new", status=303).location.endswith(
        "/password/forgot"
    )


def test_reset_by_passport_holder(testapp, dbsession, mailbox):
    make_user(
        dbsession,
        identifier_kind="passport",
        identifier="IDN:A1234567",
        email="budi@example.co.id",
    )
    link = link_for(testapp, mailbox, "budi@example.co.id")
    open_link(testapp, link, status=303)
    assert verify(testapp, "budi@example.co.id", "A1234567").status_int == 400
    assert verify(testapp, "budi@example.co.id", "a1234567", "IDN").status_int == 303
    assert choose(testapp).status_int == 303


def test_lock_is_lifted_but_a_disabled_account_gets_no_link(
    testapp, dbsession, mailbox, browser
):
    locked = make_user(
        dbsession, locked_until=utcnow() + dt.timedelta(minutes=10), **AISYAH
    )
    disabled = make_user(dbsession, disabled_at=utcnow(), **BADRUL)
    assert ask(browser(), disabled.email).status_int == 303
    assert mailbox(disabled.email) == []
    assert count(dbsession, OneTimeToken) == 0
    # The control: a locked (not disabled) account gets its link and is unlocked.
    assert reset(testapp, mailbox, AISYAH).status_int == 303
    dbsession.refresh(locked)
    assert locked.locked_until is None
    dbsession.refresh(disabled)
    assert disabled.disabled_at is not None


def test_account_disabled_after_the_link_was_sent_cannot_use_it(
    testapp, aisyah, dbsession, mailbox
):
    link = link_for(testapp, mailbox, aisyah.email)
    open_link(testapp, link, status=303)
    assert verify(testapp, aisyah.email, aisyah.identifier).status_int == 303
    aisyah.disabled_at = utcnow()
    dbsession.flush()
    form = testapp.get("/password/reset/new", status=303)
    assert form.location.endswith("/password/forgot")
    assert password_is(dbsession, aisyah, OLD_PASSWORD)
    assert aisyah.disabled_at is not None


@pytest.mark.parametrize(
    ("email", "error"),
    [("", "This field is required."), ("not-an-email", None)],
)
def test_malformed_email_is_shown_beside_the_field(testapp, dbsession, email, error):
    from idp.contact import InvalidContact, normalise_email

    if error is None:
        with pytest.raises(InvalidContact) as raised:
            normalise_email(email)
        error = translated(raised.value.message, "en")
    page = ask(testapp, email)
    assert page.status_int == 400
    assert field_errors(page, "email") == [error]
    assert page.forms["reset-request-form"]["email"].value == email
    assert count(dbsession, OneTimeToken) == 0


@pytest.mark.parametrize(
    ("password", "again"),
    [
        ("short", "short"),
        ("080512145678 is my number", "080512145678 is my number"),
        (NEW_PASSWORD, NEW_PASSWORD + "!"),
    ],
)
def test_new_password_must_meet_the_policy(
    testapp, aisyah, dbsession, mailbox, password, again
):
    link = link_for(testapp, mailbox, aisyah.email)
    open_link(testapp, link, status=303)
    verify(testapp, aisyah.email, aisyah.identifier)
    page = choose(testapp, password, again)
    assert page.status_int == 400
    if password == again:
        violations = HASHER.check_policy(password, identifiers=[aisyah.identifier])
        expected = [translated(v.message, "en") for v in violations]
        assert expected
        assert field_errors(page, "password") == expected
    else:
        expected = translated(LOGIN_MESSAGES["password_confirm"], "en")
        assert field_errors(page, "password_confirm") == [expected]
    assert password_is(dbsession, aisyah, OLD_PASSWORD)
    # The control: the same link, a good password.
    assert choose(testapp).status_int == 303


# AUTH-04


def test_auth_04_registered_and_unknown_emails_get_the_same_answer(
    testapp, aisyah, dbsession, mailbox, browser
):
    """AUTH-04: the same 303 and page either way; only the registered email gets mail."""
    known = ask(testapp, aisyah.email)
    unknown = ask(browser(), "nobody.here@example.com.my")
    assert known.status_int == unknown.status_int == 303
    assert known.location == unknown.location
    known_page, unknown_page = known.follow(), unknown.follow()
    assert known_page.text == unknown_page.text
    assert SENT in known_page.text
    assert len(mailbox(aisyah.email)) == 1
    assert mailbox("nobody.here@example.com.my") == []
    assert len(mailbox()) == 1


def test_rate_limits_send_nothing_and_answer_the_same(
    testapp, aisyah, dbsession, mailbox
):
    """A fourth request for one email within the hour sends nothing, on the same page."""
    answers = [ask(testapp, aisyah.email) for _ in range(4)]
    assert {answer.status_int for answer in answers} == {303}
    assert {answer.location for answer in answers} == {answers[0].location}
    assert len(mailbox(aisyah.email)) == 3
    (event,) = events(dbsession, "password.reset_throttled")
    assert event.detail == {"limit": "reset.email"}
    assert event.client_address == "192.0.2.10"


def test_rate_limit_per_address_counts_every_email(testapp, dbsession, mailbox):
    for n in range(10):
        make_user(dbsession, identifier=f"0805121456{n:02d}", email=f"u{n}@example.my")
        assert ask(testapp, f"u{n}@example.my").status_int == 303
    make_user(dbsession, identifier="080512145699", email="late@example.my")
    assert ask(testapp, "late@example.my").status_int == 303
    assert len(mailbox()) == 10
    assert mailbox("late@example.my") == []
    (event,) = events(dbsession, "password.reset_throttled")
    assert event.detail == {"limit": "reset.address"}


# AUTH-14, AUTH-15, AUTH-17


def test_auth_14_a_link_works_once(testapp, aisyah, dbsession, mailbox, browser):
    """AUTH-14: after a reset the same link is refused."""
    link = link_for(testapp, mailbox, aisyah.email)
    racing = browser()
    open_link(racing, link, status=303)
    assert verify(racing, aisyah.email, aisyah.identifier).status_int == 303
    late = racing.get("/password/reset/new").forms["reset-new-form"]
    late["password"] = late["password_confirm"] = "another fine password for today"
    # The control: the first use goes through.
    open_link(testapp, link, status=303)
    verify(testapp, aisyah.email, aisyah.identifier)
    assert choose(testapp).status_int == 303
    row = dbsession.scalars(select(OneTimeToken)).one()
    assert row.used_at is not None

    assert is_link_error(open_link(browser(), link, expect_errors=True))
    # A browser that passed the checks with the same link gets nowhere either.
    assert late.submit(status=303).location.endswith("/password/forgot")
    assert password_is(dbsession, aisyah, NEW_PASSWORD)


def test_auth_15_an_expired_link_is_refused(
    testapp, aisyah, dbsession, mailbox, browser
):
    """AUTH-15: past its lifetime (one hour) a link is refused."""
    link = link_for(testapp, mailbox, aisyah.email)
    row = dbsession.scalars(select(OneTimeToken)).one()
    assert row.expires_at - row.created_at == RESET_LIFETIME == dt.timedelta(hours=1)
    # The control: just before the bound the link opens.
    row.expires_at = utcnow() + dt.timedelta(seconds=5)
    dbsession.flush()
    open_link(testapp, link, status=303)
    assert verify(testapp, aisyah.email, aisyah.identifier).status_int == 303

    row.expires_at = utcnow() - dt.timedelta(seconds=1)
    dbsession.flush()
    assert is_link_error(open_link(browser(), link, expect_errors=True))
    # Expiry also stops a flow already under way.
    late = testapp.get("/password/reset/new", status=303)
    assert late.location.endswith("/password/forgot")
    assert password_is(dbsession, aisyah, OLD_PASSWORD)


def test_auth_17_a_newer_link_voids_the_older(
    testapp, aisyah, dbsession, mailbox, browser
):
    """AUTH-17: after a newer link the older one is refused; the newer works."""
    older = link_for(testapp, mailbox, aisyah.email)
    under_way = browser()
    open_link(under_way, older, status=303)
    newer = link_for(testapp, mailbox, aisyah.email)
    assert older != newer
    assert is_link_error(open_link(browser(), older, expect_errors=True))
    # A flow begun with the older link stops at its next step.
    assert under_way.get("/password/reset", status=303).location.endswith(
        "/password/forgot"
    )
    # The control: the newer link goes all the way.
    open_link(testapp, newer, status=303)
    verify(testapp, aisyah.email, aisyah.identifier)
    assert choose(testapp).status_int == 303
    assert password_is(dbsession, aisyah, NEW_PASSWORD)


def test_auth_17_a_password_change_voids_unused_links(
    testapp, app, aisyah, dbsession, mailbox, browser
):
    """AUTH-17: a password changed after the link was sent makes the link useless."""
    link = link_for(testapp, mailbox, aisyah.email)
    # The control: before the change the link opens.
    open_link(testapp, link, status=303)
    assert verify(testapp, aisyah.email, aisyah.identifier).status_int == 303

    registry = app.registry
    outbox = Outbox(
        dbsession, registry["idp.mail.composer"], registry["idp.mail.codec"]
    )
    UserService(dbsession, HASHER, outbox, temporary_hours=72).set_password(
        aisyah, "a password chosen on the account page", how=PasswordChange.ACCOUNT
    )
    dbsession.flush()
    assert is_link_error(open_link(browser(), link, expect_errors=True))
    page = testapp.get("/password/reset/new", status=303)
    assert page.location.endswith("/password/forgot")
    assert password_is(dbsession, aisyah, "a password chosen on the account page")


# AUTH-16


def test_auth_16_a_link_needs_its_own_users_email_and_number(
    testapp, app, aisyah, dbsession, mailbox
):
    """AUTH-16: A's link with B's email and number is refused and counted."""
    badrul = make_user(dbsession, **BADRUL)
    hashes = (aisyah.password_hash, badrul.password_hash)
    link = link_for(testapp, mailbox, aisyah.email)
    open_link(testapp, link, status=303)

    for email, number in [
        (badrul.email, badrul.identifier),
        (aisyah.email, badrul.identifier),
        (badrul.email, aisyah.identifier),
    ]:
        page = verify(testapp, email, number)
        assert page.status_int == 400
        assert page.html.select_one("#reset-message").get_text(strip=True) == MISMATCH
    dbsession.refresh(aisyah)
    dbsession.refresh(badrul)
    assert (aisyah.password_hash, badrul.password_hash) == hashes
    assert failures(app, dbsession, aisyah.identifier) == 3
    assert failures(app, dbsession, badrul.identifier) == 0
    assert [
        e.subject_user_id for e in events(dbsession, "password.reset_mismatch")
    ] == [aisyah.id] * 3
    assert mailbox(badrul.email) == []

    # The control: A's own email and number go on, and a reset forgets the failures.
    assert verify(testapp, aisyah.email, display(aisyah.identifier)).status_int == 303
    assert choose(testapp).status_int == 303
    assert failures(app, dbsession, aisyah.identifier) == 0
    dbsession.refresh(badrul)
    assert badrul.password_hash == hashes[1]


@pytest.mark.postgresql
def test_auth_16_five_wrong_answers_use_the_link_up_even_across_sessions(
    testapp, aisyah, dbsession, mailbox, browser
):
    """AUTH-16: the fifth wrong pair voids the link, however many browsers tried."""
    link = link_for(testapp, mailbox, aisyah.email)
    first, second = browser(), browser()
    open_link(first, link, status=303)
    for _ in range(3):
        assert verify(first, aisyah.email, BADRUL["identifier"]).status_int == 400
    # A fresh session does not start a fresh count.
    open_link(second, link, status=303)
    assert verify(second, aisyah.email, BADRUL["identifier"]).status_int == 400
    last = verify(second, aisyah.email, BADRUL["identifier"])
    assert is_link_error(last)
    assert dbsession.scalars(select(OneTimeToken.used_at)).one() is not None
    assert second.get("/password/reset", status=303).location.endswith(
        "/password/forgot"
    )
    assert is_link_error(open_link(browser(), link, expect_errors=True))
    assert password_is(dbsession, aisyah, OLD_PASSWORD)
    # The control: four wrong pairs leave a new link usable.
    newer = link_for(testapp, mailbox, aisyah.email)
    open_link(testapp, newer, status=303)
    for _ in range(4):
        verify(testapp, aisyah.email, BADRUL["identifier"])
    assert verify(testapp, aisyah.email, aisyah.identifier).status_int == 303


# WEB-07, WEB-13


@pytest.fixture(scope="module")
def alias_app(settings, db_engine):
    """The app also answering on a second host name, as behind a second proxy."""
    return make_app({**settings, "idp.allowed_hosts": "login.idp.test"}, db_engine)


def test_web_07_links_use_the_configured_base_url(
    browser, alias_app, aisyah, dbsession, mailbox
):
    """WEB-07: neither Host nor X-Forwarded-Host steers the emailed link."""
    forged = browser(HTTP_HOST="evil.example")
    page = forged.get("/password/forgot", status=400)
    assert "evil.example" not in page.text
    page = forged.post("/password/forgot", {"email": aisyah.email}, status=400)
    assert "evil.example" not in page.text
    assert mailbox() == []

    proxied = browser(HTTP_X_FORWARDED_HOST="evil.example")
    assert ask(proxied, aisyah.email).status_int == 303
    # The control: a host the IdP does answer on still gets the configured one.
    alias = browser(
        alias_app, HTTP_HOST="login.idp.test", HTTP_ORIGIN="https://login.idp.test"
    )
    assert ask(alias, aisyah.email).status_int == 303
    links = reset_links(mailbox, aisyah.email)
    assert len(links) == 2
    for link in links:
        assert link.startswith(f"{TEST_BASE_URL}/password/reset/")
        assert "evil.example" not in link and "login.idp.test" not in link


def test_web_13_the_token_leaves_the_address_bar(testapp, aisyah, dbsession, mailbox):
    """WEB-13: the link is swapped for session state; no Referer can carry it."""
    link = link_for(testapp, mailbox, aisyah.email)
    token = link.rsplit("/", 1)[1]
    opened = open_link(testapp, link, status=303)
    assert opened.headers["Referrer-Policy"] == "no-referrer"
    page = opened.follow()
    assert page.request.path == "/password/reset"
    assert token not in page.request.url
    assert token not in page.text
    assert page.headers["Referrer-Policy"] == "same-origin"  # only the token URL
    # Only the token's hash is stored; the session holds the row's id.
    dump = "\n".join(
        str(row)
        for table in ("one_time_tokens", "idp_sessions", "audit_events")
        for row in dbsession.execute(text(f"SELECT * FROM {table}"))
    )
    assert token not in dump
    assert hashlib.sha256(token.encode()).hexdigest() in dump
    other = "A" if link[-1] != "A" else "B"
    refused = open_link(testapp, link[:-1] + other, expect_errors=True)
    assert is_link_error(refused)
    assert refused.headers["Referrer-Policy"] == "no-referrer"


# WEB-01


def _without_token(form) -> list[tuple[str, str]]:
    return [(n, v) for n, v in form.submit_fields() if n != "csrf_token"]


def test_web_01_each_reset_form_needs_its_csrf_token(
    testapp, aisyah, dbsession, mailbox
):
    """WEB-01: every step posted without the token gets 403 and writes nothing."""
    form = testapp.get("/password/forgot").forms["reset-request-form"]
    form["email"] = aisyah.email
    testapp.post("/password/forgot", _without_token(form), status=403)
    assert mailbox() == []
    assert count(dbsession, OneTimeToken) == 0
    assert form.submit(status=303)  # the control
    (link,) = reset_links(mailbox, aisyah.email)
    open_link(testapp, link, status=303)

    form = testapp.get("/password/reset").forms["reset-verify-form"]
    form["email"] = aisyah.email
    form["identifier"] = aisyah.identifier
    testapp.post("/password/reset", _without_token(form), status=403)
    states = dbsession.scalars(select(IdpSession.data)).all()
    assert [state["reset"]["verified"] for state in states] == [False]
    assert form.submit(status=303)

    form = testapp.get("/password/reset/new").forms["reset-new-form"]
    form["password"] = form["password_confirm"] = NEW_PASSWORD
    testapp.post("/password/reset/new", _without_token(form), status=403)
    assert password_is(dbsession, aisyah, OLD_PASSWORD)
    assert events(dbsession, "password.reset") == []
    assert form.submit(status=303)
    assert password_is(dbsession, aisyah, NEW_PASSWORD)


# Step skipping


def test_steps_cannot_be_skipped(testapp, aisyah, dbsession, mailbox):
    """The new-password step needs an opened link and a passed check, in that order."""
    token = testapp.get("/password/forgot").forms["reset-request-form"]["csrf_token"]
    fields = {
        "csrf_token": token.value,
        "password": NEW_PASSWORD,
        "password_confirm": NEW_PASSWORD,
    }
    for path in ("/password/reset", "/password/reset/new"):
        assert testapp.get(path, status=303).location.endswith("/password/forgot")
    skipped = testapp.post("/password/reset/new", fields, status=303)
    assert skipped.location.endswith("/password/forgot")

    link = link_for(testapp, mailbox, aisyah.email)
    open_link(testapp, link, status=303)
    # Link opened, identity not yet checked: still no new password.
    assert testapp.post("/password/reset/new", fields, status=303).location.endswith(
        "/password/forgot"
    )
    assert password_is(dbsession, aisyah, OLD_PASSWORD)
    # The link is not spent by the attempt; in order, it works.
    open_link(testapp, link, status=303)
    verify(testapp, aisyah.email, aisyah.identifier)
    assert testapp.post("/password/reset/new", fields, status=303).location.endswith(
        "/login"
    )
    assert password_is(dbsession, aisyah, NEW_PASSWORD)


# AUTH-19, AUTH-20: the captcha, with the app that has it on.


def captcha_request(captcha_testapp, email: str):
    form = captcha_testapp.get("/password/forgot?lang=en").forms["reset-request-form"]
    form["email"] = email
    return form, form["captcha_token"].value


def test_captcha_solved_sends_the_link(captcha_testapp, captcha_app, aisyah, mailbox):
    form, token = captcha_request(captcha_testapp, aisyah.email)
    form["captcha_answer"] = captcha_answer(captcha_app, token)
    assert form.submit(status=303).location.endswith("/password/forgot/sent")
    assert len(mailbox(aisyah.email)) == 1


@pytest.mark.parametrize("missing", ["captcha_answer", "captcha_token", "both"])
def test_auth_20_forgot_form_without_captcha_fields_is_refused(
    captcha_testapp, captcha_app, aisyah, dbsession, mailbox, missing
):
    """AUTH-20: captcha fields left out of the forgot form count as a wrong answer."""
    form, token = captcha_request(captcha_testapp, aisyah.email)
    form["captcha_answer"] = captcha_answer(captcha_app, token)
    dropped = {"captcha_answer", "captcha_token"} if missing == "both" else {missing}
    fields = [(n, v) for n, v in form.submit_fields() if n not in dropped]
    page = captcha_testapp.post("/password/forgot", fields, status=400)
    assert field_errors(page, "captcha_answer") == [
        translated(FORM_MESSAGES["captcha"], "en")
    ]
    assert page.forms["reset-request-form"]["email"].value == aisyah.email
    assert mailbox() == []
    assert count(dbsession, OneTimeToken) == 0


@pytest.mark.postgresql
def test_auth_19_forgot_form_captcha_cannot_be_replayed_or_guessed_twice(
    captcha_testapp, captcha_app, aisyah, dbsession, mailbox
):
    """AUTH-19: a challenge is consumed by its first check, right or wrong."""
    form, token = captcha_request(captcha_testapp, aisyah.email)
    answer = captcha_answer(captcha_app, token)
    form["captcha_answer"] = "000000" if answer != "000000" else "111111"
    wrong = form.submit_fields()
    captcha_testapp.post("/password/forgot", wrong, status=400)
    right = [(n, answer if n == "captcha_answer" else v) for n, v in wrong]
    captcha_testapp.post("/password/forgot", right, status=400)
    assert mailbox() == []
    # A solved challenge works once; its replay is refused.
    form, token = captcha_request(captcha_testapp, aisyah.email)
    form["captcha_answer"] = captcha_answer(captcha_app, token)
    solved = form.submit_fields()
    captcha_testapp.post("/password/forgot", solved, status=303)
    captcha_testapp.post("/password/forgot", solved, status=400)
    assert len(mailbox(aisyah.email)) == 1


def test_auth_20_new_password_step_needs_the_captcha_too(
    captcha_testapp, captcha_app, aisyah, dbsession, mailbox
):
    """AUTH-20: the last step posted without the captcha changes nothing."""
    form, token = captcha_request(captcha_testapp, aisyah.email)
    form["captcha_answer"] = captcha_answer(captcha_app, token)
    form.submit(status=303)
    (link,) = reset_links(mailbox, aisyah.email)
    open_link(captcha_testapp, link, status=303)
    assert verify(captcha_testapp, aisyah.email, aisyah.identifier).status_int == 303

    form = captcha_testapp.get("/password/reset/new").forms["reset-new-form"]
    form["password"] = form["password_confirm"] = NEW_PASSWORD
    fields = [
        (n, v)
        for n, v in form.submit_fields()
        if n not in ("captcha_answer", "captcha_token")
    ]
    page = captcha_testapp.post("/password/reset/new", fields, status=400)
    assert field_errors(page, "captcha_answer")
    assert password_is(dbsession, aisyah, OLD_PASSWORD)
    # The control: the same step with the captcha solved.
    form = page.forms["reset-new-form"]
    form["password"] = form["password_confirm"] = NEW_PASSWORD
    form["captcha_answer"] = captcha_answer(captcha_app, form["captcha_token"].value)
    assert form.submit(status=303).location.endswith("/login")
    assert password_is(dbsession, aisyah, NEW_PASSWORD)


# AUTH-28: the worker, not the request, finds the account and sends the link


@pytest.mark.postgresql
def test_auth_28_the_delivery_worker_runs_the_queued_requests(
    committing_testapp, app, db_engine
):
    """AUTH-28: each request queues one job; only the registered email gets a link."""
    from sqlalchemy.orm import Session

    from idp.services.delivery import MemorySender, OutboxWorker
    from idp.services.mail import JOB_PREFIX

    with Session(db_engine) as session, session.begin():
        make_user(session, **AISYAH)
    for email in (AISYAH["email"], "nobody.here@example.com.my"):
        assert ask(committing_testapp, email).status_int == 303
    with Session(db_engine) as session:
        jobs = session.scalars(select(OutboxMessage)).all()
        assert [job.template for job in jobs] == [JOB_PREFIX + "password-reset"] * 2
        # The queued request keeps no email in clear, registered or not.
        assert {job.recipient for job in jobs} == {""}
        assert not any("example.com.my" in job.message for job in jobs)
        assert session.scalar(select(func.count()).select_from(OneTimeToken)) == 0

    # A worker that cannot run the job keeps it for a retry, and sends nothing.
    stuck = OutboxWorker(db_engine, MemorySender(), app.registry["idp.mail.codec"])
    assert (stuck.run().jobs, stuck.sender.messages) == (0, [])
    with Session(db_engine) as session:
        errors = session.scalars(select(OutboxMessage.last_error)).all()
        assert errors == ["DeliveryError: no handler for job:password-reset"] * 2

    # The real worker, once the retry is due: one link, for the registered email.
    sender = MemorySender()
    worker = OutboxWorker.from_settings(app.registry.settings, db_engine, sender)
    report = worker.run(now=utcnow() + dt.timedelta(hours=2))
    assert (report.jobs, report.sent, report.failed) == (2, 1, 0)
    (message,) = sender.messages
    assert message["To"] == AISYAH["email"]
    assert LINK.search(message.get_body(("plain",)).get_content())
    with Session(db_engine) as session:
        rows = session.scalars(select(OutboxMessage)).all()
        assert [row.template for row in rows] == ["password-reset"]
        assert session.scalar(select(func.count()).select_from(OneTimeToken)) == 1
        (event,) = session.scalars(
            select(AuditEvent).where(AuditEvent.event == "password.reset_requested")
        ).all()
        assert event.client_address == "192.0.2.10"


@pytest.mark.postgresql
def test_auth_28_concurrent_workers_run_each_queued_request_once(
    committing_testapp, app, db_engine
):
    """AUTH-28 (DATA-04 for jobs): workers on several nodes send each link once."""
    import threading

    from sqlalchemy.orm import Session

    from idp.services.delivery import MemorySender, OutboxWorker

    emails = [f"murid{n}@example.com.my" for n in range(6)]
    with Session(db_engine) as session, session.begin():
        for n, email in enumerate(emails):
            make_user(session, identifier=f"0805121456{n:02d}", email=email)
    for email in [*emails, "nobody.here@example.com.my"]:
        assert ask(committing_testapp, email).status_int == 303
    sender = MemorySender()
    settings = {**app.registry.settings, "mail.batch_size": 2}
    workers = [
        OutboxWorker.from_settings(settings, db_engine, sender) for _ in range(3)
    ]
    start = threading.Barrier(len(workers))

    def run(worker):
        start.wait()
        # Until nothing is left: a worker may find a job another one holds.
        for _ in range(10):
            if worker.run().jobs == 0:
                return

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(message["To"] for message in sender.messages) == sorted(emails)
    with Session(db_engine) as session:
        assert session.scalar(select(func.count()).select_from(OneTimeToken)) == 6
        left = session.scalars(select(OutboxMessage.template)).all()
        assert left == ["password-reset"] * 6
