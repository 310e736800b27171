"""Pages, errors, headers, CSRF and languages through the real app."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from idp.models import IdpSession, Role
from idp.requestlog import REFERENCE_PATTERN
from idp.sessions import hash_token
from tests.factories import count

ROUTES = [
    "/",
    "/healthz",
    "/saml/metadata",
    "/static/css/idp.css",
    "/no-such-page",
    "/admin",
    "/admin/users",
]


def test_home_in_malay_by_default(testapp):
    response = testapp.get("/")
    assert response.status_int == 200
    assert '<html lang="ms">' in response.text
    assert "Daftar Masuk ke idMe" in response.text


def test_home_in_english_by_choice(testapp):
    response = testapp.get("/?lang=en")
    assert '<html lang="en">' in response.text
    assert "Sign in to idMe" in response.text
    # The choice is remembered for the next page.
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("idp_lang=en;")
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert '<html lang="en">' in testapp.get("/").text


def test_accept_language_does_not_override_malay(testapp):
    """Malay is the service's language; English is chosen on the page (issue 12.7)."""
    response = testapp.get("/", headers={"Accept-Language": "en-GB,en;q=0.8"})
    assert '<html lang="ms">' in response.text


def test_unknown_language_falls_back_to_malay(testapp):
    response = testapp.get("/?lang=fr", headers={"Accept-Language": "fr"})
    assert '<html lang="ms">' in response.text


def test_language_switch_links_keep_the_page(testapp):
    response = testapp.get("/no-such-page", status=404)
    assert 'href="/no-such-page?lang=en"' in response.text


@pytest.mark.parametrize("path", ROUTES)
def test_web_05_anti_framing_and_security_headers_on_every_route(testapp, path):
    """WEB-05: every route forbids framing and carries the security headers."""
    response = testapp.get(path, expect_errors=True)
    headers = response.headers
    assert headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "'unsafe-inline'" not in headers["Content-Security-Policy"]
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_no_hsts_in_development(testapp):
    assert "Strict-Transport-Security" not in testapp.get("/").headers


@pytest.mark.parametrize(
    ("locale", "title", "second"),
    [
        ("ms", "Halaman tidak ditemui", "Page not found"),
        ("en", "Page not found", "Halaman tidak ditemui"),
    ],
)
def test_404_page_is_bilingual(testapp, locale, title, second):
    response = testapp.get(f"/nowhere?lang={locale}", status=404)
    assert f"<h1>{title}</h1>" in response.text
    assert f"<h2>{second}</h2>" in response.text
    assert 'data-error-code="not_found"' in response.text
    assert re.search(f'class="reference">{REFERENCE_PATTERN}<', response.text)


@pytest.mark.parametrize("locale", ["ms", "en"])
def test_405_for_an_undeclared_method(testapp, locale):
    response = testapp.post(f"/healthz?lang={locale}", status=405)
    assert response.headers["Allow"] == "GET, HEAD"
    assert 'data-error-code="method_not_allowed"' in response.text
    assert (
        "Tindakan tidak dibenarkan" if locale == "ms" else "Action not allowed"
    ) in (response.text)


def test_web_12_method_override_headers_are_ignored(testapp, dbsession):
    """WEB-12: a GET dressed as POST stays a GET: the form is not submitted."""
    before = count(dbsession, IdpSession)
    response = testapp.get(
        "/_probe/form",
        headers={"X-HTTP-Method-Override": "POST"},
        params={"_method": "POST"},
    )
    assert response.text.startswith("<form")
    # Not even a session row: the form's token needs none until a POST stores data.
    assert count(dbsession, IdpSession) == before


def test_web_07_unknown_host_is_refused(testapp):
    """WEB-07: a Host the IdP does not serve gets the 400 page, not a page built on it."""
    response = testapp.get("/", headers={"Host": "evil.example"}, status=400)
    assert "evil.example" not in response.text
    assert 'data-error-code="bad_request"' in response.text
    # Control: the configured host is served.
    assert testapp.get("/", headers={"Host": "idp.test"}).status_int == 200


def test_ops_05_request_body_over_the_limit_is_refused(testapp, dbsession):
    """OPS-05: a body over idp.max_request_body gets the 413 page; nothing runs."""
    form = testapp.get("/_probe/form").forms["probe"]
    form["note"] = "x" * (1024 * 1024 + 1)
    response = form.submit(status=413)
    assert 'data-error-code="too_large"' in response.text
    # Control: the same form under the limit is accepted.
    form["note"] = "x" * 1000
    assert form.submit().text == "saved"


def test_web_01_post_without_csrf_token_is_refused(testapp, dbsession):
    """WEB-01: a cross-site POST (no token, or a wrong one) is refused with 403."""
    testapp.get("/_probe/form")  # the browser holds a session id and a token
    rows = count(dbsession, IdpSession)
    response = testapp.post("/_probe/form", {"note": "forged"}, status=403)
    assert 'data-error-code="csrf"' in response.text
    assert "Borang anda telah tamat tempoh" in response.text
    assert "Your form has expired" in response.text
    response = testapp.post(
        "/_probe/form", {"note": "forged", "csrf_token": "wrong"}, status=403
    )
    # A valid token from another origin is refused too.
    form = testapp.get("/_probe/form").forms["probe"]
    form["note"] = "forged"
    form.submit(headers={"Origin": "https://evil.example"}, status=403)
    assert count(dbsession, IdpSession) == rows
    # Control: the token from the rendered form is accepted.
    form = testapp.get("/_probe/form").forms["probe"]
    form["note"] = "genuine"
    assert form.submit().text == "saved"
    session = dbsession.scalars(select(IdpSession)).one()
    assert session.data["note"] == "genuine"


def test_web_03_session_cookie_flags_and_hashed_id(testapp, dbsession):
    """WEB-03: HttpOnly, SameSite=Lax; the database keeps only a hash of the id."""
    page = testapp.get("/_probe/form")
    form = page.forms["probe"]
    form["note"] = "stored"
    # The cookie-only id the form was shown under, then the stored session's.
    for response in (page, form.submit()):
        cookie = response.headers["Set-Cookie"]
        match = re.match(r"idp_session=([^;]+);", cookie)
        assert match
        token = match.group(1)
        assert "HttpOnly" in cookie
        assert "SameSite=Lax" in cookie
        assert "Path=/" in cookie
    row = dbsession.scalars(select(IdpSession)).one()
    assert row.token_hash == hash_token(token)
    assert token not in row.token_hash
    assert len(token) >= 43  # 256 bits, base64url


@pytest.mark.postgresql
def test_data_10_unexpected_error_shows_no_internals(committing_testapp, db_engine):
    """DATA-10: a forced fault gives the bilingual 500 page with a reference, nothing else.

    The request wrote a row before failing: with real transaction handling
    that row is gone (nothing half-written).
    """
    response = committing_testapp.get("/_probe/boom", status=500)
    text = response.text
    for leak in ("Traceback", "hunter2", "/srv/secret", "RuntimeError", "SELECT"):
        assert leak not in text
    assert 'data-error-code="server_error"' in text
    assert "Ada sesuatu yang tidak kena" in text
    assert "Something went wrong" in text
    assert re.search(f'class="reference">{REFERENCE_PATTERN}<', text)
    with Session(db_engine) as session:
        assert count(session, Role) == 0


def test_healthz_reports_database_and_keys(testapp):
    response = testapp.get("/healthz")
    assert response.json == {"status": "ok", "database": "ok", "keys": "ok"}
    assert response.headers["Cache-Control"].startswith("max-age=0")


def test_healthz_reports_unusable_keys(testapp, app, keypair):
    mode = keypair.key_file.stat().st_mode
    keypair.key_file.chmod(0o644)
    try:
        response = testapp.get("/healthz", status=503)
    finally:
        keypair.key_file.chmod(mode)
    assert response.json["keys"] == "unavailable"
    assert response.json["status"] == "unavailable"
