"""SAML-09..25: every check an incoming AuthnRequest passes, attacked one at a time.

Each attack is sent by a signed-in user over the binding(s) it applies to,
and is paired with a control that differs only in the attack and is
accepted (SECURITY.md, test rule 2): for the Redirect binding the control's
answer is the auto-posting ``saml-post-form`` page itself; for the POST
binding a 303 to ``/saml/sso/continue``, whose page is that form. Where the
attack leaves the request's ID unrecorded, the control reuses it, which also
shows the refusal wrote no replay record.

A refusal is a 4xx page with a stable ``data-error-code``, both languages'
section and a reference, and nothing written (no parked request, session
participant, persistent NameID or replay record unless the entry says so).
Once the issuer, signature and ACS are trusted the page carries a signed
error Response for that ACS (``saml-error-form``); before that, no form at
all (SAML-19).

Every request is written by tests/saml_requests.py (or signed here, when the
attack is in the signature itself), never by an SP library.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import socket
import threading
import time
import tracemalloc
import zlib
from pathlib import Path
from urllib.parse import quote, quote_plus, unquote

import lxml.html
import pytest
import webtest
import xmlsec
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from lxml import etree
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from idp.db import make_engine
from idp.i18n import translate_in
from idp.models import (
    Module,
    PendingSamlRequest,
    PersistentNameId,
    Role,
    SeenRequestId,
    SessionParticipant,
)
from idp.requestlog import REFERENCE_PATTERN
from idp.saml.registry import import_sp
from idp.views.saml import PAGES
from tests.app import make_app
from tests.factories import make_user
from tests.saml_metadata import RELEASED, SP_ENTITY_ID, make_sp_metadata, sp_key_files
from tests.saml_pages import response_of, status_of
from tests.saml_requests import (
    RSA_SHA1,
    RSA_SHA256,
    SAML,
    SAMLP,
    SLO_REDIRECT,
    SP_ACS,
    SSO_POST,
    SSO_REDIRECT,
    authn_request,
    deflate,
    new_id,
    post_fields,
    redirect_query,
    sign_xml,
)
from tests.signin import sign_in

DS = "http://www.w3.org/2000/09/xmldsig#"
XSL = "http://www.w3.org/1999/XSL/Transform"
SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
REQUESTER = "urn:oasis:names:tc:SAML:2.0:status:Requester"
REDIRECT_BINDING = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
ARTIFACT_BINDING = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Artifact"
RSA_SHA512 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512"
HMAC_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#hmac-sha256"
OTHER_ENTITY_ID = "https://other.example.org/sp"
OTHER_ACS = "https://other.example.org/acs"

REDIRECT, POST = "redirect", "post"
BINDINGS = pytest.mark.parametrize("binding", [REDIRECT, POST])
C = xmlsec.constants

# What an accepted request writes, by table; a refusal writes none of it.
TABLES = {
    "pending": PendingSamlRequest,
    "participants": SessionParticipant,
    "name_ids": PersistentNameId,
    "seen": SeenRequestId,
}
NOTHING = dict.fromkeys(TABLES, 0)
ANSWERED_REDIRECT = {"pending": 0, "participants": 1, "name_ids": 1, "seen": 1}
ANSWERED_POST = {"pending": 1, "participants": 1, "name_ids": 1, "seen": 1}
ANSWERED = {REDIRECT: ANSWERED_REDIRECT, POST: ANSWERED_POST}

# An untrusted reply address: the page must hold no form at all.
NO_REPLY = None
# The reply check is another test's (SAML-20: see its own test).
NOT_CHECKED = object()


# --------------------------------------------------------------------------
# Fixtures

# module, sp, signed_sp and user: tests/functional/conftest.py.


@pytest.fixture
def other_sp(dbsession, module):
    """A second registered SP, with its own ACS on its own host."""
    sp = import_sp(dbsession, make_sp_metadata(OTHER_ENTITY_ID), module_code="emis")
    sp.attributes_released = list(RELEASED)
    dbsession.flush()
    return sp


@pytest.fixture
def signed_in(testapp, user):
    sign_in(testapp, user)
    return testapp


@pytest.fixture
def listener():
    """A TCP port on 127.0.0.1 that records whether anything connected."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    yield server
    server.close()


def connections(server: socket.socket) -> int:
    count = 0
    while True:
        try:
            conn, _ = server.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


# --------------------------------------------------------------------------
# Sending


def destination_of(binding: str) -> str:
    return SSO_REDIRECT if binding == REDIRECT else SSO_POST


def make(binding: str, request_id: str, **kwargs) -> str:
    """An AuthnRequest addressed to ``binding``'s endpoint."""
    kwargs.setdefault("destination", destination_of(binding))
    return authn_request(request_id=request_id, **kwargs)


def get(testapp, query: str):
    return testapp.get("/saml/sso/redirect?" + query, expect_errors=True)


def post(testapp, fields):
    page = testapp.post("/saml/sso/post", fields, expect_errors=True)
    # pyramid_retry spools a body over 10 KiB to a temporary file
    # (webob's make_body_seekable) that nothing closes after the request;
    # close it here, or the ResourceWarning fails a later test.
    body = page.request.environ.get("wsgi.input")
    if body is not None and not body.closed:
        body.close()
    return page


def send(
    testapp,
    binding: str,
    xml: str | bytes,
    *,
    relay_state: str | None = None,
    signed: bool = False,
):
    """Submit ``xml`` with ``binding``, signed with the registered key if asked."""
    if binding == REDIRECT:
        return get(testapp, redirect_query(xml, relay_state=relay_state, sign=signed))
    data = sign_xml(xml) if signed else xml
    return post(testapp, post_fields(data, relay_state=relay_state))


def deflated_query(data: bytes, relay_state: str | None = None) -> str:
    """A Redirect query for arbitrary bytes (``redirect_query`` wants text)."""
    query = f"SAMLRequest={quote_plus(deflate(data))}"
    if relay_state is not None:
        query += f"&RelayState={quote_plus(relay_state)}"
    return query


# --------------------------------------------------------------------------
# Signing, where the attack is in the signature


def private_key(key_file: str | None = None):
    path = key_file or sp_key_files()[0]
    return serialization.load_pem_private_key(Path(path).read_bytes(), None)


def sign_query(
    query: str,
    *,
    sig_alg: str = RSA_SHA256,
    key_file: str | None = None,
    hmac_key: bytes | None = None,
) -> str:
    """Append SigAlg and Signature over the query exactly as given."""
    query += f"&SigAlg={quote_plus(sig_alg)}"
    if hmac_key is not None:
        signature = hmac.new(hmac_key, query.encode("ascii"), hashlib.sha256).digest()
    else:
        algorithm = hashes.SHA1() if sig_alg == RSA_SHA1 else hashes.SHA256()  # noqa: S303
        signature = private_key(key_file).sign(
            query.encode("ascii"), padding.PKCS1v15(), algorithm
        )
    return query + f"&Signature={quote(base64.b64encode(signature).decode(), safe='')}"


def query_params(query: str) -> list[tuple[str, str]]:
    return [tuple(part.split("=", 1)) for part in query.split("&")]  # type: ignore[misc]


def with_param(query: str, name: str, raw_value: str | None, *, after: str = "") -> str:
    """``query`` with ``name`` replaced (None: removed), or inserted after ``after``."""
    out: list[str] = []
    found = False
    for key, value in query_params(query):
        if key == name:
            found = True
            if raw_value is not None:
                out.append(f"{key}={raw_value}")
            continue
        out.append(f"{key}={value}")
        if key == after and not found:
            out.append(f"{name}={raw_value}")
            found = True
    return "&".join(out)


def param(query: str, name: str) -> str:
    return dict(query_params(query))[name]


def sign_post(
    xml: str | bytes,
    *,
    key_file: str | None = None,
    keyinfo_cert: str | None = "own",
    method=C.TransformRsaSha256,
    digest=C.TransformSha256,
    c14n=C.TransformExclC14N,
    transforms=(C.TransformEnveloped, C.TransformExclC14N),
    hmac_key: bytes | None = None,
) -> bytes:
    """An enveloped signature over the root, every part chosen by the caller.

    ``transforms`` holds xmlsec transforms or callables adding one to the
    Reference; ``keyinfo_cert`` is a certificate file for ``ds:KeyInfo``
    ("own": the registered one, None: no KeyInfo).
    """
    key_file = key_file or sp_key_files()[0]
    if keyinfo_cert == "own":
        keyinfo_cert = sp_key_files()[1]
    root = etree.fromstring(xml.encode() if isinstance(xml, str) else xml)
    signature = xmlsec.template.create(root, c14n, method, ns="ds")
    root.insert(1, signature)
    reference = xmlsec.template.add_reference(
        signature, digest, uri="#" + root.get("ID")
    )
    for transform in transforms:
        if callable(transform):
            transform(reference)
        else:
            xmlsec.template.add_transform(reference, transform)
    if keyinfo_cert is not None and hmac_key is None:
        xmlsec.template.add_x509_data(xmlsec.template.ensure_key_info(signature))
    xmlsec.tree.add_ids(root, ["ID"])
    if hmac_key is not None:
        key = xmlsec.Key.from_binary_data(C.KeyDataHmac, hmac_key)
    else:
        key = xmlsec.Key.from_file(key_file, C.KeyDataFormatPem)
        if keyinfo_cert is not None:
            key.load_cert_from_file(keyinfo_cert, C.KeyDataFormatPem)
    ctx = xmlsec.SignatureContext()
    ctx.key = key
    ctx.sign(signature)
    return etree.tostring(root)


IDENTITY_XSLT = (
    f'<xsl:stylesheet xmlns:xsl="{XSL}" version="1.0">'
    '<xsl:template match="@*|node()"><xsl:copy>'
    '<xsl:apply-templates select="@*|node()"/></xsl:copy></xsl:template>'
    "</xsl:stylesheet>"
)
# 2**40 template calls: a CPU bomb if anything ever ran it.
BOMB_XSLT = (
    f'<xsl:stylesheet xmlns:xsl="{XSL}" version="1.0">'
    '<xsl:template match="/"><xsl:call-template name="a">'
    '<xsl:with-param name="n" select="0"/></xsl:call-template></xsl:template>'
    '<xsl:template name="a"><xsl:param name="n"/><xsl:if test="$n &lt; 40">'
    '<xsl:call-template name="a"><xsl:with-param name="n" select="$n + 1"/>'
    "</xsl:call-template>"
    '<xsl:call-template name="a"><xsl:with-param name="n" select="$n + 1"/>'
    "</xsl:call-template></xsl:if></xsl:template></xsl:stylesheet>"
)
BENIGN_XPATH = "not(ancestor-or-self::ds:Signature)"
# Every node times every node times every node, per node.
BOMB_XPATH = "count(//. | //. | //.) * count(//*[count(//*[count(//*) > 0]) > 0]) > 0"


def xslt_transform(stylesheet: str = IDENTITY_XSLT):
    def add(reference):
        transform = xmlsec.template.add_transform(reference, C.TransformXslt)
        transform.append(etree.fromstring(stylesheet))

    return add


def xpath_transform(expression: str = BENIGN_XPATH):
    def add(reference):
        transform = xmlsec.template.add_transform(reference, C.TransformXPath)
        etree.SubElement(transform, f"{{{DS}}}XPath").text = expression

    return add


def swap_in_signature(signed: bytes, algorithm: str, make_child) -> bytes:
    """After signing: the content of the Transform ``algorithm`` replaced."""
    root = etree.fromstring(signed)
    for transform in root.iter(f"{{{DS}}}Transform"):
        if transform.get("Algorithm") == algorithm:
            for child in list(transform):
                transform.remove(child)
            transform.append(make_child())
    return etree.tostring(root)


def strip_signature(signed: bytes) -> bytes:
    root = etree.fromstring(signed)
    for signature in root.findall(f"{{{DS}}}Signature"):
        root.remove(signature)
    return etree.tostring(root)


def without_key_info(signed: bytes) -> bytes:
    root = etree.fromstring(signed)
    for key_info in root.iter(f"{{{DS}}}KeyInfo"):
        key_info.getparent().remove(key_info)
    return etree.tostring(root)


# --------------------------------------------------------------------------
# Reading answers


def error_code(page) -> str | None:
    found = re.search(r'data-error-code="([^"]*)"', page.text)
    return found.group(1) if found else None


def summary(page) -> str:
    return f"{page.status} {error_code(page)}"


def rows(dbsession) -> dict[str, int]:
    dbsession.flush()
    return {
        name: dbsession.scalar(select(func.count()).select_from(model))
        for name, model in TABLES.items()
    }


def accepted(testapp, binding: str, page, request_id: str, relay_state=None):
    """The Response page for an accepted request; returns it."""
    if binding == POST:
        assert page.status_int == 303, summary(page)
        assert page.location.startswith("https://idp.test/saml/sso/continue?r=")
        page = testapp.get(page.location)
    assert page.status_int == 200, summary(page)
    assert "saml-error-form" not in page.text
    form = page.forms["saml-post-form"]
    assert form.action == SP_ACS
    response = response_of(page)
    assert status_of(response) == [SUCCESS]
    assert response.get("InResponseTo") == request_id
    assert response.get("Destination") == SP_ACS
    if relay_state is None:
        assert "RelayState" not in form.fields
    else:
        assert form["RelayState"].value == relay_state
    return page


def refused(page, code: str, *, status: int = 400, reply_to=NO_REPLY):
    """A refusal page: status, code, both languages, reference; the right form.

    ``reply_to`` is the request ID a signed error Response must answer (the
    ACS was trusted), or NO_REPLY: then the page holds no form at all.
    Returns the decoded error Response, if any.
    """
    assert 400 <= status < 500
    assert (page.status_int, error_code(page)) == (status, code), summary(page)
    doc = lxml.html.fromstring(page.body)
    [section] = doc.xpath("//section[@data-error-code]")
    assert section.findtext("h1").strip()
    [second] = section.xpath("div[@class='second-language']")
    assert second.get("lang") in ("ms", "en")
    assert second.get("lang") != doc.get("lang")
    assert second.findtext("h2").strip()
    assert second.findtext("p").strip()
    # Both languages: the second section is not the first one again.
    assert second.findtext("h2").strip() != section.findtext("h1").strip()
    [reference] = section.xpath(".//code[@class='reference']")
    assert re.fullmatch(REFERENCE_PATTERN, reference.text)
    assert f"{status} {code}" in page.text
    assert "Traceback" not in page.text
    assert "saml-post-form" not in page.text
    if reply_to is NOT_CHECKED:
        return None
    if reply_to is NO_REPLY:
        assert doc.xpath("//form") == []
        assert "SAMLResponse" not in page.text
        return None
    form = page.forms["saml-error-form"]
    assert form.action == SP_ACS
    assert len(doc.xpath("//form")) == 1
    response = etree.fromstring(base64.b64decode(form["SAMLResponse"].value))
    assert response.tag == f"{{{SAMLP}}}Response"
    assert response.get("InResponseTo") == reply_to
    assert response.get("Destination") == SP_ACS
    assert status_of(response)[0] == REQUESTER
    assert response.find(f"{{{DS}}}Signature") is not None
    assert (
        "form-action 'self' https://sp.example.org"
        in (page.headers["Content-Security-Policy"])
    )
    return response


# --------------------------------------------------------------------------
# SAML-09: signature stripping


@BINDINGS
def test_saml_09_unsigned_request_refused_when_metadata_wants_it_signed(
    signed_in, dbsession, signed_sp, binding
):
    request_id = new_id()
    xml = make(binding, request_id)
    page = send(signed_in, binding, xml)
    refused(page, "saml_signature_required")
    assert rows(dbsession) == NOTHING
    page = send(signed_in, binding, xml, signed=True)
    accepted(signed_in, binding, page, request_id)
    assert rows(dbsession) == ANSWERED[binding]


@pytest.mark.parametrize(
    ("strip", "code"),
    [
        # Signature and SigAlg both gone: an unsigned request.
        (
            lambda q: with_param(with_param(q, "Signature", None), "SigAlg", None),
            "saml_signature_required",
        ),
        # SigAlg left behind without its Signature, and the reverse.
        (lambda q: with_param(q, "Signature", None), "saml_bad_signature"),
        (lambda q: with_param(q, "SigAlg", None), "saml_bad_signature"),
        (lambda q: with_param(q, "Signature", ""), "saml_bad_signature"),
    ],
    ids=["both", "signature", "sigalg", "empty-signature"],
)
def test_saml_09_redirect_signature_removed_is_refused(
    signed_in, dbsession, signed_sp, strip, code
):
    request_id = new_id()
    query = redirect_query(make(REDIRECT, request_id), relay_state="r1", sign=True)
    refused(get(signed_in, strip(query)), code)
    assert rows(dbsession) == NOTHING
    accepted(signed_in, REDIRECT, get(signed_in, query), request_id, "r1")


def test_saml_09_an_enveloped_signature_does_not_sign_a_redirect_message(
    signed_in, dbsession, signed_sp
):
    """The Redirect binding's signature is the query's; one inside the XML is not read."""
    request_id = new_id()
    xml = make(REDIRECT, request_id)
    page = get(signed_in, deflated_query(sign_xml(xml)))
    refused(page, "saml_signature_required")
    assert rows(dbsession) == NOTHING
    accepted(
        signed_in, REDIRECT, get(signed_in, redirect_query(xml, sign=True)), request_id
    )


def test_saml_09_post_signature_removed_or_moved_to_form_fields_is_refused(
    signed_in, dbsession, signed_sp
):
    request_id = new_id()
    signed = sign_xml(make(POST, request_id))
    refused(
        post(signed_in, post_fields(strip_signature(signed))), "saml_signature_required"
    )
    # A Redirect-style signature in form fields signs nothing in a POST message.
    fields = post_fields(strip_signature(signed))
    query = sign_query(f"SAMLRequest={quote_plus(fields['SAMLRequest'])}")
    fields["SigAlg"] = RSA_SHA256
    fields["Signature"] = unquote(param(query, "Signature"))
    refused(post(signed_in, fields), "saml_signature_required")
    assert rows(dbsession) == NOTHING
    accepted(signed_in, POST, post(signed_in, post_fields(signed)), request_id)


# --------------------------------------------------------------------------
# SAML-10: wrong signer


def test_saml_10_redirect_signed_by_another_key_or_hmac_is_refused(
    signed_in, dbsession, sp
):
    """The SP's metadata does not demand signing: a bad signature is still refused."""
    request_id = new_id()
    base = deflated_query(make(REDIRECT, request_id).encode(), relay_state="r1")
    other_key = sp_key_files("other")[0]
    registered_cert = Path(sp_key_files()[1]).read_bytes()
    attacks = {
        "other key": sign_query(base, key_file=other_key),
        # The classic key confusion: HMAC keyed with the SP's public certificate.
        "hmac": sign_query(base, sig_alg=HMAC_SHA256, hmac_key=registered_cert),
    }
    for name, query in attacks.items():
        page = get(signed_in, query)
        assert error_code(page) == "saml_bad_signature", name
        refused(page, "saml_bad_signature")
    assert rows(dbsession) == NOTHING
    accepted(signed_in, REDIRECT, get(signed_in, sign_query(base)), request_id, "r1")


@pytest.mark.parametrize(
    "attack",
    ["other-key", "other-key-with-its-cert", "other-key-claiming-our-cert", "hmac"],
)
def test_saml_10_post_signed_by_another_key_or_hmac_is_refused(
    signed_in, dbsession, sp, attack
):
    request_id = new_id()
    xml = make(POST, request_id)
    other_key, other_cert = sp_key_files("other")
    registered_cert = sp_key_files()[1]
    signed = {
        "other-key": lambda: sign_post(xml, key_file=other_key, keyinfo_cert=None),
        # KeyInfo is never a source of trust (CVE-2021-21239).
        "other-key-with-its-cert": lambda: sign_post(
            xml, key_file=other_key, keyinfo_cert=other_cert
        ),
        "other-key-claiming-our-cert": lambda: sign_post(
            xml, key_file=other_key, keyinfo_cert=registered_cert
        ),
        "hmac": lambda: sign_post(
            xml,
            method=C.TransformHmacSha256,
            hmac_key=Path(registered_cert).read_bytes(),
        ),
    }[attack]()
    refused(post(signed_in, post_fields(signed)), "saml_bad_signature")
    assert rows(dbsession) == NOTHING
    accepted(signed_in, POST, post(signed_in, post_fields(sign_post(xml))), request_id)


def test_saml_10_keyinfo_is_ignored_for_the_registered_key(signed_in, dbsession, sp):
    """Control for the above: the registered key verifies with or without KeyInfo."""
    first, second = new_id(), new_id()
    other_cert = sp_key_files("other")[1]
    page = post(
        signed_in,
        post_fields(without_key_info(sign_post(make(POST, first)))),
    )
    accepted(signed_in, POST, page, first)
    page = post(
        signed_in,
        post_fields(sign_post(make(POST, second), keyinfo_cert=other_cert)),
    )
    accepted(signed_in, POST, page, second)


# --------------------------------------------------------------------------
# SAML-11: Redirect tampering


def _tampered(query: str, attack: str) -> str:
    other = quote_plus(deflate(make(REDIRECT, new_id(), acs_url=None)))
    return {
        "relay-state-changed": lambda: with_param(query, "RelayState", "r2"),
        "relay-state-removed": lambda: with_param(query, "RelayState", None),
        "sig-alg-changed": lambda: with_param(query, "SigAlg", quote_plus(RSA_SHA512)),
        "sig-alg-sha1": lambda: with_param(query, "SigAlg", quote_plus(RSA_SHA1)),
        "request-swapped": lambda: with_param(query, "SAMLRequest", other),
        # The same RelayState, percent-encoded differently: other octets.
        "relay-state-re-encoded": lambda: with_param(query, "RelayState", "%72%31"),
    }[attack]()


@pytest.mark.parametrize(
    "attack",
    [
        "relay-state-changed",
        "relay-state-removed",
        "sig-alg-changed",
        "sig-alg-sha1",
        "request-swapped",
        "relay-state-re-encoded",
    ],
)
def test_saml_11_redirect_query_changed_after_signing_is_refused(
    signed_in, dbsession, sp, attack
):
    request_id = new_id()
    query = redirect_query(make(REDIRECT, request_id), relay_state="r1", sign=True)
    refused(get(signed_in, _tampered(query, attack)), "saml_bad_signature")
    assert rows(dbsession) == NOTHING
    accepted(signed_in, REDIRECT, get(signed_in, query), request_id, "r1")


def test_saml_11_relay_state_added_after_signing_is_refused(signed_in, dbsession, sp):
    request_id = new_id()
    query = redirect_query(make(REDIRECT, request_id), sign=True)
    tampered = with_param(query, "RelayState", "r1", after="SAMLRequest")
    assert tampered.index("RelayState") < tampered.index("SigAlg")
    refused(get(signed_in, tampered), "saml_bad_signature")
    assert rows(dbsession) == NOTHING
    accepted(signed_in, REDIRECT, get(signed_in, query), request_id)


def _lower_escapes(value: str) -> str:
    return re.sub("%[0-9A-F]{2}", lambda m: m[0].lower(), value)


def test_saml_11_the_signature_covers_the_octets_as_received(signed_in, dbsession, sp):
    """An SP that encodes differently (%20, lower-case hex) is verified as sent."""
    request_id = new_id()
    relay_state = "a b/c~d"
    base = (
        f"SAMLRequest={_lower_escapes(quote(deflate(make(REDIRECT, request_id)), safe=''))}"
        f"&RelayState={quote(relay_state, safe='')}"
    )
    assert "%20" in base and "%2f" in base
    query = sign_query(base)
    accepted(signed_in, REDIRECT, get(signed_in, query), request_id, relay_state)


# --------------------------------------------------------------------------
# SAML-12: SHA-1


def test_saml_12_redirect_rsa_sha1_refused_unless_the_sp_allows_it(
    signed_in, dbsession, sp
):
    request_id = new_id()
    query = redirect_query(
        make(REDIRECT, request_id), relay_state="r1", sign=True, sig_alg=RSA_SHA1
    )
    refused(get(signed_in, query), "saml_bad_signature")
    assert rows(dbsession) == NOTHING
    # The per-SP legacy flag, and nothing else, flips the outcome.
    sp.allow_sha1 = True
    dbsession.flush()
    page = accepted(signed_in, REDIRECT, get(signed_in, query), request_id, "r1")
    assert_no_sha1(response_of(page))


@pytest.mark.parametrize(
    ("method", "digest"),
    [
        (C.TransformRsaSha1, C.TransformSha1),
        (C.TransformRsaSha1, C.TransformSha256),
        (C.TransformRsaSha256, C.TransformSha1),
    ],
    ids=["rsa-sha1+sha1", "rsa-sha1+sha256", "rsa-sha256+sha1"],
)
def test_saml_12_post_sha1_signature_or_digest_refused_unless_the_sp_allows_it(
    signed_in, dbsession, sp, method, digest
):
    request_id = new_id()
    signed = sign_post(make(POST, request_id), method=method, digest=digest)
    refused(post(signed_in, post_fields(signed)), "saml_bad_signature")
    assert rows(dbsession) == NOTHING
    sp.allow_sha1 = True
    dbsession.flush()
    page = accepted(signed_in, POST, post(signed_in, post_fields(signed)), request_id)
    assert_no_sha1(response_of(page))


def test_saml_12_sign_xml_sha1_helper_is_refused_then_allowed(signed_in, dbsession, sp):
    """The shared helper's SHA-1 (SignatureMethod and DigestMethod) as well."""
    request_id = new_id()
    signed = sign_xml(make(POST, request_id), sha1=True)
    assert b"rsa-sha1" in signed and b"xmldsig#sha1" in signed
    refused(post(signed_in, post_fields(signed)), "saml_bad_signature")
    sp.allow_sha1 = True
    dbsession.flush()
    accepted(signed_in, POST, post(signed_in, post_fields(signed)), request_id)


def assert_no_sha1(response) -> None:
    """The IdP never signs with SHA-1, even for an SP allowed to send it."""
    algorithms = [
        e.get("Algorithm")
        for e in response.iter(f"{{{DS}}}SignatureMethod", f"{{{DS}}}DigestMethod")
    ]
    assert algorithms
    assert not [a for a in algorithms if "sha1" in a]


# --------------------------------------------------------------------------
# SAML-13: hostile transforms


def _hostile(xml: str, attack: str) -> bytes:
    xslt, xpath = C.TransformXslt.href, C.TransformXPath.href
    return {
        # Validly signed with the registered key: only the allowlist refuses.
        "xslt": lambda: sign_post(
            xml, transforms=(C.TransformEnveloped, xslt_transform())
        ),
        "xpath": lambda: sign_post(
            xml, transforms=(xpath_transform(), C.TransformExclC14N)
        ),
        "inclusive-c14n": lambda: sign_post(xml, c14n=C.TransformInclC14N),
        "c14n11-transform": lambda: sign_post(
            xml, transforms=(C.TransformEnveloped, C.TransformInclC14N11)
        ),
        # CPU bombs put in after signing: they must never run.
        "xslt-bomb": lambda: swap_in_signature(
            sign_post(xml, transforms=(C.TransformEnveloped, xslt_transform())),
            xslt,
            lambda: etree.fromstring(BOMB_XSLT),
        ),
        "xpath-bomb": lambda: swap_in_signature(
            sign_post(xml, transforms=(xpath_transform(), C.TransformExclC14N)),
            xpath,
            lambda: _xpath_element(BOMB_XPATH),
        ),
        "many-transforms": lambda: _many_transforms(sign_post(xml), 2000),
        "unknown-c14n": lambda: _set_c14n(sign_post(xml), "urn:x-evil:c14n"),
    }[attack]()


def _xpath_element(expression: str):
    element = etree.Element(f"{{{DS}}}XPath", nsmap={"ds": DS})
    element.text = expression
    return element


def _many_transforms(signed: bytes, count: int) -> bytes:
    root = etree.fromstring(signed)
    transforms = next(root.iter(f"{{{DS}}}Transforms"))
    for _ in range(count):
        etree.SubElement(
            transforms, f"{{{DS}}}Transform", Algorithm=C.TransformExclC14N.href
        )
    return etree.tostring(root)


def _set_c14n(signed: bytes, algorithm: str) -> bytes:
    root = etree.fromstring(signed)
    next(root.iter(f"{{{DS}}}CanonicalizationMethod")).set("Algorithm", algorithm)
    return etree.tostring(root)


@pytest.mark.parametrize(
    "attack",
    [
        "xslt",
        "xpath",
        "inclusive-c14n",
        "c14n11-transform",
        "xslt-bomb",
        "xpath-bomb",
        "many-transforms",
        "unknown-c14n",
    ],
)
def test_saml_13_hostile_transforms_are_refused_in_under_a_second(
    signed_in, dbsession, sp, attack
):
    request_id = new_id()
    xml = make(POST, request_id)
    fields = post_fields(_hostile(xml, attack))
    started = time.perf_counter()
    page = post(signed_in, fields)
    elapsed = time.perf_counter() - started
    refused(page, "saml_bad_signature")
    assert elapsed < 1.0
    assert rows(dbsession) == NOTHING
    accepted(signed_in, POST, post(signed_in, post_fields(sign_post(xml))), request_id)


# --------------------------------------------------------------------------
# SAML-14: DOCTYPE, entities, XInclude

CANARY = "idme-canary-3f9c2a"


def _with_doctype(xml: str, doctype: str, issuer: str | None = None) -> str:
    if issuer is not None:
        xml = xml.replace(f"<saml:Issuer>{SP_ENTITY_ID}</saml:Issuer>", issuer)
    return doctype + xml


def _xml_attack(xml: str, attack: str, secret: Path, port: int) -> str:
    url = f"http://127.0.0.1:{port}"
    laughs = '<!ENTITY l0 "lol">' + "".join(
        f'<!ENTITY l{n} "{f"&l{n - 1};" * 10}">' for n in range(1, 10)
    )
    return {
        "doctype": lambda: _with_doctype(xml, "<!DOCTYPE samlp:AuthnRequest>"),
        "internal-entity": lambda: _with_doctype(
            xml,
            f'<!DOCTYPE r [<!ENTITY sp "{SP_ENTITY_ID}">]>',
            "<saml:Issuer>&sp;</saml:Issuer>",
        ),
        "file-entity": lambda: _with_doctype(
            xml,
            f'<!DOCTYPE r [<!ENTITY x SYSTEM "file://{secret}">]>',
            "<saml:Issuer>&x;</saml:Issuer>",
        ),
        "http-entity": lambda: _with_doctype(
            xml,
            f'<!DOCTYPE r [<!ENTITY x SYSTEM "{url}/x">]>',
            "<saml:Issuer>&x;</saml:Issuer>",
        ),
        "parameter-entity": lambda: _with_doctype(
            xml, f'<!DOCTYPE r [<!ENTITY % p SYSTEM "{url}/p.dtd"> %p;]>'
        ),
        "external-dtd": lambda: _with_doctype(
            xml, f'<!DOCTYPE samlp:AuthnRequest SYSTEM "{url}/r.dtd">'
        ),
        "file-dtd": lambda: _with_doctype(
            xml, f'<!DOCTYPE samlp:AuthnRequest SYSTEM "file://{secret}">'
        ),
        "billion-laughs": lambda: _with_doctype(
            xml, f"<!DOCTYPE r [{laughs}]>", "<saml:Issuer>&l9;</saml:Issuer>"
        ),
        # XInclude where the Issuer is read: never expanded, never matched.
        "xinclude-file": lambda: xml.replace(
            f"<saml:Issuer>{SP_ENTITY_ID}</saml:Issuer>",
            '<saml:Issuer><xi:include xmlns:xi="http://www.w3.org/2001/XInclude"'
            f' href="file://{secret}" parse="text"/></saml:Issuer>',
        ),
        "xinclude-http": lambda: xml.replace(
            f"<saml:Issuer>{SP_ENTITY_ID}</saml:Issuer>",
            '<saml:Issuer><xi:include xmlns:xi="http://www.w3.org/2001/XInclude"'
            f' href="{url}/i" parse="text"/></saml:Issuer>',
        ),
    }[attack]()


XML_ATTACKS = [
    "doctype",
    "internal-entity",
    "file-entity",
    "http-entity",
    "parameter-entity",
    "external-dtd",
    "file-dtd",
    "billion-laughs",
    "xinclude-file",
    "xinclude-http",
]


@pytest.fixture
def secret_file(tmp_path):
    path = tmp_path / "secret.txt"
    path.write_text(f"{SP_ENTITY_ID}{CANARY}\n")
    return path


@BINDINGS
@pytest.mark.parametrize("attack", XML_ATTACKS)
def test_saml_14_dtd_entities_and_xinclude_are_refused_without_reading(
    signed_in, dbsession, sp, binding, attack, secret_file, listener
):
    request_id = new_id()
    xml = make(binding, request_id)
    hostile = _xml_attack(xml, attack, secret_file, listener.getsockname()[1])
    started = time.perf_counter()
    page = send(signed_in, binding, hostile)
    elapsed = time.perf_counter() - started
    code = "saml_bad_message"
    refused(page, code)
    assert elapsed < 1.0
    assert CANARY not in page.text
    assert connections(listener) == 0
    assert rows(dbsession) == NOTHING
    accepted(signed_in, binding, send(signed_in, binding, xml), request_id)


@BINDINGS
def test_saml_14_xinclude_anywhere_in_a_request_is_refused(
    signed_in, dbsession, sp, binding, secret_file, listener
):
    """An XInclude outside the Issuer: never expanded, and the request refused.

    No parser here expands XInclude, so nothing is read either way; SAML-14
    still asks for the request to be refused rather than silently carried.
    """
    request_id = new_id()
    xml = make(binding, request_id)
    include = (
        '<xi:include xmlns:xi="http://www.w3.org/2001/XInclude"'
        f' href="file://{secret_file}" parse="text"/>'
    )
    hostile = xml.replace("</samlp:AuthnRequest>", include + "</samlp:AuthnRequest>")
    page = send(signed_in, binding, hostile)
    assert CANARY not in page.text
    assert connections(listener) == 0
    refused(page, "saml_bad_message")
    assert rows(dbsession) == NOTHING
    accepted(signed_in, binding, send(signed_in, binding, xml), request_id)


# --------------------------------------------------------------------------
# SAML-15: comment injection


COMMENT_INJECTIONS = {
    "comment-then-suffix": f"{SP_ENTITY_ID}<!---->.evil.io",
    "comment-at-end": f"{SP_ENTITY_ID}<!---->",
    "comment-at-start": f"<!---->{SP_ENTITY_ID}",
    "comment-inside": "https://sp.example.org/<!-- x -->sp",
    "processing-instruction": f"{SP_ENTITY_ID}<?x y?>.evil.io",
    "element": f"{SP_ENTITY_ID}<b/>.evil.io",
}


@BINDINGS
@pytest.mark.parametrize("injection", list(COMMENT_INJECTIONS))
def test_saml_15_comment_in_issuer_is_not_matched_to_the_prefix_entity(
    signed_in, dbsession, sp, binding, injection
):
    request_id = new_id()
    xml = make(binding, request_id, issuer_xml=COMMENT_INJECTIONS[injection])
    refused(send(signed_in, binding, xml), "saml_unknown_sp")
    assert rows(dbsession) == NOTHING
    control = make(binding, request_id)
    accepted(signed_in, binding, send(signed_in, binding, control), request_id)


def test_saml_15_comment_added_to_a_signed_issuer_is_refused(signed_in, dbsession, sp):
    """Exclusive c14n drops comments, so the signature still verifies: the Issuer rule refuses."""
    request_id = new_id()
    signed = sign_post(make(POST, request_id))
    tampered = signed.replace(
        f"<saml:Issuer>{SP_ENTITY_ID}</saml:Issuer>".encode(),
        b"<saml:Issuer>https://sp.example.org/<!---->sp</saml:Issuer>",
    )
    assert tampered != signed
    refused(post(signed_in, post_fields(tampered)), "saml_unknown_sp")
    assert rows(dbsession) == NOTHING
    accepted(signed_in, POST, post(signed_in, post_fields(signed)), request_id)


# --------------------------------------------------------------------------
# SAML-16: identifier confusion

CONFUSABLE_ISSUERS = {
    "leading-space": f" {SP_ENTITY_ID}",
    "trailing-space": f"{SP_ENTITY_ID} ",
    "trailing-newline": f"{SP_ENTITY_ID}\n",
    "leading-tab": f"\t{SP_ENTITY_ID}",
    "upper-case": SP_ENTITY_ID.upper(),
    "upper-case-path": "https://sp.example.org/SP",
    "upper-case-host": "https://SP.example.org/sp",
    "nbsp": f"{SP_ENTITY_ID}\u00a0",
    "cyrillic-a": "https://sp.ex\u0430mple.org/sp",
    "zero-width-space": f"{SP_ENTITY_ID}\u200b",
    "fullwidth-h": "\uff48ttps://sp.example.org/sp",
    "trailing-slash": f"{SP_ENTITY_ID}/",
    # NUL itself is no XML character (see the next test); its URL form is text.
    "percent-nul": f"{SP_ENTITY_ID}%00",
    "nul-symbol": f"{SP_ENTITY_ID}\u2400",
}


@BINDINGS
@pytest.mark.parametrize("variant", list(CONFUSABLE_ISSUERS))
def test_saml_16_lookalike_issuers_are_unknown(
    signed_in, dbsession, sp, binding, variant
):
    request_id = new_id()
    xml = make(binding, request_id, issuer=CONFUSABLE_ISSUERS[variant])
    refused(send(signed_in, binding, xml), "saml_unknown_sp")
    assert rows(dbsession) == NOTHING
    accepted(
        signed_in,
        binding,
        send(signed_in, binding, make(binding, request_id)),
        request_id,
    )


@BINDINGS
@pytest.mark.parametrize("nul", ["\x00", "&#0;", "&#x0;"])
def test_saml_16_nul_in_issuer_is_refused_as_unreadable_not_5xx(
    signed_in, dbsession, sp, binding, nul
):
    request_id = new_id()
    xml = make(binding, request_id, issuer_xml=f"{SP_ENTITY_ID}{nul}")
    refused(send(signed_in, binding, xml), "saml_bad_message")
    assert rows(dbsession) == NOTHING
    accepted(
        signed_in,
        binding,
        send(signed_in, binding, make(binding, request_id)),
        request_id,
    )


@BINDINGS
def test_saml_16_issuer_with_another_format_is_unknown(
    signed_in, dbsession, sp, binding
):
    request_id = new_id()
    xml = make(binding, request_id)
    persistent = xml.replace(
        "<saml:Issuer>",
        '<saml:Issuer Format="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent">',
    )
    refused(send(signed_in, binding, persistent), "saml_unknown_sp")
    assert rows(dbsession) == NOTHING
    entity = xml.replace(
        "<saml:Issuer>",
        '<saml:Issuer Format="urn:oasis:names:tc:SAML:2.0:nameid-format:entity">',
    )
    accepted(signed_in, binding, send(signed_in, binding, entity), request_id)


# --------------------------------------------------------------------------
# SAML-17: replay


@pytest.mark.postgresql
@BINDINGS
def test_saml_17_the_same_request_twice_is_refused_the_second_time(
    signed_in, dbsession, sp, binding
):
    request_id = new_id()
    xml = make(binding, request_id)
    accepted(
        signed_in,
        binding,
        send(signed_in, binding, xml, relay_state="r1"),
        request_id,
        "r1",
    )
    answered = rows(dbsession)
    assert answered == ANSWERED[binding]
    page = send(signed_in, binding, xml, relay_state="r1")
    refused(page, "saml_replay", reply_to=request_id)
    assert page.forms["saml-error-form"]["RelayState"].value == "r1"
    assert rows(dbsession) == answered
    # Control: the same request under a new ID is answered.
    fresh = new_id()
    accepted(signed_in, binding, send(signed_in, binding, make(binding, fresh)), fresh)


@pytest.mark.postgresql
def test_saml_17_an_id_used_on_one_binding_is_refused_on_the_other(
    signed_in, dbsession, sp
):
    request_id = new_id()
    accepted(
        signed_in,
        REDIRECT,
        send(signed_in, REDIRECT, make(REDIRECT, request_id)),
        request_id,
    )
    page = send(signed_in, POST, make(POST, request_id))
    refused(page, "saml_replay", reply_to=request_id)
    assert rows(dbsession) == ANSWERED_REDIRECT


@pytest.mark.postgresql
def test_saml_17_the_replay_record_is_per_issuer(signed_in, dbsession, sp, other_sp):
    """(issuer, ID) is the key: another SP may use the same ID, the same SP may not."""
    request_id = new_id()
    accepted(
        signed_in,
        REDIRECT,
        send(signed_in, REDIRECT, make(REDIRECT, request_id)),
        request_id,
    )
    page = send(
        signed_in,
        REDIRECT,
        make(REDIRECT, request_id, issuer=OTHER_ENTITY_ID, acs_url=OTHER_ACS),
    )
    assert page.status_int == 200, summary(page)
    assert page.forms["saml-post-form"].action == OTHER_ACS
    assert response_of(page).get("InResponseTo") == request_id
    refused(
        send(signed_in, REDIRECT, make(REDIRECT, request_id)),
        "saml_replay",
        reply_to=request_id,
    )
    assert dbsession.scalar(select(func.count()).select_from(SeenRequestId)) == 2


@pytest.fixture(scope="module")
def second_node(settings, db_url):
    """Another app instance with its own engine and pool: a second node."""
    engine = make_engine({"sqlalchemy.url": db_url})
    yield make_app(settings, engine)
    engine.dispose()


def committed_sp_and_user(db_engine):
    """The SP and a user with a role reaching it, committed for every node to see."""
    with Session(db_engine, expire_on_commit=False) as session, session.begin():
        module = Module(code="emis", display_name_ms="EMIS", display_name_en="EMIS")
        role = Role(name="guru", display_name_ms="Guru", display_name_en="Teacher")
        role.modules.append(module)
        session.add_all([module, role])
        session.flush()
        sp = import_sp(session, make_sp_metadata(), module_code="emis")
        sp.attributes_released = list(RELEASED)
        user = make_user(session)
        user.roles.append(role)
    return user


def committed_rows(db_engine) -> dict[str, int]:
    with Session(db_engine) as session:
        return rows(session)


@pytest.mark.postgresql
def test_saml_17_replay_on_another_node_is_refused(
    committing_testapp, second_node, db_engine
):
    """SAML-17 ²: two app instances on one database; the record is shared."""
    user = committed_sp_and_user(db_engine)
    node_a = committing_testapp
    node_b = webtest.TestApp(second_node, extra_environ=node_a.extra_environ)
    sign_in(node_a, user)
    node_b.cookiejar = node_a.cookiejar  # one browser, two nodes
    request_id = new_id()
    query = redirect_query(make(REDIRECT, request_id), relay_state="r1")
    accepted(node_a, REDIRECT, get(node_a, query), request_id, "r1")
    page = get(node_b, query)
    refused(page, "saml_replay", reply_to=request_id)
    assert committed_rows(db_engine) == ANSWERED_REDIRECT
    # And the other way round, over the POST binding.
    post_id = new_id()
    fields = post_fields(make(POST, post_id))
    accepted(node_b, POST, post(node_b, fields), post_id)
    refused(post(node_a, fields), "saml_replay", reply_to=post_id)
    # Control: node B answers a fresh request itself.
    fresh = new_id()
    accepted(
        node_b, REDIRECT, get(node_b, redirect_query(make(REDIRECT, fresh))), fresh
    )


@pytest.mark.postgresql
def test_saml_17_racing_submissions_over_two_nodes_accept_exactly_one(
    committing_testapp, second_node, db_engine, db_url
):
    """SAML-17 ²: ten browsers submit one request at once, alternating nodes."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite serves one writer at a time; the race is PostgreSQL's")
    committed_sp_and_user(db_engine)
    nodes = [committing_testapp.app, second_node]
    environ = committing_testapp.extra_environ
    browsers = [webtest.TestApp(nodes[i % 2], extra_environ=environ) for i in range(10)]
    request_id = new_id()
    query = redirect_query(make(REDIRECT, request_id))
    start = threading.Barrier(len(browsers))
    pages = []

    def submit(browser):
        start.wait()
        pages.append(get(browser, query))

    threads = [threading.Thread(target=submit, args=(b,)) for b in browsers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(pages) == 10
    # Not signed in: the one accepted request is parked, and sign-in follows.
    assert sorted(p.status_int for p in pages) == [303] + [400] * 9
    for page in pages:
        if page.status_int == 400:
            refused(page, "saml_replay", reply_to=request_id)
        else:
            assert page.location.startswith("https://idp.test/login")
    assert committed_rows(db_engine) == {
        "pending": 1,
        "participants": 0,
        "name_ids": 0,
        "seen": 1,
    }


# --------------------------------------------------------------------------
# SAML-18: ACS not in the SP's metadata

ACS_ATTACKS = {
    "scheme": {"acs_url": "http://sp.example.org/acs"},
    "host": {"acs_url": "https://evil.example.org/acs"},
    "host-suffix": {"acs_url": "https://sp.example.org.evil.io/acs"},
    "userinfo": {"acs_url": "https://sp.example.org@evil.example.org/acs"},
    "default-port": {"acs_url": "https://sp.example.org:443/acs"},
    "port": {"acs_url": "https://sp.example.org:8443/acs"},
    "path": {"acs_url": "https://sp.example.org/acs2"},
    "path-prefix": {"acs_url": "https://sp.example.org/ac"},
    "query": {"acs_url": "https://sp.example.org/acs?next=https://evil.example.org"},
    "fragment": {"acs_url": "https://sp.example.org/acs#x"},
    "trailing-slash": {"acs_url": "https://sp.example.org/acs/"},
    "upper-case-host": {"acs_url": "https://SP.EXAMPLE.ORG/acs"},
    "upper-case-path": {"acs_url": "https://sp.example.org/ACS"},
    "leading-space": {"acs_url": " https://sp.example.org/acs"},
    "slo-endpoint": {"acs_url": "https://sp.example.org/slo"},
    "other-sps-acs": {"acs_url": OTHER_ACS},
    "unknown-index": {"acs_url": None, "acs_index": "2"},
    "index-zero": {"acs_url": None, "acs_index": "0"},
    "index-not-a-number": {"acs_url": None, "acs_index": "x"},
    "redirect-binding": {"protocol_binding": REDIRECT_BINDING},
    "artifact-binding": {"protocol_binding": ARTIFACT_BINDING},
    "url-and-index": {"acs_index": "1"},
}


@BINDINGS
@pytest.mark.parametrize("attack", list(ACS_ATTACKS))
def test_saml_18_acs_not_in_metadata_is_refused_without_a_response(
    signed_in, dbsession, sp, other_sp, binding, attack
):
    request_id = new_id()
    xml = make(binding, request_id, **ACS_ATTACKS[attack])
    refused(send(signed_in, binding, xml, relay_state="r1"), "saml_acs")
    assert rows(dbsession) == NOTHING
    control = make(binding, request_id)
    accepted(
        signed_in,
        binding,
        send(signed_in, binding, control, relay_state="r1"),
        request_id,
        "r1",
    )


ACS_CONTROLS = {
    "exact-url": {},
    "exact-url-no-binding": {"protocol_binding": None},
    # pysaml2's metadata numbers its one ACS 1 (there is no index 0).
    "index": {"acs_url": None, "acs_index": "1"},
    "neither": {"acs_url": None},
}


@BINDINGS
@pytest.mark.parametrize("control", list(ACS_CONTROLS))
def test_saml_18_acs_from_metadata_by_url_index_or_default_is_accepted(
    signed_in, dbsession, sp, binding, control
):
    request_id = new_id()
    xml = make(binding, request_id, **ACS_CONTROLS[control])
    accepted(signed_in, binding, send(signed_in, binding, xml), request_id)


# --------------------------------------------------------------------------
# SAML-19: unknown issuer

ISSUER = f"<saml:Issuer>{SP_ENTITY_ID}</saml:Issuer>"
UNKNOWN_ISSUERS = {
    "missing": lambda xml: xml.replace(ISSUER, ""),
    "empty": lambda xml: xml.replace(ISSUER, "<saml:Issuer></saml:Issuer>"),
    "blank": lambda xml: xml.replace(ISSUER, "<saml:Issuer>   </saml:Issuer>"),
    "unregistered": lambda xml: xml.replace(
        ISSUER, "<saml:Issuer>https://unknown.example.org/sp</saml:Issuer>"
    ),
    "twice": lambda xml: xml.replace(ISSUER, ISSUER + ISSUER),
    "wrong-namespace": lambda xml: xml.replace(
        ISSUER, f'<Issuer xmlns="urn:x-evil">{SP_ENTITY_ID}</Issuer>'
    ),
    "too-long": lambda xml: xml.replace(
        ISSUER, f"<saml:Issuer>{SP_ENTITY_ID}/{'a' * 1100}</saml:Issuer>"
    ),
}


@BINDINGS
@pytest.mark.parametrize("issuer", list(UNKNOWN_ISSUERS))
def test_saml_19_unknown_issuer_gets_a_page_and_no_form(
    signed_in, dbsession, sp, binding, issuer
):
    request_id = new_id()
    xml = make(binding, request_id)
    assert ISSUER in xml
    refused(
        send(signed_in, binding, UNKNOWN_ISSUERS[issuer](xml), relay_state="r1"),
        "saml_unknown_sp",
    )
    assert rows(dbsession) == NOTHING
    accepted(
        signed_in,
        binding,
        send(signed_in, binding, xml, relay_state="r1"),
        request_id,
        "r1",
    )


# --------------------------------------------------------------------------
# SAML-20: Destination

DESTINATION_ATTACKS = {
    "other-binding": lambda binding: SSO_POST if binding == REDIRECT else SSO_REDIRECT,
    "slo-endpoint": lambda binding: SLO_REDIRECT,
    "other-host": lambda binding: destination_of(binding).replace(
        "idp.test", "idp.evil"
    ),
    "http": lambda binding: destination_of(binding).replace("https:", "http:"),
    "trailing-slash": lambda binding: destination_of(binding) + "/",
    "upper-case": lambda binding: destination_of(binding).upper(),
    "empty": lambda binding: "",
}


@BINDINGS
@pytest.mark.parametrize("attack", list(DESTINATION_ATTACKS))
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_saml_20_another_destination_is_refused(
    signed_in, dbsession, sp, binding, attack, signed
):
    request_id = new_id()
    xml = make(binding, request_id, destination=DESTINATION_ATTACKS[attack](binding))
    page = send(signed_in, binding, xml, signed=signed)
    # Whether an error Response goes back is test_saml_20_refusal_answers_the_acs's.
    refused(page, "saml_destination", reply_to=NOT_CHECKED)
    assert rows(dbsession) == NOTHING
    control = make(binding, request_id)
    accepted(
        signed_in, binding, send(signed_in, binding, control, signed=signed), request_id
    )


@BINDINGS
def test_saml_20_a_signed_request_must_name_its_destination(
    signed_in, dbsession, sp, binding
):
    request_id = new_id()
    xml = make(binding, request_id, destination=None)
    refused(
        send(signed_in, binding, xml, signed=True),
        "saml_destination",
        reply_to=NOT_CHECKED,
    )
    assert rows(dbsession) == NOTHING
    # Control: unsigned, Destination is optional (saml-bindings 3.4.5.2, 3.5.5.2).
    accepted(signed_in, binding, send(signed_in, binding, xml), request_id)


@BINDINGS
def test_saml_20_refusal_answers_the_acs(signed_in, dbsession, sp, binding):
    """SAML-20: issuer, signature and ACS hold, so the SP gets a signed error Response."""
    request_id = new_id()
    wrong = SSO_POST if binding == REDIRECT else SSO_REDIRECT
    xml = make(binding, request_id, destination=wrong)
    page = send(signed_in, binding, xml, signed=True)
    refused(page, "saml_destination", reply_to=request_id)
    assert rows(dbsession) == NOTHING


# --------------------------------------------------------------------------
# SAML-21: stale or future requests

LIFETIME = 300  # idp.saml.request_lifetime
SKEW = 180  # idp.clock_skew


def next_second() -> dt.datetime:
    """The next whole second: ``instant()`` writes whole seconds.

    An IssueInstant of ``next_second() + offset`` is, when the IdP reads it
    a fraction of a second later, ``offset`` seconds away give or take under
    a second, and always on the side of the bound the test needs as long as
    the request is checked within a second of being written: old offsets
    are at least their size (the IdP's now is past next_second() - 1), future
    offsets at most theirs. No further margin is needed.
    """
    now = dt.datetime.now(dt.UTC)
    return now.replace(microsecond=0) + dt.timedelta(seconds=1)


def at(offset: int) -> dt.datetime:
    return next_second() + dt.timedelta(seconds=offset)


# (refused offset, accepted offset): one second outside and inside each bound.
FRESHNESS_BOUNDS = {
    "old": (-(LIFETIME + SKEW) - 1, -(LIFETIME + SKEW) + 1),
    "future": (SKEW + 1, SKEW - 1),
    "an-hour-old": (-3600, 0),
    "a-day-ahead": (86400, 0),
}


@BINDINGS
@pytest.mark.parametrize("bound", list(FRESHNESS_BOUNDS))
def test_saml_21_issue_instant_outside_lifetime_and_skew_is_refused(
    signed_in, dbsession, sp, binding, bound
):
    request_id = new_id()
    refused_offset, accepted_offset = FRESHNESS_BOUNDS[bound]
    xml = make(binding, request_id, issue_instant=at(refused_offset))
    refused(
        send(signed_in, binding, xml, relay_state="r1"),
        "saml_stale",
        reply_to=request_id,
    )
    assert rows(dbsession) == NOTHING
    xml = make(binding, request_id, issue_instant=at(accepted_offset))
    accepted(
        signed_in,
        binding,
        send(signed_in, binding, xml, relay_state="r1"),
        request_id,
        "r1",
    )


@pytest.mark.parametrize(
    ("offset", "fresh"),
    [(-331, False), (-329, True), (31, False), (29, True)],
)
def test_saml_21_the_sps_own_clock_skew_replaces_the_default(
    signed_in, dbsession, sp, offset, fresh
):
    sp.clock_skew = 30
    dbsession.flush()
    request_id = new_id()
    xml = make(REDIRECT, request_id, issue_instant=at(offset))
    page = send(signed_in, REDIRECT, xml)
    if fresh:
        accepted(signed_in, REDIRECT, page, request_id)
    else:
        refused(page, "saml_stale", reply_to=request_id)
        assert rows(dbsession) == NOTHING


# --------------------------------------------------------------------------
# SAML-22: RelayState is opaque

HOSTILE_RELAY_STATES = {
    "script": '"><script>alert(1)</script>',
    "url": "https://evil.example/",
    "protocol-relative": "//evil.example/",
    "javascript": "javascript:alert(1)",
}


@BINDINGS
@pytest.mark.parametrize("relay_state", list(HOSTILE_RELAY_STATES))
def test_saml_22_relay_state_comes_back_escaped_and_is_never_followed(
    signed_in, dbsession, sp, binding, relay_state
):
    value = HOSTILE_RELAY_STATES[relay_state]
    request_id = new_id()
    first = send(signed_in, binding, make(binding, request_id), relay_state=value)
    if binding == POST:
        # The one redirect is to our own continuation, carrying no RelayState.
        assert first.location.startswith("https://idp.test/saml/sso/continue?r=")
        assert "evil" not in first.location and "alert" not in first.location
    else:
        assert "Location" not in first.headers
    page = accepted(signed_in, binding, first, request_id, value)
    assert "Location" not in page.headers
    assert "<script>alert" not in page.text
    assert (
        "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text or "<script" not in value
    )
    doc = lxml.html.fromstring(page.body)
    targets = doc.xpath("//@href | //@action | //@src | //@formaction")
    assert not [t for t in targets if "evil" in t or "javascript" in t]
    assert [f.get("action") for f in doc.xpath("//form")] == [SP_ACS]
    csp = page.headers["Content-Security-Policy"]
    assert "evil" not in csp
    # A replayed request's error form carries the RelayState back escaped too.
    again = send(signed_in, binding, make(binding, request_id), relay_state=value)
    refused(again, "saml_replay", reply_to=request_id)
    assert again.forms["saml-error-form"]["RelayState"].value == value
    assert "<script>alert" not in again.text


@BINDINGS
@pytest.mark.parametrize("signed_in_first", [True, False], ids=["signed-in", "parked"])
def test_saml_22_relay_state_with_nul_is_never_a_server_error(
    testapp, dbsession, sp, user, binding, signed_in_first
):
    """RelayState is opaque bytes; one holding NUL is carried or refused, not a 500.

    The request is parked (POST always; Redirect before sign-in), and
    PostgreSQL text cannot hold NUL.
    """
    if signed_in_first:
        sign_in(testapp, user)
    request_id = new_id()
    page = send(testapp, binding, make(binding, request_id), relay_state="r\x001")
    assert page.status_int < 500, summary(page)
    if page.status_int >= 400:
        refused(page, error_code(page))


# --------------------------------------------------------------------------
# SAML-23: oversized RelayState

RELAY_STATE_SIZES = {
    "ascii": ("a" * 1024, "a" * 1025),
    # The cap counts UTF-8 bytes, not characters (or percent-encoded octets).
    "two-byte": ("\u00e9" * 512, "\u00e9" * 512 + "a"),
}


@BINDINGS
@pytest.mark.parametrize("kind", list(RELAY_STATE_SIZES))
def test_saml_23_relay_state_over_1_kib_is_refused(
    signed_in, dbsession, sp, binding, kind
):
    at_cap, over_cap = RELAY_STATE_SIZES[kind]
    assert len(at_cap.encode()) == 1024 and len(over_cap.encode()) == 1025
    request_id = new_id()
    xml = make(binding, request_id)
    refused(send(signed_in, binding, xml, relay_state=over_cap), "saml_relay_state")
    assert rows(dbsession) == NOTHING
    accepted(
        signed_in,
        binding,
        send(signed_in, binding, xml, relay_state=at_cap),
        request_id,
        at_cap,
    )


@BINDINGS
def test_saml_23_the_sps_own_relay_state_cap(signed_in, dbsession, sp, binding):
    sp.relay_state_max = 80
    dbsession.flush()
    request_id = new_id()
    xml = make(binding, request_id)
    page = send(signed_in, binding, xml, relay_state="a" * 81)
    refused(page, "saml_relay_state", reply_to=request_id)
    assert rows(dbsession) == NOTHING
    accepted(
        signed_in,
        binding,
        send(signed_in, binding, xml, relay_state="a" * 80),
        request_id,
        "a" * 80,
    )


# --------------------------------------------------------------------------
# SAML-24: deflate bomb

MAX_INFLATED = 256 * 1024
MAX_QUERY_FIELD = 16 * 1024
MAX_POST_FIELD = 512 * 1024


def padded(xml: str, size: int) -> bytes:
    """``xml`` with whitespace before its end tag, to exactly ``size`` bytes."""
    end = "</samlp:AuthnRequest>"
    data = xml.encode()
    assert data.endswith(end.encode())
    head = data[: -len(end)]
    return head + b" " * (size - len(data)) + end.encode()


def test_saml_24_deflate_bomb_is_refused_quickly_in_bounded_memory(
    signed_in, dbsession, sp
):
    request_id = new_id()
    xml = make(REDIRECT, request_id)
    bomb = padded(xml, 11 * 1024 * 1024)  # 11 MiB of spaces: ~1000:1
    query = deflated_query(bomb)
    field = param(query, "SAMLRequest")
    assert len(field) <= MAX_QUERY_FIELD  # not refused for its encoded size
    get(signed_in, deflated_query(b"warm-up"))  # templates loaded before measuring
    tracemalloc.start()
    try:
        started = time.perf_counter()
        page = get(signed_in, query)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    refused(page, "saml_too_large", status=413)
    assert elapsed < 1.0
    # Inflating it all would hold 11 MiB at once.
    assert peak < 10 * 1000 * 1000
    assert rows(dbsession) == NOTHING
    accepted(
        signed_in,
        REDIRECT,
        get(signed_in, deflated_query(padded(xml, 200 * 1024))),
        request_id,
    )


def test_saml_24_inflated_size_cap_is_exact(signed_in, dbsession, sp):
    request_id = new_id()
    xml = make(REDIRECT, request_id)
    page = get(signed_in, deflated_query(padded(xml, MAX_INFLATED + 1)))
    refused(page, "saml_too_large", status=413)
    assert rows(dbsession) == NOTHING
    accepted(
        signed_in,
        REDIRECT,
        get(signed_in, deflated_query(padded(xml, MAX_INFLATED))),
        request_id,
    )


# --------------------------------------------------------------------------
# SAML-25: oversized SAMLRequest


def query_of_length(xml: str, length: int) -> str:
    """A Redirect query whose SAMLRequest field is exactly ``length`` octets.

    Whitespace in base64 is ignored, so '+' (an encoded space) pads it.
    """
    encoded = quote_plus(deflate(xml))
    assert len(encoded) < length
    return f"SAMLRequest={encoded}{'+' * (length - len(encoded))}"


def fields_of_length(xml: str, length: int) -> dict:
    encoded = base64.b64encode(xml.encode()).decode()
    return {"SAMLRequest": encoded + " " * (length - len(encoded))}


def test_saml_25_query_field_over_16_kib_is_refused_with_414(signed_in, dbsession, sp):
    request_id = new_id()
    xml = make(REDIRECT, request_id)
    over = query_of_length(xml, MAX_QUERY_FIELD + 1)
    assert len(param(over, "SAMLRequest")) == MAX_QUERY_FIELD + 1
    refused(get(signed_in, over), "saml_too_large", status=414)
    assert rows(dbsession) == NOTHING
    at_cap = query_of_length(xml, MAX_QUERY_FIELD)
    accepted(signed_in, REDIRECT, get(signed_in, at_cap), request_id)


def test_saml_25_post_field_over_512_kib_is_refused_with_413(signed_in, dbsession, sp):
    request_id = new_id()
    xml = make(POST, request_id)
    over = fields_of_length(xml, MAX_POST_FIELD + 1)
    assert len(over["SAMLRequest"]) == MAX_POST_FIELD + 1
    refused(post(signed_in, over), "saml_too_large", status=413)
    assert rows(dbsession) == NOTHING
    at_cap = fields_of_length(xml, MAX_POST_FIELD)
    accepted(signed_in, POST, post(signed_in, at_cap), request_id)


def test_saml_25_the_size_is_checked_before_decoding(signed_in, dbsession, sp):
    """A field of garbage over the cap is refused for its size, not its content."""
    refused(
        get(signed_in, "SAMLRequest=" + "%" * (MAX_QUERY_FIELD + 1)),
        "saml_too_large",
        status=414,
    )
    refused(
        post(signed_in, {"SAMLRequest": "." * (MAX_POST_FIELD + 1)}),
        "saml_too_large",
        status=413,
    )
    # The same garbage under the cap is refused as unreadable.
    refused(get(signed_in, "SAMLRequest=" + "%" * MAX_QUERY_FIELD), "saml_bad_message")
    refused(post(signed_in, {"SAMLRequest": "." * MAX_POST_FIELD}), "saml_bad_message")
    assert rows(dbsession) == NOTHING


# --------------------------------------------------------------------------
# Unreadable requests: a 400 page, never a 5xx


def _logout_request(binding: str, request_id: str) -> str:
    return (
        f'<samlp:LogoutRequest xmlns:samlp="{SAMLP}" xmlns:saml="{SAML}"'
        f' ID="{request_id}" Version="2.0" IssueInstant="{dt.datetime.now(dt.UTC):%Y-%m-%dT%H:%M:%SZ}"'
        f' Destination="{destination_of(binding)}">'
        f"<saml:Issuer>{SP_ENTITY_ID}</saml:Issuer>"
        '<saml:NameID Format="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent">'
        "x</saml:NameID></samlp:LogoutRequest>"
    )


def _truncated_deflate(xml: str) -> str:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = compressor.compress(xml.encode()) + compressor.flush()
    return quote_plus(base64.b64encode(data[: len(data) // 2]).decode())


def _redirect_malformed(case: str, xml: str, request_id: str) -> str:
    good = quote_plus(deflate(xml))
    return {
        "not-base64": lambda: "SAMLRequest=not*base64!",
        "base64-bad-padding": lambda: f"SAMLRequest={good[:-3]}",
        "zlib-wrapped": lambda: (
            "SAMLRequest="
            + quote_plus(base64.b64encode(zlib.compress(xml.encode())).decode())
        ),
        "not-deflate": lambda: (
            "SAMLRequest=" + quote_plus(base64.b64encode(b"\xff" * 64).decode())
        ),
        "truncated-deflate": lambda: f"SAMLRequest={_truncated_deflate(xml)}",
        "not-xml": lambda: deflated_query(b"this is not XML"),
        "binary": lambda: deflated_query(bytes(range(256))),
        "wrong-root": lambda: deflated_query(
            _logout_request(REDIRECT, request_id).encode()
        ),
        "version-1.1": lambda: deflated_query(
            xml.replace('Version="2.0"', 'Version="1.1"').encode()
        ),
        "no-version": lambda: deflated_query(xml.replace('Version="2.0"', "").encode()),
        "missing-id": lambda: deflated_query(
            xml.replace(f'ID="{request_id}"', "").encode()
        ),
        "oversized-id": lambda: deflated_query(
            xml.replace(request_id, "_" + "a" * 300).encode()
        ),
        "bad-issue-instant": lambda: deflated_query(
            re.sub('IssueInstant="[^"]*"', 'IssueInstant="yesterday"', xml).encode()
        ),
        "no-issue-instant": lambda: deflated_query(
            re.sub('IssueInstant="[^"]*"', "", xml).encode()
        ),
        "duplicate-samlrequest": lambda: f"SAMLRequest={good}&SAMLRequest={good}",
        "duplicate-relay-state": lambda: (
            f"SAMLRequest={good}&RelayState=a&RelayState=b"
        ),
        "encoded-duplicate-name": lambda: f"SAMLRequest={good}&SAML%52equest={good}",
        "no-samlrequest": lambda: "RelayState=r1",
        "empty-samlrequest": lambda: "SAMLRequest=",
    }[case]()


REDIRECT_MALFORMED = {
    "not-base64": "saml_bad_message",
    "base64-bad-padding": "saml_bad_message",
    "zlib-wrapped": "saml_bad_message",
    "not-deflate": "saml_bad_message",
    "truncated-deflate": "saml_bad_message",
    "not-xml": "saml_bad_message",
    "binary": "saml_bad_message",
    "wrong-root": "saml_bad_message",
    "version-1.1": "saml_bad_message",
    "no-version": "saml_bad_message",
    "missing-id": "saml_bad_message",
    "oversized-id": "saml_bad_message",
    "bad-issue-instant": "saml_bad_message",
    "no-issue-instant": "saml_bad_message",
    "duplicate-samlrequest": "saml_bad_message",
    "duplicate-relay-state": "saml_bad_message",
    "encoded-duplicate-name": "saml_bad_message",
    "no-samlrequest": "saml_no_message",
    "empty-samlrequest": "saml_no_message",
}


@pytest.mark.parametrize("case", list(REDIRECT_MALFORMED))
def test_unreadable_redirect_request_is_a_400_page(signed_in, dbsession, sp, case):
    request_id = new_id()
    xml = make(REDIRECT, request_id)
    page = get(signed_in, _redirect_malformed(case, xml, request_id))
    refused(page, REDIRECT_MALFORMED[case])
    assert rows(dbsession) == NOTHING
    accepted(signed_in, REDIRECT, get(signed_in, redirect_query(xml)), request_id)


def _post_malformed(case: str, xml: str, request_id: str):
    good = base64.b64encode(xml.encode()).decode()
    return {
        "not-base64": lambda: {"SAMLRequest": "not*base64!"},
        "base64-bad-padding": lambda: {"SAMLRequest": good[:-3]},
        "deflated": lambda: {"SAMLRequest": deflate(xml)},
        "not-xml": lambda: post_fields(b"this is not XML"),
        "binary": lambda: post_fields(bytes(range(256))),
        "wrong-root": lambda: post_fields(_logout_request(POST, request_id)),
        "version-1.1": lambda: post_fields(
            xml.replace('Version="2.0"', 'Version="1.1"')
        ),
        "missing-id": lambda: post_fields(xml.replace(f'ID="{request_id}"', "")),
        "bad-issue-instant": lambda: post_fields(
            re.sub('IssueInstant="[^"]*"', 'IssueInstant="yesterday"', xml)
        ),
        "duplicate-samlrequest": lambda: [("SAMLRequest", good), ("SAMLRequest", good)],
        "duplicate-relay-state": lambda: [
            ("SAMLRequest", good),
            ("RelayState", "a"),
            ("RelayState", "b"),
        ],
        "no-samlrequest": lambda: {"RelayState": "r1"},
        "empty-samlrequest": lambda: {"SAMLRequest": ""},
    }[case]()


POST_MALFORMED = {
    "not-base64": "saml_bad_message",
    "base64-bad-padding": "saml_bad_message",
    "deflated": "saml_bad_message",
    "not-xml": "saml_bad_message",
    "binary": "saml_bad_message",
    "wrong-root": "saml_bad_message",
    "version-1.1": "saml_bad_message",
    "missing-id": "saml_bad_message",
    "bad-issue-instant": "saml_bad_message",
    "duplicate-samlrequest": "saml_no_message",
    "duplicate-relay-state": "saml_bad_message",
    "no-samlrequest": "saml_no_message",
    "empty-samlrequest": "saml_no_message",
}


@pytest.mark.parametrize("case", list(POST_MALFORMED))
def test_unreadable_post_request_is_a_400_page(signed_in, dbsession, sp, case):
    request_id = new_id()
    xml = make(POST, request_id)
    page = post(signed_in, _post_malformed(case, xml, request_id))
    refused(page, POST_MALFORMED[case])
    assert rows(dbsession) == NOTHING
    accepted(signed_in, POST, post(signed_in, post_fields(xml)), request_id)


@BINDINGS
def test_a_bad_boolean_is_refused_with_an_error_response(
    signed_in, dbsession, sp, binding
):
    """The ACS is trusted by then, so the SP hears of it."""
    request_id = new_id()
    xml = make(binding, request_id)
    bad = xml.replace("<samlp:AuthnRequest ", '<samlp:AuthnRequest ForceAuthn="maybe" ')
    refused(send(signed_in, binding, bad), "saml_bad_message", reply_to=request_id)
    assert rows(dbsession) == NOTHING
    accepted(signed_in, binding, send(signed_in, binding, xml), request_id)


ENCODINGS = {
    "iso-8859-1": lambda xml: (
        '<?xml version="1.0" encoding="ISO-8859-1"?>'
        + xml.replace(
            "<samlp:AuthnRequest ", '<samlp:AuthnRequest ProviderName="Sekolah \u00c9" '
        )
    ).encode("latin-1"),
    "utf-16": lambda xml: ('<?xml version="1.0" encoding="UTF-16"?>' + xml).encode(
        "utf-16"
    ),
}


@BINDINGS
@pytest.mark.parametrize("encoding", list(ENCODINGS))
@pytest.mark.parametrize("signed_in_first", [True, False], ids=["signed-in", "parked"])
def test_a_request_in_another_xml_encoding_is_never_a_server_error(
    testapp, dbsession, sp, user, binding, encoding, signed_in_first
):
    """Well-formed XML in another declared encoding: answered or a 400, not a 500.

    A parked request (POST always; Redirect before sign-in) is stored as text.
    """
    if signed_in_first:
        sign_in(testapp, user)
    request_id = new_id()
    data = ENCODINGS[encoding](make(binding, request_id))
    if binding == REDIRECT:
        page = get(testapp, deflated_query(data))
    else:
        page = post(testapp, post_fields(data))
    assert page.status_int < 500, summary(page)
    if page.status_int >= 400:
        refused(page, "saml_bad_message")


# --------------------------------------------------------------------------
# Refusal pages in both languages (SECURITY.md test rule 3)


@pytest.mark.parametrize("code", sorted(PAGES))
def test_saml_refusal_texts_exist_in_malay_and_english(app, code):
    from pyramid.request import Request

    request = Request.blank("/")
    request.registry = app.registry
    for text in PAGES[code]:
        malay, english = (
            translate_in(request, text, "ms"),
            translate_in(request, text, "en"),
        )
        assert malay.strip() and english.strip()
        assert malay != english, f"{code}: no Malay text for {english!r}"
