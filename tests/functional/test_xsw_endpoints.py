"""SAML-01..08: signature wrapping, sent to the IdP's HTTP-POST endpoints.

tests/unit/saml/test_xsw.py attacks the verifier alone; here each shape of
tests/saml_attacks.py goes through the whole endpoint, as an attacker who
holds one genuinely signed message would send it:

* an AuthnRequest to ``/saml/sso/post`` from an SP whose metadata sets
  AuthnRequestsSigned, altered to send the assertion elsewhere (an ACS not
  in the metadata), to skip a forced re-authentication, or to speak for
  another registered SP that happens to share the signing key;
* a LogoutRequest to ``/saml/slo/post`` from a signed-in user's own SP,
  altered to name another user's NameID and/or SessionIndex, or to come
  from another SP (same key again) about the victim's session there.

SECURITY.md: "each shape applied to a signed fixture is refused; the fixture
itself is accepted". Every attack is sent *first*, then the untouched signed
fixture as the control (test rule 2), so the control also shows that the
refusal kept no replay record of the original ID. A refusal is a 4xx page
with a stable code and a reference, no auto-posting form, nothing pointing
at the attacker's address, and nothing written: no parked request, replay
record, session participant or persistent NameID for SSO; no IdP session
ended, no logout flow, no replay record for SLO.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, quote, urlsplit

import lxml.html
import pytest
from lxml import etree
from sqlalchemy import select

from idp.models import (
    IdpSession,
    LogoutFlow,
    PendingSamlRequest,
    PersistentNameId,
    Role,
    SeenRequestId,
    SessionParticipant,
)
from idp.requestlog import REFERENCE_PATTERN
from idp.saml.registry import import_sp
from tests.app import browser
from tests.factories import count, make_user
from tests.saml_attacks import (
    XSW_CASES,
    attacked_post_fields,
    compose,
    set_attribute,
    set_issuer,
    set_name_id,
)
from tests.saml_metadata import RELEASED, SP_ENTITY_ID, make_sp_metadata
from tests.saml_pages import response_of, status_of
from tests.saml_requests import (
    SAML,
    SAMLP,
    SLO_POST,
    SP_ACS,
    SSO_POST,
    authn_request,
    logout_request,
    post_fields,
    redirect_query,
    sign_xml,
)
from tests.signin import sign_in

SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
EVIL_ACS = "https://evil.example/acs"
# A second registered SP. make_sp_metadata() gives every SP the same signing
# key, so a wrapped Issuer naming it would pass a key check: only the shape
# rules stand between the attacker and speaking for it.
OTHER_SP = "https://other.example.org/sp"
OTHER_ACS = "https://other.example.org/acs"

# The codes a wrapped request may be refused with (SECURITY.md SAML-01..08).
REFUSAL_CODES = {
    "saml_bad_signature",
    "saml_bad_message",
    "saml_signature_required",
    "saml_unknown_sp",
    "saml_acs",
}
_SESSION_INDEX = f"{{{SAMLP}}}SessionIndex"
_NAME_ID = f"{{{SAML}}}NameID"
_AUTHN_STATEMENT = f"{{{SAML}}}AuthnStatement"


# --------------------------------------------------------------------------
# Fixtures (module and signed_sp: tests/functional/conftest.py)


@pytest.fixture
def other_sp(dbsession, module):
    """Another registered SP, signing with the same key, its ACS elsewhere."""
    sp = import_sp(
        dbsession,
        make_sp_metadata(OTHER_SP, signed_requests=True),
        module_code="emis",
    )
    sp.attributes_released = list(RELEASED)
    dbsession.flush()
    return sp


@pytest.fixture
def slo_sps(dbsession, module):
    """Two SPs that both sign with the fixture key (unsigned AuthnRequests ok)."""
    one = import_sp(dbsession, make_sp_metadata(SP_ENTITY_ID), module_code="emis")
    two = import_sp(dbsession, make_sp_metadata(OTHER_SP), module_code="emis")
    dbsession.flush()
    return one, two


def make_member(dbsession, number: int):
    """A user holding the role that reaches the SPs' module.

    Fixed identity numbers (each test's transaction is rolled back): the
    shared factory counter runs out of two-digit numbers over a long session.
    """
    person = make_user(
        dbsession,
        identifier=f"0805121457{number:02d}",
        email=f"xsw{number}@example.com.my",
    )
    person.roles.append(dbsession.scalar(select(Role).where(Role.name == "guru")))
    dbsession.flush()
    return person


@pytest.fixture
def user(dbsession, module):
    """The signed-in user: the attacker, who holds one genuine signed message."""
    return make_member(dbsession, 1)


@pytest.fixture
def victim(app, tm, dbsession, module):
    """Another user, signed in on their own browser."""
    other_browser = browser(app, tm, dbsession)
    sign_in(other_browser, make_member(dbsession, 2))
    return other_browser


# --------------------------------------------------------------------------
# Mutations


def set_session_index(value: str):
    """Set the text of every samlp:SessionIndex under the element."""

    def mutate(element: etree._Element) -> None:
        found = list(element.iter(_SESSION_INDEX))
        if not found:
            raise ValueError(f"no samlp:SessionIndex under {element.tag}")
        for index in found:
            index.text = value

    return mutate


# AuthnRequest: name -> (authn_request() keyword arguments of the signed
# fixture, mutator, the address a wrongly accepted request would post to).
AUTHN_MUTATIONS = {
    # The assertion sent to the attacker's own ACS.
    "evil_acs": (
        {},
        set_attribute("AssertionConsumerServiceURL", EVIL_ACS),
        EVIL_ACS,
    ),
    # A forced re-authentication dropped (a shared computer's stale session).
    "force_authn_dropped": (
        {"force_authn": True},
        set_attribute("ForceAuthn", "false"),
        None,
    ),
    # Another registered SP (same key) named as the requester, with its ACS:
    # the user's assertion for that SP delivered there.
    "other_sp_issuer": (
        {},
        compose(
            set_issuer(OTHER_SP),
            set_attribute("AssertionConsumerServiceURL", OTHER_ACS),
        ),
        OTHER_ACS,
    ),
}
AUTHN_IDS = list(AUTHN_MUTATIONS)

# LogoutRequest: the mutations need the victim's subject, known only at run
# time; each entry builds its mutator from {"sp1": ..., "sp2": ...}.
LOGOUT_MUTATIONS = {
    "victim_name_id": lambda v: set_name_id(v["sp1"]["name_id"]),
    "victim_session_index": lambda v: set_session_index(v["sp1"]["session_index"]),
    "victim_subject": lambda v: compose(
        set_name_id(v["sp1"]["name_id"]),
        set_session_index(v["sp1"]["session_index"]),
    ),
    # Signed by SP1, re-addressed as SP2's (same key) about the victim there.
    "other_sp_issuer": lambda v: compose(
        set_issuer(OTHER_SP),
        set_name_id(v["sp2"]["name_id"]),
        set_session_index(v["sp2"]["session_index"]),
    ),
}
LOGOUT_IDS = list(LOGOUT_MUTATIONS)


# --------------------------------------------------------------------------
# Reading answers


def error_code(page) -> str | None:
    found = re.search(r'data-error-code="([^"]*)"', page.text)
    return found.group(1) if found else None


def summary(page) -> str:
    where = page.headers.get("Location", "")
    return f"{page.status} {error_code(page)} {where}".strip()


def counts(dbsession, models) -> dict[str, int]:
    return {model.__name__: count(dbsession, model) for model in models}


def assert_refused(page, evil_url: str | None) -> None:
    """A 4xx refusal page: stable code, reference, no form to the attacker."""
    assert 400 <= page.status_int < 500, summary(page)
    assert error_code(page) in REFUSAL_CODES, summary(page)
    assert "Traceback" not in page.text
    doc = lxml.html.fromstring(page.body)
    [section] = doc.xpath("//section[@data-error-code]")
    [reference] = section.xpath(".//code[@class='reference']")
    assert re.fullmatch(REFERENCE_PATTERN, reference.text)
    assert doc.xpath("//form[@id='saml-post-form']") == []
    assert "SAMLResponse" not in page.text or doc.xpath("//form[@id='saml-error-form']")
    for form in doc.xpath("//form[@id='saml-error-form']"):
        # Only ever the SP's own, registered ACS.
        assert form.get("action") == SP_ACS
    if evil_url is not None:
        assert evil_url not in page.text


def continue_to_response(testapp, person, page, *, forced: bool):
    """From the POST endpoint's 303 to the Response page; with ``forced``
    (ForceAuthn) the signed-in user must be sent to sign in again first."""
    assert page.status_int == 303, summary(page)
    assert page.location.startswith("https://idp.test/saml/sso/continue?r=")
    path = urlsplit(page.location)
    page = testapp.get(f"{path.path}?{path.query}")
    if forced:
        assert page.status_int == 303, summary(page)
        assert page.location.startswith("https://idp.test/login?next=")
        next_url = parse_qs(urlsplit(page.location).query)["next"][0]
        assert next_url.startswith("/saml/sso/continue?r=")
        done = sign_in(testapp, person, next_url=quote(next_url, safe=""))
        assert done.status_int == 303, summary(done)
        target = urlsplit(done.location)
        assert target.path == "/saml/sso/continue", done.location
        page = testapp.get(f"{target.path}?{target.query}")
    return page


# --------------------------------------------------------------------------
# AuthnRequest over POST


def check_wrapped_authn_request(
    testapp, dbsession, person, shape: str, mutation: str
) -> None:
    kwargs, mutate, evil_url = AUTHN_MUTATIONS[mutation]
    signed = sign_xml(authn_request(destination=SSO_POST, **kwargs))
    request_id = etree.fromstring(signed).get("ID")
    sign_in(testapp, person)
    tables = (PendingSamlRequest, SeenRequestId, SessionParticipant, PersistentNameId)
    before = counts(dbsession, tables)

    attack = testapp.post(
        "/saml/sso/post",
        attacked_post_fields(signed, shape, mutate, relay_state="rs"),
        expect_errors=True,
    )
    assert_refused(attack, evil_url)
    assert counts(dbsession, tables) == before

    # Control: the untouched fixture, same ID, is accepted.
    page = testapp.post("/saml/sso/post", post_fields(signed, relay_state="rs"))
    assert count(dbsession, PendingSamlRequest) == before["PendingSamlRequest"] + 1
    assert count(dbsession, SeenRequestId) == before["SeenRequestId"] + 1
    page = continue_to_response(
        testapp, person, page, forced=kwargs.get("force_authn", False)
    )
    assert page.status_int == 200, summary(page)
    assert "saml-error-form" not in page.text
    form = page.forms["saml-post-form"]
    assert form.action == SP_ACS
    assert form["RelayState"].value == "rs"
    response = response_of(page)
    assert status_of(response) == [SUCCESS]
    assert response.get("InResponseTo") == request_id
    assert response.get("Destination") == SP_ACS


@pytest.mark.parametrize("mutation", AUTHN_IDS)
@pytest.mark.parametrize("shape", XSW_CASES)
def test_xsw_authn_request_over_post_refused(
    testapp,
    dbsession,
    signed_sp,
    other_sp,
    user,
    shape,
    mutation,
):
    """SAML-01..08: each wrapped AuthnRequest refused; the signed original accepted."""
    check_wrapped_authn_request(testapp, dbsession, user, shape, mutation)


# --------------------------------------------------------------------------
# LogoutRequest over POST


def sso(testapp, entity_id: str) -> dict:
    """SSO to one SP (Redirect binding, unsigned); what the SP was sent."""
    base = entity_id.rsplit("/", 1)[0]
    xml = authn_request(issuer=entity_id, acs_url=f"{base}/acs")
    page = testapp.get("/saml/sso/redirect?" + redirect_query(xml))
    root = response_of(page)
    name_id = next(root.iter(_NAME_ID))
    statement = next(root.iter(_AUTHN_STATEMENT))
    return {
        "name_id": name_id.text,
        "format": name_id.get("Format"),
        "session_index": statement.get("SessionIndex"),
    }


def check_wrapped_logout_request(
    testapp, dbsession, person, victim, shape: str, mutation: str
) -> None:
    sign_in(testapp, person)
    own = sso(testapp, SP_ENTITY_ID)
    target = {"sp1": sso(victim, SP_ENTITY_ID), "sp2": sso(victim, OTHER_SP)}
    assert target["sp1"]["name_id"] != own["name_id"]
    assert target["sp1"]["session_index"] != own["session_index"]
    signed = sign_xml(
        logout_request(
            name_id=own["name_id"],
            name_id_format=own["format"],
            session_index=own["session_index"],
            destination=SLO_POST,
        )
    )
    tables = (IdpSession, LogoutFlow, SeenRequestId, SessionParticipant)
    before = counts(dbsession, tables)
    assert before["IdpSession"] == 2

    attack = testapp.post(
        "/saml/slo/post",
        attacked_post_fields(
            signed, shape, LOGOUT_MUTATIONS[mutation](target), relay_state="rs"
        ),
        expect_errors=True,
    )
    assert_refused(attack, None)
    assert counts(dbsession, tables) == before

    # Control: the untouched fixture, same ID, logs the attacker (only) out.
    start = testapp.post(
        "/saml/slo/post", post_fields(signed, relay_state="rs"), expect_errors=True
    )
    assert start.status_int == 303, summary(start)
    assert start.location.startswith("https://idp.test/saml/slo/done?f=")
    assert count(dbsession, IdpSession) == before["IdpSession"] - 1
    assert count(dbsession, LogoutFlow) == before["LogoutFlow"] + 1
    assert count(dbsession, SeenRequestId) == before["SeenRequestId"] + 1
    page = start.follow()
    assert page.html.select_one("#logout-status")["data-finished"] == "true"
    # The attacker's own session is the one that ended; the victim's is kept.
    mine = testapp.get("/saml/sso/redirect?" + redirect_query(authn_request()))
    assert mine.status_int == 303, summary(mine)
    assert mine.location.startswith("https://idp.test/login?next=")
    theirs = victim.get("/saml/sso/redirect?" + redirect_query(authn_request()))
    assert theirs.status_int == 200, summary(theirs)
    assert theirs.forms["saml-post-form"].action == SP_ACS


@pytest.mark.parametrize("mutation", LOGOUT_IDS)
@pytest.mark.parametrize("shape", XSW_CASES)
def test_xsw_logout_request_over_post_refused(
    testapp,
    dbsession,
    slo_sps,
    user,
    victim,
    shape,
    mutation,
):
    """SAML-01..08: each wrapped LogoutRequest refused; the signed original accepted."""
    check_wrapped_logout_request(testapp, dbsession, user, victim, shape, mutation)
