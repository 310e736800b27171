"""Server-side sessions: lifetimes, flags in production, and the savepoint mechanics."""

from __future__ import annotations

import datetime as dt

import pytest
import webtest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from idp.models import IdpSession, Role
from tests.conftest import environ, make_app


def _session_cookie(response) -> str:
    for header in response.headers.getall("Set-Cookie"):
        if header.startswith("idp_session="):
            return header
    raise AssertionError("no session cookie set")


def test_web_04_idle_session_is_not_reused(testapp, dbsession):
    """WEB-04: past the idle timeout the old session is deleted and a new one starts."""
    testapp.get("/_probe/form")
    row = dbsession.scalars(select(IdpSession)).one()
    old_id = row.id
    # Control: within the idle limit the same session serves the next request.
    testapp.get("/_probe/form")
    assert dbsession.scalars(select(IdpSession.id)).all() == [old_id]
    row.last_seen_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1801)
    dbsession.flush()
    testapp.get("/_probe/form")
    ids = dbsession.scalars(select(IdpSession.id)).all()
    assert old_id not in ids
    assert len(ids) == 1


def test_web_04_session_past_its_absolute_lifetime_is_not_reused(testapp, dbsession):
    """WEB-04: a session past its absolute expiry is ended even if recently used."""
    testapp.get("/_probe/form")
    row = dbsession.scalars(select(IdpSession)).one()
    old_id = row.id
    row.expires_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    dbsession.flush()
    testapp.get("/_probe/form")
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

    page = committing_testapp.get("/_probe/form")
    assert "idp_session" in committing_testapp.cookies
    with db_engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(IdpSession)) == 1
    form = page.forms["probe"]
    form["note"] = "kept"
    assert form.submit().text == "saved"
