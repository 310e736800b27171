"""Hand-made SAML requests, for tests that must control every byte.

The interoperability tests use real SP libraries; the attack tests need
requests those libraries would never send (stale, replayed, re-addressed,
oversized, wrongly signed), so this module writes them from a template and
signs them itself: enveloped XML signatures with python-xmlsec, and
Redirect-binding signatures with ``cryptography`` over the exact query.
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
import zlib
from pathlib import Path
from urllib.parse import quote, quote_plus
from xml.sax.saxutils import quoteattr

import xmlsec
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from lxml import etree

from tests.saml_metadata import SP_ENTITY_ID, sp_key_files

IDP = "https://idp.test"
SSO_REDIRECT = f"{IDP}/saml/sso/redirect"
SSO_POST = f"{IDP}/saml/sso/post"
SLO_REDIRECT = f"{IDP}/saml/slo/redirect"
SLO_POST = f"{IDP}/saml/slo/post"
SP_ACS = "https://sp.example.org/acs"
SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
POST_BINDING = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"


def instant(at: dt.datetime | None = None) -> str:
    at = at or dt.datetime.now(dt.UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def new_id() -> str:
    return "_" + secrets.token_hex(16)


def authn_request(
    *,
    issuer: str = SP_ENTITY_ID,
    request_id: str | None = None,
    issue_instant: dt.datetime | None = None,
    destination: str | None = SSO_REDIRECT,
    acs_url: str | None = SP_ACS,
    acs_index: str | None = None,
    protocol_binding: str | None = POST_BINDING,
    force_authn: bool | None = None,
    is_passive: bool | None = None,
    name_id_format: str | None = None,
    sp_name_qualifier: str | None = None,
    allow_create: bool | None = None,
    contexts: tuple[str, ...] = (),
    comparison: str | None = None,
    issuer_xml: str | None = None,
) -> str:
    """An AuthnRequest; ``issuer_xml`` replaces the Issuer's escaped text."""
    attrs = {
        "ID": request_id or new_id(),
        "Version": "2.0",
        "IssueInstant": instant(issue_instant),
        "Destination": destination,
        "AssertionConsumerServiceURL": acs_url,
        "AssertionConsumerServiceIndex": acs_index,
        "ProtocolBinding": protocol_binding if acs_url is not None else None,
        "ForceAuthn": None if force_authn is None else str(force_authn).lower(),
        "IsPassive": None if is_passive is None else str(is_passive).lower(),
    }
    head = " ".join(f"{k}={quoteattr(v)}" for k, v in attrs.items() if v is not None)
    issuer_text = issuer_xml if issuer_xml is not None else _text(issuer)
    body = f"<saml:Issuer>{issuer_text}</saml:Issuer>"
    if name_id_format or sp_name_qualifier or allow_create is not None:
        policy = {
            "Format": name_id_format,
            "SPNameQualifier": sp_name_qualifier,
            "AllowCreate": None if allow_create is None else str(allow_create).lower(),
        }
        body += (
            "<samlp:NameIDPolicy "
            + " ".join(
                f"{k}={quoteattr(v)}" for k, v in policy.items() if v is not None
            )
            + "/>"
        )
    if contexts:
        refs = "".join(
            f"<saml:AuthnContextClassRef>{_text(c)}</saml:AuthnContextClassRef>"
            for c in contexts
        )
        cmp = f" Comparison={quoteattr(comparison)}" if comparison else ""
        body += (
            f"<samlp:RequestedAuthnContext{cmp}>{refs}</samlp:RequestedAuthnContext>"
        )
    return (
        f'<samlp:AuthnRequest xmlns:samlp="{SAMLP}" xmlns:saml="{SAML}" {head}>'
        f"{body}</samlp:AuthnRequest>"
    )


def _text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def deflate(xml: str | bytes) -> str:
    data = xml.encode() if isinstance(xml, str) else xml
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return base64.b64encode(compressor.compress(data) + compressor.flush()).decode()


def _private_key(key_file: str | None = None):
    key_file = key_file or sp_key_files()[0]
    return serialization.load_pem_private_key(Path(key_file).read_bytes(), None)


def redirect_query(
    xml: str,
    *,
    relay_state: str | None = None,
    sign: bool = False,
    sig_alg: str = RSA_SHA256,
    key_file: str | None = None,
    field: str = "SAMLRequest",
) -> str:
    """The query string of an HTTP-Redirect message (signed over its octets)."""
    query = f"{field}={quote_plus(deflate(xml))}"
    if relay_state is not None:
        query += f"&RelayState={quote_plus(relay_state)}"
    if sign:
        query += f"&SigAlg={quote_plus(sig_alg)}"
        algorithm = hashes.SHA1() if sig_alg == RSA_SHA1 else hashes.SHA256()  # noqa: S303 (SAML-12 attack)
        signature = _private_key(key_file).sign(
            query.encode("ascii"), padding.PKCS1v15(), algorithm
        )
        query += f"&Signature={quote(base64.b64encode(signature).decode(), safe='')}"
    return query


def sign_xml(
    xml: str | bytes,
    *,
    key_file: str | None = None,
    cert_file: str | None = None,
    sha1: bool = False,
) -> bytes:
    """An enveloped signature over the root, placed after the Issuer."""
    key_file = key_file or sp_key_files()[0]
    cert_file = cert_file or sp_key_files()[1]
    root = etree.fromstring(xml.encode() if isinstance(xml, str) else xml)
    c = xmlsec.constants
    signature = xmlsec.template.create(
        root,
        c.TransformExclC14N,
        c.TransformRsaSha1 if sha1 else c.TransformRsaSha256,
        ns="ds",
    )
    root.insert(1, signature)
    reference = xmlsec.template.add_reference(
        signature,
        c.TransformSha1 if sha1 else c.TransformSha256,
        uri="#" + root.get("ID"),
    )
    xmlsec.template.add_transform(reference, c.TransformEnveloped)
    xmlsec.template.add_transform(reference, c.TransformExclC14N)
    key_info = xmlsec.template.ensure_key_info(signature)
    xmlsec.template.add_x509_data(key_info)
    xmlsec.tree.add_ids(root, ["ID"])
    ctx = xmlsec.SignatureContext()
    key = xmlsec.Key.from_file(key_file, c.KeyDataFormatPem)
    key.load_cert_from_file(cert_file, c.KeyDataFormatPem)
    ctx.key = key
    ctx.sign(signature)
    return etree.tostring(root)


def post_fields(
    xml: str | bytes, *, relay_state: str | None = None, field: str = "SAMLRequest"
) -> dict:
    data = xml.encode() if isinstance(xml, str) else xml
    fields = {field: base64.b64encode(data).decode()}
    if relay_state is not None:
        fields["RelayState"] = relay_state
    return fields


def logout_request(
    *,
    name_id: str,
    name_id_format: str,
    session_index: str | None,
    issuer: str = SP_ENTITY_ID,
    destination: str | None = SLO_REDIRECT,
    request_id: str | None = None,
    issue_instant: dt.datetime | None = None,
    qualifiers: tuple[str, str] | None = None,
) -> str:
    """A LogoutRequest from an SP naming one of its subjects."""
    attrs = {
        "ID": request_id or new_id(),
        "Version": "2.0",
        "IssueInstant": instant(issue_instant),
        "Destination": destination,
    }
    head = " ".join(f"{k}={quoteattr(v)}" for k, v in attrs.items() if v is not None)
    qualifier = ""
    if qualifiers:
        qualifier = (
            f" NameQualifier={quoteattr(qualifiers[0])}"
            f" SPNameQualifier={quoteattr(qualifiers[1])}"
        )
    index = (
        f"<samlp:SessionIndex>{_text(session_index)}</samlp:SessionIndex>"
        if session_index is not None
        else ""
    )
    return (
        f'<samlp:LogoutRequest xmlns:samlp="{SAMLP}" xmlns:saml="{SAML}" {head}>'
        f"<saml:Issuer>{_text(issuer)}</saml:Issuer>"
        f"<saml:NameID Format={quoteattr(name_id_format)}{qualifier}>"
        f"{_text(name_id)}</saml:NameID>{index}</samlp:LogoutRequest>"
    )


def logout_response(
    *,
    in_response_to: str,
    issuer: str = SP_ENTITY_ID,
    destination: str | None = SLO_REDIRECT,
    status: str = "urn:oasis:names:tc:SAML:2.0:status:Success",
) -> str:
    """An SP's LogoutResponse to the IdP."""
    attrs = {
        "ID": new_id(),
        "Version": "2.0",
        "IssueInstant": instant(),
        "Destination": destination,
        "InResponseTo": in_response_to,
    }
    head = " ".join(f"{k}={quoteattr(v)}" for k, v in attrs.items() if v is not None)
    return (
        f'<samlp:LogoutResponse xmlns:samlp="{SAMLP}" xmlns:saml="{SAML}" {head}>'
        f"<saml:Issuer>{_text(issuer)}</saml:Issuer>"
        f'<samlp:Status><samlp:StatusCode Value="{status}"/></samlp:Status>'
        "</samlp:LogoutResponse>"
    )


def decode_redirect(url: str, field: str = "SAMLRequest") -> etree._Element:
    """The XML of a Redirect-binding message in ``url``."""
    from urllib.parse import parse_qs, urlsplit

    value = parse_qs(urlsplit(url).query)[field][0]
    return etree.fromstring(zlib.decompress(base64.b64decode(value), -zlib.MAX_WBITS))
