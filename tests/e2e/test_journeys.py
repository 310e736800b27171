"""A person's whole life with idMe, in Chromium, keyboard only, checked by axe.

Each journey is one person: they register (solving the real captcha), read
the temporary password from the email, start at a service and sign in there
for the first time (choosing their own password), land back at the service
signed in, change their password and security image in "Akaun saya", look
at their sessions, sign out (single logout reaches the service), forget
their password and reset it from the emailed link, and sign in with the new
one, and change their email address (confirmed from the link sent to the
new one). Every form is worked with the keyboard alone (Tab, typing, arrow keys,
Space, Enter) and every page state passes axe-core's WCAG 2.1 A/AA rules
with no serious or critical violation.

The journeys run in Malay and English at 1280x800 and 360x740. The desktop
runs also save the screenshots the help page shows (idp/views/help.py's
FIGURES); scripts/build-help-media keeps them, and makes the videos.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from idp.views.help import FIGURES
from tests.e2e import harness, media
from tests.e2e.conftest import E2E, HELP_MEDIA_ENV, ROLE, admin

pytestmark = E2E


@dataclass(frozen=True)
class Person:
    lang: str
    width: int
    height: int
    mykad: str
    email: str
    name: str
    phrase: str

    @property
    def id(self) -> str:
        return f"{self.lang}-{self.width}x{self.height}"

    @property
    def desktop(self) -> bool:
        return self.width >= 1024


PEOPLE = [
    Person(
        "ms",
        1280,
        800,
        "080512-14-5678",
        "aisyah@example.com.my",
        "Nur Aisyah binti Ahmad",
        "Nasi lemak kegemaran saya",
    ),
    Person(
        "en",
        1280,
        800,
        "090315-10-1234",
        "arjun@example.com.my",
        "Arjun a/l Suresh",
        "My kite flies over Melaka",
    ),
    Person(
        "ms",
        360,
        740,
        "100720-01-2468",
        "mei.ling@example.com.my",
        "Tan Mei Ling",
        "Kucing oren suka tidur",
    ),
    Person(
        "en",
        360,
        740,
        "070101-12-1357",
        "john@example.com.my",
        "John anak Jimbun",
        "Hornbills over the river",
    ),
]
FIRST_PASSWORD = "Kancil melompat pagar 2026"
SECOND_PASSWORD = "Wau bulan terbang tinggi"
RESET_PASSWORD = "Rambutan manis di dusun"
NEW_PHRASE = "Teh tarik kurang manis"
# The page states each journey checks with axe.
STATES = 31


@pytest.fixture(scope="module")
def shots_dir(world) -> Path:
    """Where the desktop runs save screenshots: the help media folder when
    scripts/build-help-media asks, else a temporary folder."""
    wanted = os.environ.get(HELP_MEDIA_ENV)
    directory = Path(wanted) / "frames" if wanted else world["tmp"] / "frames"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def browser(world, driver, shots_dir, request):
    person = request.param
    driver.delete_all_cookies()
    saver = (
        media.Shots(shots_dir, person.lang, shrink=bool(os.environ.get(HELP_MEDIA_ENV)))
        if person.desktop
        else None
    )
    page = harness.Browser(driver, world["captcha_dir"], saver)
    page.size(person.width, person.height)
    return page


def temporary_password(message) -> str:
    return re.search(r": ([a-z0-9]{16})\s*$", harness.text_of(message), re.M).group(1)


def reset_link(message, origin: str) -> str:
    return re.search(
        re.escape(origin) + r"/password/reset/\S+", harness.text_of(message)
    ).group(0)


def email_link(message, origin: str) -> str:
    return re.search(
        re.escape(origin) + r"/account/email/confirm/\S+", harness.text_of(message)
    ).group(0)


def sign_in(
    page, person, password: str, *, phrase: str | None = None, watched: bool = True
) -> None:
    """The three sign-in forms, by keyboard, from the sign-in page.

    ``phrase``: the security phrase the image page must show. ``watched``:
    each step is checked by axe and photographed (on the desktop), as the
    first sign-in is; a later sign-in only goes through.
    """
    page.start_keyboard()
    page.type_into("login-form", "identifier", person.mykad)
    if watched:
        page.shot("sign-in-identifier")
    page.submit("login-form")
    assert page.has("#image-form"), page.text()
    if phrase is not None:
        assert phrase in page.text(), page.text()
    if watched:
        page.check("sign-in: security image")
    page.start_keyboard()
    page.tick("image-form", "confirm")
    if watched:
        page.shot("sign-in-image")
    page.submit("image-form")
    assert page.has("#password-form"), page.text()
    if watched:
        page.check("sign-in: password")
    page.start_keyboard()
    page.type_into("password-form", "password", password)
    if watched:
        page.shot("sign-in-password")
    page.submit("password-form")


@pytest.mark.parametrize("browser", PEOPLE, ids=[p.id for p in PEOPLE], indirect=True)
def test_whole_journey_keyboard_only_and_accessible(world, browser, request):
    person = request.node.callspec.params["browser"]
    idp, sp, service = world["idp"], world["sp"], world["service"]
    mailbox = world["mailbox"]
    page = browser

    # -- register --------------------------------------------------------------
    page.get(f"{idp}/?lang={person.lang}")
    page.check("home")
    page.follow_link("/register")
    assert page.url.startswith(f"{idp}/register")
    page.check("register: empty form")
    form = "register-form"
    # Sent empty: the page comes back with every problem listed and named.
    page.start_keyboard()
    page.submit(form)
    assert page.has("#form-errors"), page.text()
    page.check("register: errors")
    page.get(f"{idp}/register")  # a fresh form: its picture shows no errors
    page.start_keyboard()
    page.choose_option(form, "category", "student")
    page.choose_radio(form, "id_type", "mykad")
    page.type_into(form, "mykad", person.mykad)
    page.type_into(form, "full_name", person.name)
    page.type_into(form, "email", person.email)
    page.type_into(form, "email_confirm", person.email)
    page.type_into(form, "phone", "012-345 6789")
    page.type_into(form, "institution", "SK Taman Melati")
    page.choose_radio(form, "security_image", "cat")
    page.type_into(form, "security_phrase", person.phrase)
    page.captcha(form)
    page.check("register: filled form")
    page.shot("register-form")
    page.submit(form)
    assert page.url.startswith(f"{idp}/register/done"), page.text()
    page.check("register: done")
    page.shot("register-done")
    password = temporary_password(mailbox.wait_for(person.email))
    # The operator gives the new account its role, as a school would.
    admin(world["ini"], "user", "grant", person.mykad, ROLE)

    # -- first sign-in from the service, forced change, SSO back ----------------
    page.get(f"{sp}/start")
    page.wait_url(lambda url: url.startswith(f"{idp}/login"))
    page.check("sign-in: identifier")
    sign_in(page, person, password)
    assert page.has("#new-password-form"), page.text()
    page.check("first sign-in: choose a password")
    page.start_keyboard()
    page.type_into("new-password-form", "password", FIRST_PASSWORD)
    page.type_into("new-password-form", "password_confirm", FIRST_PASSWORD)
    page.check("first sign-in: filled")
    page.shot("first-sign-in")
    logins = len(service.logins)
    page.submit("new-password-form")
    # The change carries the sign-in started at the service on to it.
    page.wait_url(lambda url: url.startswith(f"{sp}/acs"))
    assert page.has("#sp-signed-in"), page.text()
    assert len(service.logins) == logins + 1
    assert service.logins[-1].status.endswith(":Success")
    # Opened again: single sign-on, no password asked.
    logins = len(service.logins)
    page.get(f"{sp}/start")
    page.wait_url(lambda url: url.startswith(f"{sp}/acs"))
    assert page.has("#sp-signed-in"), page.text()
    assert len(service.logins) == logins + 1
    assert service.logins[-1].status.endswith(":Success")

    # -- account changes ----------------------------------------------------------
    page.get(f"{idp}/account")
    page.check("account")
    page.shot("account")
    page.follow_link("/account/password")
    page.check("account: password")
    page.start_keyboard()
    form = "account-password-form"
    page.type_into(form, "current_password", FIRST_PASSWORD)
    page.type_into(form, "password", SECOND_PASSWORD)
    page.type_into(form, "password_confirm", SECOND_PASSWORD)
    page.submit(form)
    assert not page.has(".has-error"), page.text()
    page.check("account: password changed")
    page.get(f"{idp}/account/security")
    page.check("account: security")
    page.start_keyboard()
    form = "account-security-form"
    page.choose_radio(form, "security_image", "bicycle")
    page.type_into(form, "security_phrase", NEW_PHRASE)
    if page.has(f"#{form} [name=current_password]"):
        page.type_into(form, "current_password", SECOND_PASSWORD)
    page.shot("account-security")
    page.submit(form)
    assert not page.has(".has-error"), page.text()
    page.check("account: security changed")
    page.get(f"{idp}/account/sessions")
    page.check("account: sessions")
    page.shot("account-sessions")
    if not person.desktop:
        # Too wide for a phone, the table scrolls inside its region, which
        # the keyboard reaches and scrolls.
        assert page.scroll_region_by_keyboard("active-sessions-heading") > 0

    # -- sign out, with single logout at the service ------------------------------
    logouts = len(service.logouts)
    page.get(f"{idp}/logout")
    page.check("sign out: confirm")
    page.start_keyboard()
    page.submit("logout-form")
    page.wait_for("#logout-status[data-finished=true]")
    page.check("sign out: done")
    assert len(service.logouts) == logouts + 1
    assert page.has(".logout-service[data-status=done]"), page.text()

    # -- forgot password, to the end ------------------------------------------------
    page.get(f"{idp}/login")
    page.follow_link("/password/forgot")
    page.check("forgot: request")
    page.start_keyboard()
    page.type_into("reset-request-form", "email", person.email)
    page.captcha("reset-request-form")
    page.shot("forgot-request")
    page.submit("reset-request-form")
    page.check("forgot: sent")
    link = reset_link(mailbox.wait_for(person.email, "/password/reset/"), idp)
    page.get(link)
    assert page.has("#reset-verify-form"), page.text()
    page.check("forgot: verify")
    page.start_keyboard()
    page.type_into("reset-verify-form", "email", person.email)
    page.type_into("reset-verify-form", "identifier", person.mykad)
    page.shot("forgot-verify")
    page.submit("reset-verify-form")
    assert page.has("#reset-new-form"), page.text()
    page.check("forgot: new password")
    page.start_keyboard()
    page.type_into("reset-new-form", "password", RESET_PASSWORD)
    page.type_into("reset-new-form", "password_confirm", RESET_PASSWORD)
    page.captcha("reset-new-form")
    page.shot("forgot-new")
    page.submit("reset-new-form")
    assert not page.has(".has-error"), page.text()
    page.check("forgot: done")

    # The new password signs in; the new image and phrase are shown first.
    # A mistyped password first: said at the top of the form, then retyped.
    page.get(f"{idp}/login")
    sign_in(page, person, "not the password at all", phrase=NEW_PHRASE, watched=False)
    assert page.has("#form-errors #login-message"), page.text()
    page.check("sign-in: wrong password")
    page.start_keyboard()
    page.type_into("password-form", "password", RESET_PASSWORD)
    page.submit("password-form")
    assert not page.has("#password-form"), page.text()
    assert page.has("a[href$='/logout']"), page.text()
    page.check("home: signed in")

    # -- a new email address, confirmed from the link sent to it --------------------
    new_email = person.email.replace("@", ".baharu@")
    page.get(f"{idp}/account")
    page.follow_link("/account/email")
    page.check("account: email")
    form = "account-email-form"
    # Sent empty: the summary takes the focus and names each field.
    page.start_keyboard()
    page.submit(form)
    assert page.has("#form-errors a[href='#email']"), page.text()
    page.check("account: email errors")
    page.start_keyboard()
    page.type_into(form, "email", new_email)
    page.type_into(form, "email_confirm", new_email)
    page.type_into(form, "current_password", RESET_PASSWORD)
    page.submit(form)
    assert not page.has(".has-error"), page.text()
    page.check("account: email link sent")
    page.get(email_link(mailbox.wait_for(new_email, "/account/email/confirm/"), idp))
    assert page.has("#email-confirm-form"), page.text()
    assert new_email in page.text(), page.text()
    page.check("account: confirm the new email")
    page.start_keyboard()
    page.submit("email-confirm-form")
    assert page.url.startswith(f"{idp}/account"), page.url
    assert new_email in page.text(), page.text()
    page.check("account: email changed")

    # Sign out of every session, from "Akaun saya".
    page.get(f"{idp}/account/sessions")
    page.start_keyboard()
    page.submit("signout-all-form")
    page.check("account: signed out everywhere")
    page.get(f"{idp}/account")
    assert page.url.startswith(f"{idp}/login"), page.url

    # Every page state above went through axe (a guard against a check
    # quietly dropped when the journey changes).
    assert len(page.checked) >= STATES, page.checked
    if person.desktop:
        taken = {figure.name for figure in FIGURES}
        assert taken <= page.shots.taken, taken - page.shots.taken
