"""Two-step verification in Chromium, keyboard only, every page checked by axe.

A person turns it on in Akaun saya (the password, the QR page, a first
code, the recovery codes), signs out, signs in with the password and a
code, and turns it off again, in Malay and in English, on a desktop and a
phone's width. The app's clock is the real one here: a code is computed
from the key the page shows, as the person's authenticator app would.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.orm import Session

from idp.cli.common import load_settings
from idp.db import make_engine
from tests.e2e import harness
from tests.e2e.conftest import E2E
from tests.factories import PASSWORD, display, make_user
from tests.two_step import code_for

pytestmark = E2E

VIEWS = [("ms", 1280, 800), ("en", 360, 740)]


@pytest.fixture
def person(world):
    engine = make_engine(load_settings(str(world["ini"])))
    try:
        with Session(engine, expire_on_commit=False) as session:
            user = make_user(session, locale="ms")
            session.commit()
    finally:
        engine.dispose()
    return user


@pytest.fixture
def page(world, driver, request):
    lang, width, height = request.param
    driver.delete_all_cookies()
    browser = harness.Browser(driver, world["captcha_dir"])
    browser.size(width, height)
    browser.lang = lang
    return browser


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def sign_in(page, world, user) -> None:
    page.get(f"{world['idp']}/login?lang={page.lang}")
    page.start_keyboard()
    page.type_into("login-form", "identifier", display(user))
    page.submit("login-form")
    page.start_keyboard()
    page.tick("image-form", "confirm")
    page.submit("image-form")
    page.start_keyboard()
    page.type_into("password-form", "password", PASSWORD)
    page.submit("password-form")


@pytest.mark.parametrize("page", VIEWS, ids=["ms-desktop", "en-phone"], indirect=True)
def test_turn_on_sign_in_with_a_code_turn_off(world, page, person):
    idp = world["idp"]
    sign_in(page, world, person)
    page.get(f"{idp}/account/two-step")
    page.check("two-step: off")
    page.follow_link("/account/two-step/setup")
    page.check("two-step: password first")
    page.start_keyboard()
    page.type_into("two-step-password-form", "current_password", PASSWORD)
    page.submit("two-step-password-form")
    assert page.has("#qr-code svg"), page.text()
    page.check("two-step: QR code")
    secret = page.text("#totp-secret").replace(" ", "")
    page.start_keyboard()
    page.type_into("two-step-confirm-form", "code", "000000")
    page.submit("two-step-confirm-form")
    assert page.has("#code-error"), page.text()
    page.check("two-step: wrong first code")
    page.start_keyboard()
    page.type_into("two-step-confirm-form", "code", code_for(secret, now()))
    page.submit("two-step-confirm-form")
    assert page.has("#recovery-codes"), page.text()
    page.check("two-step: recovery codes")
    recovery = page.text("#recovery-codes li")
    page.follow_link("/account/two-step")
    page.check("two-step: on")

    page.get(f"{idp}/logout")
    page.start_keyboard()
    page.submit("logout-form")
    sign_in(page, world, person)
    assert page.has("#code-form"), page.text()
    page.check("sign-in: code")
    page.start_keyboard()
    page.type_into("code-form", "code", "12")
    page.submit("code-form")
    page.check("sign-in: malformed code")
    page.start_keyboard()
    # The next step's code: the one that turned it on may be this step's.
    page.type_into("code-form", "code", code_for(secret, now(), 1))
    page.submit("code-form")
    assert not page.has("#code-form"), page.text()

    page.get(f"{idp}/account/two-step/off")
    page.check("two-step: turn off")
    page.start_keyboard()
    page.type_into("two-step-off-form", "current_password", PASSWORD)
    page.type_into("two-step-off-form", "code", "000000")
    page.submit("two-step-off-form")
    page.check("two-step: turn off, wrong code")
    page.start_keyboard()
    page.type_into("two-step-off-form", "current_password", PASSWORD)
    # The app's codes up to the next step are used: the phone is "lost".
    page.type_into("two-step-off-form", "code", recovery)
    page.submit("two-step-off-form")
    assert page.has("#two-step-on-link"), page.text()
