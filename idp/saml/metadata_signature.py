"""Signed metadata from a partner: verified against its trust anchor first.

A metadata source (a partner's file, URL or federation aggregate) has a
:class:`TrustAnchor`: the partner's metadata-signing certificate(s), or the
SHA-256 fingerprint of one.  :func:`verify_metadata` parses the document as
hostile input and verifies the signature on its *document element* before
anything else in it is read; the element it returns is then exactly what the
signer signed (SAML-28, and the wrapping attacks SAML-01..08 around signed
aggregates):

* the strict verifier of :mod:`idp.saml.crypto` decides the shape: one
  enveloped signature, a direct child of the document element, its one
  Reference ``URI=""`` or ``URI="#<its ID>"``; exclusive or inclusive c14n,
  never "with comments"; allow-listed algorithms, SHA-1 only when asked; no
  ``ds:Object``, no duplicate IDs, no other signature over the document;
* keys: with certificates, only those are tried (a key in the document is
  never used); with a fingerprint, the certificate in the signature's
  ``ds:KeyInfo`` is used only if its SHA-256 matches exactly;
* comments and processing instructions are stripped from the returned tree:
  canonicalization leaves comments out of what is signed, so a comment
  inserted into a text value after signing would otherwise cut what a reader
  gets from ``.text`` (CVE-2017-11427).

Refusals are :class:`MetadataSignatureError` with one line an operator can
act on: unsigned, altered, signed by another key (naming the fingerprint that
did sign when the document carries its certificate), refused algorithm, or
wrapping.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from idp.saml.crypto import AlgorithmRefused, Unsigned, XmlsecBackend
from idp.saml.xml import DS_NS, MD_NS, XmlRefused, parse_document
from idp.units import format_over

__all__ = [
    "MAX_METADATA_DOCUMENT_BYTES",
    "MIN_RSA_BITS",
    "MetadataSignatureError",
    "TrustAnchor",
    "VerifiedMetadata",
    "parse_anchor",
    "verified_metadata",
    "verify_metadata",
]

# eduGAIN's metadata profile and NIST SP 800-131A: no RSA signer under 2048.
MIN_RSA_BITS = 2048

# eduGAIN's aggregate of about 10,000 entities is some 80 MB; twice that
# leaves room to grow and still refuses a document meant to exhaust memory
# (the parsed tree takes several times the bytes).
MAX_METADATA_DOCUMENT_BYTES = 200 * 1024 * 1024

_ENTITIES = f"{{{MD_NS}}}EntitiesDescriptor"
_ENTITY = f"{{{MD_NS}}}EntityDescriptor"
_DS_SIGNED_INFO = f"{{{DS_NS}}}SignedInfo"
_DS_C14N_METHOD = f"{{{DS_NS}}}CanonicalizationMethod"
_DS_SIGNATURE_METHOD = f"{{{DS_NS}}}SignatureMethod"
_DS_SIGNATURE_VALUE = f"{{{DS_NS}}}SignatureValue"
_DS_KEY_INFO = f"{{{DS_NS}}}KeyInfo"
_DS_X509_DATA = f"{{{DS_NS}}}X509Data"
_DS_X509_CERTIFICATE = f"{{{DS_NS}}}X509Certificate"
_EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
_INCLUSIVE_NAMESPACES = f"{{{_EXC_C14N}}}InclusiveNamespaces"

_PEM_BLOCK = re.compile(
    r"-----BEGIN ([A-Z0-9 ]+)-----\s*(.*?)\s*-----END \1-----", re.DOTALL
)
_HEX64 = re.compile(r"[0-9a-f]{64}")

_DSIG_MORE = "http://www.w3.org/2001/04/xmldsig-more#"
_DSIG11 = "http://www.w3.org/2009/xmldsig11#"
# SignatureMethod URI -> (key kind, hash) for the diagnosis of a failure.
_SIGNATURE_HASHES: dict[str, tuple[str, type[hashes.HashAlgorithm]]] = {
    "http://www.w3.org/2000/09/xmldsig#rsa-sha1": ("rsa", hashes.SHA1),
    f"{_DSIG_MORE}rsa-sha224": ("rsa", hashes.SHA224),
    f"{_DSIG_MORE}rsa-sha256": ("rsa", hashes.SHA256),
    f"{_DSIG_MORE}rsa-sha384": ("rsa", hashes.SHA384),
    f"{_DSIG_MORE}rsa-sha512": ("rsa", hashes.SHA512),
    f"{_DSIG_MORE}ecdsa-sha1": ("ec", hashes.SHA1),
    f"{_DSIG_MORE}ecdsa-sha224": ("ec", hashes.SHA224),
    f"{_DSIG_MORE}ecdsa-sha256": ("ec", hashes.SHA256),
    f"{_DSIG_MORE}ecdsa-sha384": ("ec", hashes.SHA384),
    f"{_DSIG_MORE}ecdsa-sha512": ("ec", hashes.SHA512),
}


# What reading a certificate and its key may raise on bad input.
_CERTIFICATE_ERRORS = (
    binascii.Error,
    ValueError,
    x509.InvalidVersion,
    UnsupportedAlgorithm,
)


class MetadataSignatureError(ValueError):
    """Signed metadata refused, or a trust anchor unusable: one precise line,
    safe to show an operator."""


def _colons(hex_digest: str) -> str:
    return ":".join(hex_digest[i : i + 2] for i in range(0, len(hex_digest), 2))


def _fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()


def _check_key(certificate: x509.Certificate, what: str) -> None:
    """Refuse a signer key too weak to trust: RSA under
    :data:`MIN_RSA_BITS`, EC under 256 bits, or a kind XML signatures here
    cannot use."""
    key = certificate.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise MetadataSignatureError(
                f"{what} has a {key.key_size}-bit RSA key; at least "
                f"{MIN_RSA_BITS} bits are required (SHA-256 "
                f"{_colons(_fingerprint(certificate))})"
            )
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.key_size < 256:
            raise MetadataSignatureError(
                f"{what} has a {key.curve.key_size}-bit EC key; at least 256 "
                "bits are required"
            )
    else:
        raise MetadataSignatureError(
            f"{what} has a {type(key).__name__.removesuffix('PublicKey')} key; "
            "only RSA and EC keys can sign metadata"
        )


@dataclass(frozen=True)
class TrustAnchor:
    """What a metadata source's signer must be.

    ``certificates``: PEM certificates of the partner's metadata signer (any
    of them may sign); ``fingerprints``: SHA-256 fingerprints of a signer's
    certificate, 64 lowercase hex digits, no colons (the certificate itself
    then comes from the signature's ``ds:KeyInfo``).  Build one from an
    operator's text with :func:`parse_anchor`.  The key is what is trusted:
    a signer certificate's validity dates are shown, not enforced (as
    federations and Shibboleth's signature filter treat metadata signers),
    but a weak key is refused (:data:`MIN_RSA_BITS`).
    """

    certificates: tuple[str, ...] = ()
    fingerprints: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for fingerprint in self.fingerprints:
            if not _HEX64.fullmatch(fingerprint):
                raise MetadataSignatureError(
                    f"trust anchor fingerprint {fingerprint!r} is not 64 lowercase "
                    "hex digits (SHA-256, no colons)"
                )
        for pem in self.certificates:
            _check_key(_load_pem(pem), "trust anchor certificate")

    def __bool__(self) -> bool:
        return bool(self.certificates or self.fingerprints)

    def describe(self) -> str:
        """One line for ``source show``: each certificate's subject, SHA-256
        and expiry, or each fingerprint."""
        parts = []
        for pem in self.certificates:
            certificate = _load_pem(pem)
            parts.append(
                f"certificate {certificate.subject.rfc4514_string() or '(no subject)'}"
                f", SHA-256 {_colons(_fingerprint(certificate))}"
                f", valid until {certificate.not_valid_after_utc:%Y-%m-%d}"
            )
        parts.extend(f"SHA-256 fingerprint {_colons(f)}" for f in self.fingerprints)
        return "; ".join(parts) if parts else "no trust anchor"

    def to_text(self) -> str:
        """The anchor as :func:`parse_anchor` reads it back (for storage)."""
        return "\n".join([*self.certificates, *self.fingerprints])


@functools.lru_cache(maxsize=256)
def _load_pem(pem: str) -> x509.Certificate:
    try:
        certificate = x509.load_pem_x509_certificate(pem.encode("ascii"))
        certificate.public_key()
        return certificate
    except (*_CERTIFICATE_ERRORS, UnicodeEncodeError):
        raise MetadataSignatureError(
            "trust anchor certificate is not a readable PEM certificate"
        ) from None


def parse_anchor(text: str) -> TrustAnchor:
    """A :class:`TrustAnchor` from an operator's text.

    Accepts one or more PEM certificates (``-----BEGIN CERTIFICATE-----``),
    and/or SHA-256 fingerprints, separated by commas or new lines, each as
    hex with or without colons or spaces (``AB:CD:...``, ``abcd...``,
    optionally prefixed ``sha256:``).  Raises :class:`MetadataSignatureError`
    if the text is neither, holds a private key, or a SHA-1 fingerprint.
    """
    if not isinstance(text, str) or not text.strip():
        raise MetadataSignatureError(
            "trust anchor is empty: give the partner's signing certificate (PEM) "
            "or its SHA-256 fingerprint"
        )
    certificates: list[str] = []
    for match in _PEM_BLOCK.finditer(text):
        label = match.group(1)
        if "PRIVATE KEY" in label:
            raise MetadataSignatureError(
                "trust anchor holds a private key; give only the partner's "
                "certificate (and keep that key secret)"
            )
        if label != "CERTIFICATE":
            raise MetadataSignatureError(
                f"trust anchor holds a PEM {label}, not a CERTIFICATE"
            )
        try:
            der = base64.b64decode("".join(match.group(2).split()), validate=True)
            certificate = x509.load_der_x509_certificate(der)
            certificate.public_key()
        except _CERTIFICATE_ERRORS:
            raise MetadataSignatureError(
                f"trust anchor certificate {len(certificates) + 1} does not parse"
            ) from None
        pem = certificate.public_bytes(Encoding.PEM).decode("ascii")
        if pem not in certificates:
            certificates.append(pem)
    rest = _PEM_BLOCK.sub("\n", text)
    if "-----BEGIN" in rest or "-----END" in rest:
        raise MetadataSignatureError("trust anchor has an incomplete PEM block")
    fingerprints: list[str] = []
    for item in re.split(r"[,\n]", rest):
        compact = re.sub(r"[\s:]", "", item).lower().removeprefix("sha256")
        compact = compact.removeprefix("=")
        if not compact:
            continue
        if re.fullmatch(r"[0-9a-f]{40}", compact):
            raise MetadataSignatureError(
                "trust anchor is a SHA-1 fingerprint (40 hex digits); "
                "give the certificate's SHA-256 fingerprint (64 hex digits)"
            )
        if not _HEX64.fullmatch(compact):
            shown = item.strip()
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise MetadataSignatureError(
                f"trust anchor {shown!r} is neither a PEM certificate nor a "
                "SHA-256 fingerprint (64 hex digits, colons allowed)"
            )
        if compact not in fingerprints:
            fingerprints.append(compact)
    return TrustAnchor(tuple(certificates), tuple(fingerprints))


# --------------------------------------------------------------------------
# Verification


@functools.cache
def _backend(allow_sha1: bool) -> XmlsecBackend:
    return XmlsecBackend(allow_sha1=allow_sha1)


@dataclass(frozen=True)
class VerifiedMetadata:
    """What :func:`verified_metadata` proved, for the caller and its audit."""

    root: etree._Element  # the verified document element; read only this
    signer: str  # SHA-256 of the certificate whose key verified, lowercase hex
    algorithm: str  # the SignatureMethod URI


def verify_metadata(
    data: bytes,
    anchor: TrustAnchor,
    *,
    allow_sha1: bool = False,
    max_bytes: int = MAX_METADATA_DOCUMENT_BYTES,
) -> etree._Element:
    """Parse signed metadata and verify its document element's signature.

    ``data`` is the document as received (at most ``max_bytes``, checked
    before parsing); ``anchor`` says whose signature is required.  The
    signature is verified before anything else in the document is read.
    Returns the verified document element, an ``md:EntitiesDescriptor`` or
    ``md:EntityDescriptor``, with comments and processing instructions
    removed; read nothing but this tree.  Raises
    :class:`MetadataSignatureError`.
    """
    return verified_metadata(
        data, anchor, allow_sha1=allow_sha1, max_bytes=max_bytes
    ).root


def verified_metadata(
    data: bytes,
    anchor: TrustAnchor,
    *,
    allow_sha1: bool = False,
    max_bytes: int = MAX_METADATA_DOCUMENT_BYTES,
) -> VerifiedMetadata:
    """:func:`verify_metadata`, also saying which key signed and how (for an
    audit record, or ``source show`` during a partner's key rollover)."""
    if not anchor:
        raise MetadataSignatureError("no trust anchor to verify the metadata with")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MetadataSignatureError(
            f"metadata must be bytes, not {type(data).__name__}"
        )
    if len(data) > max_bytes:
        raise MetadataSignatureError(f"metadata is {format_over(len(data), max_bytes)}")
    try:
        root, _ = parse_document(bytes(data))
    except XmlRefused as exc:
        raise MetadataSignatureError(f"metadata refused: {_one_line(exc)}") from None
    if root.tag not in (_ENTITIES, _ENTITY):
        raise MetadataSignatureError(
            f"metadata's document element is {_display(root.tag)}, not "
            "md:EntitiesDescriptor or md:EntityDescriptor"
        )
    backend = _backend(allow_sha1)
    what = _display(root.tag)
    try:
        signature = backend.check_metadata_signature(root)
    except Unsigned:
        raise MetadataSignatureError(
            f"metadata is not signed (no ds:Signature on its {what}), "
            "but its source has a trust anchor"
        ) from None
    except AlgorithmRefused as exc:
        raise MetadataSignatureError(
            f"metadata signature refused: {_one_line(exc)}"
        ) from None
    except XmlRefused as exc:
        raise MetadataSignatureError(
            f"metadata signature refused (wrapping or malformed): {_one_line(exc)}"
        ) from None

    candidates = list(anchor.certificates)
    if anchor.fingerprints:
        # With certificates as well, a KeyInfo that matches no fingerprint
        # is no reason to stop: one of the certificates may still verify.
        candidates += _keyinfo_matching(
            signature, anchor, required=not anchor.certificates
        )
    signer = backend.verify_metadata_signature(root, signature, candidates)
    if signer is None:
        raise MetadataSignatureError(_diagnose(signature, anchor, candidates))
    algorithm = signature.find(f"{_DS_SIGNED_INFO}/{_DS_SIGNATURE_METHOD}")
    etree.strip_tags(root, etree.Comment, etree.ProcessingInstruction)
    return VerifiedMetadata(
        root,
        _fingerprint(_load_pem(signer)),
        "" if algorithm is None else algorithm.get("Algorithm", ""),
    )


def _one_line(exc: Exception) -> str:
    """An exception's text on one line (libxml2's messages may span two)."""
    return " ".join(str(exc).split())


def _display(tag: str) -> str:
    if not tag.startswith("{"):
        return tag  # no namespace: <html>, not "{}tml"
    namespace, _, local = tag[1:].rpartition("}")
    return f"md:{local}" if namespace == MD_NS else f"{{{namespace}}}{local}"


def _keyinfo_certificates(signature: etree._Element) -> list[x509.Certificate]:
    """The certificates in the signature's own ``ds:KeyInfo/ds:X509Data``."""
    found = []
    for key_info in signature.iterchildren(_DS_KEY_INFO):
        for data in key_info.iterchildren(_DS_X509_DATA):
            for element in data.iterchildren(_DS_X509_CERTIFICATE):
                try:
                    der = base64.b64decode("".join((element.text or "").split()))
                    certificate = x509.load_der_x509_certificate(der)
                    certificate.public_key()
                except _CERTIFICATE_ERRORS:
                    continue  # not a certificate anyone could have signed with
                found.append(certificate)
    return found


def _keyinfo_matching(
    signature: etree._Element, anchor: TrustAnchor, *, required: bool
) -> list[str]:
    """PEM certificates from KeyInfo whose SHA-256 the anchor names; when
    ``required``, their absence is the refusal, and says why."""
    carried = _keyinfo_certificates(signature)
    matching = [c for c in carried if _fingerprint(c) in anchor.fingerprints]
    for certificate in matching:
        _check_key(certificate, "the certificate the trust anchor's fingerprint names")
    if not required:
        return [c.public_bytes(Encoding.PEM).decode("ascii") for c in matching]
    if not carried:
        raise MetadataSignatureError(
            "metadata signature carries no certificate in its ds:KeyInfo, so a "
            "fingerprint trust anchor cannot verify it; configure the partner's "
            "certificate instead"
        )
    if not matching:
        signer = carried[0]
        expected = ", ".join(_colons(f) for f in anchor.fingerprints)
        raise MetadataSignatureError(
            f"metadata is signed by another key: its certificate has SHA-256 "
            f"{_colons(_fingerprint(signer))}"
            f"{_verifies_note(signature, signer)}; the trust anchor is {expected}"
        )
    return [c.public_bytes(Encoding.PEM).decode("ascii") for c in matching]


def _verifies_note(signature: etree._Element, certificate: x509.Certificate) -> str:
    if _signs_signed_info(signature, certificate):
        return ""
    return " (which does not verify it either)"


def _diagnose(signature: etree._Element, anchor: TrustAnchor, tried: list[str]) -> str:
    """Why no trusted key verified the signature: altered, or another signer.

    libxmlsec says only "invalid"; checking the SignatureValue over
    SignedInfo alone tells the two apart.  If a trusted key made it, the
    references' digests failed: the content changed after signing.
    """
    trusted = [_load_pem(p) for p in tried]
    if any(_signs_signed_info(signature, c) for c in trusted):
        return (
            "metadata was altered after signing: the trust anchor's key made the "
            "signature, but the signed content no longer matches its digest"
        )
    expected = ", ".join(_colons(_fingerprint(c)) for c in trusted) or ", ".join(
        _colons(f) for f in anchor.fingerprints
    )
    for certificate in _keyinfo_certificates(signature):
        if _signs_signed_info(signature, certificate):
            return (
                "metadata is signed by another key: certificate SHA-256 "
                f"{_colons(_fingerprint(certificate))}, not the trust anchor "
                f"({expected})"
            )
    return (
        "metadata signature does not verify with the trust anchor's key "
        f"({expected}): signed by another key, or its SignedInfo was altered"
    )


def _signs_signed_info(
    signature: etree._Element, certificate: x509.Certificate
) -> bool:
    """Whether ``certificate``'s key made the SignatureValue over SignedInfo
    (canonicalized as it says), whatever the references' digests."""
    signed_info = signature.find(_DS_SIGNED_INFO)
    method = signature.find(f"{_DS_SIGNED_INFO}/{_DS_SIGNATURE_METHOD}")
    c14n = signature.find(f"{_DS_SIGNED_INFO}/{_DS_C14N_METHOD}")
    value = signature.find(_DS_SIGNATURE_VALUE)
    if signed_info is None or method is None or c14n is None or value is None:
        return False
    kind_hash = _SIGNATURE_HASHES.get(method.get("Algorithm", ""))
    if kind_hash is None:
        return False
    kind, hash_class = kind_hash
    exclusive = c14n.get("Algorithm", "").startswith(_EXC_C14N)
    prefixes = None
    inclusive = c14n.find(_INCLUSIVE_NAMESPACES)
    if exclusive and inclusive is not None:
        prefixes = (inclusive.get("PrefixList") or "").split()
    try:
        octets = etree.tostring(
            signed_info,
            method="c14n",
            exclusive=exclusive,
            with_comments=False,
            inclusive_ns_prefixes=prefixes,
        )
        raw = base64.b64decode("".join((value.text or "").split()))
    except (binascii.Error, ValueError, etree.C14NError):
        # C14NError: libxml2 will not canonicalize, e.g., a relative
        # namespace URI; then no key can be said to have signed it.
        return False
    key = certificate.public_key()
    try:
        if kind == "rsa" and isinstance(key, rsa.RSAPublicKey):
            key.verify(raw, octets, padding.PKCS1v15(), hash_class())
            return True
        if kind == "ec" and isinstance(key, ec.EllipticCurvePublicKey):
            half = len(raw) // 2
            der = encode_dss_signature(
                int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
            )
            key.verify(der, octets, ec.ECDSA(hash_class()))
            return True
    except InvalidSignature:
        return False
    return False
