"""Where the forced password change goes next: only ever this site's own pages.

Issue 12 item 1 keeps the page a sign-in was going to (a service's parked
request, a portal link) in the session while the user chooses a password,
and goes there once it is set. That value comes from the sign-in page's
``next`` field and the registration page's ``next`` parameter, which anyone
can craft: it must stay a path on this site (WEB-08), and be used once.
The end-to-end runs with real SPs are in
``tests/interop/test_first_sign_in_sso.py``.
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qs, quote_plus, urlsplit

import pytest

from idp.db import utcnow
from tests.factories import NEW_PASSWORD, make_user
from tests.signin import sign_in

OFF_SITE = [
    "https://evil.example/",
    "//evil.example/",
    "/\\evil.example/",
    "https:evil.example",
    "/\r\nLocation: https://evil.example/",
]


def pending_user(dbsession):
    return make_user(
        dbsession,
        must_change_password=True,
        temp_password_expires_at=utcnow() + dt.timedelta(hours=72),
    )


def change(testapp):
    form = testapp.get("/password/new?lang=en").forms["new-password-form"]
    form["password"] = form["password_confirm"] = NEW_PASSWORD
    return form.submit(status=303)


@pytest.mark.parametrize("target", OFF_SITE)
def test_web_08_continuation_after_the_change_never_leaves_the_site(
    testapp, dbsession, target
):
    """WEB-08: a crafted ``next`` on the sign-in page ends at idMe's home."""
    user = pending_user(dbsession)
    landed = sign_in(testapp, user, next_url=quote_plus(target), lang=None)
    assert urlsplit(landed.location).path == "/password/new"
    page = testapp.get("/password/new?lang=en")
    assert page.html.select_one("#continues-to-service") is None
    done = change(testapp)
    assert urlsplit(done.location).netloc == "idp.test"
    assert urlsplit(done.location).path == "/"


def test_continuation_to_an_idme_page_after_the_change(testapp, dbsession):
    """The control: a page of this site is where the change leads, once."""
    user = pending_user(dbsession)
    landed = sign_in(testapp, user, next_url=quote_plus("/account"), lang=None)
    assert urlsplit(landed.location).path == "/password/new"
    page = testapp.get("/password/new?lang=en")
    # Not a service: the form does not promise one.
    assert page.html.select_one("#continues-to-service") is None
    done = change(testapp)
    assert urlsplit(done.location).path == "/account"
    assert testapp.get("/account", status=200)


def test_signing_out_forgets_the_continuation(testapp, dbsession):
    """A continuation belongs to one sign-in: after "Log keluar" it is gone."""
    first = pending_user(dbsession)
    sign_in(testapp, first, next_url=quote_plus("/account"), lang=None)
    testapp.get("/logout").forms["logout-form"].submit(status=303)
    second = pending_user(dbsession)
    assert urlsplit(sign_in(testapp, second, lang=None).location).path == (
        "/password/new"
    )
    assert urlsplit(change(testapp).location).path == "/"


@pytest.mark.parametrize("target", [*OFF_SITE, "/account"])
def test_web_08_registration_passes_on_only_a_page_of_this_site(testapp, target):
    """From the sign-in page to registration and back, ``next`` stays on site."""
    login = testapp.get("/login", params={"next": target, "lang": "en"})
    href = login.html.select_one("#register-link")["href"]
    register = testapp.get(href)
    kept = register.html.select_one("#register-form input[name=next]")
    done = testapp.get("/register/done", params={"next": target, "lang": "en"})
    link = done.html.select_one("#sign-in-link")["href"]
    if target == "/account":
        assert kept["value"] == "/account"
        assert urlsplit(link).path == "/login"
        assert parse_qs(urlsplit(link).query) == {"next": ["/account"]}
    else:
        assert kept is None
        assert link == "/"
