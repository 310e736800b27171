"""The Response templates follow the registry: a policy change shows at once.

Responses are built from a template per shape (idp.saml.response.Shape):
the NameID format, the attributes released, the signatures. A template is
never invalidated explicitly; what the policy decides is its key, so the
next SSO after ``sp policy`` (here its service, ``registry.set_policy``, in
the test's transaction) must carry the new policy, never a cached one.
"""

from __future__ import annotations

import pytest
from lxml import etree

from idp.saml.registry import SignedAssertionsWanted, UnsignedPolicy, set_policy
from tests.factories import register_sp
from tests.saml_metadata import SP_ENTITY_ID
from tests.saml_pages import response_of, status_of
from tests.saml_requests import authn_request, new_id, redirect_query
from tests.signin import sign_in

SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
TRANSIENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient"
PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"


def sso(testapp) -> etree._Element:
    request_id = new_id()
    query = redirect_query(authn_request(request_id=request_id))
    root = response_of(testapp.get("/saml/sso/redirect?" + query, status=200))
    assert status_of(root) == [SUCCESS]
    assert root.get("InResponseTo") == request_id
    return root


def released(root) -> list[str]:
    return [a.get("FriendlyName") for a in root.iter(f"{{{SAML}}}Attribute")]


def signed(element) -> bool:
    return element.find(f"{{{DS}}}Signature") is not None


def test_saml_33_a_policy_change_shows_in_the_next_response(
    testapp, dbsession, sp, user
):
    """SAML-33: what a policy stops releasing is gone from the very next
    Response, and what it adds is there; no template outlives its policy."""
    sign_in(testapp, user)
    assert released(sso(testapp)) == ["displayName", "isMemberOf", "mail", "uid"]
    set_policy(dbsession, SP_ENTITY_ID, attributes_released=["uid"])
    assert released(sso(testapp)) == ["uid"]
    set_policy(
        dbsession,
        SP_ENTITY_ID,
        attributes_released=["uid", "preferredLanguage", "employeeType"],
    )
    assert released(sso(testapp)) == ["employeeType", "preferredLanguage", "uid"]
    set_policy(dbsession, SP_ENTITY_ID, attributes_released=[])
    root = sso(testapp)
    assert released(root) == []
    assert root.find(f".//{{{SAML}}}AttributeStatement") is None


@pytest.fixture
def any_signing_sp(dbsession, module):
    """The test SP, its metadata not asking for signed assertions."""
    return register_sp(dbsession, want_assertions_signed=False)


def test_signing_and_name_id_policy_changes_show_in_the_next_response(
    testapp, dbsession, any_signing_sp, user
):
    sign_in(testapp, user)
    root = sso(testapp)
    assertion = root.find(f"{{{SAML}}}Assertion")
    assert signed(root) and signed(assertion)
    assert assertion.find(f".//{{{SAML}}}NameID").get("Format") == PERSISTENT

    set_policy(dbsession, SP_ENTITY_ID, sign_assertion=False)
    root = sso(testapp)
    assert signed(root) and not signed(root.find(f"{{{SAML}}}Assertion"))

    set_policy(
        dbsession,
        SP_ENTITY_ID,
        sign_assertion=True,
        sign_response=False,
        name_id_format="transient",
    )
    root = sso(testapp)
    assertion = root.find(f"{{{SAML}}}Assertion")
    assert not signed(root) and signed(assertion)
    name_id = assertion.find(f".//{{{SAML}}}NameID")
    assert name_id.get("Format") == TRANSIENT
    assert name_id.get("SPNameQualifier") == SP_ENTITY_ID


@pytest.mark.parametrize("wants_signed_assertions", [True, False])
def test_no_policy_sends_an_assertion_with_no_signature(
    testapp, dbsession, module, user, wants_signed_assertions
):
    """SAML's HTTP-POST profile signs every assertion, itself or by its
    Response. An admin who turns both signatures off is refused, nothing
    changed; an SP row stored with both off before that rule (or written
    around it) still gets one: the assertion where the metadata asks for
    signed assertions, the Response otherwise."""
    sp = register_sp(dbsession, want_assertions_signed=wants_signed_assertions)
    with pytest.raises(UnsignedPolicy):
        set_policy(dbsession, SP_ENTITY_ID, sign_response=False, sign_assertion=False)
    dbsession.refresh(sp)
    assert (sp.sign_response, sp.sign_assertion) == (True, True)

    sp.sign_response = sp.sign_assertion = False
    dbsession.flush()
    sign_in(testapp, user)
    root = sso(testapp)
    assertion = root.find(f"{{{SAML}}}Assertion")
    assert signed(assertion) is wants_signed_assertions
    assert signed(root) is not wants_signed_assertions


def test_assertions_the_metadata_asks_signed_stay_signed(testapp, dbsession, sp, user):
    """The SP's metadata says WantAssertionsSigned: its SAML software refuses
    an unsigned assertion. A policy that would send one is refused; a row
    holding it (stored before the rule, or metadata that started asking at
    a refresh) still gets its assertions signed."""
    with pytest.raises(SignedAssertionsWanted):
        set_policy(dbsession, SP_ENTITY_ID, sign_assertion=False)
    dbsession.refresh(sp)
    assert sp.sign_assertion is True

    sp.sign_assertion = False
    dbsession.flush()
    sign_in(testapp, user)
    root = sso(testapp)
    assert signed(root.find(f"{{{SAML}}}Assertion")) and signed(root)
