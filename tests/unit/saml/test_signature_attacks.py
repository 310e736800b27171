"""SAML-10, 12, 13, 14 at the backend: ``XmlsecBackend.validate_signature``.

The attacked documents come from tests/saml_attacks.py and start from a
signed AuthnRequest and LogoutRequest made by pysaml2's own SP client.  Each
refusal is paired with a control that differs only in the attack and is
accepted: usually the same request re-signed by the registered SP key
through the same signer (python-xmlsec), so the signer itself is shown to
produce signatures the backend accepts.  Where the attack document is a
genuine signature of another kind (another key, an HMAC, a legal but
forbidden transform), plain libxmlsec is shown to accept it, so the refusal
comes from the backend's rules.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import xmlsec
from lxml import etree
from saml2 import samlp

from idp.saml.crypto import SignatureError, XmlsecBackend
from tests import saml_attacks as attacks

SP = "https://sp.example.org/sp"
IDP = "https://idp.test/saml/idp"
SSO = "https://idp.test/saml/sso"
SLO = "https://idp.test/saml/slo"
EVIL_ACS = "https://evil.example/acs"
EVIL_NAME_ID = "bob-persistent-0002"
SECRET = "idme-secret-file-content-0b1d"
C = xmlsec.constants

# --------------------------------------------------------------------------
# Fixtures


@dataclass(frozen=True)
class Message:
    xml: bytes
    node_name: str
    mutate: attacks.Mutator


@dataclass(frozen=True)
class Keys:
    sp_key: str
    sp_cert: str
    attacker_key: str
    attacker_cert: str


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    directory = tmp_path_factory.mktemp("signature-attack-keys")
    return Keys(
        *attacks.write_key_pair(directory, "sp"),
        *attacks.write_key_pair(directory, "attacker"),
    )


@pytest.fixture(scope="module")
def client(keys: Keys):
    return attacks.make_sp_client(SP, keys.sp_key, keys.sp_cert)


@pytest.fixture(scope="module", params=["authn-request", "logout-request"])
def message(request, client) -> Message:
    if request.param == "authn-request":
        return Message(
            attacks.signed_authn_request(client, SSO),
            "urn:oasis:names:tc:SAML:2.0:protocol:AuthnRequest",
            attacks.set_attribute("AssertionConsumerServiceURL", EVIL_ACS),
        )
    return Message(
        attacks.signed_logout_request(client, SLO, IDP, "alice-persistent-0001"),
        "urn:oasis:names:tc:SAML:2.0:protocol:LogoutRequest",
        attacks.set_name_id(EVIL_NAME_ID),
    )


@pytest.fixture(scope="module")
def backend() -> XmlsecBackend:
    return XmlsecBackend()


def _verify(
    message: Message,
    document: bytes,
    cert_file: str,
    backend: XmlsecBackend | None = None,
    node_id: str | None = None,
) -> bool:
    """Asked as pysaml2 asks: the root's class name and ID."""
    return (backend or XmlsecBackend()).validate_signature(
        document,
        cert_file,
        "pem",
        message.node_name,
        node_id or attacks.root_id(document),
    )


def _refused(
    message: Message,
    document: bytes,
    cert_file: str,
    backend: XmlsecBackend | None = None,
    node_id: str | None = None,
) -> SignatureError:
    with pytest.raises(SignatureError) as caught:
        _verify(message, document, cert_file, backend, node_id)
    return caught.value


_plain_libxmlsec_accepts = attacks.plain_libxmlsec_accepts


def _cert_key(cert_file: str) -> xmlsec.Key:
    return xmlsec.Key.from_file(cert_file, C.KeyDataFormatCertPem)


def test_fixtures_are_real_pysaml2_requests(message, keys, backend):
    root = attacks.parse(message.xml)
    assert root.find(f"{{{attacks.ASSERTION}}}Issuer").text == SP
    assert attacks.signed_id(message.xml) == attacks.root_id(message.xml)
    assert b"rsa-sha256" in message.xml
    assert _verify(message, message.xml, keys.sp_cert, backend)
    # The signer of tests/saml_attacks.py makes signatures the backend takes.
    assert _verify(message, attacks.resign(message.xml, keys.sp_key), keys.sp_cert)


# --------------------------------------------------------------------------
# SAML-10: wrong signer


def test_saml_10_another_key_refused(message, keys, backend):
    control = attacks.resign(message.xml, keys.sp_key, message.mutate)
    assert _verify(message, control, keys.sp_cert, backend)
    forged = attacks.resign(message.xml, keys.attacker_key, message.mutate)
    _refused(message, forged, keys.sp_cert, backend)
    # A genuine signature, only by another key.
    assert _verify(message, forged, keys.attacker_cert, backend)


def test_saml_10_keyinfo_certificate_not_trusted(message, keys, backend):
    """CVE-2021-21239: the certificate in ds:KeyInfo must never be used."""
    control = attacks.sign_with_keyinfo_cert(
        message.xml, keys.sp_key, keys.sp_cert, message.mutate
    )
    assert _verify(message, control, keys.sp_cert, backend)
    forged = attacks.sign_with_keyinfo_cert(
        message.xml, keys.attacker_key, keys.attacker_cert, message.mutate
    )
    attacker_body = "".join(Path(keys.attacker_cert).read_text().splitlines()[1:-1])
    assert attacker_body.encode() in forged
    _refused(message, forged, keys.sp_cert, backend)
    assert _verify(message, forged, keys.attacker_cert, backend)


@pytest.mark.parametrize(
    "secret",
    ["sp-certificate-pem", "shared-secret"],
)
def test_saml_10_hmac_refused(message, keys, backend, secret):
    """HMAC-SHA256 keyed with the SP's public certificate (key confusion) or
    any secret: only the registered x509 key may verify."""
    key = (
        Path(keys.sp_cert).read_bytes()
        if secret == "sp-certificate-pem"
        else b"correct horse battery staple"
    )
    control = attacks.resign(message.xml, keys.sp_key, message.mutate)
    assert _verify(message, control, keys.sp_cert, backend)
    forged = attacks.hmac_sign(message.xml, key, mutate=message.mutate)
    assert b"hmac-sha256" in forged
    # A genuine HMAC: libxmlsec with that key accepts it.
    assert _plain_libxmlsec_accepts(
        forged, xmlsec.Key.from_binary_data(C.KeyDataHmac, key)
    )
    _refused(message, forged, keys.sp_cert, backend)


# --------------------------------------------------------------------------
# SAML-12: SHA-1 downgrade


@pytest.mark.parametrize(
    "variant",
    ["rsa-sha1-signature", "sha1-digest-under-rsa-sha256"],
)
def test_saml_12_sha1_refused_unless_allowed(message, keys, backend, variant):
    make = (
        attacks.sha1_signature
        if variant.startswith("rsa-sha1")
        else attacks.sha1_digest
    )
    control = attacks.resign(message.xml, keys.sp_key)
    assert _verify(message, control, keys.sp_cert, backend)
    downgraded = make(message.xml, keys.sp_key)
    assert b"xmldsig#sha1" in downgraded
    error = _refused(message, downgraded, keys.sp_cert, backend)
    assert "SHA-1" in str(error)
    # The per-SP legacy flag: the same document is then accepted.
    assert _verify(message, downgraded, keys.sp_cert, XmlsecBackend(allow_sha1=True))


# --------------------------------------------------------------------------
# SAML-13: hostile transforms

TRANSFORM_ATTACKS = {
    # Legal XML-DSig, signed by the SP key: only the transform is wrong.
    "xpath-signed": lambda xml, key: attacks.add_transform(
        xml, attacks.XPATH, attacks.XPATH_BENIGN, key_file=key
    ),
    "xslt-signed": lambda xml, key: attacks.add_transform(
        xml, attacks.XSLT, attacks.XSLT_BENIGN, key_file=key
    ),
    "xpath-as-third-transform": lambda xml, key: attacks.add_transform(
        xml, attacks.XPATH, attacks.XPATH_BENIGN, key_file=key, replace_c14n=False
    ),
    "inclusive-c14n-signed": lambda xml, key: attacks.set_c14n_method(
        xml, C.TransformInclC14N.href, key_file=key
    ),
    "c14n11-reference-transform": lambda xml, key: attacks.sign(
        xml, key, transforms=(attacks.ENVELOPED, C.TransformInclC14N11.href)
    ),
    # CPU bombs: written into the signature, not signable.
    "xpath-bomb": lambda xml, key: attacks.add_transform(
        xml, attacks.XPATH, attacks.XPATH_BOMB
    ),
    "xslt-bomb": lambda xml, key: attacks.add_transform(
        xml, attacks.XSLT, attacks.XSLT_BOMB
    ),
    "unknown-transform": lambda xml, key: attacks.add_transform(
        xml, "urn:example:unknown-transform"
    ),
    "unknown-c14n": lambda xml, key: attacks.set_c14n_method(
        xml, "urn:example:unknown-c14n"
    ),
}
SIGNED_TRANSFORM_ATTACKS = {name for name in TRANSFORM_ATTACKS if "signed" in name} | {
    "xpath-as-third-transform",
    "c14n11-reference-transform",
}


@pytest.mark.parametrize("attack", sorted(TRANSFORM_ATTACKS))
def test_saml_13_hostile_transform_refused_within_a_second(
    message, keys, backend, attack
):
    control = attacks.resign(message.xml, keys.sp_key)
    started = time.perf_counter()
    assert _verify(message, control, keys.sp_cert, backend)
    assert time.perf_counter() - started < 1.0

    hostile = TRANSFORM_ATTACKS[attack](message.xml, keys.sp_key)
    assert hostile != control
    if attack in SIGNED_TRANSFORM_ATTACKS:
        assert _plain_libxmlsec_accepts(hostile, _cert_key(keys.sp_cert))
    started = time.perf_counter()
    _refused(message, hostile, keys.sp_cert, backend)
    assert time.perf_counter() - started < 1.0


_PLAIN_VERIFY = """
import sys, xmlsec
from lxml import etree
root = etree.parse(sys.argv[1]).getroot()
signature = next(root.iter("{http://www.w3.org/2000/09/xmldsig#}Signature"))
xmlsec.tree.add_ids(root, ["ID"])
ctx = xmlsec.SignatureContext()
ctx.key = xmlsec.Key.from_file(sys.argv[2], xmlsec.constants.KeyDataFormatCertPem)
try:
    ctx.verify(signature)
except xmlsec.Error:
    pass
"""


@pytest.mark.slow
@pytest.mark.parametrize("attack", ["xpath-bomb", "xslt-bomb"])
def test_saml_13_bombs_are_real(message, keys, tmp_path, attack):
    """The control for "refused in < 1 s": without the allow-list, plain
    libxmlsec is still running the transform after 2 s (then killed)."""
    document = tmp_path / "bomb.xml"
    document.write_bytes(TRANSFORM_ATTACKS[attack](message.xml, keys.sp_key))
    started = time.perf_counter()
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run(
            [sys.executable, "-c", _PLAIN_VERIFY, str(document), keys.sp_cert],
            capture_output=True,
            timeout=2,
            check=False,
        )
    assert time.perf_counter() - started >= 2


# --------------------------------------------------------------------------
# SAML-14: XXE, DTDs, XInclude


@pytest.fixture
def secret_files(tmp_path: Path) -> dict[str, Path]:
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    dtd = tmp_path / "evil.dtd"
    dtd.write_text(f'<!ENTITY xxe SYSTEM "{secret.as_uri()}">')
    return {"secret": secret, "dtd": dtd}


def _doctype_attack(
    kind: str, files: dict[str, Path], root_name: str
) -> tuple[str, str]:
    """(DOCTYPE, what replaces the payload text) for each DOCTYPE attack."""
    secret_uri = files["secret"].as_uri()
    if kind == "bare-doctype":
        return f"<!DOCTYPE {root_name}>", SECRET
    if kind == "internal-entity":
        return f'<!DOCTYPE {root_name} [<!ENTITY xxe "{SECRET}">]>', "&xxe;"
    if kind == "billion-laughs":
        return f"<!DOCTYPE {root_name} [{attacks.BILLION_LAUGHS}]>", "&lol9;"
    if kind == "external-entity":
        return f'<!DOCTYPE {root_name} [<!ENTITY xxe SYSTEM "{secret_uri}">]>', "&xxe;"
    if kind == "external-dtd":
        return f'<!DOCTYPE {root_name} SYSTEM "{files["dtd"].as_uri()}">', "&xxe;"
    if kind == "parameter-entity":
        return (
            f'<!DOCTYPE {root_name} [<!ENTITY % ext SYSTEM "{files["dtd"].as_uri()}"> %ext;]>',
            "&xxe;",
        )
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "bare-doctype",
        "internal-entity",
        "billion-laughs",
        "external-entity",
        "external-dtd",
        "parameter-entity",
    ],
)
def test_saml_14_doctype_refused(message, keys, backend, secret_files, kind):
    """Signed over the text an expanding parser would produce: a verifier
    that expanded the entity would find a valid signature."""
    control = attacks.add_payload(message.xml, SECRET, key_file=keys.sp_key)
    assert _verify(message, control, keys.sp_cert, backend)

    root_name = etree.QName(attacks.parse(control)).localname
    doctype, markup = _doctype_attack(kind, secret_files, root_name)
    hostile = attacks.add_doctype(attacks.set_payload_markup(control, markup), doctype)
    if kind in ("external-entity", "external-dtd", "parameter-entity"):
        # The payload is live: a permissive parser reads the file.
        permissive = etree.XMLParser(
            resolve_entities=True, load_dtd=True, no_network=True
        )
        assert SECRET in etree.tostring(etree.fromstring(hostile, permissive)).decode()
    started = time.perf_counter()
    # (The root's ID is the control's: parsing the hostile text to read it
    # would be the attack.)
    error = _refused(message, hostile, keys.sp_cert, backend, attacks.root_id(control))
    assert time.perf_counter() - started < 1.0
    # libxml2's own amplification guard stops billion laughs while parsing,
    # before the backend's DOCTYPE rule looks at the tree.
    reason = "entity amplification" if kind == "billion-laughs" else "DOCTYPE"
    assert reason in str(error)
    assert SECRET not in str(error)


@pytest.mark.parametrize("parse", ["text", "xml"])
def test_saml_14_xinclude_not_processed(message, keys, backend, tmp_path, parse):
    """The signature covers what XInclude processing would insert; the
    backend must not read the file, so the digest cannot match."""
    included = tmp_path / "included.xml"
    if parse == "text":
        included.write_text(SECRET)
        expansion = SECRET
    else:
        included.write_text(
            f'<p:Secret xmlns:p="{attacks.PAYLOAD_NS}">{SECRET}</p:Secret>'
        )
        expansion = ""
    control = attacks.add_payload(message.xml, expansion, key_file=keys.sp_key)
    if parse == "xml":
        root = attacks.parse(control)
        payload = next(root.iter(f"{{{attacks.PAYLOAD_NS}}}Payload"))
        etree.SubElement(payload, f"{{{attacks.PAYLOAD_NS}}}Secret").text = SECRET
        control = attacks.sign(attacks.serialize(root), keys.sp_key)
    assert _verify(message, control, keys.sp_cert, backend)

    hostile = attacks.set_payload_markup(
        control,
        '<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" '
        f'href="{included.as_uri()}" parse="{parse}"/>',
    )
    # The payload is live: XInclude processing reads the file.
    tree = etree.fromstring(hostile).getroottree()
    tree.xinclude()
    assert SECRET in etree.tostring(tree).decode()
    error = _refused(message, hostile, keys.sp_cert, backend)
    assert SECRET not in str(error)


# --------------------------------------------------------------------------
# Helpers for SAML-09 and SAML-15 (their defences live above the backend)


def test_strip_signature_helper(message, keys, backend):
    stripped = attacks.strip_signature(message.xml, message.mutate)
    assert b"Signature" not in stripped
    assert _verify(message, message.xml, keys.sp_cert, backend)
    with pytest.raises(SignatureError):
        _verify(message, stripped, keys.sp_cert, backend)


def test_comment_injection_helper_keeps_a_valid_signature(keys, backend, tmp_path):
    """The signature stays valid (exclusive c14n drops comments), so the
    backend cannot stop it: issuer matching must compare the whole text.
    pysaml2 reads the whole text; lxml's ``.text`` stops at the comment."""
    attacker = "https://sp.example.org.evil.io/sp"
    key, cert = attacks.write_key_pair(tmp_path, "evil")
    client = attacks.make_sp_client(attacker, key, cert)
    signed = attacks.signed_authn_request(client, SSO)
    message = Message(signed, "urn:oasis:names:tc:SAML:2.0:protocol:AuthnRequest", None)

    injected = attacks.comment_in_text(signed, "https://sp.example.org", key_file=key)
    assert b"https://sp.example.org<!---->.evil.io/sp</" in injected
    assert _verify(message, injected, cert, backend)
    kept = attacks.comment_in_text(signed, "https://sp.example.org")
    assert _verify(message, kept, cert, backend)

    issuer = attacks.parse(injected).find(f"{{{attacks.ASSERTION}}}Issuer")
    assert issuer.text == "https://sp.example.org"
    assert "".join(issuer.itertext()) == attacker
    assert samlp.authn_request_from_string(injected.decode()).issuer.text == attacker


def test_post_fields_round_trip(message):
    fields = attacks.post_fields(message.xml, relay_state="s")
    assert base64.b64decode(fields["SAMLRequest"]) == message.xml
    assert fields["RelayState"] == "s"
