"""Single sign-on through the IdP's own pages, with hand-made requests.

The real SP libraries are driven in tests/interop/; here every request is
written by tests/saml_requests.py so each check of an incoming AuthnRequest
can be attacked alone, with a control that differs only in the attack.
"""

from __future__ import annotations

import pytest
from lxml import etree
from sqlalchemy import func, select

from idp.models import (
    PendingSamlRequest,
    PersistentNameId,
    SeenRequestId,
    SessionParticipant,
)
from tests.saml_pages import response_of, status_of
from tests.saml_requests import (
    SP_ACS,
    authn_request,
    redirect_query,
)
from tests.signin import sign_in

SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"


def test_sp_initiated_redirect_signs_in_then_posts_a_signed_response(
    testapp, dbsession, sp, user
):
    xml = authn_request()
    page = testapp.get("/saml/sso/redirect?" + redirect_query(xml, relay_state="r1"))
    assert page.status_int == 303
    login = page.location
    assert login.startswith("https://idp.test/login?next=")
    assert dbsession.scalar(select(func.count()).select_from(PendingSamlRequest)) == 1
    next_url = login.split("next=", 1)[1]
    done = sign_in(testapp, user, next_url=next_url)
    assert "/saml/sso/continue?r=" in done.location
    page = done.follow()
    form = page.forms["saml-post-form"]
    assert form.action == SP_ACS
    assert form["RelayState"].value == "r1"
    root = response_of(page)
    assert status_of(root) == [SUCCESS]
    assert root.get("InResponseTo") == etree.fromstring(xml).get("ID")
    # The parked request is answered once.
    again = testapp.get(done.location, status=400)
    assert again.html.select_one("[data-error-code]")["data-error-code"] == (
        "saml_expired"
    )


def test_signed_in_user_gets_a_response_straight_away(testapp, dbsession, sp, user):
    sign_in(testapp, user)
    page = testapp.get(
        "/saml/sso/redirect?" + redirect_query(authn_request(), relay_state="r1")
    )
    assert page.status_int == 200
    form = page.forms["saml-post-form"]
    assert form.action == SP_ACS
    assert form["RelayState"].value == "r1"
    root = response_of(page)
    assert status_of(root) == [SUCCESS]
    assert dbsession.scalar(select(func.count()).select_from(SessionParticipant)) == 1
    assert dbsession.scalar(select(func.count()).select_from(PersistentNameId)) == 1
    assert dbsession.scalar(select(func.count()).select_from(SeenRequestId)) == 1
    csp = page.headers["Content-Security-Policy"]
    assert "form-action 'self' https://sp.example.org" in csp
    assert "'nonce-" in csp


def test_the_post_page_is_minimal_bilingual_and_submits_under_the_csp(
    testapp, dbsession, sp, user
):
    """The page every SSO renders: no layout, the same form, both languages.

    One nonce'd script (the CSP's) submits it; without JavaScript the
    heading, the text and a visible button say what to do.
    """
    sign_in(testapp, user)
    for lang, heading, button in (
        ("ms", "Teruskan ke perkhidmatan", "Teruskan"),
        ("en", "Continue to the service", "Continue"),
    ):
        testapp.set_cookie("idp_lang", lang)
        page = testapp.get("/saml/sso/redirect?" + redirect_query(authn_request()))
        html = page.html
        assert html.html["lang"] == lang
        assert html.select_one("main h1").get_text(strip=True) == heading
        assert html.title.get_text().startswith(heading)
        assert html.select_one("main p").get_text(strip=True)
        submit = html.select_one("form#saml-post-form button[type=submit]")
        assert submit.get_text(strip=True) == button
        fields = [i["name"] for i in html.select("form#saml-post-form input")]
        assert fields == ["SAMLResponse"]  # no RelayState was sent
        assert status_of(response_of(page)) == [SUCCESS]
        # Nothing of the full layout: no header, footer, links or other scripts.
        assert html.select("header, footer, nav, a") == []
        (script,) = html.select("script")
        assert not script.get("src")
        csp = page.headers["Content-Security-Policy"]
        assert f"'nonce-{script['nonce']}'" in csp
        assert "saml-post-form" in script.string and ".submit()" in script.string


@pytest.mark.postgresql
def test_saml_17_a_refused_request_still_counts_as_seen(committing_testapp, db_engine):
    """SAML-17: the replay record commits even when nothing else is written."""
    from sqlalchemy.orm import Session

    from idp.saml.registry import import_sp
    from tests.factories import make_module
    from tests.saml_metadata import make_sp_metadata

    with Session(db_engine) as session, session.begin():
        make_module(session, "emis")
        import_sp(session, make_sp_metadata(), module_code="emis")
    # IsPassive from a browser with no session: NoPassive, and no other row.
    xml = authn_request(is_passive=True)
    query = "/saml/sso/redirect?" + redirect_query(xml)
    page = committing_testapp.get(query)
    assert status_of(response_of(page))[-1].endswith(":NoPassive")
    with db_engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(SeenRequestId)) == 1
    again = committing_testapp.get(query, status=400)
    assert again.html.select_one("[data-error-code]")["data-error-code"] == (
        "saml_replay"
    )


@pytest.mark.postgresql
def test_saml_17_a_repeat_sso_commits_its_replay_record(committing_testapp, db_engine):
    """SAML-17 with real commits: a signed-in user's repeat SSO writes nothing
    but its replay record, through Core on the session's connection, and that
    record commits (the transaction manager sees no ORM write and would roll
    the request back unless told): the same request again is refused.
    """
    from tests.factories import commit_sp_and_user

    number = commit_sp_and_user(db_engine)
    sign_in(committing_testapp, number)
    for _ in range(2):  # the first SSO records the participant; the second not
        page = committing_testapp.get(
            "/saml/sso/redirect?" + redirect_query(authn_request())
        )
        assert status_of(response_of(page)) == [SUCCESS]
    query = "/saml/sso/redirect?" + redirect_query(authn_request())
    assert status_of(response_of(committing_testapp.get(query))) == [SUCCESS]
    with db_engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(SeenRequestId)) == 3
    again = committing_testapp.get(query, status=400)
    assert again.html.select_one("[data-error-code]")["data-error-code"] == (
        "saml_replay"
    )


@pytest.mark.postgresql
def test_saml_17_postgresql_records_the_request_in_the_role_gates_statement(
    committing_testapp, db_engine, monkeypatch
):
    """SAML-17 on PostgreSQL: a signed-in user's repeat SSO is three
    statements (the session, the SP, the role gate writing the replay record
    in the same round trip), and a replayed request is refused before
    anything is signed. On SQLite the record stays a statement of its own,
    after the signatures (the writer's turn is held only for it)."""
    from sqlalchemy import event

    import idp.saml.crypto
    from tests.factories import commit_sp_and_user

    number = commit_sp_and_user(db_engine)
    sign_in(committing_testapp, number)
    first = committing_testapp.get(
        "/saml/sso/redirect?" + redirect_query(authn_request())
    )
    assert status_of(response_of(first)) == [SUCCESS]

    statements: list[str] = []
    signatures: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        statements.append(" ".join(statement.split()))

    signer = idp.saml.crypto._sign_enveloped

    def counting(*args, **kwargs):
        signatures.append("signed")
        return signer(*args, **kwargs)

    monkeypatch.setattr(idp.saml.crypto, "_sign_enveloped", counting)
    event.listen(db_engine, "before_cursor_execute", seen)
    try:
        query = "/saml/sso/redirect?" + redirect_query(authn_request())
        assert status_of(response_of(committing_testapp.get(query))) == [SUCCESS]
        inserts = [s for s in statements if "INSERT INTO seen_request_ids" in s]
        assert len(inserts) == 1
        if db_engine.dialect.name == "postgresql":
            assert len(statements) == 3, statements
            assert inserts[0].startswith("WITH seen AS")
            assert "role_modules" in inserts[0]  # the gate's own statement
        else:
            assert inserts[0].startswith("INSERT")
        assert len(signatures) == 2
        signatures.clear()
        again = committing_testapp.get(query, status=400)
    finally:
        event.remove(db_engine, "before_cursor_execute", seen)
    assert again.html.select_one("[data-error-code]")["data-error-code"] == (
        "saml_replay"
    )
    # The refusal's error Response is signed (one signature) for the SP; on
    # SQLite the replayed Response's two were made before the record refused it.
    postgresql = db_engine.dialect.name == "postgresql"
    assert len(signatures) == (1 if postgresql else 3)
    with db_engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(SeenRequestId)) == 2
