"""The helpdesk's main path in Chromium, keyboard only, every page checked by axe.

An officer holding the helpdesk role (two-step verification on, as the
console requires) signs in with the password and a code, opens the console,
finds a locked user by name, unlocks them, sends a password reset and
corrects their email, in Malay and in English, on a desktop and a phone's
width. The mail the user gets is read from the IdP's mail folder.

With ``IDP_E2E_CONSOLE_SHOTS`` set to a folder (``docs/helpdesk``), the
desktop run saves the screenshots the README's "Running the helpdesk" shows.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from idp.cli.common import load_settings
from idp.db import make_engine, utcnow
from idp.services.actor import Actor
from idp.services.admin import AdminRoles
from idp.services.audit import AuditLog
from idp.services.mail import Composer, Outbox, OutboxCodec
from tests.e2e import harness, media
from tests.e2e.conftest import E2E
from tests.factories import PASSWORD, display, make_user
from tests.two_step import Clock, code_for, enable

pytestmark = E2E

VIEWS = [("ms", 1280, 800), ("en", 360, 740)]
SHOTS_ENV = "IDP_E2E_CONSOLE_SHOTS"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@pytest.fixture
def people(world, request):
    """The officer (helpdesk, two-step on) and a locked user, with a name
    of their own for the search."""
    settings = load_settings(str(world["ini"]))
    engine = make_engine(settings)
    # A name of each run's own, so the search finds one account.
    name = {
        "ms-desktop": "Nurul Huda binti Ismail",
        "en-phone": "Nurul Ain binti Ismail",
    }
    try:
        with Session(engine, expire_on_commit=False) as session:
            officer = make_user(session, full_name="Pegawai Meja Bantuan")
            outbox = Outbox(
                session, Composer(settings), OutboxCodec(settings["idp.hmac_key"])
            )
            AdminRoles(session, audit=AuditLog(session), outbox=outbox).grant(
                officer, "helpdesk", actor=Actor.command_line()
            )
            officer.secret, _codes = enable(settings, session, officer, Clock(_now()))
            user = make_user(
                session,
                full_name=name[request.node.callspec.id],
                email=f"salah.{request.node.callspec.id}@example.com.my",
                disabled_at=utcnow(),
            )
            session.commit()
    finally:
        engine.dispose()
    return officer, user


@pytest.fixture
def page(world, driver, request):
    lang, width, height = request.param
    driver.delete_all_cookies()
    wanted = os.environ.get(SHOTS_ENV)
    saver = media.Shots(Path(wanted), lang) if wanted and width > 1000 else None
    browser = harness.Browser(driver, world["captcha_dir"], saver)
    browser.size(width, height)
    browser.lang = lang
    return browser


def sign_in_with_code(page, world, officer) -> None:
    page.get(f"{world['idp']}/login?lang={page.lang}&next=%2Fadmin")
    page.start_keyboard()
    page.type_into("login-form", "identifier", display(officer))
    page.submit("login-form")
    page.start_keyboard()
    page.tick("image-form", "confirm")
    page.submit("image-form")
    page.start_keyboard()
    page.type_into("password-form", "password", PASSWORD)
    page.submit("password-form")
    assert page.has("#code-form"), page.text()
    page.start_keyboard()
    page.type_into("code-form", "code", code_for(officer.secret, _now(), 1))
    page.submit("code-form")


@pytest.mark.parametrize("page", VIEWS, ids=["ms-desktop", "en-phone"], indirect=True)
def test_find_unlock_reset_correct_email(world, page, people):
    officer, user = people
    idp, mailbox = world["idp"], world["mailbox"]
    sign_in_with_code(page, world, officer)
    page.get(f"{idp}/admin?lang={page.lang}")
    assert page.has("[data-role=helpdesk]"), page.text()
    page.check("console: home")
    page.follow_link("/admin/users")
    page.check("console: search")
    page.start_keyboard()
    page.type_into("admin-search-form", "q", "a")
    page.submit("admin-search-form")
    assert page.has("#q-error"), page.text()
    page.check("console: search too short")
    page.start_keyboard()
    page.type_into("admin-search-form", "q", user.full_name.lower())
    page.submit("admin-search-form")
    assert page.has("#admin-users-found"), page.text()
    page.check("console: found")
    page.shot("helpdesk-search")
    page.follow_link(f"/admin/users/{user.id}")
    assert page.has('[data-standing="disabled"]'), page.text()
    page.check("console: a locked user")
    page.shot("helpdesk-user")

    page.follow_link(f"/admin/users/{user.id}/unlock")
    page.check("console: unlock")
    page.start_keyboard()
    page.submit("admin-act-form")
    assert page.has('[data-standing="ok"]'), page.text()
    page.check("console: unlocked")

    page.follow_link(f"/admin/users/{user.id}/reset")
    page.check("console: send a reset")
    page.start_keyboard()
    page.submit("admin-act-form")
    assert page.has('[data-standing="temporary"]'), page.text()
    mailbox.wait_for(user.email)

    page.follow_link(f"/admin/users/{user.id}/email")
    page.check("console: correct the email")
    page.shot("helpdesk-email")
    page.start_keyboard()
    page.type_into("admin-act-form", "email", "bukan emel")
    page.submit("admin-act-form")
    assert page.has("#email-error"), page.text()
    page.check("console: a wrong email")
    new = f"betul.{page.lang}@example.com.my"
    page.start_keyboard()
    page.type_into("admin-act-form", "email", new)
    page.submit("admin-act-form")
    assert new in page.text("#admin-profile"), page.text()
    page.check("console: email corrected")
    mailbox.wait_for(new)
