"""The test SPs themselves: their metadata and AuthnRequests, before any SSO.

If an interop test fails, these say whether the SP side is sound: metadata
the IdP's registry accepts as the SP meant it, and requests that say what
was asked for and are signed when they should be, checked with tools other
than the SP's own library.
"""

from __future__ import annotations

import base64
import zlib
from urllib.parse import parse_qsl, quote_plus, unquote_plus, urlsplit

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from lxml import etree

from idp.saml.crypto import SignatureError, XmlsecBackend
from idp.saml.registry import import_sp
from idp.saml.sp_metadata import parse_sp_metadata
from tests.interop.sps import (
    EMAIL,
    PERSISTENT,
    SP_CLASSES,
    TRANSIENT,
    status_codes,
)

pytestmark = pytest.mark.interop

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
AUTHN_REQUEST = f"{SAMLP}:AuthnRequest"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
POST_BINDING = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
REDIRECT_BINDING = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
IDP = "https://idp.test"

sp_classes = pytest.mark.parametrize(
    "sp_class", SP_CLASSES, ids=lambda cls: cls.library
)


def redirect_xml(path: str) -> tuple[etree._Element, dict[str, str]]:
    """The AuthnRequest of a Redirect-binding URL, and its query."""
    query = dict(parse_qsl(urlsplit(path).query, keep_blank_values=True))
    xml = zlib.decompress(base64.b64decode(query["SAMLRequest"]), -15)
    return etree.fromstring(xml), query


def post_xml(fields: dict[str, str]) -> bytes:
    return base64.b64decode(fields["SAMLRequest"])


def redirect_signature_verifies(path: str, cert_pem: bytes) -> bool:
    """Bindings 3.4.4.1: RSA-SHA256 over the query parameters as sent."""
    raw = dict(part.split("=", 1) for part in urlsplit(path).query.split("&"))
    signed = "&".join(
        f"{name}={raw[name]}"
        for name in ("SAMLRequest", "RelayState", "SigAlg")
        if name in raw
    )
    public_key = x509.load_pem_x509_certificate(cert_pem).public_key()
    try:
        public_key.verify(
            base64.b64decode(unquote_plus(raw["Signature"])),
            signed.encode("ascii"),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except InvalidSignature:
        return False
    return True


def check_request(root, sp, request_id, destination, **expected):
    assert root.tag == f"{{{SAMLP}}}AuthnRequest"
    assert root.get("ID") == request_id
    assert root.get("Destination") == destination
    assert root.findtext(f"{{{SAML}}}Issuer") == sp.entity_id
    assert root.get("AssertionConsumerServiceURL") == sp.acs_url
    assert root.get("ProtocolBinding") == POST_BINDING
    assert root.get("ForceAuthn", "false") == expected["force_authn"]
    assert root.get("IsPassive", "false") == expected["is_passive"]
    policy = root.find(f"{{{SAMLP}}}NameIDPolicy")
    assert (policy.get("Format") if policy is not None else None) == expected[
        "name_id_format"
    ]


# --------------------------------------------------------------------------
# Metadata


@sp_classes
@pytest.mark.parametrize("encryption", [True, False], ids=["enc", "plain"])
@pytest.mark.parametrize("sign_requests", [True, False], ids=["signed", "unsigned"])
def test_metadata_registers_as_the_sp_meant_it(
    dbsession, module, idp_metadata, sp_class, encryption, sign_requests
):
    formats = (PERSISTENT, TRANSIENT, EMAIL)
    sp = sp_class(
        "https://sp.test/sp",
        idp_metadata,
        sign_requests=sign_requests,
        encryption=encryption,
        name_id_formats=formats,
    )
    data = sp.metadata()
    parsed = parse_sp_metadata(data)
    assert parsed.entity_id == sp.entity_id
    assert parsed.authn_requests_signed is sign_requests
    assert parsed.want_assertions_signed is True
    assert parsed.name_id_formats == formats
    assert [(e.binding, e.location) for e in parsed.assertion_consumer_services] == [
        (POST_BINDING, "https://sp.test/acs")
    ]
    assert [(e.binding, e.location) for e in parsed.single_logout_services] == [
        (REDIRECT_BINDING, "https://sp.test/slo")
    ]
    cert = sp.cert_pem.decode("ascii")
    assert parsed.signing_certificates == (cert,)
    assert parsed.encryption_certificates == ((cert,) if encryption else ())

    row = import_sp(dbsession, data, module_code="m1")
    assert row.entity_id == sp.entity_id
    assert row.module.code == "m1"
    assert row.encrypt_assertion is encryption
    assert row.name_id_format == PERSISTENT


@sp_classes
def test_metadata_lists_only_the_formats_asked_for(idp_metadata, sp_class):
    sp = sp_class("https://sp.test/sp", idp_metadata, name_id_formats=(EMAIL,))
    assert parse_sp_metadata(sp.metadata()).name_id_formats == (EMAIL,)


@sp_classes
def test_metadata_says_whether_assertions_must_be_signed(idp_metadata, sp_class):
    sp = sp_class("https://sp.test/sp", idp_metadata, want_assertions_signed=False)
    assert parse_sp_metadata(sp.metadata()).want_assertions_signed is False


@sp_classes
def test_each_sp_has_its_own_key_and_endpoints_on_its_host(idp_metadata, sp_class):
    one = sp_class("https://one.test/sp", idp_metadata)
    two = sp_class("https://two.test/sp", idp_metadata)
    assert one.cert_pem != two.cert_pem
    assert (one.acs_url, one.slo_url) == (
        "https://one.test/acs",
        "https://one.test/slo",
    )
    assert one.idp_entity_id == f"{IDP}/saml/metadata"


# --------------------------------------------------------------------------
# AuthnRequests

REQUEST_OPTIONS = [
    pytest.param({}, id="plain"),
    pytest.param({"force_authn": True}, id="force"),
    pytest.param({"is_passive": True, "name_id_format": TRANSIENT}, id="passive"),
    pytest.param({"name_id_format": EMAIL}, id="email"),
]


def expected(options: dict) -> dict:
    return {
        "force_authn": "true" if options.get("force_authn") else "false",
        "is_passive": "true" if options.get("is_passive") else "false",
        "name_id_format": options.get("name_id_format"),
    }


@sp_classes
@pytest.mark.parametrize("options", REQUEST_OPTIONS)
@pytest.mark.parametrize("sign", [True, False], ids=["signed", "unsigned"])
def test_redirect_request(idp_metadata, sp_class, options, sign):
    sp = sp_class("https://sp.test/sp", idp_metadata, sign_requests=sign)
    path, request_id = sp.redirect_request(relay_state="back/to?x=1", **options)
    assert path.startswith("/saml/sso/redirect?")
    root, query = redirect_xml(path)
    check_request(root, sp, request_id, f"{IDP}/saml/sso/redirect", **expected(options))
    assert query["RelayState"] == "back/to?x=1"
    # The signature travels in the query, never inside the deflated XML.
    assert root.find(f"{{{DS}}}Signature") is None
    if sign:
        assert query["SigAlg"] == RSA_SHA256
        assert redirect_signature_verifies(path, sp.cert_pem)
        other = sp_class("https://other.test/sp", idp_metadata)
        assert not redirect_signature_verifies(path, other.cert_pem)
    else:
        assert "Signature" not in query and "SigAlg" not in query


@sp_classes
def test_redirect_request_signing_follows_the_sp_unless_told(idp_metadata, sp_class):
    signing = sp_class("https://sp.test/sp", idp_metadata, sign_requests=True)
    assert "Signature=" in signing.redirect_request()[0]
    assert "Signature=" not in signing.redirect_request(sign=False)[0]
    plain = sp_class("https://sp.test/sp", idp_metadata)
    assert "Signature=" not in plain.redirect_request()[0]
    assert "Signature=" in plain.redirect_request(sign=True)[0]


@sp_classes
def test_a_tampered_redirect_signature_does_not_verify(idp_metadata, sp_class):
    sp = sp_class("https://sp.test/sp", idp_metadata, sign_requests=True)
    path, _ = sp.redirect_request(relay_state="a")
    assert redirect_signature_verifies(path, sp.cert_pem)
    assert not redirect_signature_verifies(
        path.replace("RelayState=a", f"RelayState={quote_plus('b')}"), sp.cert_pem
    )


@sp_classes
def test_no_relay_state_unless_given(idp_metadata, sp_class):
    sp = sp_class("https://sp.test/sp", idp_metadata)
    path, _ = sp.redirect_request()
    assert "RelayState" not in redirect_xml(path)[1]
    fields, _ = sp.post_request()
    assert "RelayState" not in fields


@sp_classes
@pytest.mark.parametrize("options", REQUEST_OPTIONS)
@pytest.mark.parametrize("sign", [True, False], ids=["signed", "unsigned"])
def test_post_request(idp_metadata, sp_class, options, sign, tmp_path):
    sp = sp_class("https://sp.test/sp", idp_metadata, sign_requests=sign)
    fields, request_id = sp.post_request(relay_state="r1", **options)
    assert fields["RelayState"] == "r1"
    xml = post_xml(fields)
    root = etree.fromstring(xml)
    check_request(root, sp, request_id, f"{IDP}/saml/sso/post", **expected(options))
    signature = root.find(f"{{{DS}}}Signature")
    if not sign:
        assert signature is None
        return
    # Schema order: the enveloped signature follows the Issuer.
    assert signature.getprevious().tag == f"{{{SAML}}}Issuer"
    cert_file = tmp_path / "sp.crt"
    cert_file.write_bytes(sp.cert_pem)
    backend = XmlsecBackend()
    assert backend.validate_signature(
        xml, str(cert_file), "pem", AUTHN_REQUEST, request_id
    )
    # The control: the same document with its ACS changed no longer verifies.
    tampered = xml.replace(sp.acs_url.encode(), b"https://evil.test/acs")
    with pytest.raises(SignatureError):
        backend.validate_signature(
            tampered, str(cert_file), "pem", AUTHN_REQUEST, request_id
        )


@sp_classes
def test_request_ids_are_fresh(idp_metadata, sp_class):
    sp = sp_class("https://sp.test/sp", idp_metadata)
    ids = {sp.redirect_request()[1] for _ in range(3)}
    ids |= {sp.post_request()[1] for _ in range(3)}
    assert len(ids) == 6


# --------------------------------------------------------------------------
# Helpers the SPs share


def test_status_codes_read_the_whole_chain():
    root = etree.fromstring(
        f'<samlp:Response xmlns:samlp="{SAMLP}"><samlp:Status>'
        '<samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Responder">'
        '<samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:NoPassive"/>'
        "</samlp:StatusCode></samlp:Status></samlp:Response>"
    )
    assert status_codes(root) == (
        "urn:oasis:names:tc:SAML:2.0:status:Responder",
        "urn:oasis:names:tc:SAML:2.0:status:NoPassive",
    )
