"""The start-up self-test of the signature verifier (OPS-07).

The IdP refuses to start unless the in-process verifier accepts a correctly
signed document and refuses one whose signed content, or whose
``SignatureValue``, was altered: a verifier that accepts everything would
otherwise go unnoticed until someone forged an AuthnRequest.
"""

from __future__ import annotations

import base64
import functools
import os
import tempfile
from pathlib import Path

import xmlsec
from saml2.sigver import CryptoBackend, SigverError

from idp.saml.crypto import XmlsecBackend
from idp.saml.errors import STATUS_SUCCESS
from idp.saml.xml import DS_NS, SAML_NS, SAMLP_NS, parse_document, serialize

_C = xmlsec.constants
_DS_SIGNATURE_VALUE = f"{{{DS_NS}}}SignatureValue"


class VerifierSelfTestError(RuntimeError):
    """The signature verifier accepted a bad signature or refused a good one."""


_SELF_TEST_ID = "_idme_self_test_0001"
_RESPONSE = f"{SAMLP_NS}:Response"
_SELF_TEST_VALUE = "idme-self-test-subject"
_SELF_TEST_FIXTURE = f"""\
<samlp:Response xmlns:samlp="{SAMLP_NS}" xmlns:saml="{SAML_NS}" ID="{_SELF_TEST_ID}" \
Version="2.0" IssueInstant="2024-01-01T00:00:00Z">\
<saml:Issuer>https://idp.invalid/self-test</saml:Issuer>\
<ds:Signature xmlns:ds="{DS_NS}"><ds:SignedInfo>\
<ds:CanonicalizationMethod Algorithm="{_C.TransformExclC14N.href}"/>\
<ds:SignatureMethod Algorithm="{_C.TransformRsaSha256.href}"/>\
<ds:Reference URI="#{_SELF_TEST_ID}"><ds:Transforms>\
<ds:Transform Algorithm="{_C.TransformEnveloped.href}"/>\
<ds:Transform Algorithm="{_C.TransformExclC14N.href}"/></ds:Transforms>\
<ds:DigestMethod Algorithm="{_C.TransformSha256.href}"/>\
<ds:DigestValue/></ds:Reference></ds:SignedInfo>\
<ds:SignatureValue/></ds:Signature>\
<samlp:Status><samlp:StatusCode Value="{STATUS_SUCCESS}"/>\
</samlp:Status><saml:Assertion ID="_idme_self_test_a" Version="2.0" \
IssueInstant="2024-01-01T00:00:00Z"><saml:Issuer>https://idp.invalid/self-test</saml:Issuer>\
<saml:Subject><saml:NameID>{_SELF_TEST_VALUE}</saml:NameID></saml:Subject>\
</saml:Assertion></samlp:Response>"""


@functools.cache
def _throwaway_pem() -> tuple[bytes, bytes]:
    """A throwaway RSA-2048 key and self-signed certificate, made once."""
    from idp.saml.keys import make_pem_pair

    return make_pem_pair("idme verifier self-test", key_size=2048, valid_days=1)


def _refuses(backend: CryptoBackend, document: str, cert_file: str) -> bool:
    try:
        result = backend.validate_signature(
            document, cert_file, "pem", _RESPONSE, _SELF_TEST_ID
        )
    except SigverError:
        return True
    return not result


def self_test(backend: CryptoBackend | None = None) -> None:
    """Check that ``backend`` verifies a good signature and refuses bad ones.

    Signs a small Response with a throwaway RSA key, verifies it, then checks
    that a copy with altered signed content and a copy with an altered
    ``SignatureValue`` are both refused.  Raises :class:`VerifierSelfTestError`
    otherwise.  Run it at start-up; after the first call (which makes the
    throwaway key) it takes a few milliseconds.
    """
    if backend is None:
        backend = XmlsecBackend()
    key_pem, cert_pem = _throwaway_pem()
    with tempfile.TemporaryDirectory(prefix="idme-selftest-") as tmp:
        key_file = os.path.join(tmp, "key.pem")
        cert_file = os.path.join(tmp, "cert.pem")
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key_pem)
        Path(cert_file).write_bytes(cert_pem)

        try:
            signed = backend.sign_statement(
                _SELF_TEST_FIXTURE, _RESPONSE, key_file, _SELF_TEST_ID
            )
        except Exception as exc:
            raise VerifierSelfTestError(
                f"signer failed on the self-test fixture: {exc}"
            ) from exc
        if isinstance(signed, bytes):
            signed = signed.decode("utf-8")

        try:
            good = backend.validate_signature(
                signed, cert_file, "pem", _RESPONSE, _SELF_TEST_ID
            )
        except Exception as exc:
            raise VerifierSelfTestError(
                f"verifier refused a correctly signed document: {exc}"
            ) from exc
        if not good:
            raise VerifierSelfTestError("verifier refused a correctly signed document")

        tampered_content = signed.replace(_SELF_TEST_VALUE, "idme-self-test-attacker")
        if tampered_content == signed:
            raise VerifierSelfTestError(
                "self-test fixture lost its subject while signing"
            )
        if not _refuses(backend, tampered_content, cert_file):
            raise VerifierSelfTestError(
                "verifier accepted a document whose signed content was altered"
            )

        tampered_signature = _alter_signature_value(signed)
        if not _refuses(backend, tampered_signature, cert_file):
            raise VerifierSelfTestError(
                "verifier accepted a document with an altered SignatureValue"
            )


def _alter_signature_value(signed: str) -> str:
    root, declaration = parse_document(signed)
    value = next(root.iter(_DS_SIGNATURE_VALUE), None)
    if value is None or not (value.text or "").strip():
        raise VerifierSelfTestError("signer left the SignatureValue empty")
    raw = bytearray(base64.b64decode("".join(value.text.split())))
    raw[len(raw) // 2] ^= 0x01
    value.text = base64.b64encode(bytes(raw)).decode("ascii")
    return serialize(root, declaration)
