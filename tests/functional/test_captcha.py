"""The self-hosted captcha across requests: relay (AUTH-24) and flood (AUTH-25).

Two browsers are two ``TestApp``s, each with its own cookie jar, on one app
and one database transaction. Answers are computed from the token with the
app's key, as the person reading the picture would type them.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from idp.db import utcnow
from idp.models import CaptchaChallenge, OutboxMessage, User
from idp.services.captcha import _token_hash
from idp.services.mail import JOB_PREFIX
from tests.app import browser, captcha_answer, make_app
from tests.factories import PASSWORD, count, display, make_user
from tests.registration import fill, open_form

FORGOT = "/password/forgot?lang=en"


def forgot_form(testapp, email: str):
    form = testapp.get(FORGOT).forms["reset-request-form"]
    form["email"] = email
    return form


def with_captcha(form, token: str, answer: str) -> list[tuple[str, str]]:
    """The form's fields as a browser posts them, the captcha's replaced."""
    replaced = {"captcha_token": token, "captcha_answer": answer}
    return [(n, replaced.get(n, v)) for n, v in form.submit_fields()]


def captcha_error(page) -> bool:
    return bool(page.html.select("#captcha_answer-field ul.field-errors li"))


def sent(dbsession) -> int:
    """Reset requests accepted: each queues one job, whoever the email is."""
    return dbsession.scalar(
        select(func.count())
        .select_from(OutboxMessage)
        .where(OutboxMessage.template.startswith(JOB_PREFIX, autoescape=True))
    )


# -- AUTH-24: relay ------------------------------------------------------------


def test_auth_24_a_challenge_answered_from_another_session_is_refused(
    captcha_app, tm, dbsession
):
    """AUTH-24: a challenge shown to one browser is refused in another's form."""
    user = make_user(dbsession)
    victim = browser(captcha_app, tm, dbsession)
    attacker = browser(captcha_app, tm, dbsession)
    shown = forgot_form(victim, user.email)
    token = shown["captcha_token"].value
    relayed = with_captcha(
        forgot_form(attacker, user.email), token, captcha_answer(captcha_app, token)
    )
    page = attacker.post("/password/forgot", relayed, status=400)
    assert captcha_error(page)
    assert sent(dbsession) == 0
    # Refused like a wrong answer: the challenge is used up for its owner too.
    shown["captcha_answer"] = captcha_answer(captcha_app, token)
    shown.submit(status=400)
    assert sent(dbsession) == 0
    # The control: the same form, solved in the session that was shown it.
    own = forgot_form(attacker, user.email)
    own["captcha_answer"] = captcha_answer(captcha_app, own["captcha_token"].value)
    assert own.submit(status=303).location.endswith("/password/forgot/sent")
    assert sent(dbsession) == 1


def test_auth_24_a_challenge_answered_on_another_form_is_refused(
    captcha_app, tm, dbsession
):
    """AUTH-24: a challenge of the forgot-password form is refused at registration."""
    client = browser(captcha_app, tm, dbsession)
    token = client.get(FORGOT).forms["reset-request-form"]["captcha_token"].value
    form = fill(open_form(client, "en"))
    page = client.post(
        "/register",
        with_captcha(form, token, captcha_answer(captcha_app, token)),
        status=400,
    )
    assert captcha_error(page)
    assert count(dbsession, User) == 0
    # The control: registration's own challenge, in the same session.
    form = fill(page.forms["register-form"])
    form["captcha_answer"] = captcha_answer(captcha_app, form["captcha_token"].value)
    form.submit(status=303)
    assert count(dbsession, User) == 1


@pytest.mark.postgresql
def test_auth_24_a_relayed_challenge_is_refused_at_sign_in(
    settings, db_engine, tm, dbsession
):
    """AUTH-24: a forgot-password challenge from another browser fails at sign-in.

    The case of issue 11. One failure across the site (limit 1) turns the
    sign-in captcha on, as a spread attack would.
    """
    app = make_app(
        {**settings, "ratelimit.login.global": "1/300", "captcha.enabled": "true"},
        db_engine,
    )
    user = make_user(dbsession)

    def password_form(client):
        form = client.get("/login?lang=en").forms["login-form"]
        form["identifier"] = display(user)
        form = form.submit(status=303).follow().forms["image-form"]
        form["confirm"] = True
        form = form.submit(status=303).follow().forms["password-form"]
        form["password"] = PASSWORD
        return form

    failing = password_form(browser(app, tm, dbsession, "198.51.100.30"))
    failing["password"] = "not the password at all"
    failing.submit(status=400)

    token = browser(app, tm, dbsession, "203.0.113.50").get(FORGOT)
    token = token.forms["reset-request-form"]["captcha_token"].value
    client = browser(app, tm, dbsession)
    form = password_form(client)
    assert "captcha_answer" in form.fields
    client.post(
        form.action, with_captcha(form, token, captcha_answer(app, token)), status=400
    )
    # The control: the sign-in form's own challenge, solved, signs in.
    form = password_form(client)
    form["captcha_answer"] = captcha_answer(app, form["captcha_token"].value)
    form.submit(status=303)


# -- AUTH-25: flood --------------------------------------------------------------


LIMIT = 6


@pytest.fixture(scope="module")
def flood_app(settings, db_engine):
    """The captcha on, and a small ``captcha.address`` limit to reach."""
    return make_app(
        {
            **settings,
            "captcha.enabled": "true",
            "ratelimit.captcha.address": f"{LIMIT}/3600",
        },
        db_engine,
    )


def test_auth_25_reloading_a_form_writes_one_challenge(captcha_app, tm, dbsession):
    """AUTH-25: GETs of a form in one session reuse its live challenge."""
    client = browser(captcha_app, tm, dbsession)
    tokens = {
        client.get(FORGOT).forms["reset-request-form"]["captcha_token"].value
        for _ in range(25)
    }
    assert len(tokens) == 1
    assert count(dbsession, CaptchaChallenge) == 1
    # The control: another form, or another browser, gets its own.
    client.get("/register?lang=en")
    browser(captcha_app, tm, dbsession).get(FORGOT)
    assert count(dbsession, CaptchaChallenge) == 3


def test_auth_25_the_sound_is_rendered_once_and_kept(captcha_app, tm, dbsession):
    """AUTH-25: the WAV is rendered at the first fetch and served from the row."""
    client = browser(captcha_app, tm, dbsession)
    token = client.get(FORGOT).forms["reset-request-form"]["captcha_token"].value
    first = client.get(f"/captcha/{token}.en.wav").body
    # Each render draws a fresh seed, so equal bytes mean no second render.
    assert all(client.get(f"/captcha/{token}.en.wav").body == first for _ in range(3))
    row = dbsession.scalars(
        select(CaptchaChallenge).where(
            CaptchaChallenge.token_hash == _token_hash(token)
        )
    ).one()
    dbsession.refresh(row)
    assert row.audio == first
    assert row.audio_locale == "en"
    # The other language is rendered (and then kept) in that language.
    malay = client.get(f"/captcha/{token}.ms.wav").body
    assert malay != first
    assert client.get(f"/captcha/{token}.ms.wav").body == malay


@pytest.mark.parametrize("media", ["png", "en.wav"])
def test_auth_25_past_the_limit_media_get_429_other_pages_do_not(
    flood_app, tm, dbsession, media
):
    """AUTH-25: media fetches past ``captcha.address`` get a bilingual 429."""
    client = browser(flood_app, tm, dbsession, "198.51.100.25")
    token = client.get(FORGOT).forms["reset-request-form"]["captcha_token"].value
    for _ in range(LIMIT - 1):
        client.get(f"/captcha/{token}.{media}", status=200)
    page = client.get(f"/captcha/{token}.{media}", status=429)
    assert int(page.headers["Retry-After"]) > 0
    assert "Too many requests" in page.text
    assert "Terlalu banyak permintaan" in page.text
    client.get(FORGOT, status=429)
    # The control: pages without a captcha, and other addresses, are served.
    client.get("/login?lang=en", status=200)
    other = browser(flood_app, tm, dbsession, "203.0.113.80")
    token = other.get(FORGOT).forms["reset-request-form"]["captcha_token"].value
    other.get(f"/captcha/{token}.{media}", status=200)


def test_auth_25_past_the_limit_forms_issue_no_challenge(flood_app, tm, dbsession):
    """AUTH-25: issuing counts too: form GETs past the limit get a 429, no row."""
    client = browser(flood_app, tm, dbsession, "198.51.100.26")
    for _ in range(LIMIT):
        client.get(FORGOT, status=200)
    rows = count(dbsession, CaptchaChallenge)
    client.get(FORGOT, status=429)
    client.get("/register?lang=en", status=429)
    assert count(dbsession, CaptchaChallenge) == rows
    browser(flood_app, tm, dbsession, "203.0.113.81").get(FORGOT, status=200)


@pytest.mark.postgresql
def test_a_challenge_near_its_end_is_not_shown_again(captcha_app, tm, dbsession):
    """A reloaded form gets a fresh challenge once the kept one is nearly expired."""
    client = browser(captcha_app, tm, dbsession)
    token = client.get(FORGOT).forms["reset-request-form"]["captcha_token"].value
    assert (
        client.get(FORGOT).forms["reset-request-form"]["captcha_token"].value == token
    )
    row = dbsession.scalars(
        select(CaptchaChallenge).where(
            CaptchaChallenge.token_hash == _token_hash(token)
        )
    ).one()
    row.expires_at = utcnow() + dt.timedelta(seconds=30)
    dbsession.flush()
    fresh = client.get(FORGOT).forms["reset-request-form"]["captcha_token"].value
    assert fresh != token
    form = client.get(FORGOT).forms["reset-request-form"]
    assert form["captcha_token"].value == fresh
