"""What the IdP sends an SP: the Response, checked field by field.

Every request is hand-made (tests/saml_requests.py) and every Response is
read from the HTTP-POST page the browser would submit, then checked the way
an SP checks it: signatures verified with the IdP's certificate only,
encrypted assertions decrypted with the SP's own key. Each refusal is paired
with a control that differs only in the attack (SECURITY.md, test rule 2).
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from lxml import etree
from saml2.sigver import DecryptError, EncryptError, SignatureError
from sqlalchemy import func, select

from idp.models import (
    AuditEvent,
    IdpSession,
    PendingSamlRequest,
    PersistentNameId,
    Role,
    SessionParticipant,
)
from idp.saml.crypto import XmlsecBackend
from idp.saml.registry import import_sp, set_enabled
from idp.saml.response import RELEASABLE, security_image_context
from tests.app import browser
from tests.factories import display, make_user
from tests.saml_metadata import (
    SP_ENTITY_ID,
    make_sp_metadata,
    sp_key_files,
)
from tests.saml_pages import status_of
from tests.saml_requests import (
    SP_ACS,
    SSO_POST,
    authn_request,
    new_id,
    post_fields,
    redirect_query,
)
from tests.signin import sign_in

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
XENC = "http://www.w3.org/2001/04/xmlenc#"
MD = "urn:oasis:names:tc:SAML:2.0:metadata"
MDATTR = "urn:oasis:names:tc:SAML:metadata:attribute"
NS = {"samlp": SAMLP, "saml": SAML, "ds": DS, "xenc": XENC}

IDP_ENTITY_ID = "https://idp.test/saml/metadata"
SP2_ENTITY_ID = "https://sp2.example.org/sp"
SP2_ACS = "https://sp2.example.org/acs"

SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
RESPONDER = "urn:oasis:names:tc:SAML:2.0:status:Responder"
INVALID_NAMEID_POLICY = "urn:oasis:names:tc:SAML:2.0:status:InvalidNameIDPolicy"
NO_AUTHN_CONTEXT = "urn:oasis:names:tc:SAML:2.0:status:NoAuthnContext"
NO_PASSIVE = "urn:oasis:names:tc:SAML:2.0:status:NoPassive"

PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
TRANSIENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient"
EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
UNSPECIFIED = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"
ATTRNAME_URI = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri"

AC_PASSWORD = "urn:oasis:names:tc:SAML:2.0:ac:classes:Password"
AC_PPT = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"
AC_X509 = "urn:oasis:names:tc:SAML:2.0:ac:classes:X509"
AC_OURS = "https://idp.test/saml/ac/password-security-image"

RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
AES256_GCM = "http://www.w3.org/2009/xmlenc11#aes256-gcm"
AES256_CBC = "http://www.w3.org/2001/04/xmlenc#aes256-cbc"
AES128_CBC = "http://www.w3.org/2001/04/xmlenc#aes128-cbc"
RSA_OAEP_MGF1P = "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p"

RESPONSE_NODE = f"{SAMLP}:Response"
ASSERTION_NODE = f"{SAML}:Assertion"
MAX_LIFETIME = dt.timedelta(minutes=5)

# The standard wire names (pysaml2's URI map; OASIS subject-id profile).
ATTRIBUTE_NAMES = {
    "uid": "urn:oid:0.9.2342.19200300.100.1.1",
    "displayName": "urn:oid:2.16.840.1.113730.3.1.241",
    "mail": "urn:oid:0.9.2342.19200300.100.1.3",
    "mobile": "urn:oid:0.9.2342.19200300.100.1.41",
    "employeeType": "urn:oid:2.16.840.1.113730.3.1.4",
    "o": "urn:oid:2.5.4.10",
    "preferredLanguage": "urn:oid:2.16.840.1.113730.3.1.39",
    "isMemberOf": "urn:oid:1.3.6.1.4.1.5923.1.5.1.1",
    "schacPersonalUniqueID": "urn:oid:1.3.6.1.4.1.25178.1.2.15",
    # The OASIS SAML V2.0 Subject Identifier Attributes Profile names these
    # two by URN; they have no OID.
    "subject-id": "urn:oasis:names:tc:SAML:attribute:subject-id",
    "pairwise-id": "urn:oasis:names:tc:SAML:attribute:pairwise-id",
}
SCOPED_ID = re.compile(r"^[a-z0-9][a-z0-9=-]{0,126}@idp\.test$")
PAIRWISE_UID = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
)


# --------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def user(dbsession, module):
    user = person(dbsession)
    user.roles.append(_role(dbsession, "guru"))
    dbsession.flush()
    return user


@pytest.fixture
def sp(dbsession, module):
    return add_sp(dbsession)


@pytest.fixture
def sp2(dbsession, module):
    return add_sp(dbsession, SP2_ENTITY_ID)


_people = itertools.count()


def person(dbsession, **values):
    """A usable user with a valid MyKad number of its own.

    ``make_user`` numbers its users from a process-wide counter whose
    numbers stop being 12-digit MyKad numbers after 99 users; this file
    alone makes more than that over both databases.
    """
    n = 7000 + next(_people) % 3000
    values.setdefault("identifier", f"08051214{n:04d}")
    values.setdefault("email", f"ujian{n}@example.com.my")
    return make_user(dbsession, **values)


def _role(dbsession, name: str) -> Role:
    return dbsession.scalar(select(Role).where(Role.name == name))


def add_sp(
    dbsession,
    entity_id: str = SP_ENTITY_ID,
    *,
    metadata: bytes | None = None,
    released: tuple[str, ...] = ("uid", "displayName", "mail", "isMemberOf"),
    **metadata_options,
):
    data = metadata or make_sp_metadata(entity_id, **metadata_options)
    sp = import_sp(dbsession, data, module_code="emis")
    sp.attributes_released = list(released)
    dbsession.flush()
    return sp


def with_subject_id_req(metadata: bytes, value: str) -> bytes:
    """The SP's metadata plus the subject-id:req entity attribute."""
    root = etree.fromstring(metadata)
    extensions = etree.Element(f"{{{MD}}}Extensions")
    attributes = etree.SubElement(extensions, f"{{{MDATTR}}}EntityAttributes")
    attribute = etree.SubElement(
        attributes,
        f"{{{SAML}}}Attribute",
        Name="urn:oasis:names:tc:SAML:profiles:subject-id:req",
        NameFormat=ATTRNAME_URI,
    )
    etree.SubElement(attribute, f"{{{SAML}}}AttributeValue").text = value
    root.insert(0, extensions)
    return etree.tostring(root)


# --------------------------------------------------------------------------
# Helpers


def sso(testapp, *, relay_state=None, status="*", issuer=SP_ENTITY_ID, **request):
    """An SP-initiated Redirect-binding request; the IdP's answer."""
    if issuer == SP2_ENTITY_ID:
        request.setdefault("acs_url", SP2_ACS)
    xml = authn_request(issuer=issuer, **request)
    query = redirect_query(xml, relay_state=relay_state)
    return testapp.get("/saml/sso/redirect?" + query, status=status)


def saml_xml(page, form: str = "saml-post-form") -> bytes:
    """The SAMLResponse of the page's form, decoded."""
    return base64.b64decode(page.forms[form]["SAMLResponse"].value)


def parse(xml: bytes) -> etree._Element:
    return etree.fromstring(xml)


def error_code(page) -> str | None:
    found = re.search(r'data-error-code="([^"]+)"', page.text)
    return found.group(1) if found else None


def verify(keypair, xml: bytes | str, node_name: str, node_id: str) -> bool:
    """Verified with the IdP's certificate only (raises SignatureError)."""
    return XmlsecBackend().validate_signature(
        xml, str(keypair.cert_file), "pem", node_name, node_id
    )


def decrypt(xml: bytes) -> bytes:
    """The Response with its assertion decrypted by the SP's encryption key."""
    return XmlsecBackend().decrypt(xml, sp_key_files("sp-encryption")[0]).encode()


def assertion_doc(xml: bytes) -> tuple[bytes, etree._Element]:
    """The Response (decrypted if needed) and its one Assertion."""
    root = parse(xml)
    if root.find("saml:EncryptedAssertion", NS) is not None:
        xml = decrypt(xml)
        root = parse(xml)
    [assertion] = root.iter(f"{{{SAML}}}Assertion")
    return xml, assertion


def assertion_of(page) -> etree._Element:
    return assertion_doc(saml_xml(page))[1]


def attributes_of(assertion) -> dict[str, etree._Element]:
    found = {}
    for attribute in assertion.iterfind(".//saml:Attribute", NS):
        name = attribute.get("FriendlyName")
        assert name not in found, f"attribute {name} sent twice"
        found[name] = attribute
    return found


def values_of(attribute) -> list[str]:
    return [v.text for v in attribute.iterfind("saml:AttributeValue", NS)]


def released_values(page) -> dict[str, list[str]]:
    return {k: values_of(v) for k, v in attributes_of(assertion_of(page)).items()}


def name_id_of(page) -> etree._Element:
    return assertion_of(page).find("saml:Subject/saml:NameID", NS)


def context_of(page) -> str:
    ref = assertion_of(page).find(
        "saml:AuthnStatement/saml:AuthnContext/saml:AuthnContextClassRef", NS
    )
    return ref.text


def instant(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def assert_no_response(page) -> None:
    """Nothing in the page a browser could carry to the SP as an assertion."""
    assert "saml-post-form" not in page.forms
    assert "SAMLResponse" not in page.text


def assert_error_response(page, keypair, request_id, second, acs=SP_ACS):
    """The page carries a signed SAML error Response and no assertion."""
    assert "saml-post-form" not in page.forms
    assert page.forms["saml-error-form"].action == acs
    xml = saml_xml(page, "saml-error-form")
    root = parse(xml)
    assert status_of(root) == [RESPONDER, second]
    assert root.get("InResponseTo") == request_id
    assert root.get("Destination") == acs
    assert verify(keypair, xml, RESPONSE_NODE, root.get("ID"))
    assert root.find("saml:Assertion", NS) is None
    assert root.find("saml:EncryptedAssertion", NS) is None
    return xml


def persistent_count(dbsession) -> int:
    return dbsession.scalar(select(func.count()).select_from(PersistentNameId))


# --------------------------------------------------------------------------
# SAML-35: assertion scope


def test_saml_35_response_and_assertion_signed_and_scoped_to_the_request(
    testapp, dbsession, sp, user, keypair
):
    sign_in(testapp, user)
    request_id = new_id()
    page = sso(testapp, request_id=request_id, relay_state="r1", status=200)
    xml = saml_xml(page)
    root = parse(xml)
    assert status_of(root) == [SUCCESS]
    assert root.find("saml:EncryptedAssertion", NS) is None  # no key published
    [assertion] = root.findall("saml:Assertion", NS)

    # Both signed, RSA-SHA256 over SHA-256 digests; never SHA-1 anywhere.
    assert verify(keypair, xml, RESPONSE_NODE, root.get("ID"))
    assert verify(keypair, xml, ASSERTION_NODE, assertion.get("ID"))
    assert root.find("ds:Signature", NS) is not None
    assert assertion.find("ds:Signature", NS) is not None
    methods = [e.get("Algorithm") for e in root.iter(f"{{{DS}}}SignatureMethod")]
    digests = [e.get("Algorithm") for e in root.iter(f"{{{DS}}}DigestMethod")]
    assert methods == [RSA_SHA256, RSA_SHA256]
    assert digests == [SHA256, SHA256]
    algorithms = [e.get("Algorithm") for e in root.iter() if e.get("Algorithm")]
    assert not [a for a in algorithms if "sha1" in a.lower()]

    # Addressed to this SP's ACS, answering this request.
    assert root.get("Destination") == SP_ACS
    assert root.get("InResponseTo") == request_id
    assert root.find("saml:Issuer", NS).text == IDP_ENTITY_ID
    assert assertion.find("saml:Issuer", NS).text == IDP_ENTITY_ID
    audiences = assertion.findall(
        "saml:Conditions/saml:AudienceRestriction/saml:Audience", NS
    )
    assert [a.text for a in audiences] == [SP_ENTITY_ID]
    confirmation = assertion.find("saml:Subject/saml:SubjectConfirmation", NS)
    assert confirmation.get("Method") == "urn:oasis:names:tc:SAML:2.0:cm:bearer"
    data = confirmation.find("saml:SubjectConfirmationData", NS)
    assert data.get("Recipient") == SP_ACS
    assert data.get("InResponseTo") == request_id
    assert data.get("NotBefore") is None  # bearer confirmation (profiles 4.1.4.2)

    # Short-lived: at most five minutes.
    issued = instant(assertion.get("IssueInstant"))
    now = dt.datetime.now(dt.UTC)
    assert abs(now - issued) < dt.timedelta(minutes=1)
    conditions = assertion.find("saml:Conditions", NS)
    for not_after in (data.get("NotOnOrAfter"), conditions.get("NotOnOrAfter")):
        assert not_after is not None
        assert issued < instant(not_after) <= issued + MAX_LIFETIME
    assert instant(conditions.get("NotBefore")) <= issued

    # The statement the SP needs for logout and step-up.
    statement = assertion.find("saml:AuthnStatement", NS)
    participant = dbsession.scalar(select(SessionParticipant))
    assert statement.get("SessionIndex") == participant.session_index
    assert statement.get("SessionIndex")
    ref = statement.find("saml:AuthnContext/saml:AuthnContextClassRef", NS)
    assert ref is not None and ref.text

    # The verifier is not accept-all: one changed byte breaks each signature.
    forged = xml.replace(b"https://sp.example.org/sp</", b"https://sp.example.org/sq</")
    assert forged != xml
    with pytest.raises(SignatureError):
        verify(keypair, forged, ASSERTION_NODE, assertion.get("ID"))
    forged = xml.replace(
        b'Destination="https://sp.example.org/acs"',
        b'Destination="https://sp.example.org/acz"',
    )
    assert forged != xml
    with pytest.raises(SignatureError):
        verify(keypair, forged, RESPONSE_NODE, root.get("ID"))


def test_saml_35_lifetime_is_exact_when_the_clock_ticks_while_building(
    testapp, sp, user, monkeypatch
):
    """IssueInstant and NotOnOrAfter come from readings of the clock a moment
    apart; a second ticking over between them must not lengthen the life."""
    import saml2.time_util

    read = saml2.time_util.time_in_a_while

    def a_second_later(*args, **kwargs):
        return read(*args, **kwargs) + dt.timedelta(seconds=1)

    monkeypatch.setattr(saml2.time_util, "time_in_a_while", a_second_later)
    sign_in(testapp, user)
    assertion = parse(saml_xml(sso(testapp, status=200))).find("saml:Assertion", NS)
    issued = instant(assertion.get("IssueInstant"))
    data = assertion.find(
        "saml:Subject/saml:SubjectConfirmation/saml:SubjectConfirmationData", NS
    )
    conditions = assertion.find("saml:Conditions", NS)
    for not_after in (data.get("NotOnOrAfter"), conditions.get("NotOnOrAfter")):
        assert instant(not_after) == issued + MAX_LIFETIME


def test_saml_35_assertion_for_one_sp_names_only_that_sp(
    testapp, dbsession, sp, sp2, user, keypair
):
    """Replaying SP 1's assertion at SP 2 fails there: every address is SP 1's."""
    sign_in(testapp, user)
    first = parse(saml_xml(sso(testapp, status=200)))
    second = parse(saml_xml(sso(testapp, issuer=SP2_ENTITY_ID, status=200)))
    for root, entity_id, acs in (
        (first, SP_ENTITY_ID, SP_ACS),
        (second, SP2_ENTITY_ID, SP2_ACS),
    ):
        assert root.get("Destination") == acs
        assertion = root.find("saml:Assertion", NS)
        audiences = assertion.findall(".//saml:Audience", NS)
        assert [a.text for a in audiences] == [entity_id]
        data = assertion.find(".//saml:SubjectConfirmationData", NS)
        assert data.get("Recipient") == acs
    assert b"sp2.example.org" not in etree.tostring(first)


def test_saml_35_assertion_encrypted_with_aes256_gcm_when_the_sp_has_a_key(
    testapp, dbsession, module, user, keypair
):
    sp = add_sp(dbsession, encryption=True)
    assert sp.encrypt_assertion is True
    sign_in(testapp, user)
    request_id = new_id()
    xml = saml_xml(sso(testapp, request_id=request_id, status=200))
    root = parse(xml)
    assert status_of(root) == [SUCCESS]
    # Nothing in the clear: no Assertion outside EncryptedAssertion, no data.
    assert list(root.iter(f"{{{SAML}}}Assertion")) == []
    assert b"Assertion" not in xml.replace(b"EncryptedAssertion", b"")
    for secret in (user.full_name, user.email, user.identifier, str(user.id)):
        assert secret.encode() not in xml
    [encrypted] = root.findall("saml:EncryptedAssertion", NS)
    [data] = encrypted.findall("xenc:EncryptedData", NS)
    assert data.find("xenc:EncryptionMethod", NS).get("Algorithm") == AES256_GCM
    [key] = root.iter(f"{{{XENC}}}EncryptedKey")
    assert key.find("xenc:EncryptionMethod", NS).get("Algorithm") == RSA_OAEP_MGF1P
    # The Response is signed over the encrypted form.
    assert verify(keypair, xml, RESPONSE_NODE, root.get("ID"))

    plain, assertion = assertion_doc(xml)
    assert verify(keypair, plain, ASSERTION_NODE, assertion.get("ID"))
    assert assertion.find(".//saml:Audience", NS).text == SP_ENTITY_ID
    # For the SP's encryption key, not its signing key.
    with pytest.raises(DecryptError):
        XmlsecBackend().decrypt(xml, sp_key_files()[0])
    data = assertion.find(".//saml:SubjectConfirmationData", NS)
    assert (data.get("Recipient"), data.get("InResponseTo")) == (SP_ACS, request_id)
    assert assertion.find(".//saml:Attribute[@FriendlyName='mail']", NS) is not None


def test_saml_35_cbc_when_the_sp_lists_methods_without_gcm(
    testapp, dbsession, module, user, keypair
):
    add_sp(dbsession, encryption=True, encryption_methods=(AES256_CBC, AES128_CBC))
    sign_in(testapp, user)
    xml = saml_xml(sso(testapp, status=200))
    root = parse(xml)
    assert list(root.iter(f"{{{SAML}}}Assertion")) == []
    data = root.find("saml:EncryptedAssertion/xenc:EncryptedData", NS)
    assert data.find("xenc:EncryptionMethod", NS).get("Algorithm") == AES256_CBC
    [key] = root.iter(f"{{{XENC}}}EncryptedKey")
    assert key.find("xenc:EncryptionMethod", NS).get("Algorithm") == RSA_OAEP_MGF1P
    assert verify(keypair, xml, RESPONSE_NODE, root.get("ID"))
    plain, assertion = assertion_doc(xml)
    assert verify(keypair, plain, ASSERTION_NODE, assertion.get("ID"))


def test_saml_35_aes256_gcm_when_the_sp_lists_gcm_among_others(
    testapp, dbsession, module, user
):
    add_sp(dbsession, encryption=True, encryption_methods=(AES128_CBC, AES256_GCM))
    sign_in(testapp, user)
    root = parse(saml_xml(sso(testapp, status=200)))
    data = root.find("saml:EncryptedAssertion/xenc:EncryptedData", NS)
    assert data.find("xenc:EncryptionMethod", NS).get("Algorithm") == AES256_GCM


def test_saml_35_plain_assertion_without_a_key_or_with_encryption_off(
    testapp, dbsession, module, user, keypair
):
    # No encryption key published: the assertion is signed, not encrypted.
    add_sp(dbsession)
    sign_in(testapp, user)
    root = parse(saml_xml(sso(testapp, status=200)))
    assert root.find("saml:EncryptedAssertion", NS) is None
    assert root.find("saml:Assertion", NS) is not None
    # A key, but the SP's policy turns encryption off.
    sp2 = add_sp(dbsession, SP2_ENTITY_ID, encryption=True)
    sp2.encrypt_assertion = False
    dbsession.flush()
    xml = saml_xml(sso(testapp, issuer=SP2_ENTITY_ID, status=200))
    root = parse(xml)
    assert root.find("saml:EncryptedAssertion", NS) is None
    [assertion] = root.findall("saml:Assertion", NS)
    assert verify(keypair, xml, ASSERTION_NODE, assertion.get("ID"))
    # Control: policy on again -> encrypted.
    sp2.encrypt_assertion = True
    dbsession.flush()
    root = parse(saml_xml(sso(testapp, issuer=SP2_ENTITY_ID, status=200)))
    assert root.find("saml:EncryptedAssertion", NS) is not None
    assert root.find("saml:Assertion", NS) is None


def test_saml_35_never_a_plain_assertion_when_encryption_fails(
    testapp, dbsession, module, user, monkeypatch
):
    add_sp(dbsession, encryption=True)
    sign_in(testapp, user)
    # Control: encryption works -> an encrypted assertion only.
    root = parse(saml_xml(sso(testapp, status=200)))
    assert root.find("saml:EncryptedAssertion", NS) is not None
    assert list(root.iter(f"{{{SAML}}}Assertion")) == []

    def broken(self, *args, **kwargs):
        raise EncryptError("injected fault")

    # The step that encrypts the signed assertion fails.
    monkeypatch.setattr(XmlsecBackend, "encrypt_element", broken)
    page = sso(testapp)
    assert_no_response(page)
    assert "saml-error-form" not in page.forms
    assert error_code(page) is not None  # the bilingual error page
    assert user.full_name not in page.text
    assert "Traceback" not in page.text
    assert "injected fault" not in page.text


# --------------------------------------------------------------------------
# SAML-33: over-release


def test_saml_33_only_what_the_policy_releases(testapp, dbsession, sp, user):
    sp.attributes_released = ["displayName"]
    dbsession.flush()
    sign_in(testapp, user)
    page = sso(testapp, status=200)
    assert released_values(page) == {"displayName": [user.full_name]}
    xml = saml_xml(page)
    # Neither the email nor the identity number, in any spelling.
    for secret in (user.email, user.identifier, display(user), str(user.id)):
        assert secret.encode() not in xml
    assert name_id_of(page).get("Format") == PERSISTENT

    # Names that are not releasable attributes release nothing.
    sp.attributes_released = [
        "displayName",
        "identifier",
        "email",
        "phone",
        "password_hash",
        "Mail",
        "*",
    ]
    dbsession.flush()
    page = sso(testapp, status=200)
    assert released_values(page) == {"displayName": [user.full_name]}
    assert user.identifier.encode() not in saml_xml(page)

    # Control: the policy names mail -> mail comes too.
    sp.attributes_released = ["displayName", "mail"]
    dbsession.flush()
    page = sso(testapp, status=200)
    assert released_values(page) == {
        "displayName": [user.full_name],
        "mail": [user.email],
    }


def test_saml_33_identity_number_only_when_released(testapp, dbsession, sp, user):
    sign_in(testapp, user)
    # The default policy of the fixture: no IC.
    xml = saml_xml(sso(testapp, status=200))
    assert user.identifier.encode() not in xml
    assert display(user).encode() not in xml
    assert b"personalUniqueID" not in xml

    sp.attributes_released = ["schacPersonalUniqueID"]
    dbsession.flush()
    page = sso(testapp, status=200)
    [value] = released_values(page)["schacPersonalUniqueID"]
    assert re.fullmatch(r"urn:schac:personalUniqueID:my:NIC:\d{12}", value)
    assert value == f"urn:schac:personalUniqueID:my:NIC:{user.identifier}"
    assert list(released_values(page)) == ["schacPersonalUniqueID"]


def test_saml_33_email_name_id_needs_mail_released(
    testapp, dbsession, sp, user, keypair
):
    sp.attributes_released = ["displayName"]
    dbsession.flush()
    sign_in(testapp, user)
    request_id = new_id()
    page = sso(testapp, request_id=request_id, name_id_format=EMAIL)
    assert page.status_int == 400
    assert error_code(page) == "saml_name_id_policy"
    xml = assert_error_response(page, keypair, request_id, INVALID_NAMEID_POLICY)
    assert user.email.encode() not in xml
    assert user.email not in page.text

    # Control: the same request once the policy releases mail.
    sp.attributes_released = ["displayName", "mail"]
    dbsession.flush()
    page = sso(testapp, name_id_format=EMAIL, status=200)
    name_id = name_id_of(page)
    assert (name_id.get("Format"), name_id.text) == (EMAIL, user.email)


def _expected_values(user, friendly: str) -> list[str] | None:
    """What each releasable attribute must carry (None: checked by pattern)."""
    return {
        "uid": None,
        "displayName": [user.full_name],
        "mail": [user.email],
        "mobile": [user.phone],
        "employeeType": [user.category],
        "o": [user.institution],
        "preferredLanguage": [user.locale],
        "isMemberOf": ["guru"],
        "schacPersonalUniqueID": [
            f"urn:schac:personalUniqueID:my:NIC:{user.identifier}"
        ],
        "subject-id": None,
        "pairwise-id": None,
    }[friendly]


@pytest.mark.parametrize("friendly", sorted(RELEASABLE))
def test_saml_33_each_releasable_attribute_alone_with_its_standard_name(
    testapp, dbsession, sp, user, friendly
):
    """Released alone: one Attribute, standard Name, FriendlyName, URI format, value."""
    assert set(ATTRIBUTE_NAMES) == set(RELEASABLE)  # a new one needs a row here
    user.institution = "SK Taman Melati"
    user.phone = "+60123456789"
    sp.attributes_released = [friendly]
    dbsession.flush()
    sign_in(testapp, user)
    assertion = assertion_of(sso(testapp, status=200))
    found = [
        (a.get("Name"), a.get("FriendlyName"), a.get("NameFormat"), values_of(a))
        for a in assertion.iterfind(".//saml:Attribute", NS)
    ]
    assert len(found) == 1, found
    [(name, friendly_name, name_format, values)] = found
    assert (name, friendly_name, name_format) == (
        ATTRIBUTE_NAMES[friendly],
        friendly,
        ATTRNAME_URI,
    )
    expected = _expected_values(user, friendly)
    if friendly == "uid":
        # Per SP (SAML-38), shaped as a UUID, never the account's own.
        assert len(values) == 1 and PAIRWISE_UID.match(values[0]), values
        assert values != [str(user.id)]
    elif expected is None:
        assert len(values) == 1 and SCOPED_ID.match(values[0]), values
    else:
        assert values == expected


def test_saml_33_roles_as_one_multivalued_is_member_of(testapp, dbsession, sp, user):
    other = Role(name="pentadbir", display_name_ms="Pentadbir", display_name_en="Admin")
    dbsession.add(other)
    user.roles.append(other)
    dbsession.flush()
    sign_in(testapp, user)
    attributes = attributes_of(assertion_of(sso(testapp, status=200)))
    member_of = [
        a for a in attributes.values() if a.get("Name") == ATTRIBUTE_NAMES["isMemberOf"]
    ]
    assert len(member_of) == 1
    assert member_of[0].get("FriendlyName") == "isMemberOf"
    assert sorted(values_of(member_of[0])) == ["guru", "pentadbir"]


# --------------------------------------------------------------------------
# SAML-34: NameID correlation


def test_saml_34_sp_name_qualifier_of_another_sp_refused(
    testapp, dbsession, sp, sp2, user, keypair
):
    sign_in(testapp, user)
    request_id = new_id()
    page = sso(
        testapp,
        request_id=request_id,
        name_id_format=PERSISTENT,
        sp_name_qualifier=SP2_ENTITY_ID,
    )
    assert page.status_int == 400
    assert error_code(page) == "saml_name_id_policy"
    assert_error_response(page, keypair, request_id, INVALID_NAMEID_POLICY)
    assert persistent_count(dbsession) == 0
    assert dbsession.scalar(select(func.count()).select_from(SessionParticipant)) == 0

    # Control: the requester's own entity ID as qualifier.
    page = sso(
        testapp, name_id_format=PERSISTENT, sp_name_qualifier=SP_ENTITY_ID, status=200
    )
    name_id = name_id_of(page)
    assert name_id.get("SPNameQualifier") == SP_ENTITY_ID
    assert name_id.get("Format") == PERSISTENT


def test_saml_34_persistent_name_ids_differ_per_sp_and_stay_stable(
    testapp, dbsession, sp, sp2, user
):
    sign_in(testapp, user)
    first = name_id_of(sso(testapp, status=200))
    again = name_id_of(sso(testapp, status=200))
    other = name_id_of(sso(testapp, issuer=SP2_ENTITY_ID, status=200))
    for name_id in (first, again, other):
        assert name_id.get("Format") == PERSISTENT
        assert name_id.get("NameQualifier") == IDP_ENTITY_ID
    assert first.text == again.text
    assert first.text != other.text
    assert first.get("SPNameQualifier") == SP_ENTITY_ID
    assert other.get("SPNameQualifier") == SP2_ENTITY_ID
    for value in (first.text, other.text):
        for personal in (user.identifier, user.email, str(user.id), user.id.hex):
            assert personal not in value
    rows = dict(
        dbsession.execute(
            select(PersistentNameId.sp_id, PersistentNameId.name_id)
        ).all()
    )
    assert rows == {sp.id: first.text, sp2.id: other.text}


def test_saml_34_transient_name_id_differs_each_time(testapp, dbsession, sp, user):
    sign_in(testapp, user)
    values = set()
    for _ in range(2):
        name_id = name_id_of(sso(testapp, name_id_format=TRANSIENT, status=200))
        assert name_id.get("Format") == TRANSIENT
        values.add(name_id.text)
    assert len(values) == 2
    persistent = name_id_of(sso(testapp, status=200)).text
    assert persistent not in values


def test_saml_34_pairwise_id_per_sp_subject_id_shared(
    app, tm, testapp, dbsession, sp, sp2, user
):
    for provider in (sp, sp2):
        provider.attributes_released = ["subject-id", "pairwise-id"]
    dbsession.flush()
    sign_in(testapp, user)
    first = released_values(sso(testapp, status=200))
    again = released_values(sso(testapp, status=200))
    other = released_values(sso(testapp, issuer=SP2_ENTITY_ID, status=200))
    assert set(first) == set(other) == {"subject-id", "pairwise-id"}
    assert first["subject-id"] == other["subject-id"]
    assert first["pairwise-id"] != other["pairwise-id"]
    assert first == again
    for values in (first, other):
        for [value] in values.values():
            assert SCOPED_ID.match(value), value

    # Another person: another subject-id.
    someone = person(dbsession)
    someone.roles.append(_role(dbsession, "guru"))
    dbsession.flush()
    other_browser = browser(app, tm, dbsession)
    sign_in(other_browser, someone)
    theirs = released_values(sso(other_browser, status=200))
    assert theirs["subject-id"] != first["subject-id"]
    assert theirs["pairwise-id"] != first["pairwise-id"]


# --------------------------------------------------------------------------
# SAML-31: disabled SP


@pytest.mark.parametrize("binding", ["redirect", "post"])
def test_saml_31_disabled_sp_gets_no_assertion_sp_initiated(
    testapp, dbsession, sp, user, binding
):
    sign_in(testapp, user)

    def attempt():
        if binding == "redirect":
            return sso(testapp)
        xml = authn_request(destination=SSO_POST)
        page = testapp.post("/saml/sso/post", post_fields(xml), status="*")
        return page.follow(status="*") if page.status_int == 303 else page

    assert attempt().status_int == 200
    set_enabled(dbsession, SP_ENTITY_ID, False)
    page = attempt()
    assert page.status_int == 403
    assert error_code(page) == "saml_sp_disabled"
    assert_no_response(page)
    # The toggle flips the outcome back.
    set_enabled(dbsession, SP_ENTITY_ID, True)
    page = attempt()
    assert page.status_int == 200
    assert status_of(parse(saml_xml(page))) == [SUCCESS]


def test_saml_31_disabled_sp_gets_no_assertion_idp_initiated(
    testapp, dbsession, sp, user
):
    sign_in(testapp, user)
    assert testapp.get(f"/saml/init/{sp.id}").status_int == 200
    set_enabled(dbsession, SP_ENTITY_ID, False)
    page = testapp.get(f"/saml/init/{sp.id}?RelayState=x", status=403)
    assert error_code(page) == "saml_sp_disabled"
    assert_no_response(page)
    set_enabled(dbsession, SP_ENTITY_ID, True)
    page = testapp.get(f"/saml/init/{sp.id}?RelayState=x", status=200)
    assert status_of(parse(saml_xml(page))) == [SUCCESS]


def test_saml_31_sp_disabled_while_the_user_signs_in(testapp, dbsession, sp, user):
    page = sso(testapp, status=303)
    set_enabled(dbsession, SP_ENTITY_ID, False)
    continuation = sign_in(testapp, user, start=page.location, lang=None)
    assert "/saml/sso/continue" in continuation.location
    page = continuation.follow(status=403)
    assert error_code(page) == "saml_sp_disabled"
    assert_no_response(page)
    # Enabled again, the same parked request is answered.
    set_enabled(dbsession, SP_ENTITY_ID, True)
    page = continuation.follow(status=200)
    assert status_of(parse(saml_xml(page))) == [SUCCESS]


# --------------------------------------------------------------------------
# SAML-32: missing module role


def _refusals(dbsession, user) -> list[AuditEvent]:
    return list(
        dbsession.scalars(
            select(AuditEvent).where(
                AuditEvent.event == "saml.sso.refused",
                AuditEvent.subject_user_id == user.id,
            )
        )
    )


def assert_no_access(page) -> None:
    """The 403 page naming the service (its English mdui name: signed in with en)."""
    assert page.status_int == 403
    assert page.html.find(id="no-access") is not None
    assert error_code(page) == "saml_no_access"
    assert "access to Example System" in page.text
    assert_no_response(page)


def test_saml_32_user_without_a_role_for_the_module_refused(
    app, tm, testapp, dbsession, sp, user
):
    outsider = person(dbsession)
    other = browser(app, tm, dbsession)
    sign_in(other, outsider)
    page = sso(other)
    assert_no_access(page)
    page = other.get(f"/saml/init/{sp.id}", status="*")
    assert_no_access(page)
    events = _refusals(dbsession, outsider)
    assert len(events) == 2
    assert all(e.detail.get("sp") == SP_ENTITY_ID for e in events)
    assert persistent_count(dbsession) == 0
    assert dbsession.scalar(select(func.count()).select_from(SessionParticipant)) == 0

    # Control: a user holding a role for the module.
    sign_in(testapp, user)
    page = sso(testapp, status=200)
    assert status_of(parse(saml_xml(page))) == [SUCCESS]
    assert _refusals(dbsession, user) == []


def test_saml_32_role_removed_mid_session_refuses_the_next_sso(
    testapp, dbsession, sp, user
):
    sign_in(testapp, user)
    assert status_of(parse(saml_xml(sso(testapp, status=200)))) == [SUCCESS]
    user.roles.clear()
    dbsession.flush()
    assert_no_access(sso(testapp))
    assert_no_access(testapp.get(f"/saml/init/{sp.id}", status="*"))
    assert len(_refusals(dbsession, user)) == 2
    # Given back, the role opens the service again.
    user.roles.append(_role(dbsession, "guru"))
    dbsession.flush()
    assert status_of(parse(saml_xml(sso(testapp, status=200)))) == [SUCCESS]


def test_saml_32_sp_without_a_module_refused_for_everyone(
    testapp, dbsession, sp, user, module
):
    sign_in(testapp, user)
    assert sso(testapp).status_int == 200
    sp.module_id = None
    dbsession.flush()
    dbsession.expire(sp, ["module"])
    assert_no_access(sso(testapp))
    assert len(_refusals(dbsession, user)) == 1
    sp.module_id = module.id
    dbsession.flush()
    assert sso(testapp).status_int == 200


# --------------------------------------------------------------------------
# AUTH-13: skipping the forced password change


def test_auth_13_pending_password_change_gets_no_saml_response(
    testapp, dbsession, sp, module
):
    user = person(dbsession, must_change_password=True)
    user.roles.append(_role(dbsession, "guru"))
    dbsession.flush()
    # Signed out: the SSO parks the request and asks for a sign-in...
    page = sso(testapp, status=303)
    done = sign_in(testapp, user, start=page.location, lang=None)
    # ...which ends at the change form, not at the continuation.
    assert urlsplit(done.location).path == "/password/new"
    next_url = parse_qs(urlsplit(page.location).query)["next"][0]
    for url in (
        next_url,
        "/saml/sso/redirect?" + redirect_query(authn_request()),
        f"/saml/init/{sp.id}?RelayState=x",
    ):
        page = testapp.get(url, status=303)
        assert urlsplit(page.location).path == "/password/new", url
        assert "SAMLResponse" not in page.text
    assert dbsession.scalar(select(func.count()).select_from(SessionParticipant)) == 0

    # Control: the change done, the same continuation is answered.
    user.must_change_password = False
    dbsession.flush()
    page = testapp.get(next_url, status=200)
    assert status_of(parse(saml_xml(page))) == [SUCCESS]


def test_auth_13_a_same_site_post_waits_for_the_change_like_a_redirect(
    testapp, dbsession, sp, module
):
    """An SP on the IdP's own site posts with the session cookie: every entry waits.

    The POST is parked and continued on this site like any other; the
    continuation meets the pending change (no Response before it) and is
    answered right after it, as a Redirect's request is.
    """
    user = person(dbsession, must_change_password=True)
    user.roles.append(_role(dbsession, "guru"))
    dbsession.flush()
    assert urlsplit(sign_in(testapp, user).location).path == "/password/new"

    page = testapp.post(
        "/saml/sso/post", post_fields(authn_request(destination=SSO_POST))
    )
    assert page.status_int == 303
    assert urlsplit(page.location).path == "/saml/sso/continue"
    page = page.follow(status=303)
    assert urlsplit(page.location).path == "/password/new"
    assert "SAMLResponse" not in page.text
    assert dbsession.scalar(select(func.count()).select_from(SessionParticipant)) == 0

    form = testapp.get("/password/new?lang=en").forms["new-password-form"]
    form["password"] = form["password_confirm"] = "teh tarik kurang manis di kedai"
    done = form.submit(status=303)
    assert urlsplit(done.location).path == "/saml/sso/continue"
    page = done.follow(status=200)
    assert status_of(parse(saml_xml(page))) == [SUCCESS]


# --------------------------------------------------------------------------
# NameID formats


def test_name_id_persistent_by_default(testapp, dbsession, sp, user):
    sign_in(testapp, user)
    name_id = name_id_of(sso(testapp, status=200))
    assert name_id.get("Format") == PERSISTENT
    row = dbsession.scalar(select(PersistentNameId))
    assert (row.user_id, row.sp_id, row.name_id) == (user.id, sp.id, name_id.text)


def test_name_id_transient_and_email_on_request(testapp, dbsession, sp, user):
    sign_in(testapp, user)
    name_id = name_id_of(sso(testapp, name_id_format=TRANSIENT, status=200))
    assert name_id.get("Format") == TRANSIENT
    assert persistent_count(dbsession) == 0
    name_id = name_id_of(sso(testapp, name_id_format=EMAIL, status=200))
    assert (name_id.get("Format"), name_id.text) == (EMAIL, user.email)
    assert persistent_count(dbsession) == 0


def test_name_id_allow_create_false_without_a_persistent_id_refused(
    testapp, dbsession, sp, user, keypair
):
    sign_in(testapp, user)
    request_id = new_id()
    page = sso(
        testapp, request_id=request_id, name_id_format=PERSISTENT, allow_create=False
    )
    assert page.status_int == 400
    assert_error_response(page, keypair, request_id, INVALID_NAMEID_POLICY)
    assert persistent_count(dbsession) == 0
    # Control: once one exists, AllowCreate="false" gets that one.
    made = name_id_of(sso(testapp, status=200)).text
    page = sso(testapp, name_id_format=PERSISTENT, allow_create=False, status=200)
    assert name_id_of(page).text == made
    assert persistent_count(dbsession) == 1


@pytest.mark.parametrize(
    ("policy_format", "released", "expected"),
    [
        (PERSISTENT, (), PERSISTENT),
        (TRANSIENT, (), TRANSIENT),
        (EMAIL, ("mail",), EMAIL),
    ],
)
def test_name_id_unspecified_gets_the_sp_policy_format(
    testapp, dbsession, sp, user, policy_format, released, expected
):
    sp.name_id_format = policy_format
    sp.attributes_released = list(released)
    dbsession.flush()
    sign_in(testapp, user)
    for requested in (None, UNSPECIFIED):
        page = sso(testapp, name_id_format=requested, allow_create=True, status=200)
        assert name_id_of(page).get("Format") == expected


# --------------------------------------------------------------------------
# AuthnContext


@pytest.mark.parametrize(
    ("comparison", "refs", "allowed"),
    [
        (None, (), {AC_PPT}),
        ("exact", (AC_PPT,), {AC_PPT}),
        (None, (AC_PPT,), {AC_PPT}),  # exact is the default
        ("exact", (AC_PASSWORD,), {AC_PASSWORD}),
        ("exact", (AC_OURS,), {AC_OURS}),
        ("exact", (AC_X509, AC_PASSWORD), {AC_PASSWORD}),
        ("exact", (AC_X509,), set()),
        ("minimum", (AC_PASSWORD,), {AC_PASSWORD, AC_PPT, AC_OURS}),
        ("minimum", (AC_OURS,), {AC_OURS}),
        ("minimum", (AC_X509,), set()),
        ("maximum", (AC_PPT,), {AC_PASSWORD, AC_PPT}),
        ("maximum", (AC_PASSWORD,), {AC_PASSWORD}),
        ("better", (AC_PASSWORD,), {AC_PPT, AC_OURS}),
        ("better", (AC_OURS,), set()),
    ],
)
def test_authn_context(
    testapp, dbsession, sp, user, keypair, settings, comparison, refs, allowed
):
    assert security_image_context(settings) == AC_OURS
    sign_in(testapp, user)
    request_id = new_id()
    page = sso(testapp, request_id=request_id, contexts=refs, comparison=comparison)
    if allowed:
        assert page.status_int == 200
        assert context_of(page) in allowed
    else:
        assert page.status_int == 400
        assert error_code(page) == "saml_no_authn_context"
        assert_error_response(page, keypair, request_id, NO_AUTHN_CONTEXT)


# --------------------------------------------------------------------------
# ForceAuthn and IsPassive


def test_force_authn_signs_in_again_with_a_newer_authn_instant(
    testapp, dbsession, sp, user
):
    sign_in(testapp, user)
    # The sign-in was a while ago.
    row = dbsession.scalar(select(IdpSession).where(IdpSession.user_id == user.id))
    row.authn_at = row.authn_at - dt.timedelta(minutes=10)
    dbsession.flush()
    before = assertion_of(sso(testapp, status=200))
    old = instant(before.find("saml:AuthnStatement", NS).get("AuthnInstant"))

    page = sso(testapp, force_authn=True, status=303)
    parts = urlsplit(page.location)
    assert parts.path == "/login"
    next_url = parse_qs(parts.query)["next"][0]
    assert next_url.startswith("/saml/sso/continue?r=")
    assert "SAMLResponse" not in page.text

    done = sign_in(testapp, user, start=page.location, lang=None)
    assert done.location.endswith(next_url)
    after = assertion_of(done.follow(status=200))
    new = instant(after.find("saml:AuthnStatement", NS).get("AuthnInstant"))
    assert new > old
    assert new >= dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)


def test_is_passive_never_shows_a_page(testapp, dbsession, sp, user, keypair):
    request_id = new_id()
    page = sso(testapp, request_id=request_id, is_passive=True, relay_state="r1")
    assert page.status_int == 200  # straight back, no login redirect
    form = page.forms["saml-post-form"]
    assert form.action == SP_ACS
    assert form["RelayState"].value == "r1"
    xml = saml_xml(page)
    root = parse(xml)
    assert status_of(root) == [RESPONDER, NO_PASSIVE]
    assert root.get("InResponseTo") == request_id
    assert verify(keypair, xml, RESPONSE_NODE, root.get("ID"))
    assert root.find("saml:Assertion", NS) is None
    assert dbsession.scalar(select(func.count()).select_from(PendingSamlRequest)) == 0

    # Control: signed in, IsPassive gets the assertion.
    sign_in(testapp, user)
    page = sso(testapp, is_passive=True, status=200)
    root = parse(saml_xml(page))
    assert status_of(root) == [SUCCESS]
    assert root.find("saml:Assertion", NS) is not None


# --------------------------------------------------------------------------
# POST binding continuation


def _post(testapp, **request):
    xml = authn_request(destination=SSO_POST, **request)
    page = testapp.post(
        "/saml/sso/post", post_fields(xml, relay_state="r2"), status=303
    )
    parts = urlsplit(page.location)
    assert parts.path == "/saml/sso/continue"
    assert list(parse_qs(parts.query)) == ["r"]
    return page


def test_post_binding_continues_once(testapp, dbsession, sp, user):
    sign_in(testapp, user)
    request_id = new_id()
    started = _post(testapp, request_id=request_id)
    page = started.follow(status=200)
    assert page.forms["saml-post-form"]["RelayState"].value == "r2"
    root = parse(saml_xml(page))
    assert status_of(root) == [SUCCESS]
    assert root.get("InResponseTo") == request_id
    # The continuation is single use.
    page = started.follow(status="*")
    assert 400 <= page.status_int < 500
    assert error_code(page) == "saml_expired"
    assert_no_response(page)


def test_post_binding_expired_parked_request(testapp, dbsession, sp, user):
    sign_in(testapp, user)
    started = _post(testapp)
    row = dbsession.scalar(select(PendingSamlRequest))
    row.expires_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    dbsession.flush()
    page = started.follow(status="*")
    assert 400 <= page.status_int < 500
    assert error_code(page) == "saml_expired"
    assert_no_response(page)
    # Control: a fresh parked request is answered.
    page = _post(testapp).follow(status=200)
    assert status_of(parse(saml_xml(page))) == [SUCCESS]


# --------------------------------------------------------------------------
# IdP-initiated SSO


def test_idp_initiated_response_answers_no_request(
    testapp, dbsession, sp, user, keypair
):
    sign_in(testapp, user)
    page = testapp.get(f"/saml/init/{sp.id}?RelayState=x", status=200)
    form = page.forms["saml-post-form"]
    assert form.action == SP_ACS
    assert form["RelayState"].value == "x"
    xml = saml_xml(page)
    root = parse(xml)
    assert status_of(root) == [SUCCESS]
    assert root.get("InResponseTo") is None
    assert root.get("Destination") == SP_ACS
    assertion = root.find("saml:Assertion", NS)
    data = assertion.find(".//saml:SubjectConfirmationData", NS)
    assert data.get("InResponseTo") is None
    assert data.get("Recipient") == SP_ACS
    assert assertion.find(".//saml:Audience", NS).text == SP_ENTITY_ID
    assert verify(keypair, xml, RESPONSE_NODE, root.get("ID"))
    assert verify(keypair, xml, ASSERTION_NODE, assertion.get("ID"))


def test_idp_initiated_signs_in_first_then_comes_back(testapp, dbsession, sp, user):
    url = f"/saml/init/{sp.id}?RelayState=x"
    page = testapp.get(url, status=303)
    parts = urlsplit(page.location)
    assert parts.path == "/login"
    assert parse_qs(parts.query)["next"] == [url]
    assert "SAMLResponse" not in page.text
    done = sign_in(testapp, user, start=page.location, lang=None)
    assert done.location.endswith(url)
    page = done.follow(status=200)
    assert page.forms["saml-post-form"]["RelayState"].value == "x"
    assert status_of(parse(saml_xml(page))) == [SUCCESS]


def test_idp_initiated_unknown_sp_not_found(testapp, dbsession, sp, user):
    sign_in(testapp, user)
    for raw in (str(sp.id + 1000), "abc", "9" * 13, "-1"):
        page = testapp.get(f"/saml/init/{raw}", status=404)
        assert error_code(page) == "not_found"
        assert_no_response(page)
    assert testapp.get(f"/saml/init/{sp.id}").status_int == 200


# --------------------------------------------------------------------------
# The HTTP-POST page


def test_post_page_nonce_button_and_no_store(testapp, dbsession, sp, user):
    sign_in(testapp, user)
    page = sso(testapp, status=200)
    assert page.headers["Cache-Control"] == "no-store"
    csp = page.headers["Content-Security-Policy"]
    nonces = re.findall(r"'nonce-([^']+)'", csp)
    assert len(nonces) == 1
    scripts = page.html.find_all("script")
    assert scripts
    for script in scripts:
        if script.get("src") is None:  # every inline script carries the nonce
            assert script.get("nonce") == nonces[0]
    assert any(s.get("nonce") == nonces[0] for s in scripts)
    assert "'unsafe-inline'" not in csp
    form = page.html.find("form", id="saml-post-form")
    buttons = form.find_all("button", type="submit")
    assert len(buttons) == 1
    assert buttons[0].get_text(strip=True)
    assert buttons[0].get("hidden") is None
    assert "display:none" not in (buttons[0].get("style") or "").replace(" ", "")
    # A second page gets a fresh nonce.
    again = sso(testapp, status=200)
    assert (
        re.findall(r"'nonce-([^']+)'", again.headers["Content-Security-Policy"])
        != nonces
    )


def test_saml_32_no_access_page_names_the_service_in_both_languages(
    testapp, dbsession, sp
):
    """SAML-32: the refusal page names the service in each language shown."""
    from tests.factories import make_user

    outsider = make_user(dbsession)
    sign_in(testapp, outsider)
    page = testapp.get(
        "/saml/sso/redirect?" + redirect_query(authn_request()), status=403
    )
    text = page.html.select_one("[data-error-code]").get_text(" ")
    assert "Example System" in text
    assert "Sistem Contoh" in text
