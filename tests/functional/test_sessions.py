"""Server-side sessions: lifetimes, flags in production, and the savepoint mechanics."""

from __future__ import annotations

import datetime as dt

import lxml.html
import pytest
import webtest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from idp.models import IdpSession, Role
from tests.app import environ, make_app

pytestmark = pytest.mark.postgresql


def _session_cookie(response) -> str:
    for header in response.headers.getall("Set-Cookie"):
        if header.startswith("idp_session="):
            return header
    raise AssertionError("no session cookie set")


def store_note(testapp, note: str = "kept") -> None:
    """Give the browser's session data, so that it has a row."""
    form = testapp.get("/_probe/form").forms["probe"]
    form["note"] = note
    assert form.submit().text == "saved"


def test_web_04_idle_session_is_not_reused(testapp, dbsession):
    """WEB-04: past the idle timeout the old session is deleted and a new one starts."""
    store_note(testapp)
    row = dbsession.scalars(select(IdpSession)).one()
    old_id = row.id
    # Control: within the idle limit the same session serves the next request.
    store_note(testapp)
    assert dbsession.scalars(select(IdpSession.id)).all() == [old_id]
    row.last_seen_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1801)
    dbsession.flush()
    store_note(testapp)
    ids = dbsession.scalars(select(IdpSession.id)).all()
    assert old_id not in ids
    assert len(ids) == 1


def test_web_04_session_past_its_absolute_lifetime_is_not_reused(testapp, dbsession):
    """WEB-04: a session past its absolute expiry is ended even if recently used."""
    store_note(testapp)
    row = dbsession.scalars(select(IdpSession)).one()
    old_id = row.id
    row.expires_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    dbsession.flush()
    store_note(testapp)
    assert old_id not in dbsession.scalars(select(IdpSession.id)).all()


@pytest.fixture(scope="module")
def production_app(settings, db_engine):
    production = {
        **settings,
        "idp.environment": "production",
        "idp.session_secret": "p" * 48,
        "idp.hmac_key": "q" * 48,
    }
    return make_app(production, db_engine, "tests.probe")


def test_web_03_production_cookie_is_secure_and_hsts_is_sent(
    production_app, tm, dbsession
):
    """WEB-03: outside development the session cookie is Secure; HSTS is on."""
    client = webtest.TestApp(production_app, extra_environ=environ(tm, dbsession))
    response = client.get("/_probe/form")
    cookie = _session_cookie(response)
    assert "; secure" in cookie.lower()
    assert "HttpOnly" in cookie
    assert response.headers["Strict-Transport-Security"].startswith("max-age=31536000")


def test_sqlite_and_postgresql_keep_the_outer_transaction_after_a_failed_savepoint(
    dbsession,
):
    """Uniqueness errors inside begin_nested() leave the request's transaction usable.

    This is what the pysqlite SAVEPOINT workaround is for; without it SQLite
    and PostgreSQL would disagree.
    """
    dbsession.add(
        Role(name="teacher", display_name_ms="Guru", display_name_en="Teacher")
    )
    dbsession.flush()
    with pytest.raises(IntegrityError), dbsession.begin_nested():
        dbsession.add(Role(name="teacher", display_name_ms="G", display_name_en="T"))
        dbsession.flush()
    dbsession.add(
        Role(name="parent", display_name_ms="Ibu bapa", display_name_en="Parent")
    )
    dbsession.flush()
    names = dbsession.scalars(select(Role.name).order_by(Role.name)).all()
    assert names == ["parent", "teacher"]
    assert dbsession.scalar(select(func.count()).select_from(Role)) == 2


def test_session_is_saved_inside_the_real_transaction(committing_testapp, db_engine):
    """With pyramid_tm really committing, the session row reaches the database.

    Saving on ``NewResponse`` ran after pyramid_tm's commit and failed with
    NoTransaction; the save must happen inside the request's transaction.
    """
    from sqlalchemy import func, select

    from idp.models import IdpSession

    store_note(committing_testapp)
    assert "idp_session" in committing_testapp.cookies
    with db_engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(IdpSession)) == 1
    store_note(committing_testapp, "kept again")


def _rows(dbsession) -> int:
    return dbsession.scalar(select(func.count()).select_from(IdpSession))


@pytest.mark.parametrize("lang", ["ms", "en"])
def test_anonymous_sign_in_pages_write_no_session_row(app, tm, dbsession, lang):
    """A flood of anonymous GET /login from fresh browsers leaves the table as it was."""
    before = _rows(dbsession)
    for _ in range(100):
        client = webtest.TestApp(app, extra_environ=environ(tm, dbsession))
        page = client.get(f"/login?lang={lang}")
        # The form's token, read with lxml: WebTest's ``forms`` parses the
        # page twice in Python (BeautifulSoup), twice the cost of the request.
        token = lxml.html.fromstring(page.body).xpath(
            '//form[@id="login-form"]//input[@name="csrf_token"]/@value'
        )
        assert token and token[0]
    assert _rows(dbsession) == before
    # The same browser coming back for the page also writes nothing.
    for _ in range(3):
        client.get(f"/login?lang={lang}")
    assert _rows(dbsession) == before


def test_lazy_session_form_still_submits_with_its_token(app, tm, dbsession):
    """The token shown with no row behind it is accepted; a session starts on the POST."""
    from tests.factories import display, make_user

    user = make_user(dbsession)
    client = webtest.TestApp(app, extra_environ=environ(tm, dbsession))
    form = client.get("/login?lang=en").forms["login-form"]
    assert _rows(dbsession) == 0
    form["identifier"] = display(user)
    image = form.submit(status=303).follow()
    assert "image-form" in image.forms
    assert _rows(dbsession) == 1


def test_web_01_lazy_session_token_is_bound_to_its_browser(app, tm, dbsession):
    """WEB-01: a token from one browser's cookie-only session is refused in another."""
    theirs = webtest.TestApp(app, extra_environ=environ(tm, dbsession))
    token = theirs.get("/_probe/form").forms["probe"]["csrf_token"].value
    mine = webtest.TestApp(app, extra_environ=environ(tm, dbsession))
    mine.get("/_probe/form")
    mine.post("/_probe/form", {"note": "x", "csrf_token": token}, status=403)
    # With no cookie at all, the token is worth nothing either.
    fresh = webtest.TestApp(app, extra_environ=environ(tm, dbsession))
    fresh.post("/_probe/form", {"note": "x", "csrf_token": token}, status=403)
    assert _rows(dbsession) == 0
    # Control: its own browser posts it.
    assert (
        theirs.post("/_probe/form", {"note": "x", "csrf_token": token}).text == "saved"
    )
    assert _rows(dbsession) == 1


def test_web_02_planted_anonymous_id_is_replaced_when_the_session_starts(
    app, tm, dbsession
):
    """WEB-02: an id fixed before any data is stored never names the stored row."""
    attacker = webtest.TestApp(app, extra_environ=environ(tm, dbsession))
    attacker.get("/_probe/form")
    planted = attacker.cookies["idp_session"]
    victim = webtest.TestApp(app, extra_environ=environ(tm, dbsession))
    victim.set_cookie("idp_session", planted)
    form = victim.get("/_probe/form").forms["probe"]
    form["note"] = "mine"
    assert form.submit().text == "saved"
    assert victim.cookies["idp_session"] != planted
    (row,) = dbsession.scalars(select(IdpSession)).all()
    from idp.sessions import hash_token

    assert row.token_hash == hash_token(victim.cookies["idp_session"])
