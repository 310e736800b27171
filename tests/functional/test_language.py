"""Words in the page's language: Malay first, English when chosen.

The walk below goes through every flow a person meets, page by page, in
Malay, and fails on any English message of the catalog shown on a Malay
page: a flash message that lost its translation, a form error, a hint.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import webtest
from babel.messages.pofile import read_po

from tests.app import environ
from tests.registration import fill, open_form, register, temporary_password_from

ROOT = Path(__file__).resolve().parents[2]
PLACEHOLDER = re.compile(r"%\([a-z_]+\)s|\$\{[a-z_]+\}")
ENGLISH_BROWSER = {"HTTP_ACCEPT_LANGUAGE": "en-GB,en;q=0.9"}
NUMBER = "080512-14-5678"
EMAIL = "aisyah.ahmad@example.com.my"
CHOSEN = "teh tarik kurang manis di kedai mamak"
CHANGED = "roti canai telur bawang dua keping"
RESET = "cendol pulut durian di tepi pantai"
LINK = re.compile(r"https://\S+/password/reset/[A-Za-z0-9_-]+")
NEW_EMAIL = "aisyah.baharu@example.com.my"
EMAIL_LINK = re.compile(r"https://\S+/account/email/confirm/[A-Za-z0-9_-]+")


def _english_only_messages() -> list[tuple[str, re.Pattern]]:
    """Each msgid whose Malay text differs, as a pattern over a page's words."""
    with open(ROOT / "idp/locale/ms/LC_MESSAGES/idp.po", "rb") as handle:
        catalog = read_po(handle, locale="ms")
    found = []
    for message in catalog:
        if not message.id or message.string == message.id:
            continue
        text = " ".join(message.id.split())
        parts = [re.escape(part) for part in PLACEHOLDER.split(text)]
        pattern = r"(?<!\w)" + ".+?".join(parts) + r"(?!\w)"
        found.append((text, re.compile(pattern)))
    return found


ENGLISH = _english_only_messages()


def plain(message) -> str:
    return message.get_body(("plain",)).get_content()


def words(page) -> str:
    """What a person reads (or hears) on the page: text and accessible names."""
    soup = page.html
    for hidden in soup.select("script, style"):
        hidden.decompose()
    # A part marked as English (the error page's second language, the
    # language switch) is meant to be English (WCAG 3.1.2).
    for part in soup.select("body [lang]:not([lang=ms])"):
        part.decompose()
    texts = [soup.get_text(" ")]
    for tag in soup.find_all(True):
        for attribute in ("alt", "title", "aria-label", "placeholder"):
            if tag.get(attribute):
                texts.append(tag[attribute])
    return " ".join(" ".join(texts).split())


class Walk:
    """A browser that records each page it reads and the English it found."""

    def __init__(self, testapp):
        self.testapp = testapp
        self.english: dict[str, list[str]] = {}
        self.pages = 0

    def read(self, page, where: str):
        assert page.status_int < 500, where
        assert page.content_type == "text/html", where
        text = words(page)
        shown = [msgid for msgid, pattern in ENGLISH if pattern.search(text)]
        if shown:
            self.english[where] = shown
        self.pages += 1
        return page

    def get(self, url: str, **kw):
        return self.read(self.testapp.get(url, **kw), f"GET {url}")

    def submit(self, form, where: str, button: str | None = None, **kw):
        response = form.submit(button, **kw)
        if response.status_int == 303:
            location = urlsplit(response.location)
            url = location.path + (f"?{location.query}" if location.query else "")
            return self.read(response.follow(), f"{where} -> {url}")
        return self.read(response, where)


def fresh_each_request(app, dbsession):
    """The app, reading every row afresh at each request as a real server does.

    The tests share one database session across requests; without this a
    value stored in a JSON column (the session's flash messages) would come
    back as the very Python object stored, not as what the database holds.
    """

    def application(environ, start_response):
        dbsession.flush()
        dbsession.expire_all()
        return app(environ, start_response)

    return application


def test_every_page_of_every_flow_speaks_malay(app, tm, dbsession, mailbox):
    """Register, sign in, forced change, account, email change, sign-out, forgot
    password, and the footer's pages: in ms."""
    testapp = webtest.TestApp(
        fresh_each_request(app, dbsession),
        extra_environ=environ(tm, dbsession, **ENGLISH_BROWSER),
    )
    walk = Walk(testapp)
    home = walk.get("/?lang=ms")
    walk.get("/help")
    footer = [a["href"] for a in home.html.select("footer a[href^='/']")]
    assert "/privacy" in footer and "/developers" in footer
    for path in footer:
        walk.get(path)
    # The error pages: a mistyped address, a broken reset link.
    walk.get("/no-such-page", status=404)
    walk.get("/password/reset/not-a-real-link", status="*")

    # Registration: a refused form first, then the real one.
    form = fill(open_form(testapp), email_confirm="someone.else@example.com.my")
    walk.read(form.submit(expect_errors=True), "register refused")
    done = register(testapp)
    assert done.status_int == 303
    walk.read(done.follow(), "register done")
    temporary = temporary_password_from(mailbox(EMAIL)[-1])

    # Sign-in: each step, a wrong password, a refused tick, "not my image".
    walk.get("/login")
    form = walk.get("/login").forms["login-form"]
    form["identifier"] = "not a number"
    walk.submit(form, "login bad number", expect_errors=True)
    form["identifier"] = NUMBER
    image = walk.submit(form, "login identifier")
    walk.submit(image.forms["image-form"], "login unticked", expect_errors=True)
    walk.get("/login/not-my-image")
    form = walk.get("/login").forms["login-form"]
    form["identifier"] = NUMBER
    image = walk.submit(form, "login identifier again")
    image.forms["image-form"]["confirm"] = True
    password_page = walk.submit(image.forms["image-form"], "login image")
    form = password_page.forms["password-form"]
    form["password"] = "not the temporary one"
    form = walk.submit(form, "login wrong password", expect_errors=True).forms[
        "password-form"
    ]
    form["password"] = temporary

    # The forced change: a mismatch, then the new password and its flash.
    change = walk.submit(form, "login temporary password")
    form = change.forms["new-password-form"]
    form["password"], form["password_confirm"] = CHOSEN, CHOSEN + " lain"
    form = walk.submit(form, "forced change mismatch", expect_errors=True).forms[
        "new-password-form"
    ]
    form["password"] = form["password_confirm"] = CHOSEN
    home = walk.submit(form, "forced change")
    assert home.html.select_one(".flash"), "the forced change says it is done"

    # Akaun saya: each page, each change and its flash.
    for url in ("/account", "/account/sessions"):
        walk.get(url)
    form = walk.get("/account/password").forms["account-password-form"]
    form["current_password"] = "not my password at all"
    form["password"] = form["password_confirm"] = CHANGED
    form = walk.submit(form, "account password wrong", expect_errors=True).forms[
        "account-password-form"
    ]
    form["current_password"] = CHOSEN
    form["password"] = form["password_confirm"] = CHANGED
    assert walk.submit(form, "account password").html.select_one(".flash")
    form = walk.get("/account/security").forms["account-security-form"]
    form["security_image"] = "rocket"
    form["security_phrase"] = "Teh tarik kurang manis"
    form["current_password"] = CHANGED
    assert walk.submit(form, "account security").html.select_one(".flash")
    # The email change: refused, asked for, confirmed from the mailed link.
    form = walk.get("/account/email").forms["account-email-form"]
    form["email"], form["email_confirm"] = NEW_EMAIL, EMAIL
    form = walk.submit(form, "email change refused", expect_errors=True).forms[
        "account-email-form"
    ]
    form["email"] = form["email_confirm"] = NEW_EMAIL
    form["current_password"] = CHANGED
    assert walk.submit(form, "email change").html.select_one(".flash")
    link = urlsplit(EMAIL_LINK.search(plain(mailbox(NEW_EMAIL)[-1]))[0]).path
    confirm = walk.read(testapp.get(link).follow(), "email link")
    form = confirm.forms["email-confirm-form"]
    assert walk.submit(form, "email confirmed").html.select_one(".flash")
    form = walk.get("/account/sessions").forms["signout-all-form"]
    assert walk.submit(form, "sign out everywhere", "action").html.select_one(".flash")

    # Sign in again, then sign out.
    form = walk.get("/login").forms["login-form"]
    form["identifier"] = NUMBER
    image = walk.submit(form, "login identifier, third")
    image.forms["image-form"]["confirm"] = True
    form = walk.submit(image.forms["image-form"], "login image, third").forms[
        "password-form"
    ]
    form["password"] = CHANGED
    walk.submit(form, "login password")
    form = walk.get("/logout").forms["logout-form"]
    walk.submit(form, "sign out")
    walk.get("/logout")

    # Forgot password, from the emailed link to the flash on the sign-in page.
    form = walk.get("/password/forgot").forms["reset-request-form"]
    form["email"] = "not an email"
    form = walk.submit(form, "forgot bad email", expect_errors=True).forms[
        "reset-request-form"
    ]
    form["email"] = NEW_EMAIL
    walk.submit(form, "forgot")
    link = urlsplit(LINK.search(plain(mailbox(NEW_EMAIL)[-1]))[0]).path
    verify = walk.read(testapp.get(link).follow(), "reset link")
    form = verify.forms["reset-verify-form"]
    form["email"], form["identifier"] = NEW_EMAIL, NUMBER
    new = walk.submit(form, "reset verify")
    form = new.forms["reset-new-form"]
    form["password"], form["password_confirm"] = RESET, RESET + " x"
    form = walk.submit(form, "reset mismatch", expect_errors=True).forms[
        "reset-new-form"
    ]
    form["password"] = form["password_confirm"] = RESET
    signed_out = walk.submit(form, "reset")
    assert signed_out.html.select_one(".flash"), "the reset says it is done"

    assert walk.pages >= 30
    assert walk.english == {}, "English on Malay pages"


def test_the_walk_would_see_english(testapp):
    """The control: the same reading finds the English of an English page."""
    walk = Walk(testapp)
    walk.get("/login?lang=en")
    assert "Sign in to idMe" in walk.english["GET /login?lang=en"]
    walk = Walk(testapp)
    walk.get("/login?lang=ms")
    assert walk.english == {}


@pytest.mark.parametrize(
    "accept", ["en-GB,en;q=0.9", "en-US", "en", "ms;q=0.1,en", "fr,zh;q=0.5", ""]
)
def test_malay_is_the_default_whatever_the_browser_prefers(app, testapp, accept):
    """Issue 12.7: an English-preferring browser gets Malay until English is chosen."""
    page = testapp.get("/login", headers={"Accept-Language": accept})
    assert page.html.html["lang"] == "ms"
    assert "Daftar Masuk ke idMe" in page.text


def test_english_when_chosen_is_remembered_across_pages(testapp):
    """Choosing English on the language switch keeps English on later pages."""
    home = testapp.get("/", headers={"Accept-Language": "ms"})
    assert home.html.html["lang"] == "ms"
    switch = home.html.select_one('nav.language a[hreflang="en"]')["href"]
    chosen = testapp.get(switch)
    assert chosen.html.html["lang"] == "en"
    for url in ("/login", "/register", "/help", "/password/forgot"):
        page = testapp.get(url, headers={"Accept-Language": "ms"})
        assert page.html.html["lang"] == "en", url
    # And back: Malay chosen again is remembered too.
    back = chosen.html.select_one('nav.language a[hreflang="ms"]')["href"]
    testapp.get(back)
    assert testapp.get("/login").html.html["lang"] == "ms"


def test_a_flash_message_keeps_its_domain_and_mapping_through_json():
    """The flash as the database returns it translates, its values filled in."""
    import json

    from pyramid.i18n import make_localizer

    from idp.forms.register import MESSAGES
    from idp.sessions import _flash_message, _flash_stored

    message = MESSAGES["security_phrase.length"]
    back = _flash_message(json.loads(json.dumps(_flash_stored(message))))
    localizer = make_localizer("ms", [str(ROOT / "idp/locale")])
    assert localizer.translate(back) == localizer.translate(message)
    assert "3" in localizer.translate(back) and "40" in localizer.translate(back)
    assert localizer.translate(back) != message.interpolate()
    # Plain text (an older session's message) passes through unchanged.
    assert _flash_message(json.loads(json.dumps(_flash_stored("plain")))) == "plain"


def test_the_language_switch_keeps_the_rest_of_the_address(testapp):
    """Changing language half-way keeps ``next``: the flow goes on in English."""
    page = testapp.get("/login?next=/account")
    switch = page.html.select_one('nav.language a[hreflang="en"]')["href"]
    assert switch == "/login?next=%2Faccount&lang=en"
    english = testapp.get(switch)
    assert english.forms["login-form"]["next"].value == "/account"


def test_the_language_switch_never_repeats_a_saml_message():
    """On a SAML endpoint the switch drops the one-time message, elsewhere not."""
    from pyramid.request import Request

    from idp.i18n import switch_url

    saml = Request.blank("/saml/sso/redirect?SAMLRequest=abc&RelayState=x&lang=ms")
    assert switch_url(saml, "en") == "/saml/sso/redirect?lang=en"
    # The control: any other page keeps its query.
    page = Request.blank("/register?next=%2Fsaml%2Finit%2F1&lang=ms")
    assert switch_url(page, "en") == "/register?next=%2Fsaml%2Finit%2F1&lang=en"


def test_a_query_that_is_not_utf8_still_gets_a_language_and_a_switch():
    """The negotiator and the switch read the query without failing on bad bytes."""
    from pyramid.request import Request

    from idp.i18n import negotiate_locale, switch_url

    broken = Request.blank("/login?x=%ff&lang=en")
    assert negotiate_locale(broken) == "ms"
    assert switch_url(broken, "en") == "/login?lang=en"
    # The control: the same query in UTF-8 keeps its value and its choice.
    fine = Request.blank("/login?x=%C3%A9&lang=en")
    assert negotiate_locale(fine) == "en"
    assert switch_url(fine, "ms") == "/login?x=%C3%A9&lang=ms"
