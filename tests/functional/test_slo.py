"""Single logout: started by a service or at the IdP, propagated to the others.

Two SPs share one IdP session. The status page's frames are followed by
hand (WebTest runs no browser), each SP's answer is a hand-made, signed
LogoutResponse.
"""

from __future__ import annotations

import datetime as dt

import pytest
from lxml import etree
from sqlalchemy import func, select

from idp.models import IdpSession, LogoutLeg, Role, SessionParticipant
from idp.saml.registry import import_sp
from tests.app import browser
from tests.saml_metadata import make_sp_metadata
from tests.saml_pages import response_of
from tests.saml_requests import (
    SLO_REDIRECT,
    authn_request,
    decode_redirect,
    logout_request,
    logout_response,
    post_fields,
    redirect_query,
    sign_xml,
)
from tests.signin import sign_in

SP1 = "https://sp.example.org/sp"
SP2 = "https://two.example.org/sp"
SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
PARTIAL = "urn:oasis:names:tc:SAML:2.0:status:PartialLogout"


@pytest.fixture
def sps(dbsession, module):
    one = import_sp(dbsession, make_sp_metadata(SP1), module_code="emis")
    two = import_sp(dbsession, make_sp_metadata(SP2), module_code="emis")
    dbsession.flush()
    return one, two


def sso(testapp, entity_id: str) -> dict:
    """SSO to one SP; the NameID and SessionIndex it received."""
    base = entity_id.rsplit("/", 1)[0]
    xml = authn_request(issuer=entity_id, acs_url=f"{base}/acs")
    page = testapp.get("/saml/sso/redirect?" + redirect_query(xml))
    root = response_of(page)
    name_id = next(root.iter(f"{{{SAML}}}NameID"))
    statement = next(root.iter(f"{{{SAML}}}AuthnStatement"))
    return {
        "name_id": name_id.text,
        "format": name_id.get("Format"),
        "session_index": statement.get("SessionIndex"),
    }


def statuses(page) -> dict[str, str]:
    return {
        li.select_one(".service-name").get_text(): li["data-status"]
        for li in page.html.select("#logout-services li")
    }


def answer_frames(testapp, page, *, answer: bool = True) -> list[str]:
    """Follow each frame: the IdP's LogoutRequest out, the SP's answer back."""
    sent = []
    for frame in page.html.select("iframe.logout-frame"):
        out = testapp.get(frame["src"], status=303)
        request = decode_redirect(out.location)
        issuer = "https://" + out.location.split("/")[2] + "/sp"
        sent.append(issuer)
        if answer:
            xml = logout_response(in_response_to=request.get("ID"), issuer=issuer)
            back = testapp.get(
                "/saml/slo/redirect?"
                + redirect_query(xml, sign=True, field="SAMLResponse")
            )
            assert back.html.select_one("#logout-leg")["data-status"] == "done"
    return sent


def test_sp_initiated_logout_reaches_the_other_sp_and_answers_success(
    testapp,
    dbsession,
    sps,
    user,
):
    sign_in(testapp, user)
    first = sso(testapp, SP1)
    sso(testapp, SP2)
    xml = logout_request(
        name_id=first["name_id"],
        name_id_format=first["format"],
        session_index=first["session_index"],
    )
    start = testapp.get("/saml/slo/redirect?" + redirect_query(xml, sign=True))
    assert start.status_int == 303
    assert dbsession.scalar(select(func.count()).select_from(IdpSession)) == 0
    page = start.follow()
    assert page.html.select_one("#logout-status")["data-finished"] == "false"
    assert answer_frames(testapp, page) == [SP2]
    page = testapp.get(start.location)
    assert page.html.select_one("#logout-status")["data-finished"] == "true"
    link = page.html.select_one("#saml-logout-continue")["href"]
    assert link.startswith("https://sp.example.org/slo?")
    answer = decode_redirect(link, "SAMLResponse")
    codes = [c.get("Value") for c in answer.iter(f"{{{SAMLP}}}StatusCode")]
    assert codes == [SUCCESS]
    assert answer.get("InResponseTo") == etree.fromstring(xml).get("ID")
    # The IdP's own session is gone: the next SSO asks to sign in.
    again = testapp.get("/saml/sso/redirect?" + redirect_query(authn_request()))
    assert "/login" in again.location


def test_a_second_sso_keeps_the_session_index_writes_nothing_and_logout_by_the_first_works(
    testapp, dbsession, sps, user
):
    """The participant row is written once per SP and session, not per SSO.

    An SP holding the first assertion's SessionIndex can still log out
    with it after a second SSO; a new session gets a new index.
    """
    from sqlalchemy import event

    sign_in(testapp, user)
    first = sso(testapp, SP1)
    connection = dbsession.connection()
    writes: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        # Writes to the participants' table; the role gate reads it (in a
        # WITH that writes the replay record, on PostgreSQL).
        if "session_participants" in statement and not statement.startswith(
            ("SELECT", "WITH seen AS")
        ):
            writes.append(statement)

    event.listen(connection, "before_cursor_execute", record)
    try:
        second = sso(testapp, SP1)
    finally:
        event.remove(connection, "before_cursor_execute", record)
    assert writes == []
    assert second == first
    xml = logout_request(
        name_id=first["name_id"],
        name_id_format=first["format"],
        session_index=first["session_index"],
    )
    testapp.get("/saml/slo/redirect?" + redirect_query(xml, sign=True), status=303)
    assert dbsession.scalar(select(func.count()).select_from(IdpSession)) == 0
    sign_in(testapp, user)
    assert sso(testapp, SP1)["session_index"] != first["session_index"]


def test_a_silent_sp_gives_partial_logout_after_the_deadline(
    testapp,
    dbsession,
    sps,
    user,
):
    sign_in(testapp, user)
    first = sso(testapp, SP1)
    sso(testapp, SP2)
    xml = logout_request(
        name_id=first["name_id"],
        name_id_format=first["format"],
        session_index=first["session_index"],
    )
    start = testapp.get("/saml/slo/redirect?" + redirect_query(xml, sign=True))
    page = start.follow()
    answer_frames(testapp, page, answer=False)
    flow_leg = dbsession.scalar(select(LogoutLeg))
    flow_leg.flow.deadline_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    dbsession.flush()
    page = testapp.get(start.location)
    assert statuses(page) == {"Example System": "timeout"}
    answer = decode_redirect(
        page.html.select_one("#saml-logout-continue")["href"], "SAMLResponse"
    )
    codes = [c.get("Value") for c in answer.iter(f"{{{SAMLP}}}StatusCode")]
    assert codes == [SUCCESS, PARTIAL]


def test_idp_initiated_logout_lists_each_service(testapp, dbsession, sps, user):
    sign_in(testapp, user)
    sso(testapp, SP1)
    sso(testapp, SP2)
    form = testapp.get("/logout").forms["logout-form"]
    start = form.submit(status=303)
    assert "/saml/slo/done?f=" in start.location
    page = start.follow()
    assert sorted(answer_frames(testapp, page)) == [SP1, SP2]
    page = testapp.get(start.location)
    assert set(statuses(page).values()) == {"done"}
    assert page.html.select_one("#saml-logout-continue") is None


def test_saml_26_a_logout_request_naming_another_users_session_logs_no_one_out(
    testapp,
    app,
    tm,
    dbsession,
    sps,
    user,
):
    """SAML-26: Forged LogoutRequest: another user's NameID or SessionIndex."""
    from tests.factories import make_user

    sign_in(testapp, user)
    victim_sso = sso(testapp, SP1)
    other = make_user(dbsession)
    other.roles.append(dbsession.scalar(select(Role).where(Role.name == "guru")))
    dbsession.flush()
    attacker = browser(app, tm, dbsession)
    sign_in(attacker, other)
    own = sso(attacker, SP1)
    sessions = dbsession.scalar(select(func.count()).select_from(IdpSession))
    # The victim's NameID with the attacker's SessionIndex, and vice versa.
    for name_id, index in (
        (victim_sso["name_id"], own["session_index"]),
        (own["name_id"], victim_sso["session_index"]),
        (victim_sso["name_id"] + " ", victim_sso["session_index"]),
    ):
        xml = logout_request(
            name_id=name_id, name_id_format=own["format"], session_index=index
        )
        page = attacker.get("/saml/slo/redirect?" + redirect_query(xml, sign=True))
        answer = decode_redirect(page.location, "SAMLResponse")
        codes = [c.get("Value") for c in answer.iter(f"{{{SAMLP}}}StatusCode")]
        assert "urn:oasis:names:tc:SAML:2.0:status:UnknownPrincipal" in codes
        assert (
            dbsession.scalar(select(func.count()).select_from(IdpSession)) == sessions
        )
    # Unsigned: refused outright, nobody logged out.
    xml = logout_request(
        name_id=victim_sso["name_id"],
        name_id_format=victim_sso["format"],
        session_index=victim_sso["session_index"],
    )
    page = attacker.get("/saml/slo/redirect?" + redirect_query(xml), status=400)
    assert page.html.select_one("[data-error-code]")["data-error-code"] == (
        "saml_signature_required"
    )
    assert dbsession.scalar(select(func.count()).select_from(IdpSession)) == sessions
    # Replayed: the attacker's own valid logout works once.
    xml = logout_request(
        name_id=own["name_id"],
        name_id_format=own["format"],
        session_index=own["session_index"],
    )
    query = redirect_query(xml, sign=True)
    attacker.get("/saml/slo/redirect?" + query, status=303)
    assert (
        dbsession.scalar(select(func.count()).select_from(IdpSession)) == sessions - 1
    )
    replay = attacker.get("/saml/slo/redirect?" + query, status=400)
    assert (
        replay.html.select_one("[data-error-code]")["data-error-code"] == "saml_replay"
    )
    # The victim is still signed in.
    page = testapp.get("/saml/sso/redirect?" + redirect_query(authn_request()))
    assert page.status_int == 200


def test_logout_request_over_post_binding(testapp, dbsession, sps, user):
    sign_in(testapp, user)
    first = sso(testapp, SP1)
    xml = logout_request(
        name_id=first["name_id"],
        name_id_format=first["format"],
        session_index=first["session_index"],
        destination="https://idp.test/saml/slo/post",
    )
    start = testapp.post("/saml/slo/post", post_fields(sign_xml(xml)), status=303)
    page = start.follow()
    assert page.html.select_one("#logout-status")["data-finished"] == "true"
    assert dbsession.scalar(select(func.count()).select_from(SessionParticipant)) == 0


def test_a_logout_response_for_no_pending_leg_is_refused(testapp, sps):
    xml = logout_response(in_response_to="_nothing")
    page = testapp.get(
        "/saml/slo/redirect?" + redirect_query(xml, sign=True, field="SAMLResponse"),
        status=400,
    )
    assert page.html.select_one("[data-error-code]")["data-error-code"] == (
        "saml_logout_expired"
    )


def test_slo_without_a_message_is_a_page(testapp):
    page = testapp.get(SLO_REDIRECT.removeprefix("https://idp.test"), status=400)
    assert page.html.select_one("[data-error-code]")["data-error-code"] == (
        "saml_no_message"
    )


def test_expired_flows_and_parked_requests_wait_for_the_background_purge(
    testapp, dbsession, sps, user
):
    """A logout or a parked request deletes no one else's expired rows: the
    purge (idp.services.purge, tested there) does, outside any request.
    """
    from idp.models import LogoutFlow, PendingSamlRequest

    sign_in(testapp, user)
    sso(testapp, SP1)
    sso(testapp, SP2)
    testapp.get("/logout").forms["logout-form"].submit(status=303)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    for flow in dbsession.scalars(select(LogoutFlow)):
        flow.expires_at = past
    dbsession.flush()
    assert dbsession.scalar(select(func.count()).select_from(LogoutLeg)) == 2
    sign_in(testapp, user)
    sso(testapp, SP1)
    testapp.get("/logout").forms["logout-form"].submit(status=303)
    assert dbsession.scalar(select(func.count()).select_from(LogoutFlow)) == 2
    assert dbsession.scalar(select(func.count()).select_from(LogoutLeg)) == 3
    testapp.get("/saml/sso/redirect?" + redirect_query(authn_request()), status=303)
    for row in dbsession.scalars(select(PendingSamlRequest)):
        row.expires_at = past
    dbsession.flush()
    testapp.get("/saml/sso/redirect?" + redirect_query(authn_request()), status=303)
    assert dbsession.scalar(select(func.count()).select_from(PendingSamlRequest)) == 2
