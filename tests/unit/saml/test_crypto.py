"""XmlsecBackend: in-process signing, verification and encryption for pysaml2.

Interoperability is checked against the ``xmlsec1`` binary in both
directions; every refusal is paired with the accepted control document so a
test cannot pass because everything is refused.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from lxml import etree
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, saml, samlp
from saml2.client import Saml2Client
from saml2.config import Config, IdPConfig, SPConfig
from saml2.metadata import sign_entity_descriptor
from saml2.saml import NAMEID_FORMAT_PERSISTENT, NameID
from saml2.server import Server
from saml2.sigver import (
    CryptoBackendXmlSec1,
    DecryptError,
    EncryptError,
    SecurityContext,
    pre_encryption_part,
    pre_signature_part,
)
from saml2.xmldsig import (
    DIGEST_SHA1,
    DIGEST_SHA256,
    SIG_RSA_SHA1,
    SIG_RSA_SHA256,
    TRANSFORM_C14N,
    TRANSFORM_XPATH,
    TRANSFORM_XSLT,
)

from idp.saml.crypto import (
    SignatureError,
    XmlsecBackend,
    install_security_context,
    make_security_context,
    security_context_from_config,
)
from idp.saml.keys import make_pem_pair, write_private_key
from idp.saml.selftest import VerifierSelfTestError, self_test

XMLSEC1 = shutil.which("xmlsec1") or "/usr/bin/xmlsec1"
needs_xmlsec1 = pytest.mark.skipif(
    not os.path.exists(XMLSEC1), reason="the xmlsec1 binary is not installed"
)

RESPONSE = "urn:oasis:names:tc:SAML:2.0:protocol:Response"
ASSERTION = "urn:oasis:names:tc:SAML:2.0:assertion:Assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
XENC = "http://www.w3.org/2001/04/xmlenc#"
IDP = "https://idp.example.org/idp"
SP = "https://sp.example.org/sp"
ACS = "https://sp.example.org/acs"
REQUEST_ID = "id-request-0001"
SUBJECT = "alice-persistent-0001"


# --------------------------------------------------------------------------
# Keys and certificates


@dataclass(frozen=True)
class KeyPair:
    key_file: str
    cert_file: str
    cert_b64: str  # the certificate's base64 body, as metadata carries it


def _make_key_pair(directory: Path, name: str, bits: int) -> KeyPair:
    key_pem, cert_pem = make_pem_pair(name, key_size=bits, valid_days=30)
    key_file = directory / f"{name}.key"
    write_private_key(key_file, key_pem)
    cert_file = directory / f"{name}.crt"
    cert_file.write_bytes(cert_pem)
    body = "".join(cert_pem.decode("ascii").splitlines()[1:-1])
    return KeyPair(str(key_file), str(cert_file), body)


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("saml-keys")


@pytest.fixture(scope="module")
def idp_keys(keys_dir: Path) -> KeyPair:
    return _make_key_pair(keys_dir, "idp", 3072)


@pytest.fixture(scope="module")
def sp_keys(keys_dir: Path) -> KeyPair:
    return _make_key_pair(keys_dir, "sp", 2048)


@pytest.fixture(scope="module")
def attacker_keys(keys_dir: Path) -> KeyPair:
    return _make_key_pair(keys_dir, "attacker", 2048)


@pytest.fixture(scope="module")
def backend() -> XmlsecBackend:
    return XmlsecBackend()


@pytest.fixture(scope="module")
def binary_backend() -> CryptoBackendXmlSec1:
    return CryptoBackendXmlSec1(XMLSEC1)


# --------------------------------------------------------------------------
# Metadata and pysaml2 entities


def _sp_metadata(sp: KeyPair) -> str:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata"
    xmlns:ds="{DS}" entityID="{SP}">
  <md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"
      AuthnRequestsSigned="false" WantAssertionsSigned="true">
    <md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data>
      <ds:X509Certificate>{sp.cert_b64}</ds:X509Certificate>
    </ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:KeyDescriptor use="encryption"><ds:KeyInfo><ds:X509Data>
      <ds:X509Certificate>{sp.cert_b64}</ds:X509Certificate>
    </ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:NameIDFormat>{NAMEID_FORMAT_PERSISTENT}</md:NameIDFormat>
    <md:AssertionConsumerService index="0" isDefault="true"
        Binding="{BINDING_HTTP_POST}" Location="{ACS}"/>
  </md:SPSSODescriptor>
</md:EntityDescriptor>"""


def _idp_metadata(idp: KeyPair) -> str:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata"
    xmlns:ds="{DS}" entityID="{IDP}">
  <md:IDPSSODescriptor
      protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data>
      <ds:X509Certificate>{idp.cert_b64}</ds:X509Certificate>
    </ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:SingleSignOnService Binding="{BINDING_HTTP_REDIRECT}"
        Location="https://idp.example.org/sso"/>
  </md:IDPSSODescriptor>
</md:EntityDescriptor>"""


def _idp_config(idp: KeyPair, sp: KeyPair) -> dict:
    return {
        "entityid": IDP,
        "service": {
            "idp": {
                "endpoints": {
                    "single_sign_on_service": [
                        ("https://idp.example.org/sso", BINDING_HTTP_REDIRECT)
                    ]
                },
                "policy": {"default": {"lifetime": {"minutes": 5}}},
                "name_id_format": [NAMEID_FORMAT_PERSISTENT],
                # pysaml2 reads the entity's algorithms from the service
                # section; without them it signs with RSA-SHA1.
                "signing_algorithm": SIG_RSA_SHA256,
                "digest_algorithm": DIGEST_SHA256,
            }
        },
        "key_file": idp.key_file,
        "cert_file": idp.cert_file,
        "metadata": {"inline": [_sp_metadata(sp)]},
        # Keeps pysaml2 from looking for the xmlsec1 binary while the Server
        # is built; install_security_context() replaces the context anyway.
        "crypto_backend": "XMLSecurity",
    }


def _sp_config(idp: KeyPair, sp: KeyPair) -> dict:
    return {
        "entityid": SP,
        "service": {
            "sp": {
                "endpoints": {"assertion_consumer_service": [(ACS, BINDING_HTTP_POST)]},
                "want_response_signed": True,
                "want_assertions_signed": True,
                "authn_requests_signed": False,
                "signing_algorithm": SIG_RSA_SHA256,
                "digest_algorithm": DIGEST_SHA256,
            }
        },
        "key_file": sp.key_file,
        "cert_file": sp.cert_file,
        "encryption_keypairs": [{"key_file": sp.key_file, "cert_file": sp.cert_file}],
        "metadata": {"inline": [_idp_metadata(idp)]},
        "crypto_backend": "XMLSecurity",
    }


@pytest.fixture(scope="module")
def server(idp_keys: KeyPair, sp_keys: KeyPair) -> Server:
    conf = IdPConfig().load(_idp_config(idp_keys, sp_keys))
    srv = Server(config=conf)
    install_security_context(srv)
    return srv


@pytest.fixture(scope="module")
def client(idp_keys: KeyPair, sp_keys: KeyPair) -> Saml2Client:
    conf = SPConfig().load(_sp_config(idp_keys, sp_keys))
    cli = Saml2Client(config=conf)
    install_security_context(cli, security_context_from_config(cli.config))
    return cli


IDENTITY = {
    "uid": ["alice"],
    "mail": ["alice@example.org"],
    "givenName": ["Alice"],
    "sn": ["Liddell"],
    "cn": ["Alice Liddell"],
    "displayName": ["Alice L."],
    "eduPersonAffiliation": ["student", "member"],
    "eduPersonPrincipalName": ["alice@example.org"],
    "o": ["Example University"],
    "ou": ["Faculty of Mathematics"],
}


def _authn_response(server: Server, **kwargs) -> str:
    return server.create_authn_response(
        IDENTITY,
        REQUEST_ID,
        ACS,
        SP,
        name_id=NameID(format=NAMEID_FORMAT_PERSISTENT, text=SUBJECT),
        userid="alice",
        authn={"class_ref": saml.AUTHN_PASSWORD_PROTECTED},
        **kwargs,
    )


@pytest.fixture(scope="module")
def signed_response(server: Server) -> str:
    """A Response signed by pysaml2 through our backend (Response + Assertion)."""
    return _authn_response(server, sign_response=True, sign_assertion=True)


# --------------------------------------------------------------------------
# Helpers


def _ids(document: str) -> tuple[str, str]:
    response = samlp.response_from_string(document)
    return response.id, response.assertion[0].id


def _template(
    ident: str = "_resp-template-0001",
    sign_alg: str = SIG_RSA_SHA256,
    digest_alg: str = DIGEST_SHA256,
    cert: str | None = None,
) -> str:
    """An unsigned Response with pysaml2's signature template."""
    response = samlp.Response(
        id=ident, version="2.0", issue_instant="2024-01-01T00:00:00Z", destination=ACS
    )
    response.issuer = saml.Issuer(text=IDP)
    response.status = samlp.Status(
        status_code=samlp.StatusCode(value="urn:oasis:names:tc:SAML:2.0:status:Success")
    )
    response.signature = pre_signature_part(
        ident, cert, 1, sign_alg=sign_alg, digest_alg=digest_alg
    )
    response.assertion = saml.Assertion(
        id=ident + "-a",
        version="2.0",
        issue_instant="2024-01-01T00:00:00Z",
        issuer=saml.Issuer(text=IDP),
        subject=saml.Subject(name_id=NameID(text=SUBJECT)),
    )
    return str(response)


def _xmlsec1(*args: str, document: str, tmp_path: Path) -> subprocess.CompletedProcess:
    source = tmp_path / "in.xml"
    source.write_text(document, encoding="utf-8")
    return subprocess.run(
        [XMLSEC1, *args, str(source)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _binary_sign(document: str, key_file: str, tmp_path: Path, node_id: str) -> str:
    out = tmp_path / "signed.xml"
    done = _xmlsec1(
        "--sign",
        "--privkey-pem",
        key_file,
        "--id-attr:ID",
        RESPONSE,
        "--node-id",
        node_id,
        "--output",
        str(out),
        document=document,
        tmp_path=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    return out.read_text(encoding="utf-8")


def _binary_verify(
    document: str, cert_file: str, tmp_path: Path, node_id: str | None = None
):
    args = [
        "--verify",
        "--pubkey-cert-pem",
        cert_file,
        "--id-attr:ID",
        RESPONSE,
        "--id-attr:ID",
        ASSERTION,
    ]
    if node_id:
        args += ["--node-id", node_id]
    return _xmlsec1(*args, document=document, tmp_path=tmp_path)


def _tree(document: str) -> etree._Element:
    return etree.fromstring(document.encode("utf-8"))


def _text(root: etree._Element) -> str:
    return etree.tostring(root, encoding="unicode")


def _response_signature(root: etree._Element) -> etree._Element:
    return root.find(f"{{{DS}}}Signature")


def _verify(
    backend: XmlsecBackend, document: str, cert: str, node_id: str, node=RESPONSE
):
    return backend.validate_signature(document, cert, "pem", node, node_id)


# --------------------------------------------------------------------------
# Interface basics


def test_version_comes_from_the_bindings_without_spawning(monkeypatch, backend):
    def no_spawn(*args, **kwargs):
        raise AssertionError("spawned a process")

    monkeypatch.setattr(subprocess, "Popen", no_spawn)
    assert re.fullmatch(r"\d+\.\d+\.\d+", backend.version)
    assert backend.version_nums >= (1, 2, 0)


def test_install_replaces_every_context_pysaml2_keeps(server, client):
    for entity in (server, client):
        assert isinstance(entity.sec, SecurityContext)
        assert isinstance(entity.sec.crypto, XmlsecBackend)
        assert entity.metadata.security is entity.sec
        for source in entity.metadata.metadata.values():
            assert getattr(source, "security", entity.sec) is entity.sec
        # pysaml2 signs HTTP-Redirect messages with sec_backend.
        assert entity.sec.sec_backend is not None
        assert entity.sec.only_use_keys_in_metadata is True


def test_make_security_context_defaults(idp_keys):
    sec = make_security_context(idp_keys.key_file, idp_keys.cert_file)
    assert isinstance(sec.crypto, XmlsecBackend)
    assert sec.crypto.allow_sha1 is False
    assert sec.only_use_keys_in_metadata is True
    assert make_security_context(
        idp_keys.key_file, idp_keys.cert_file, allow_sha1=True
    ).crypto.allow_sha1


def test_server_signs_without_spawning_xmlsec1(monkeypatch, server, idp_keys, backend):
    def no_spawn(*args, **kwargs):
        raise AssertionError("spawned a process")

    monkeypatch.setattr(subprocess, "Popen", no_spawn)
    monkeypatch.setattr("saml2.sigver.Popen", no_spawn)
    document = _authn_response(server, sign_response=True, sign_assertion=True)
    response_id, assertion_id = _ids(document)
    assert _verify(backend, document, idp_keys.cert_file, response_id)
    assert _verify(backend, document, idp_keys.cert_file, assertion_id, ASSERTION)


def test_signed_response_is_realistic(signed_response):
    response = samlp.response_from_string(signed_response)
    assert response.signature is not None
    assert response.assertion[0].signature is not None
    names = {
        a.friendly_name for a in response.assertion[0].attribute_statement[0].attribute
    }
    assert {"uid", "mail", "eduPersonAffiliation"} <= names
    assert "rsa-sha256" in signed_response
    assert "rsa-sha1" not in signed_response


def test_signing_key_is_cached_per_path_and_mtime(tmp_path, idp_keys, backend):
    key_file = tmp_path / "cached.key"
    key_file.write_bytes(Path(idp_keys.key_file).read_bytes())
    first = backend._private_key(str(key_file))
    assert backend._private_key(str(key_file)) is first
    stat = key_file.stat()
    os.utime(key_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert backend._private_key(str(key_file)) is not first


# --------------------------------------------------------------------------
# Interoperability with the xmlsec1 binary


@needs_xmlsec1
def test_xmlsec1_verifies_our_response_signature(signed_response, idp_keys, tmp_path):
    _, assertion_id = _ids(signed_response)
    done = _binary_verify(signed_response, idp_keys.cert_file, tmp_path)
    assert done.returncode == 0, done.stderr
    done = _binary_verify(signed_response, idp_keys.cert_file, tmp_path, assertion_id)
    assert done.returncode == 0, done.stderr


@needs_xmlsec1
def test_xmlsec1_refuses_our_signature_with_another_cert(
    signed_response, attacker_keys, tmp_path
):
    done = _binary_verify(signed_response, attacker_keys.cert_file, tmp_path)
    assert done.returncode != 0


@needs_xmlsec1
def test_xmlsec1_signature_verifies_with_our_backend(idp_keys, backend, tmp_path):
    ident = "_binary-signed-0001"
    signed = _binary_sign(_template(ident), idp_keys.key_file, tmp_path, ident)
    assert _verify(backend, signed, idp_keys.cert_file, ident) is True


def test_our_signature_verifies_with_our_backend(signed_response, idp_keys, backend):
    response_id, assertion_id = _ids(signed_response)
    assert _verify(backend, signed_response, idp_keys.cert_file, response_id)
    assert _verify(
        backend, signed_response, idp_keys.cert_file, assertion_id, ASSERTION
    )


@needs_xmlsec1
def test_signed_metadata_without_node_id(idp_keys, backend, tmp_path, server):
    """pysaml2's sign_entity_descriptor() passes no node_id."""
    from saml2.metadata import entity_descriptor

    descriptor = entity_descriptor(server.config)
    sec = make_security_context(idp_keys.key_file, idp_keys.cert_file)
    _, signed = sign_entity_descriptor(
        descriptor, "_md-0001", sec, SIG_RSA_SHA256, DIGEST_SHA256
    )
    done = _xmlsec1(
        "--verify",
        "--pubkey-cert-pem",
        idp_keys.cert_file,
        "--id-attr:ID",
        "urn:oasis:names:tc:SAML:2.0:metadata:EntityDescriptor",
        document=signed,
        tmp_path=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert sec.verify_signature(
        signed,
        idp_keys.cert_file,
        node_name="urn:oasis:names:tc:SAML:2.0:metadata:EntityDescriptor",
    )


# --------------------------------------------------------------------------
# pysaml2 SP round trip through SecurityContext._check_signature


def test_pysaml2_sp_accepts_our_signed_response(client, signed_response):
    encoded = base64.b64encode(signed_response.encode("utf-8")).decode("ascii")
    parsed = client.parse_authn_request_response(
        encoded, BINDING_HTTP_POST, outstanding={REQUEST_ID: "/"}
    )
    assert parsed.name_id.text == SUBJECT
    assert parsed.ava["mail"] == ["alice@example.org"]


def test_pysaml2_sp_refuses_tampered_response(client, signed_response):
    tampered = signed_response.replace("alice@example.org", "mallory@example.org")
    assert tampered != signed_response
    encoded = base64.b64encode(tampered.encode("utf-8")).decode("ascii")
    with pytest.raises(SignatureError):
        client.parse_authn_request_response(
            encoded, BINDING_HTTP_POST, outstanding={REQUEST_ID: "/"}
        )


# --------------------------------------------------------------------------
# Refusals, each with its accepted control


def test_tampered_content_refused(signed_response, idp_keys, backend):
    response_id, _ = _ids(signed_response)
    assert _verify(backend, signed_response, idp_keys.cert_file, response_id)
    tampered = signed_response.replace("Faculty of Mathematics", "Faculty of Mischief")
    assert tampered != signed_response
    with pytest.raises(SignatureError):
        _verify(backend, tampered, idp_keys.cert_file, response_id)


def test_tampered_signature_value_refused(signed_response, idp_keys, backend):
    response_id, _ = _ids(signed_response)
    assert _verify(backend, signed_response, idp_keys.cert_file, response_id)
    root = _tree(signed_response)
    value = _response_signature(root).find(f"{{{DS}}}SignatureValue")
    raw = bytearray(base64.b64decode("".join(value.text.split())))
    raw[10] ^= 0x80
    value.text = base64.b64encode(bytes(raw)).decode("ascii")
    with pytest.raises(SignatureError):
        _verify(backend, _text(root), idp_keys.cert_file, response_id)


def test_wrong_certificate_refused(signed_response, idp_keys, attacker_keys, backend):
    response_id, _ = _ids(signed_response)
    assert _verify(backend, signed_response, idp_keys.cert_file, response_id)
    with pytest.raises(SignatureError):
        _verify(backend, signed_response, attacker_keys.cert_file, response_id)


def test_attacker_cert_in_keyinfo_does_not_verify(idp_keys, attacker_keys, backend):
    ident = "_forged-0001"
    forged = backend.sign_statement(
        _template(ident, cert=attacker_keys.cert_b64),
        RESPONSE,
        attacker_keys.key_file,
        ident,
    )
    assert attacker_keys.cert_b64[:64] in forged
    # Control: the forgery is a valid signature by the attacker's key ...
    assert _verify(backend, forged, attacker_keys.cert_file, ident)
    # ... but the key in KeyInfo is never used in place of the given cert.
    with pytest.raises(SignatureError):
        _verify(backend, forged, idp_keys.cert_file, ident)


@needs_xmlsec1
@pytest.mark.parametrize(
    ("ident", "sign_alg", "digest_alg"),
    [
        ("_sha1-0001", SIG_RSA_SHA1, DIGEST_SHA1),
        ("_sha1-digest-0001", SIG_RSA_SHA256, DIGEST_SHA1),
    ],
    ids=["sha1-signature", "sha1-digest-under-sha256"],
)
def test_sha1_refused_by_default_and_accepted_with_allow_sha1(
    idp_keys, backend, tmp_path, ident, sign_alg, digest_alg
):
    signed = _binary_sign(
        _template(ident, sign_alg=sign_alg, digest_alg=digest_alg),
        idp_keys.key_file,
        tmp_path,
        ident,
    )
    with pytest.raises(SignatureError, match="SHA-1"):
        _verify(backend, signed, idp_keys.cert_file, ident)
    assert _verify(XmlsecBackend(allow_sha1=True), signed, idp_keys.cert_file, ident)


def test_sha1_signing_refused_by_default(idp_keys, backend):
    ident = "_sha1-sign-0001"
    template = _template(ident, sign_alg=SIG_RSA_SHA1, digest_alg=DIGEST_SHA1)
    with pytest.raises(SignatureError, match="SHA-1"):
        backend.sign_statement(template, RESPONSE, idp_keys.key_file, ident)
    signed = XmlsecBackend(allow_sha1=True).sign_statement(
        template, RESPONSE, idp_keys.key_file, ident
    )
    assert "rsa-sha1" in signed


def test_second_signature_refused(signed_response, idp_keys, backend):
    response_id, _ = _ids(signed_response)
    assert _verify(backend, signed_response, idp_keys.cert_file, response_id)
    root = _tree(signed_response)
    signature = _response_signature(root)
    copy = etree.fromstring(etree.tostring(signature))
    del copy.attrib["Id"]  # else the duplicate-ID rule refuses it first
    signature.addnext(copy)
    with pytest.raises(SignatureError, match="exactly one ds:Signature"):
        _verify(backend, _text(root), idp_keys.cert_file, response_id)


def test_signature_elsewhere_over_the_same_id_refused(
    signed_response, idp_keys, backend
):
    response_id, _ = _ids(signed_response)
    root = _tree(signed_response)
    copy = etree.fromstring(etree.tostring(_response_signature(root)))
    del copy.attrib["Id"]  # else the duplicate-ID rule refuses it first
    status = root.find("{urn:oasis:names:tc:SAML:2.0:protocol}Status")
    status.append(copy)
    with pytest.raises(SignatureError, match="second ds:Signature"):
        _verify(backend, _text(root), idp_keys.cert_file, response_id)


@pytest.mark.parametrize(
    "attribute",
    ["ID", "{urn:example:evil}ID", "{http://www.w3.org/XML/1998/namespace}id", "Id"],
    ids=["ID", "foreign-ns-ID", "xml-id", "Id"],
)
def test_duplicate_id_refused(signed_response, idp_keys, backend, attribute):
    """Signature wrapping: a second element carrying the signed ID."""
    response_id, _ = _ids(signed_response)
    assert _verify(backend, signed_response, idp_keys.cert_file, response_id)
    root = _tree(signed_response)
    status = root.find("{urn:oasis:names:tc:SAML:2.0:protocol}Status")
    wrapper = etree.SubElement(
        status, "{urn:oasis:names:tc:SAML:2.0:protocol}StatusDetail"
    )
    etree.SubElement(wrapper, "{urn:example:evil}Thing", {attribute: response_id})
    with pytest.raises(SignatureError, match="duplicate ID"):
        _verify(backend, _text(root), idp_keys.cert_file, response_id)


def test_any_duplicate_resolvable_id_refused(signed_response, idp_keys, backend):
    response_id, assertion_id = _ids(signed_response)
    root = _tree(signed_response)
    status = root.find("{urn:oasis:names:tc:SAML:2.0:protocol}Status")
    detail = etree.SubElement(
        status, "{urn:oasis:names:tc:SAML:2.0:protocol}StatusDetail"
    )
    etree.SubElement(detail, "{urn:example:evil}Thing", ID=assertion_id)
    with pytest.raises(SignatureError, match="duplicate ID"):
        _verify(backend, _text(root), idp_keys.cert_file, response_id)


def test_reused_signature_id_attribute_is_tolerated(idp_keys, backend):
    """pysaml2 gives nested signatures the same Id="Signature1"; nothing resolves it."""
    ident = "_nested-0001"
    response = samlp.response_from_string(_template(ident))
    assertion = response.assertion[0]
    assertion.signature = pre_signature_part(
        assertion.id, None, 1, sign_alg=SIG_RSA_SHA256, digest_alg=DIGEST_SHA256
    )
    document = str(response)
    assert document.count('Id="Signature1"') == 2
    document = backend.sign_statement(
        document, ASSERTION, idp_keys.key_file, assertion.id
    )
    document = backend.sign_statement(document, RESPONSE, idp_keys.key_file, ident)
    assert _verify(backend, document, idp_keys.cert_file, ident)
    assert _verify(backend, document, idp_keys.cert_file, assertion.id, ASSERTION)


@needs_xmlsec1
def test_ds_object_refused(signed_response, idp_keys, backend, tmp_path):
    response_id, _ = _ids(signed_response)
    root = _tree(signed_response)
    signature = _response_signature(root)
    etree.SubElement(signature, f"{{{DS}}}Object").text = "unsigned payload"
    with_object = _text(root)
    # Control: still a cryptographically valid signature (xmlsec1 accepts it).
    done = _binary_verify(with_object, idp_keys.cert_file, tmp_path, response_id)
    assert done.returncode == 0, done.stderr
    with pytest.raises(SignatureError, match="ds:Object"):
        _verify(backend, with_object, idp_keys.cert_file, response_id)


def _with_transform(template: str, algorithm: str, body: str = "") -> str:
    root = _tree(template)
    transforms = root.find(f".//{{{DS}}}Transforms")
    transform = etree.SubElement(transforms, f"{{{DS}}}Transform", Algorithm=algorithm)
    if body:
        transform.append(etree.fromstring(body))
    return _text(root)


XPATH_BODY = (
    f'<ds:XPath xmlns:ds="{DS}">'
    'not(ancestor-or-self::*[local-name()="Status"])</ds:XPath>'
)
XSLT_BODY = (
    '<xsl:stylesheet xmlns:xsl="http://www.w3.org/1999/XSL/Transform" version="1.0">'
    '<xsl:template match="/"><x/></xsl:template></xsl:stylesheet>'
)


@needs_xmlsec1
@pytest.mark.parametrize(
    ("algorithm", "body"),
    [(TRANSFORM_XPATH, XPATH_BODY), (TRANSFORM_XSLT, XSLT_BODY)],
    ids=["xpath", "xslt"],
)
def test_disallowed_transform_refused(idp_keys, backend, tmp_path, algorithm, body):
    ident = "_transform-0001"
    plain = _template(ident)
    root = _tree(plain)
    transforms = root.find(f".//{{{DS}}}Transforms")
    for transform in list(transforms):
        if transform.get("Algorithm") == TRANSFORM_C14N:
            transforms.remove(transform)
    template = _with_transform(_text(root), algorithm, body)
    signed = _binary_sign(template, idp_keys.key_file, tmp_path, ident)
    # Control: the xmlsec1 binary, which allows these transforms, accepts it.
    done = _binary_verify(signed, idp_keys.cert_file, tmp_path, ident)
    assert done.returncode == 0, done.stderr
    with pytest.raises(SignatureError, match="not allowed"):
        _verify(backend, signed, idp_keys.cert_file, ident)


@needs_xmlsec1
def test_xmlsec_context_allow_list_also_refuses_xpath(idp_keys, backend, tmp_path):
    """Defence in depth: libxmlsec's own transform allow-list, below our checks."""
    import xmlsec

    ident = "_transform-0002"
    template = _with_transform(_template(ident), TRANSFORM_XPATH, XPATH_BODY)
    signed = _binary_sign(template, idp_keys.key_file, tmp_path, ident)
    key = backend._certificate(idp_keys.cert_file, "pem")

    control = _tree(_binary_sign(_template(ident), idp_keys.key_file, tmp_path, ident))
    xmlsec.tree.add_ids(control, ["ID"])
    backend._signature_context(key).verify(_response_signature(control))

    root = _tree(signed)
    xmlsec.tree.add_ids(root, ["ID"])
    with pytest.raises(xmlsec.Error):
        backend._signature_context(key).verify(_response_signature(root))


def test_reference_to_another_element_refused(signed_response, idp_keys, backend):
    response_id, assertion_id = _ids(signed_response)
    root = _tree(signed_response)
    reference = _response_signature(root).find(f".//{{{DS}}}Reference")
    reference.set("URI", f"#{assertion_id}")
    with pytest.raises(SignatureError, match="Reference URI"):
        _verify(backend, _text(root), idp_keys.cert_file, response_id)


def test_wrong_node_name_refused(signed_response, idp_keys, backend):
    response_id, _ = _ids(signed_response)
    with pytest.raises(SignatureError, match="not"):
        _verify(backend, signed_response, idp_keys.cert_file, response_id, ASSERTION)


DOCTYPE = '<!DOCTYPE r [<!ENTITY x "expanded">]>\n'


def test_doctype_refused(signed_response, idp_keys, backend):
    response_id, _ = _ids(signed_response)
    body = re.sub(r"^<\?xml[^>]*\?>\s*", "", signed_response)
    assert _verify(backend, body, idp_keys.cert_file, response_id)
    with pytest.raises(SignatureError, match="DOCTYPE"):
        _verify(backend, DOCTYPE + body, idp_keys.cert_file, response_id)
    with pytest.raises(SignatureError, match="DOCTYPE"):
        _verify(backend, "<!DOCTYPE r>\n" + body, idp_keys.cert_file, response_id)


def test_doctype_refused_when_signing(idp_keys, backend):
    ident = "_doctype-0001"
    template = _template(ident)
    assert backend.sign_statement(template, RESPONSE, idp_keys.key_file, ident)
    with pytest.raises(SignatureError, match="DOCTYPE"):
        backend.sign_statement(DOCTYPE + template, RESPONSE, idp_keys.key_file, ident)


def test_missing_certificate_file_is_a_signature_error(
    signed_response, backend, tmp_path
):
    response_id, _ = _ids(signed_response)
    with pytest.raises(SignatureError):
        _verify(backend, signed_response, str(tmp_path / "absent.pem"), response_id)


# --------------------------------------------------------------------------
# Self-test


def test_self_test_passes_on_the_real_backend(backend):
    self_test(backend)
    self_test()


class _AlwaysTrue(XmlsecBackend):
    def validate_signature(self, *args, **kwargs):
        return True


class _AlwaysRefuses(XmlsecBackend):
    def validate_signature(self, *args, **kwargs):
        raise SignatureError("no")


class _IgnoresSignatureValue(XmlsecBackend):
    """Checks only the digest: accepts any SignatureValue."""

    def validate_signature(self, signedtext, cert_file, cert_type, node_name, node_id):
        root = etree.fromstring(signedtext.encode("utf-8"))
        value = root.find(f".//{{{DS}}}SignatureValue")
        if value.text and "".join(value.text.split()) != self.last_value:
            value.text = self.last_value
            signedtext = etree.tostring(root, encoding="unicode")
        return super().validate_signature(
            signedtext, cert_file, cert_type, node_name, node_id
        )

    def sign_statement(self, *args, **kwargs):
        signed = super().sign_statement(*args, **kwargs)
        value = etree.fromstring(signed.encode("utf-8")).find(
            f".//{{{DS}}}SignatureValue"
        )
        self.last_value = "".join(value.text.split())
        return signed


def test_self_test_catches_a_verifier_that_accepts_everything():
    with pytest.raises(VerifierSelfTestError, match="altered"):
        self_test(_AlwaysTrue())


def test_self_test_catches_a_verifier_that_refuses_everything():
    with pytest.raises(VerifierSelfTestError, match="refused a correctly signed"):
        self_test(_AlwaysRefuses())


def test_self_test_catches_a_verifier_that_ignores_the_signature_value():
    with pytest.raises(VerifierSelfTestError, match="SignatureValue"):
        self_test(_IgnoresSignatureValue())


def test_self_test_is_fast(backend):
    import time

    self_test(backend)  # the throwaway key is made once, on first use
    start = time.perf_counter()
    self_test(backend)
    assert time.perf_counter() - start < 0.05


# --------------------------------------------------------------------------
# Encryption


@pytest.fixture(scope="module")
def encrypted_response(server: Server, sp_keys: KeyPair) -> str:
    return _authn_response(
        server,
        sign_response=True,
        sign_assertion=True,
        encrypt_assertion=True,
        encrypt_cert_assertion=sp_keys.cert_b64,
    )


def _algorithms(document: str) -> list[str]:
    root = _tree(document)
    return [m.get("Algorithm") for m in root.iter(f"{{{XENC}}}EncryptionMethod")]


def test_encrypted_response_hides_the_assertion(encrypted_response, sp_keys):
    assert SUBJECT not in encrypted_response
    assert "alice@example.org" not in encrypted_response
    assert _algorithms(encrypted_response) == [
        "http://www.w3.org/2009/xmlenc11#aes256-gcm",
        "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p",
    ]
    root = _tree(encrypted_response)
    encrypted = root.find("{urn:oasis:names:tc:SAML:2.0:assertion}EncryptedAssertion")
    assert encrypted is not None
    assert encrypted.find(f"{{{XENC}}}EncryptedData") is not None
    # The recipient's certificate is named as a hint, as pysaml2's template asks.
    assert sp_keys.cert_b64[:64] in encrypted_response


@needs_xmlsec1
def test_xmlsec1_decrypts_what_we_encrypt(encrypted_response, sp_keys, tmp_path):
    done = _xmlsec1(
        "--decrypt",
        "--privkey-pem",
        sp_keys.key_file,
        document=encrypted_response,
        tmp_path=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert SUBJECT in done.stdout
    assert "alice@example.org" in done.stdout


def test_we_decrypt_what_we_encrypt(encrypted_response, sp_keys, idp_keys, backend):
    plain = backend.decrypt(encrypted_response, sp_keys.key_file)
    assert SUBJECT in plain
    assertion = samlp.response_from_string(plain).encrypted_assertion[0]
    assert assertion.extension_elements
    # Control for the refusal: the wrong private key cannot decrypt.
    with pytest.raises(DecryptError):
        backend.decrypt(encrypted_response, idp_keys.key_file)


def test_pysaml2_sp_decrypts_and_verifies(client, encrypted_response):
    encoded = base64.b64encode(encrypted_response.encode("utf-8")).decode("ascii")
    parsed = client.parse_authn_request_response(
        encoded, BINDING_HTTP_POST, outstanding={REQUEST_ID: "/"}
    )
    assert parsed.name_id.text == SUBJECT
    assert parsed.ava["mail"] == ["alice@example.org"]


@needs_xmlsec1
def test_we_decrypt_what_xmlsec1_encrypts(
    server, sp_keys, backend, binary_backend, tmp_path
):
    """Decryption is not limited to our own choices (here 3DES, pysaml2's default)."""
    response = samlp.response_from_string(
        str(_authn_response(server, sign_response=False, sign_assertion=False))
    )
    cert = tmp_path / "sp.crt"
    cert.write_text(Path(sp_keys.cert_file).read_text())
    template = pre_encryption_part(encrypt_cert=sp_keys.cert_b64)
    encrypted = binary_backend.encrypt_assertion(response, str(cert), template)
    assert "tripledes-cbc" in encrypted
    assert SUBJECT not in encrypted
    assert SUBJECT in backend.decrypt(encrypted, sp_keys.key_file)


def test_we_decrypt_with_a_sibling_encrypted_key(encrypted_response, sp_keys, backend):
    """SAML lets EncryptedKey sit next to EncryptedData in EncryptedAssertion."""
    root = _tree(encrypted_response)
    enc_data = next(root.iter(f"{{{XENC}}}EncryptedData"))
    key_info = enc_data.find(f"{{{DS}}}KeyInfo")
    enc_key = key_info.find(f"{{{XENC}}}EncryptedKey")
    enc_data.remove(key_info)
    reference_list = etree.SubElement(enc_key, f"{{{XENC}}}ReferenceList")
    etree.SubElement(
        reference_list, f"{{{XENC}}}DataReference", URI=f"#{enc_data.get('Id')}"
    )
    enc_data.addnext(enc_key)
    plain = backend.decrypt(_text(root), sp_keys.key_file)
    assert SUBJECT in plain


def test_decrypt_refuses_external_cipher_reference(
    encrypted_response, sp_keys, backend
):
    root = _tree(encrypted_response)
    enc_data = next(root.iter(f"{{{XENC}}}EncryptedData"))
    cipher_data = enc_data.find(f"{{{XENC}}}CipherData")
    for child in list(cipher_data):
        cipher_data.remove(child)
    etree.SubElement(
        cipher_data, f"{{{XENC}}}CipherReference", URI="file:///etc/passwd"
    )
    with pytest.raises(DecryptError, match="CipherReference"):
        backend.decrypt(_text(root), sp_keys.key_file)


def test_decrypt_refuses_doctype(encrypted_response, sp_keys, backend):
    body = re.sub(r"^<\?xml[^>]*\?>\s*", "", encrypted_response)
    assert SUBJECT in backend.decrypt(body, sp_keys.key_file)
    with pytest.raises(DecryptError, match="DOCTYPE"):
        backend.decrypt(DOCTYPE + body, sp_keys.key_file)


def test_encrypt_refuses_ambiguous_target(server, sp_keys, backend):
    """xmlsec1 would encrypt only the first of two assertions and leave the other."""
    response = samlp.response_from_string(
        str(_authn_response(server, sign_response=False, sign_assertion=False))
    )
    second = saml.assertion_from_string(str(response.assertion[0]))
    second.id = second.id + "-2"
    response.assertion.append(second)
    with pytest.raises(EncryptError, match="exactly one"):
        backend.encrypt_assertion(
            response,
            sp_keys.cert_file,
            pre_encryption_part(encrypt_cert=sp_keys.cert_b64),
        )
    single = samlp.response_from_string(
        str(_authn_response(server, sign_response=False, sign_assertion=False))
    )
    assert SUBJECT not in backend.encrypt_assertion(
        single, sp_keys.cert_file, pre_encryption_part(encrypt_cert=sp_keys.cert_b64)
    )


def test_config_object_builds_context_without_binary(idp_keys, sp_keys):
    conf = Config().load(_idp_config(idp_keys, sp_keys))
    sec = security_context_from_config(conf, allow_sha1=True)
    assert isinstance(sec.crypto, XmlsecBackend)
    assert sec.crypto.allow_sha1
    assert sec.metadata is conf.metadata


def test_the_policy_names_are_the_encryptions_the_backend_has():
    """The CLI offers registry.ENCRYPTION_METHODS without loading xmlsec."""
    from idp.saml.crypto import DATA_ENCRYPTIONS
    from idp.saml.registry import ENCRYPTION_METHODS

    assert tuple(DATA_ENCRYPTIONS) == ENCRYPTION_METHODS
