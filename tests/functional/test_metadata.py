"""The IdP's signed metadata at /saml/metadata."""

from __future__ import annotations

import datetime as dt
import subprocess

import pytest
from lxml import etree
from saml2.xml.schema import validate as validate_schema
from sqlalchemy import func, select

from idp.models import IdpSession

MD = "urn:oasis:names:tc:SAML:2.0:metadata"
DS = "http://www.w3.org/2000/09/xmldsig#"
MDUI = "urn:oasis:names:tc:SAML:metadata:ui"
NS = {"md": MD, "ds": DS, "mdui": MDUI}


@pytest.fixture
def metadata(testapp):
    response = testapp.get("/saml/metadata")
    return response


def _doc(response):
    return etree.fromstring(response.body)


def test_metadata_is_served_as_saml_metadata(metadata):
    assert metadata.status_int == 200
    assert metadata.content_type == "application/samlmetadata+xml"
    assert metadata.cache_control.max_age == 3600


def test_metadata_validates_against_the_saml_schema(metadata, tmp_path):
    path = tmp_path / "md.xml"
    path.write_bytes(metadata.body)
    validate_schema(str(path))


def xmlsec1_verify(document: bytes, cert_file, tmp_path):
    """Verify the EntityDescriptor's signature with the xmlsec1 command line."""
    path = tmp_path / "md.xml"
    path.write_bytes(document)
    return subprocess.run(
        [
            "xmlsec1",
            "--verify",
            "--pubkey-cert-pem",
            str(cert_file),
            "--id-attr:ID",
            f"{MD}:EntityDescriptor",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def test_metadata_signature_verifies_with_xmlsec1(metadata, keypair, tmp_path):
    result = xmlsec1_verify(metadata.body, keypair.cert_file, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stderr


def test_tampered_metadata_fails_xmlsec1(metadata, keypair, tmp_path):
    """The control for the test above: xmlsec1 really checks this document."""
    tampered = metadata.body.replace(b"/saml/sso/post", b"/saml/sso/evil")
    result = xmlsec1_verify(tampered, keypair.cert_file, tmp_path)
    assert result.returncode != 0


def test_metadata_is_signed_rsa_sha256(metadata):
    doc = _doc(metadata)
    signature = doc.find("ds:Signature", NS)
    assert signature is not None, "signature must be a direct child of the root"
    assert (
        signature.find("ds:SignedInfo/ds:SignatureMethod", NS).get("Algorithm")
        == "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    )
    assert (
        signature.find("ds:SignedInfo/ds:Reference/ds:DigestMethod", NS).get(
            "Algorithm"
        )
        == "http://www.w3.org/2001/04/xmlenc#sha256"
    )
    reference = signature.find("ds:SignedInfo/ds:Reference", NS).get("URI")
    assert reference == "#" + doc.get("ID")


def test_metadata_lists_the_design_endpoints(metadata):
    doc = _doc(metadata)
    assert doc.get("entityID") == "https://idp.test/saml/metadata"
    idp = doc.find("md:IDPSSODescriptor", NS)
    sso = {
        (e.get("Binding").rsplit(":", 1)[1], e.get("Location"))
        for e in idp.findall("md:SingleSignOnService", NS)
    }
    slo = {
        (e.get("Binding").rsplit(":", 1)[1], e.get("Location"))
        for e in idp.findall("md:SingleLogoutService", NS)
    }
    assert sso == {
        ("HTTP-Redirect", "https://idp.test/saml/sso/redirect"),
        ("HTTP-POST", "https://idp.test/saml/sso/post"),
    }
    assert slo == {
        ("HTTP-Redirect", "https://idp.test/saml/slo/redirect"),
        ("HTTP-POST", "https://idp.test/saml/slo/post"),
    }
    formats = {e.text for e in idp.findall("md:NameIDFormat", NS)}
    assert "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent" in formats


def test_metadata_carries_the_signing_certificate(metadata, keypair):
    doc = _doc(metadata)
    published = doc.find(
        "md:IDPSSODescriptor/md:KeyDescriptor/ds:KeyInfo/ds:X509Data/ds:X509Certificate",
        NS,
    ).text
    pem_body = "".join(keypair.cert_pem.strip().splitlines()[1:-1])
    assert "".join(published.split()) == pem_body


def test_metadata_valid_until_and_cache_duration(metadata):
    doc = _doc(metadata)
    valid_until = dt.datetime.fromisoformat(
        doc.get("validUntil").replace("Z", "+00:00")
    )
    now = dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=6, hours=23) < valid_until - now <= dt.timedelta(days=7)
    assert doc.get("cacheDuration") == "PT3600S"


def _by_language(elements) -> dict[str, str]:
    """Localised metadata names as {xml:lang: text}."""
    return {
        e.get("{http://www.w3.org/XML/1998/namespace}lang"): e.text for e in elements
    }


def test_metadata_organization_contacts_and_ui_names(metadata):
    doc = _doc(metadata)
    names = _by_language(doc.findall("md:Organization/md:OrganizationDisplayName", NS))
    assert names == {
        "ms": "Kementerian Pendidikan Malaysia",
        "en": "Ministry of Education Malaysia",
    }
    contacts = doc.findall("md:ContactPerson", NS)
    kinds = {c.get("contactType") for c in contacts}
    assert kinds == {"technical", "other"}
    security = next(c for c in contacts if c.get("contactType") == "other")
    assert security.get("{http://refeds.org/metadata}contactType") == (
        "http://refeds.org/metadata/contactType/security"
    )
    assert (
        security.find("md:EmailAddress", NS).text == "mailto:idme-security@moe.gov.my"
    )
    ui = doc.find("md:IDPSSODescriptor/md:Extensions/mdui:UIInfo", NS)
    display = _by_language(ui.findall("mdui:DisplayName", NS))
    assert display == {
        "ms": "idMe Kementerian Pendidikan Malaysia",
        "en": "idMe Ministry of Education Malaysia",
    }


def test_metadata_writes_no_session(testapp, dbsession):
    before = dbsession.scalar(select(func.count()).select_from(IdpSession))
    response = testapp.get("/saml/metadata")
    assert "Set-Cookie" not in response.headers
    assert dbsession.scalar(select(func.count()).select_from(IdpSession)) == before


def test_metadata_is_cached_per_process(testapp):
    first = testapp.get("/saml/metadata").body
    second = testapp.get("/saml/metadata").body
    assert first == second
