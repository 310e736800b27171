"""The first sign-in reaches the service: SSO continues after the forced change.

Issue 12 item 1. Someone whose account an operator made (``idp-admin user
add``) or reset (``user reset-password``), or who registered themselves,
holds a temporary password. Starting at a service, they sign in with it,
must choose their own password (and, for an operator's account, a security
image and phrase), and then the sign-in they started continues to the
service: the service receives its Response right after the change, never
before it (AUTH-13).

Everything is done as the people involved do it: the operator runs
``idp-admin`` (module, role, user, SP import and policy, ``mail deliver``)
on a scratch copy of development.ini; the user's browser walks the pages one
by one in Malay or English, reading the temporary password from the
delivered email; the SPs are pysaml2's ``Saml2Client`` and python3-saml,
which validate the Response with their own checks (signature, Destination,
audience, InResponseTo). Nothing is switched off in the database.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from idp.i18n import COOKIE_NAME
from idp.models import AuditEvent, PendingSamlRequest, ServiceProvider, User
from tests import registration
from tests.app import (
    base_settings,
    committing_browser,
    make_app,
)
from tests.cli import NUMBER, add_user, delivered, ok
from tests.factories import NEW_PASSWORD
from tests.interop.browser import Browser, query_of
from tests.interop.sps import NO_PASSIVE, SUCCESS, OneLoginSP, Pysaml2SP

pytestmark = [pytest.mark.interop, pytest.mark.slow]

# The fixtures ini, db and engine (tests/conftest.py): the scratch ini and
# database of idp-admin, so everything is made exactly as an operator makes it.

RELEASED = "uid,displayName,mail,isMemberOf"
EMAIL = "ali@example.com.my"

# What each language's pages say, to know the walk stayed in that language.
TEXT = {
    "ms": {
        "identifier": "Daftar Masuk ke idMe",
        "change": "Pilih kata laluan anda sendiri",
        "continues": "perkhidmatan yang anda mulakan",
        "post": "Teruskan ke perkhidmatan",
        "no_access": "Tiada akses kepada perkhidmatan ini",
        "expired": "telah tamat tempoh semasa anda memilih kata laluan",
        "password_set": "Kata laluan baharu anda telah ditetapkan.",
    },
    "en": {
        "identifier": "Sign in to idMe",
        "change": "Choose your own password",
        "continues": "the service you started from",
        "post": "Continue to the service",
        "no_access": "No access to this service",
        "expired": "expired while you chose your password",
        "password_set": "Your new password is set.",
    },
}


@dataclass
class World:
    """The operator's ini and database, and the IdP app running on them."""

    ini: Path
    tmp: Path
    engine: object
    app: object

    def browser(self, lang: str) -> Browser:
        """A person who chose ``lang`` on an earlier visit (its cookie kept)."""
        testapp = committing_browser(self.app)
        testapp.set_cookie(COOKIE_NAME, lang)
        return Browser(testapp)

    def sp(self, sp_class, name: str = "sp1"):
        """An SP registered by the operator from its metadata file."""
        metadata = self.browser("ms").get("/saml/metadata").body
        sp = sp_class(f"https://{name}.test/sp", metadata, encryption=False)
        path = self.tmp / f"{name}.xml"
        path.write_bytes(sp.metadata())
        ok(self.ini, "sp", "import", path, "--module", "m1")
        ok(self.ini, "sp", "policy", sp.entity_id, "--release", RELEASED)
        return sp

    def temporary_password(self, recipient: str = EMAIL) -> str:
        """The newest temporary password mailed to ``recipient``."""
        messages = [
            message
            for message in delivered(self.ini, self.tmp)
            if recipient in message["To"]
        ]
        assert messages, f"no mail to {recipient}"
        return registration.temporary_password_from(messages[-1])

    def user(self, number: str = "900101145678") -> User:
        with Session(self.engine) as session:
            user = session.scalars(select(User).where(User.identifier == number)).one()
            session.expunge(user)
            return user


@pytest.fixture
def world(db, engine, tmp_path) -> World:
    """A module m1 and a role guru that reaches it, made with ``idp-admin``."""
    names = ("--name-ms", "Modul Satu", "--name-en", "Module One")
    ok(db, "module", "create", "m1", *names)
    ok(db, "role", "create", "guru", "--name-ms", "Guru", "--name-en", "Teacher")
    ok(db, "role", "grant-module", "guru", "m1")
    settings = {
        **base_settings(tmp_path),
        "sqlalchemy.url": str(engine.url),
        "idp.auto_create_keys": "true",
    }
    return World(db, tmp_path, engine, make_app(settings, engine))


def operator_adds_user(world: World, lang: str, *roles: str) -> str:
    """``idp-admin user add`` (with ``--role`` each); the mailed password."""
    extra = [arg for role in roles for arg in ("--role", role)]
    result = add_user(world.ini, "--locale", lang, *extra)
    assert result.returncode == 0, result.stderr
    return world.temporary_password()


# -- the walk, page by page -------------------------------------------------------


def assert_language(page, lang: str, key: str) -> None:
    assert page.html.select_one("html")["lang"] == lang
    assert TEXT[lang][key] in page.text, page.text[:800]


def sign_in_with(browser: Browser, page, number: str, password: str, lang: str):
    """From the identifier page to wherever the password step leads."""
    assert page.status_int == 200, page.status
    assert_language(page, lang, "identifier")
    form = page.forms["login-form"]
    form["identifier"] = number
    page = browser.follow(form.submit())
    form = page.forms["image-form"]
    form["confirm"] = True
    page = browser.follow(form.submit())
    form = page.forms["password-form"]
    form["password"] = password
    return browser.follow(form.submit())


def change_password(browser: Browser, page, lang: str, *, choose: bool):
    """The forced change; an operator's account also chooses image and phrase."""
    assert urlsplit(page.request.url).path == "/password/new", page.request.url
    assert_language(page, lang, "change")
    form = page.forms["new-password-form"]
    form["password"] = form["password_confirm"] = NEW_PASSWORD
    if choose:
        form["security_image"] = "umbrella"
    else:
        assert "security_image" not in form.fields
    return browser.follow(form.submit())


def assert_nothing_sent_before_the_change(browser: Browser, continuation: str):
    """AUTH-13: the continuation asked for again still ends at the change form."""
    early = browser.get(continuation)
    assert early.status_int == 303
    assert urlsplit(early.headers["Location"]).path == "/password/new"
    assert "SAMLResponse" not in early.text


def start(browser: Browser, sp, how: str):
    """Start at the SP: (the IdP's first page after its redirects, request ID)."""
    if how == "redirect":
        path, request_id = sp.redirect_request(relay_state="/kursus/42")
        first = browser.get(path)
    else:
        fields, request_id = sp.post_request(relay_state="/kursus/42")
        first = browser.cross_site_post("/saml/sso/post", fields, f"https://{sp.host}")
    return browser.follow(first), request_id


def sp_row_id(world: World, sp) -> int:
    with Session(world.engine) as session:
        return session.scalar(
            select(ServiceProvider.id).where(ServiceProvider.entity_id == sp.entity_id)
        )


def arrive(world: World, browser: Browser, sp, how: str):
    """Start at the SP (Redirect, POST) or the portal link (IdP-initiated)."""
    if how == "idp":
        first = browser.get(f"/saml/init/{sp_row_id(world, sp)}?RelayState=/kursus/42")
        assert first.status_int == 303
        return browser.follow(first), None
    return start(browser, sp, how)


def assert_received(
    sp, page, request_id, lang: str, world: World, number: str = "900101145678"
):
    """The SP validates the Response the browser carries to its ACS."""
    assert page.status_int == 200, page.text[:800]
    assert_language(page, lang, "post")
    form = Browser.post_form(page)
    assert form.action == sp.acs_url
    assert form.fields["RelayState"] == "/kursus/42"
    login = sp.consume(form.fields, request_id)
    assert login.status == SUCCESS
    user = world.user(number)
    assert login.name_id and login.name_id not in (user.identifier, user.email)
    uuid.UUID(login.attributes["uid"][0])
    assert login.attributes["uid"] != [str(user.id)]
    assert login.attributes["displayName"] == [user.full_name]
    assert login.attributes["mail"] == [user.email]
    assert login.attributes["isMemberOf"] == ["guru"]
    return login


# -- the three starts, with both SP libraries, in both languages ------------------

CASES = [
    (Pysaml2SP, "redirect", "ms"),
    (OneLoginSP, "redirect", "en"),
    (Pysaml2SP, "post", "en"),
    (OneLoginSP, "post", "ms"),
    (Pysaml2SP, "idp", "ms"),
    (OneLoginSP, "idp", "en"),
]


@pytest.mark.parametrize(
    ("sp_class", "how", "lang"),
    CASES,
    ids=[f"{c.library}-{how}-{lang}" for c, how, lang in CASES],
)
def test_operator_made_account_reaches_the_service_after_the_first_change(
    world, sp_class, how, lang
):
    sp = world.sp(sp_class)
    password = operator_adds_user(world, lang, "guru")
    browser = world.browser(lang)
    page, request_id = arrive(world, browser, sp, how)
    page = sign_in_with(browser, page, NUMBER, password, lang)
    # The change form says where the sign-in goes next.
    assert_language(page, lang, "continues")
    continuation = next(
        query_of(path)["next"] for path in browser.trail if path.startswith("/login?")
    )
    assert_nothing_sent_before_the_change(browser, continuation)
    page = browser.follow(browser.get("/password/new"))
    page = change_password(browser, page, lang, choose=True)
    assert_received(sp, page, request_id, lang, world)
    row = world.user()
    assert (row.must_change_password, row.security_image) == (False, "umbrella")


@pytest.mark.parametrize(
    ("sp_class", "how"),
    [(Pysaml2SP, "post"), (OneLoginSP, "redirect")],
    ids=["pysaml2-post", "python3-saml-redirect"],
)
def test_operator_reset_password_reaches_the_service_after_the_change(
    world, sp_class, how
):
    sp = world.sp(sp_class)
    first = operator_adds_user(world, "en", "guru")
    # The owner's first sign-in, done at idMe itself.
    browser = world.browser("en")
    page = sign_in_with(
        browser, browser.follow(browser.get("/login")), NUMBER, first, "en"
    )
    home = change_password(browser, page, "en", choose=True)
    assert urlsplit(home.request.url).path == "/"
    # Later the operator resets the password; the owner starts at the SP.
    ok(world.ini, "user", "reset-password", NUMBER)
    password = world.temporary_password()
    assert password != first
    browser = world.browser("en")
    page, request_id = arrive(world, browser, sp, how)
    page = sign_in_with(browser, page, NUMBER, password, "en")
    page = change_password(browser, page, "en", choose=False)
    assert_received(sp, page, request_id, "en", world)


@pytest.mark.parametrize("lang", ["ms", "en"])
def test_self_registered_user_reaches_the_service_after_the_change(world, lang):
    """Started at a service, registered from the sign-in page, then signed in."""
    sp = world.sp(Pysaml2SP)
    browser = world.browser(lang)
    page, request_id = arrive(world, browser, sp, "post")
    assert_language(page, lang, "identifier")
    page = browser.get(page.html.select_one("#register-link")["href"])
    done = browser.follow(registration.fill(page.forms["register-form"]).submit())
    assert urlsplit(done.request.url).path == "/register/done"
    # Meanwhile the school's operator gives the new account its role, and the
    # mail worker delivers the temporary password.
    number = "080512145678"
    ok(world.ini, "user", "grant", number, "guru")
    password = world.temporary_password(registration.VALID["email_confirm"])
    page = browser.follow(browser.get(done.html.select_one("#sign-in-link")["href"]))
    page = sign_in_with(browser, page, number, password, lang)
    # Image and phrase were chosen at registration: only the password now.
    assert_language(page, lang, "continues")
    page = change_password(browser, page, lang, choose=False)
    assert_received(sp, page, request_id, lang, world, number)


# -- what else a first sign-in may meet -------------------------------------------


def test_force_authn_request_is_answered_after_the_change(world):
    """ForceAuthn: the temporary password was typed after the request arrived."""
    sp = world.sp(OneLoginSP)
    password = operator_adds_user(world, "en", "guru")
    browser = world.browser("en")
    path, request_id = sp.redirect_request(relay_state="/kursus/42", force_authn=True)
    page = sign_in_with(
        browser, browser.follow(browser.get(path)), NUMBER, password, "en"
    )
    page = change_password(browser, page, "en", choose=True)
    assert_received(sp, page, request_id, "en", world)


def test_force_authn_started_while_the_change_is_pending_signs_in_again(world):
    """ForceAuthn after the temporary password: the new one is asked for too.

    Choosing a password in a session that already existed proves nothing new
    about who holds it, so the request waits for a sign-in after the change.
    """
    sp = world.sp(Pysaml2SP)
    password = operator_adds_user(world, "ms", "guru")
    browser = world.browser("ms")
    page = sign_in_with(
        browser, browser.follow(browser.get("/login")), NUMBER, password, "ms"
    )
    path, request_id = sp.redirect_request(relay_state="/kursus/42", force_authn=True)
    page = browser.follow(browser.get(path))
    assert_language(page, "ms", "continues")
    page = change_password(browser, page, "ms", choose=True)
    # The sign-in page, on its way to the service; nothing sent yet.
    assert urlsplit(page.request.url).path == "/login"
    page = sign_in_with(browser, page, NUMBER, NEW_PASSWORD, "ms")
    assert_received(sp, page, request_id, "ms", world)
    # Control: without ForceAuthn the next request needs no sign-in.
    browser.trail.clear()
    path, request_id = sp.redirect_request(relay_state="/kursus/42")
    assert_received(sp, browser.follow(browser.get(path)), request_id, "ms", world)
    assert not browser.sign_in_pages()


def test_is_passive_while_the_change_is_pending_gets_no_passive(world):
    """IsPassive never shows a page, the change form included; no assertion."""
    sp = world.sp(Pysaml2SP)
    password = operator_adds_user(world, "ms", "guru")
    browser = world.browser("ms")
    login = browser.follow(browser.get("/login"))
    change_page = sign_in_with(browser, login, NUMBER, password, "ms")
    assert urlsplit(change_page.request.url).path == "/password/new"
    path, request_id = sp.redirect_request(is_passive=True)
    page = browser.follow(browser.get(path))
    answer = sp.consume(Browser.post_form(page).fields, request_id)
    assert answer.status == NO_PASSIVE
    assert answer.name_id is None and answer.attributes == {}
    # Control: once the password is changed, the same kind of request succeeds.
    change_password(
        browser, browser.follow(browser.get("/password/new")), "ms", choose=True
    )
    path, request_id = sp.redirect_request(is_passive=True)
    page = browser.follow(browser.get(path))
    assert sp.consume(Browser.post_form(page).fields, request_id).status == SUCCESS


@pytest.mark.parametrize("how", ["redirect", "post", "idp"])
def test_sign_in_started_while_the_change_is_pending_continues_after_it(world, how):
    """AUTH-13: a sign-in started with the change pending is answered only after it.

    Signed in with the temporary password, left the change form, then opened
    the service: the request waits for the change, then reaches the SP.
    """
    sp = world.sp(OneLoginSP)
    password = operator_adds_user(world, "en", "guru")
    browser = world.browser("en")
    page = sign_in_with(
        browser, browser.follow(browser.get("/login")), NUMBER, password, "en"
    )
    assert urlsplit(page.request.url).path == "/password/new"
    assert page.html.select_one("#continues-to-service") is None
    page, request_id = arrive(world, browser, sp, how)
    # Back at the change form, which now says where it leads; nothing sent.
    assert_language(page, "en", "continues")
    page = change_password(browser, page, "en", choose=True)
    assert_received(sp, page, request_id, "en", world)


def test_request_expired_during_the_change_lands_home_and_says_so(world):
    """The parked request outlived: idMe's home page, told both things."""
    sp = world.sp(Pysaml2SP)
    password = operator_adds_user(world, "ms", "guru")
    browser = world.browser("ms")
    page, _ = arrive(world, browser, sp, "post")
    page = sign_in_with(browser, page, NUMBER, password, "ms")
    assert_language(page, "ms", "continues")
    # idp.saml.pending_seconds pass while the user chooses a password.
    with Session(world.engine) as session, session.begin():
        session.execute(
            update(PendingSamlRequest).values(
                expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
            )
        )
    page = change_password(browser, page, "ms", choose=True)
    assert page.status_int == 200
    assert urlsplit(page.request.url).path == "/"
    notes = [note.get_text(" ", strip=True) for note in page.html.select(".flash")]
    assert notes[0] == TEXT["ms"]["password_set"]
    assert TEXT["ms"]["expired"] in notes[1]
    assert page.html.select_one("form#saml-post-form") is None
    assert world.user().must_change_password is False
    # Starting again at the service needs no second sign-in.
    browser.trail.clear()
    page, request_id = arrive(world, browser, sp, "post")
    assert not browser.sign_in_pages()
    assert_received(sp, page, request_id, "ms", world)


def test_missing_role_after_the_change_shows_no_access(world):
    """SAML-32 after the first change: the no-access page, nothing sent."""
    sp = world.sp(OneLoginSP)
    password = operator_adds_user(world, "en")  # no role yet
    browser = world.browser("en")
    page, _ = arrive(world, browser, sp, "redirect")
    page = sign_in_with(browser, page, NUMBER, password, "en")
    page = change_password(browser, page, "en", choose=True)
    assert page.status_int == 403
    assert (
        page.html.select_one("[data-error-code]")["data-error-code"] == "saml_no_access"
    )
    assert_language(page, "en", "no_access")
    assert TEXT["ms"]["no_access"] in page.text
    assert page.html.select_one("form#saml-post-form") is None
    assert world.user().must_change_password is False
    with Session(world.engine) as session:
        refused = session.scalars(
            select(AuditEvent).where(AuditEvent.event == "saml.sso.refused")
        ).all()
    assert [event.detail["sp"] for event in refused] == [sp.entity_id]
    # Control: the operator grants the role; the next start reaches the SP.
    ok(world.ini, "user", "grant", NUMBER, "guru")
    page, request_id = arrive(world, browser, sp, "redirect")
    assert_received(sp, page, request_id, "en", world)
