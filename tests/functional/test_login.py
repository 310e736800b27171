"""Sign-in in three steps, the forced password change, throttling and lockout."""

from __future__ import annotations

import datetime as dt
import re

import pytest
import webtest
from sqlalchemy import select

from idp.db import utcnow
from idp.i18n import LOCALES
from idp.models import IdpSession, OutboxMessage
from idp.services.security_image import decoy
from tests.app import browser, captcha_answer, make_app
from tests.factories import NEW_PASSWORD, PASSWORD, count, display, events, make_user
from tests.signin import (
    bcrypt_calls,
    message,
    shown,
    sign_in,
    to_image_page,
    to_password_page,
)


@pytest.mark.parametrize("lang", LOCALES)
def test_sign_in_pages_in_both_languages(testapp, dbsession, lang):
    user = make_user(dbsession)
    page = testapp.get(f"/login?lang={lang}")
    assert {"ms": "Daftar Masuk ke idMe", "en": "Sign in to idMe"}[lang] in page.text
    image_page = to_image_page(testapp, display(user), lang)
    assert shown(image_page) == ("cat", "Nasi lemak kegemaran saya")
    password_page = to_password_page(testapp, display(user), lang)
    assert password_page.forms["password-form"]["password"].value == ""


def test_three_steps_sign_in_and_rotate_the_session(testapp, dbsession):
    """WEB-02: the session id changes at sign-in; the old cookie is worth nothing."""
    user = make_user(dbsession)
    before = to_password_page(testapp, display(user))
    planted = testapp.cookies["idp_session"]
    form = before.forms["password-form"]
    form["password"] = PASSWORD
    home = form.submit(status=303).follow()
    assert "Siti Nurhaliza" in home.text
    assert testapp.cookies["idp_session"] != planted
    row = dbsession.scalars(
        select(IdpSession).where(IdpSession.user_id == user.id)
    ).one()
    assert row.authn_method == "password+security-image"
    assert row.client_address == "192.0.2.10"
    (event,) = events(dbsession, "login.success")
    assert event.subject_user_id == user.id
    # The planted id no longer signs anyone in.
    testapp.set_cookie("idp_session", planted)
    assert "Siti Nurhaliza" not in testapp.get("/").text


def test_auth_01_unknown_number_shows_a_stable_decoy_on_an_identical_page(
    testapp, app, tm, dbsession
):
    """AUTH-01: known and unknown numbers differ only in the image and phrase."""
    user = make_user(dbsession)
    known = to_image_page(testapp, display(user))
    other = browser(app, tm, dbsession)
    unknown = to_image_page(other, "900101-14-5678")
    again = to_image_page(browser(app, tm, dbsession), "900101145678")

    assert known.status_int == unknown.status_int == 200
    assert sorted(known.headers.keys()) == sorted(unknown.headers.keys())
    secret = app.registry.settings["idp.hmac_key"]
    image, phrase = decoy(secret, "900101145678")
    assert shown(unknown) == shown(again) == (image.id, phrase)
    assert shown(known) == ("cat", "Nasi lemak kegemaran saya")

    def shape(page, number):
        text = page.text.replace(number, "NUMBER")
        text = re.sub(r'name="csrf_token" value="[^"]+"', "", text)
        return re.sub(r"<figure.*?</figure>", "FIGURE", text, flags=re.S)

    assert shape(known, display(user)) == shape(unknown, "900101-14-5678")


def test_decoys_differ_between_numbers(app):
    secret = app.registry.settings["idp.hmac_key"]
    images = {decoy(secret, f"9001011456{n:02d}")[0].id for n in range(40)}
    assert len(images) > 10


def test_unticked_checkbox_keeps_the_password_away(testapp, dbsession):
    user = make_user(dbsession)
    page = to_image_page(testapp, display(user))
    refused = page.forms["image-form"].submit(status=400)
    assert "Tick the box" in refused.text
    assert "password-form" not in refused.text
    testapp.get("/login/password", status=303)  # not confirmed: back to the start
    form = refused.forms["image-form"]
    form["confirm"] = True
    assert form.submit(status=303).location.endswith("/login/password")


def test_auth_22_steps_cannot_be_skipped_or_reordered(testapp, dbsession):
    """AUTH-22: a password posted without the earlier steps is never checked."""
    user = make_user(dbsession)
    start = testapp.get("/login")
    token = start.forms["login-form"]["csrf_token"].value
    skipped = testapp.post(
        "/login/password", {"csrf_token": token, "password": PASSWORD}, status=303
    )
    assert skipped.location.endswith("/login")
    assert events(dbsession, "login.success") == []
    assert events(dbsession, "login.failure") == []
    testapp.get("/login/image", status=303)
    # Identifier given, image not confirmed: still no password step.
    to_image_page(testapp, display(user))
    testapp.post(
        "/login/password", {"csrf_token": token, "password": PASSWORD}, status=303
    )
    assert events(dbsession, "login.success") == []
    # The control: in order, it works.
    assert sign_in(testapp, display(user), status=None).status_int == 303


def test_auth_03_one_message_for_wrong_unknown_locked_and_expired(
    testapp, app, tm, dbsession
):
    """AUTH-03: wrong, unknown, locked and expired all get the same page."""
    user = make_user(dbsession)
    locked = make_user(dbsession, locked_until=utcnow() + dt.timedelta(minutes=10))
    expired = make_user(
        dbsession,
        must_change_password=True,
        temp_password_expires_at=utcnow() - dt.timedelta(seconds=1),
    )
    pages = [
        sign_in(
            browser(app, tm, dbsession),
            display(user),
            "wrong password here",
            status=None,
        ),
        sign_in(browser(app, tm, dbsession), "900101-14-5678", PASSWORD, status=None),
        sign_in(browser(app, tm, dbsession), display(locked), PASSWORD, status=None),
        sign_in(browser(app, tm, dbsession), display(expired), PASSWORD, status=None),
    ]
    assert {page.status_int for page in pages} == {400}
    assert {message(page) for page in pages} == {
        "The identity number or password is wrong. Check them and try again."
    }
    # The control: the right password of a usable account signs in.
    assert (
        sign_in(browser(app, tm, dbsession), display(user), status=None).status_int
        == 303
    )


def test_auth_07_ten_failures_lock_and_the_eleventh_is_refused_even_if_right(
    testapp, app, tm, dbsession, mailbox
):
    """AUTH-07: after 10 failures the right password is refused too."""
    user = make_user(dbsession)
    other = browser(app, tm, dbsession)
    assert (
        sign_in(other, display(user), status=None).status_int == 303
    )  # a live session
    for attempt in range(10):
        page = sign_in(
            testapp, display(user), f"wrong guess number {attempt}", status=None
        )
        assert page.status_int == 400
    dbsession.refresh(user)
    assert user.locked_until is not None
    refused = sign_in(testapp, display(user), PASSWORD, status=None)
    assert refused.status_int == 429
    assert "Too many unsuccessful attempts" in message(refused)
    # AUTH-18: the lock ended the user's other session.
    assert "Siti Nurhaliza" not in other.get("/").text
    notices = [m["Subject"] for m in mailbox(user.email)]
    assert notices == [
        "Akaun idMe anda telah dikunci / Your idMe account has been locked"
    ]
    assert len(events(dbsession, "account.locked")) == 1


@pytest.mark.postgresql
def test_auth_07_unknown_numbers_are_throttled_with_the_same_wording(
    testapp, app, tm, dbsession
):
    """AUTH-07: throttling keys on the number whether or not it is registered."""
    for attempt in range(10):
        sign_in(testapp, "900101-14-5678", f"guess {attempt} for nobody", status=None)
    refused = sign_in(testapp, "900101-14-5678", PASSWORD, status=None)
    assert refused.status_int == 429
    assert "Too many unsuccessful attempts" in message(refused)
    # The control: another number from the same address is still heard.
    assert sign_in(testapp, "900101-14-5679", PASSWORD, status=None).status_int == 400


@pytest.fixture(scope="module")
def address_app(settings, db_engine):
    """A small per-address limit, to reach it in a few requests."""
    return make_app({**settings, "ratelimit.login.address": "5/900"}, db_engine)


@pytest.fixture(scope="module")
def spread_app(settings, db_engine):
    """A small site-wide failure limit, and the captcha it turns on."""
    return make_app(
        {**settings, "ratelimit.login.global": "3/300", "captcha.enabled": "true"},
        db_engine,
    )


def test_auth_08_one_address_trying_many_numbers_is_stopped(address_app, tm, dbsession):
    """AUTH-08: failures from one address across numbers trip the address limit."""
    user = make_user(dbsession)
    attacker = browser(address_app, tm, dbsession, "198.51.100.7")
    for n in range(5):
        assert (
            sign_in(attacker, f"9001011456{n:02d}", "not it", status=None).status_int
            == 400
        )
    assert sign_in(attacker, display(user), PASSWORD, status=None).status_int == 429
    # The control: another address signs the same user in.
    bystander = browser(address_app, tm, dbsession, "203.0.113.9")
    assert sign_in(bystander, display(user), PASSWORD, status=None).status_int == 303


def test_auth_09_a_spread_attack_turns_the_captcha_on(spread_app, tm, dbsession):
    """AUTH-09: failures from many addresses, few each, turn the captcha on."""

    user = make_user(dbsession)
    before = to_password_page(
        browser(spread_app, tm, dbsession, "203.0.113.1"), display(user)
    )
    assert "captcha_answer" not in before.forms["password-form"].fields
    for n in range(3):
        sign_in(
            browser(spread_app, tm, dbsession, f"198.51.100.{n + 20}"),
            f"9001011456{n:02d}",
            "x" * 12,
            status=None,
        )
    visitor = browser(spread_app, tm, dbsession, "203.0.113.2")
    page = to_password_page(visitor, display(user))
    form = page.forms["password-form"]
    assert "captcha_answer" in form.fields
    form["password"] = PASSWORD
    assert form.submit(expect_errors=True).status_int == 400  # no captcha answer
    page = to_password_page(visitor, display(user))
    form = page.forms["password-form"]
    form["password"] = PASSWORD
    form["captcha_answer"] = captcha_answer(spread_app, form["captcha_token"].value)
    assert form.submit(expect_errors=True).status_int == 303


def test_ops_06_blocked_requests_never_hash(testapp, dbsession, monkeypatch):
    """OPS-06: once throttled, an attempt costs no bcrypt at all."""
    user = make_user(dbsession)
    for attempt in range(10):
        sign_in(testapp, display(user), f"wrong {attempt} attempt", status=None)
    calls = bcrypt_calls(monkeypatch)
    assert sign_in(testapp, display(user), PASSWORD, status=None).status_int == 429
    assert calls == []
    # The control: an unthrottled number costs one check (against a dummy hash).
    assert sign_in(testapp, "900101-14-5678", PASSWORD, status=None).status_int == 400
    assert calls == ["checkpw"]


def test_auth_13_temporary_password_leads_only_to_the_change_form(
    testapp, dbsession, mailbox
):
    """AUTH-13: with a pending change, every other page sends to the change form."""
    user = make_user(
        dbsession,
        must_change_password=True,
        temp_password_expires_at=utcnow() + dt.timedelta(hours=72),
    )
    landed = sign_in(testapp, display(user), PASSWORD, status=None)
    assert landed.location.endswith("/password/new")
    for path in ("/", "/account", "/register", "/login", "/saml/metadata"):
        assert testapp.get(path, status=303).location.endswith("/password/new"), path
    testapp.get("/help", status=200)
    form = testapp.get("/password/new").forms["new-password-form"]
    form["password"] = form["password_confirm"] = NEW_PASSWORD
    form.submit(status=303)
    assert testapp.get("/", status=200)
    dbsession.refresh(user)
    assert user.must_change_password is False
    assert user.password_changed_at is not None
    assert [m["Subject"].split(" / ")[0] for m in mailbox(user.email)] == [
        "Kata laluan idMe anda telah ditukar"
    ]


def test_auth_12_temporary_password_is_used_up_by_the_first_sign_in(
    testapp, app, tm, dbsession
):
    """AUTH-12: the temporary password does not work a second time."""
    user = make_user(
        dbsession,
        must_change_password=True,
        temp_password_expires_at=utcnow() + dt.timedelta(hours=72),
    )
    assert sign_in(testapp, display(user), status=None).location.endswith(
        "/password/new"
    )
    assert (
        sign_in(browser(app, tm, dbsession), display(user), status=None).status_int
        == 400
    )


@pytest.mark.parametrize(
    ("password", "confirm", "expected"),
    [
        ("short", "short", "12"),
        (NEW_PASSWORD, NEW_PASSWORD + "x", "not the same"),
        ("080512145601 abc", "080512145601 abc", None),
    ],
)
def test_forced_change_refuses_bad_new_passwords(
    testapp, dbsession, password, confirm, expected
):
    user = make_user(
        dbsession,
        must_change_password=True,
        temp_password_expires_at=utcnow() + dt.timedelta(hours=72),
        identifier="080512145601",
    )
    sign_in(testapp, display(user), status=None)
    form = testapp.get("/password/new?lang=en").forms["new-password-form"]
    form["password"], form["password_confirm"] = password, confirm
    page = form.submit(status=400)
    errors = page.html.select(".field-errors li")
    assert errors
    if expected:
        assert expected in " ".join(e.get_text() for e in errors)
    dbsession.refresh(user)
    assert user.must_change_password is True


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example",
        "/\\evil.example",
        "https:evil.example",
        "%2F%2Fevil.example",
        "https://evil.example/",
        "/%5Cevil.example",
        "\t//evil.example",
    ],
)
def test_web_08_next_never_leaves_the_site(testapp, dbsession, target):
    """WEB-08: after sign-in, only this site's own paths are followed."""
    user = make_user(dbsession)
    form = to_image_page(testapp, display(user), next_url=target).forms["image-form"]
    form["confirm"] = True
    page = form.submit().follow().forms["password-form"]
    page["password"] = PASSWORD
    landed = page.submit(status=303)
    assert landed.location in ("https://idp.test/", "/")


def test_web_08_a_same_site_next_is_followed(testapp, dbsession):
    """WEB-08, the control: a path on this site is where the user lands."""
    user = make_user(dbsession)
    form = to_image_page(testapp, display(user), next_url="/help").forms["image-form"]
    form["confirm"] = True
    page = form.submit().follow().forms["password-form"]
    page["password"] = PASSWORD
    assert page.submit(status=303).location.endswith("/help")


def test_web_01_every_sign_in_form_needs_its_token(testapp, dbsession):
    """WEB-01: each sign-in form refuses a POST without the CSRF token."""
    user = make_user(dbsession)
    to_password_page(testapp, display(user))
    posts = {
        "/login": {"identifier": display(user)},
        "/login/image": {"confirm": "y"},
        "/login/password": {"password": PASSWORD},
        "/logout": {},
        "/password/new": {"password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD},
    }
    for path, fields in posts.items():
        testapp.post(path, fields, status=403)
    assert events(dbsession, "login.success") == []
    assert events(dbsession, "login.failure") == []


def test_sign_out_ends_the_session(testapp, dbsession):
    user = make_user(dbsession)
    sign_in(testapp, display(user), status=None)
    assert count(dbsession, IdpSession, IdpSession.user_id == user.id) == 1
    page = testapp.get("/logout")
    page.forms["logout-form"].submit(status=303).follow()
    assert count(dbsession, IdpSession, IdpSession.user_id == user.id) == 0
    assert "Siti Nurhaliza" not in testapp.get("/").text
    assert len(events(dbsession, "logout")) == 1


def test_a_password_changed_elsewhere_ends_this_session(testapp, dbsession):
    user = make_user(dbsession)
    sign_in(testapp, display(user), status=None)
    assert "Siti Nurhaliza" in testapp.get("/").text
    user.password_changed_at = utcnow() + dt.timedelta(seconds=1)
    dbsession.flush()
    assert "Siti Nurhaliza" not in testapp.get("/").text


def test_not_my_image_explains_and_forgets_the_number(testapp, dbsession):
    page = to_image_page(testapp, "900101-14-5678")
    advice = page.click(linkid="not-mine-link")
    assert "Do not type your password" in advice.text
    testapp.get("/login/image", status=303)


def test_anonymous_visitors_of_a_private_page_are_sent_to_sign_in(testapp):
    page = testapp.get("/password/new", status=303)
    assert page.location.endswith("/login?next=%2Fpassword%2Fnew")


def test_failures_are_audited_without_the_number(testapp, dbsession):
    """DATA-08: the audit trail names the attempt without the full number."""
    user = make_user(dbsession)
    sign_in(testapp, display(user), "wrong wrong wrong", status=None)
    (event,) = events(dbsession, "login.failure")
    assert event.detail["identifier"] == "XXXXXX-XX-" + user.identifier[-4:]
    assert user.identifier not in str(event.detail)
    assert count(dbsession, OutboxMessage) == 0


@pytest.mark.postgresql
def test_auth_18_a_lock_on_one_node_ends_the_session_on_the_other(
    committing_testapp, app, settings, db_url
):
    """AUTH-18: sessions end at the lock, whichever node serves the next request."""
    from sqlalchemy.orm import Session

    from idp.db import make_engine
    from idp.models import User
    from tests.factories import HASHER

    engine = make_engine({"sqlalchemy.url": db_url})
    try:
        with Session(engine) as session, session.begin():
            session.add(
                User(
                    identifier_kind="mykad",
                    identifier="080512145699",
                    email="dua.nod@example.com.my",
                    full_name="Siti Dua Nod",
                    phone="+60123456789",
                    category="educator",
                    locale="en",
                    security_image="cat",
                    security_phrase="Nasi lemak kegemaran saya",
                    password_hash=HASHER.hash(PASSWORD),
                )
            )
        node_b = make_app(settings, engine)
        environ_b = committing_testapp.extra_environ
        victim = webtest.TestApp(node_b, extra_environ=environ_b)
        assert sign_in(victim, "080512-14-5699", status=None).status_int == 303
        assert "Siti Dua Nod" in victim.get("/").text
        # The control: the session is live on node A as well.
        on_a = webtest.TestApp(app, extra_environ=environ_b, cookiejar=victim.cookiejar)
        assert "Siti Dua Nod" in on_a.get("/").text
        attacker = webtest.TestApp(app, extra_environ=environ_b)
        for attempt in range(10):
            sign_in(attacker, "080512-14-5699", f"wrong guess {attempt}", status=None)
        for node in (victim, on_a):
            assert "Siti Dua Nod" not in node.get("/").text
    finally:
        engine.dispose()
