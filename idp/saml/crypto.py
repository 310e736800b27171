"""In-process XML signatures and encryption for pysaml2, through python-xmlsec.

pysaml2's default crypto backend (``saml2.sigver.CryptoBackendXmlSec1``)
writes every document to a temporary file and spawns the ``xmlsec1`` binary
for each signature, verification and encryption: about 25 ms a signature.
:class:`XmlsecBackend` does the same work inside the process with the
``xmlsec`` Python bindings (about 0.5 ms a signature) and is stricter than
the binary about what it accepts as a SAML signature.

Plugging it into pysaml2::

    from saml2.server import Server
    from idp.saml.crypto import install_security_context
    from idp.saml.selftest import self_test

    self_test()                    # at start-up: the verifier must work
    server = Server(config=conf)   # conf: a saml2.config.IdPConfig
    install_security_context(server)   # or (server, make_security_context(...))

``Entity.__init__`` (the base of ``Server`` and ``Saml2Client``) always builds
a context with ``saml2.sigver.security_context(conf)``, and so does the
``MetadataStore`` that ``Config.load`` creates for ``conf.metadata``; the
entity keeps it as ``entity.sec`` and the store as ``store.security`` (and
passes it on to each remote/MDQ metadata source as ``source.security``).
:func:`install_security_context` replaces all of those references, so no
pysaml2 code path keeps the binary backend.  Building the entity still runs
pysaml2's own ``security_context(conf)`` once; with the default
``crypto_backend = "xmlsec1"`` that looks for the binary on ``$PATH``
(``os.lstat``, no process spawned) and fails if it is absent.  Setting
``"crypto_backend": "XMLSecurity"`` in the pysaml2 configuration avoids the
look-up; that placeholder backend cannot sign or verify anything, so any
reference the installer missed fails closed instead of silently spawning
``xmlsec1``.

pysaml2 signs with RSA-SHA1 unless the configuration sets
``signing_algorithm`` / ``digest_algorithm`` *inside the service section*
(``"service": {"idp": {"signing_algorithm": ...}}``; ``Entity`` does not read
the top-level keys); this backend refuses SHA-1 unless it was built with
``allow_sha1=True``, so configure SHA-256 there.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import xmlsec
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from lxml import etree
from saml2 import SamlBase
from saml2.sigver import (
    ASSERT_XPATH,
    CryptoBackend,
    DecryptError,
    EncryptError,
    RSACrypto,
    SecurityContext,
    SignatureError,
    import_rsa_key_from_file,
    pre_encrypt_assertion,
)

from idp.saml.xml import (
    DS_NS,
    XENC_NS,
    XML_NS,
    XmlRefused,
    parse_document,
    parser,
    serialize,
)

# DecryptError / EncryptError / SignatureError are pysaml2's (saml2.sigver);
# re-exported so callers outside idp.saml need not import saml2.
__all__ = [
    "AlgorithmRefused",
    "DecryptError",
    "EncryptError",
    "SignatureError",
    "Unsigned",
    "XmlsecBackend",
    "install_security_context",
    "make_security_context",
    "security_context_from_config",
]

_DS_SIGNATURE = f"{{{DS_NS}}}Signature"
_DS_SIGNED_INFO = f"{{{DS_NS}}}SignedInfo"
_DS_C14N_METHOD = f"{{{DS_NS}}}CanonicalizationMethod"
_DS_SIGNATURE_METHOD = f"{{{DS_NS}}}SignatureMethod"
_DS_REFERENCE = f"{{{DS_NS}}}Reference"
_DS_TRANSFORMS = f"{{{DS_NS}}}Transforms"
_DS_TRANSFORM = f"{{{DS_NS}}}Transform"
_DS_DIGEST_METHOD = f"{{{DS_NS}}}DigestMethod"
_DS_OBJECT = f"{{{DS_NS}}}Object"
_DS_KEY_INFO = f"{{{DS_NS}}}KeyInfo"
_DS_KEY_NAME = f"{{{DS_NS}}}KeyName"
_DS_X509_DATA = f"{{{DS_NS}}}X509Data"
_DS_X509_CERTIFICATE = f"{{{DS_NS}}}X509Certificate"
_DS_RETRIEVAL_METHOD = f"{{{DS_NS}}}RetrievalMethod"
_XENC_ENCRYPTED_DATA = f"{{{XENC_NS}}}EncryptedData"
_XENC_ENCRYPTED_KEY = f"{{{XENC_NS}}}EncryptedKey"
_XENC_ENCRYPTION_METHOD = f"{{{XENC_NS}}}EncryptionMethod"
_XENC_CIPHER_REFERENCE = f"{{{XENC_NS}}}CipherReference"
_XENC_TYPE_ELEMENT = f"{XENC_NS}Element"

_C = xmlsec.constants


@dataclass(frozen=True)
class _Profile:
    """What a signature may look like, by the kind of document it signs."""

    name: str  # in refusals: "a SAML signature", "a metadata signature"
    # Canonicalizations allowed for SignedInfo and as a Reference transform.
    c14n: tuple[Any, ...]

    @property
    def c14n_hrefs(self) -> frozenset[str]:
        return frozenset(t.href for t in self.c14n)

    @property
    def reference_transforms(self) -> frozenset[str]:
        return self.c14n_hrefs | {_C.TransformEnveloped.href}


# SAML's signature profile (saml-core 5.4.3/5.4.4): enveloped-signature plus
# exclusive c14n, a Reference to the signed element's ID.
_MESSAGE = _Profile(
    "a SAML signature",
    (_C.TransformExclC14N, _C.TransformExclC14NWithComments),
)
# Signed metadata as federations publish it (SAML metadata-iop, eduGAIN,
# Shibboleth's signer): exclusive or inclusive c14n, never with comments
# (what the signer saw must be what a reader reads), and ``URI=""`` as well
# as ``URI="#ID"`` of the document element.
_METADATA = _Profile(
    "a metadata signature",
    (_C.TransformExclC14N, _C.TransformInclC14N),
)

_SHA2_SIGNATURE_METHODS = (
    _C.TransformRsaSha224,
    _C.TransformRsaSha256,
    _C.TransformRsaSha384,
    _C.TransformRsaSha512,
    _C.TransformEcdsaSha224,
    _C.TransformEcdsaSha256,
    _C.TransformEcdsaSha384,
    _C.TransformEcdsaSha512,
)
_SHA1_SIGNATURE_METHODS = (_C.TransformRsaSha1, _C.TransformEcdsaSha1)
_SHA2_DIGEST_METHODS = (
    _C.TransformSha224,
    _C.TransformSha256,
    _C.TransformSha384,
    _C.TransformSha512,
)
_SHA1_DIGEST_METHODS = (_C.TransformSha1,)

# Algorithms an incoming EncryptedData / EncryptedKey may name for decrypt().
_SYMMETRIC_KEY_KLASS = {
    _C.TransformAes128Cbc.href: _C.KeyDataAes,
    _C.TransformAes192Cbc.href: _C.KeyDataAes,
    _C.TransformAes256Cbc.href: _C.KeyDataAes,
    _C.TransformAes128Gcm.href: _C.KeyDataAes,
    _C.TransformAes192Gcm.href: _C.KeyDataAes,
    _C.TransformAes256Gcm.href: _C.KeyDataAes,
    _C.TransformDes3Cbc.href: _C.KeyDataDes,
}

_CACHE_SIZE = 64
# How long a signing key file goes unchecked (XmlsecBackend.signing_key).
KEY_RECHECK_SECONDS = 1.0

# Data encryption the IdP offers, strongest first: the response builder
# picks the first an SP's metadata lists (idp.saml.response.encryption_for),
# or the operator's `sp policy --encryption-method NAME`; pysaml2's own
# path, encrypt_assertion(), always uses AES-256-GCM.
AES256_GCM = _C.TransformAes256Gcm.href
AES128_GCM = _C.TransformAes128Gcm.href
AES256_CBC = _C.TransformAes256Cbc.href
AES128_CBC = _C.TransformAes128Cbc.href
DATA_ENCRYPTIONS = {
    "aes256-gcm": AES256_GCM,
    "aes128-gcm": AES128_GCM,
    "aes256-cbc": AES256_CBC,
    "aes128-cbc": AES128_CBC,
}
# algorithm URI -> (transform, session key bits)
_DATA_ENCRYPTION = {
    AES256_GCM: (_C.TransformAes256Gcm, 256),
    AES128_GCM: (_C.TransformAes128Gcm, 128),
    AES256_CBC: (_C.TransformAes256Cbc, 256),
    AES128_CBC: (_C.TransformAes128Cbc, 128),
}
# Key transport: RSA-OAEP, as XML Encryption 1.0 names it (MGF1 with SHA-1,
# every SAML library reads it) or 1.1; the OAEP digest is a ds:DigestMethod
# child of its EncryptionMethod.
RSA_OAEP_MGF1P = _C.TransformRsaOaep.href
RSA_OAEP_11 = "http://www.w3.org/2009/xmlenc11#rsa-oaep"
KEY_TRANSPORTS = (RSA_OAEP_MGF1P, RSA_OAEP_11)
OAEP_SHA1 = _C.TransformSha1.href
OAEP_SHA256 = _C.TransformSha256.href
OAEP_DIGESTS = (
    _C.TransformSha512.href,
    _C.TransformSha384.href,
    OAEP_SHA256,
    OAEP_SHA1,
)


def _key_transport_method(
    enc_key: etree._Element, key_transport: str, digest: str | None
) -> None:
    """Name the RSA-OAEP variant and digest in the EncryptedKey's template.

    python-xmlsec has no constant for XML Encryption 1.1's rsa-oaep, but
    libxmlsec reads the algorithm and its DigestMethod from this node when
    it encrypts the key, so setting them here is what selects them.
    """
    method = enc_key.find(_XENC_ENCRYPTION_METHOD)
    method.set("Algorithm", key_transport)
    if digest is not None:
        etree.SubElement(method, _DS_DIGEST_METHOD, Algorithm=digest)


def signature_template(cert_pem: str | None = None) -> etree._Element:
    """A detached enveloped ds:Signature template, as idMe signs everything.

    Exclusive c14n, RSA-SHA256, one Reference (its URI left empty for the
    caller: ``#`` and the ID of the element the signature goes into) with
    the enveloped-signature and exclusive c14n transforms and a SHA-256
    digest; ``cert_pem`` (PEM, or its bare base64) in KeyInfo as a hint.
    Deep copies of one template are signed in place by
    :meth:`XmlsecBackend.sign_in_place`.
    """
    holder = etree.Element("holder")
    signature = xmlsec.template.create(
        holder, _C.TransformExclC14N, _C.TransformRsaSha256, ns="ds"
    )
    reference = xmlsec.template.add_reference(signature, _C.TransformSha256, uri="")
    xmlsec.template.add_transform(reference, _C.TransformEnveloped)
    xmlsec.template.add_transform(reference, _C.TransformExclC14N)
    if cert_pem:
        key_info = xmlsec.template.ensure_key_info(signature)
        x509 = xmlsec.template.add_x509_data(key_info)
        etree.SubElement(x509, _DS_X509_CERTIFICATE).text = "".join(
            line
            for line in cert_pem.strip().splitlines()
            if not line.startswith("-----")
        )
    return signature


# What signature_template() makes, checked before _sign_enveloped signs it.
_TEMPLATE_ALGORITHMS = (
    _C.TransformExclC14N.href,
    _C.TransformRsaSha256.href,
    _C.TransformEnveloped.href,
    _C.TransformExclC14N.href,
    _C.TransformSha256.href,
)
_DS = "{http://www.w3.org/2000/09/xmldsig#}"
_BASE64_LINE = 64


def _template_algorithms(signature: etree._Element) -> tuple[str | None, ...] | None:
    """The algorithms of a signature template shaped as
    :func:`signature_template` makes it; None for any other shape."""
    try:
        signed_info, value = signature[0], signature[1]
        c14n, method, reference = signed_info
        transforms, digest_method, digest_value = reference
        enveloped, exclusive = transforms
    except ValueError:
        return None
    tags = (signed_info.tag, value.tag, c14n.tag, method.tag, reference.tag)
    if tags != (
        f"{_DS}SignedInfo",
        f"{_DS}SignatureValue",
        f"{_DS}CanonicalizationMethod",
        f"{_DS}SignatureMethod",
        f"{_DS}Reference",
    ):
        return None
    if (transforms.tag, digest_value.tag) != (f"{_DS}Transforms", f"{_DS}DigestValue"):
        return None
    if (
        len(enveloped)
        or len(exclusive)
        or len(c14n)
        or len(method)
        or len(digest_method)
    ):
        return None  # an InclusiveNamespaces, an HMACOutputLength...
    return tuple(
        element.get("Algorithm")
        for element in (c14n, method, enveloped, exclusive, digest_method)
    )


def _canonical(element: etree._Element) -> bytes:
    """Exclusive XML c14n 1.0 of ``element``'s subtree, without comments
    (libxml2's, as libxmlsec runs it for a same-document Reference)."""
    return etree.tostring(element, method="c14n", exclusive=True, with_comments=False)


def _base64_lines(data: bytes) -> str:
    """Base64 in lines of 64 characters, as libxmlsec writes a SignatureValue."""
    text = base64.b64encode(data).decode("ascii")
    return "\n".join(
        text[i : i + _BASE64_LINE] for i in range(0, len(text), _BASE64_LINE)
    )


def _sign_enveloped(
    signed: etree._Element, signature: etree._Element, key: RSAPrivateKey
) -> bool:
    """Sign a :func:`signature_template` in place as libxmlsec would, without it.

    Byte for byte what ``xmlsec.SignatureContext.sign`` writes (RSA PKCS#1
    v1.5 is deterministic; ``tests/unit/saml/test_crypto.py`` compares
    both): the digest of the element's exclusive c14n without the
    signature (the enveloped-signature transform), then the RSA-SHA256
    signature of the SignedInfo's exclusive c14n. Cheaper on every SSO:
    no transform chain over a node set, and the RSA of the ``cryptography``
    wheel. False, having changed nothing, for a template of another shape
    or a signature followed by text (which the transform would keep and
    removing the element would not): the caller signs with libxmlsec.
    """
    if _template_algorithms(signature) != _TEMPLATE_ALGORITHMS:
        return False
    if signature.tail is not None:
        return False
    signed_info = signature[0]
    position = signed.index(signature)
    signed.remove(signature)
    try:
        canonical = _canonical(signed)
    finally:
        signed.insert(position, signature)
    digest = hashlib.sha256(canonical).digest()
    signed_info[2][2].text = base64.b64encode(digest).decode("ascii")
    value = key.sign(_canonical(signed_info), padding.PKCS1v15(), hashes.SHA256())
    signature[1].text = _base64_lines(value)
    return True


def signature_reference(signature: etree._Element) -> etree._Element:
    """The one ds:Reference of a signature made by :func:`signature_template`."""
    return signature[0][2]


class _Refused(XmlRefused):
    """The document breaks a rule this backend enforces before xmlsec runs."""


class AlgorithmRefused(_Refused):
    """A signature names an algorithm or transform outside the allow-lists."""


class Unsigned(_Refused):
    """The document element carries no signature (and nothing wraps one)."""


def _parse(document: Any) -> tuple[etree._Element, bool]:
    """:func:`idp.saml.xml.parse_document`, for pysaml2's objects as well as text."""
    if isinstance(document, SamlBase):
        document = document.to_string()
    return parse_document(document)


# --------------------------------------------------------------------------
# Signature structure checks


def _qualified_tag(node_name: str) -> str:
    """``urn:...:assertion:Assertion`` (pysaml2's class_name) -> Clark notation."""
    namespace, _, local = node_name.rpartition(":")
    if not namespace or not local:
        raise _Refused(f"bad node name {node_name!r}")
    return f"{{{namespace}}}{local}"


def _local(name: str) -> str:
    return name.rpartition("}")[2]


def _elements(root: etree._Element) -> Iterable[etree._Element]:
    return root.iter(etree.Element)


_XML_ID = f"{{{XML_NS}}}id"


def _check_unique_ids(root: etree._Element, node_id: str | None) -> None:
    """Refuse the ID confusion that signature wrapping relies on.

    Every attribute libxml2 may resolve a ``#fragment`` to must be unique:
    ``ID`` (``xmlsec.tree.add_ids`` matches it by local name, in any
    namespace) and ``xml:id`` (registered by libxml2 itself while parsing).
    And ``node_id`` must not appear in any other ID-like attribute (``Id``,
    ``id``) either.  Duplicate ``Id`` values elsewhere are tolerated: nothing
    resolves them, and pysaml2 itself gives nested signatures the same
    ``Id="Signature1"``.
    """
    resolvable: set[str] = set()
    holders = 0
    for element in _elements(root):
        for name, value in element.attrib.items():
            local = _local(name)
            if local == "ID" or name == _XML_ID:
                if value in resolvable:
                    raise _Refused(f"duplicate ID value {value!r} in the document")
                resolvable.add(value)
            if value == node_id and local in ("ID", "Id", "id"):
                holders += 1
    if holders > 1:
        raise _Refused(f"duplicate ID value {node_id!r} in the document")


def _target(
    root: etree._Element, node_name: str | None, node_id: str | None
) -> etree._Element:
    """The element carrying ``ID=node_id`` (of type ``node_name``)."""
    tag = _qualified_tag(node_name) if node_name else None
    if node_id:
        found = [e for e in _elements(root) if e.get("ID") == node_id]
        if len(found) > 1:
            raise _Refused(f"duplicate ID value {node_id!r} in the document")
        if not found:
            raise _Refused(f"no element with ID {node_id!r}")
        target = found[0]
        if tag is not None and target.tag != tag:
            raise _Refused(f"element with ID {node_id!r} is {target.tag}, not {tag}")
        return target
    # pysaml2 passes no node_id when it signs or verifies metadata; like
    # xmlsec1 without --node-id, take the element of that type carrying a
    # signature, if that is unambiguous. It must be the document element:
    # otherwise a signed original nested in an altered, unsigned copy
    # (XSW3/XSW4) would verify while the caller reads the copy.
    if tag is None:
        raise _Refused("neither a node name nor a node ID was given")
    found = [
        e
        for e in root.iter(tag)
        if any(c.tag == _DS_SIGNATURE for c in e) and e.get("ID")
    ]
    if len(found) != 1:
        raise _Refused(f"{len(found)} signed {tag} elements with an ID; need exactly 1")
    if found[0] is not root:
        raise _Refused(f"the signed {tag} is not the document element")
    return found[0]


def _algorithm(parent: etree._Element, tag: str) -> str:
    found = [c for c in parent if c.tag == tag]
    if len(found) != 1:
        raise _Refused(f"need exactly one {_local(tag)}, found {len(found)}")
    algorithm = found[0].get("Algorithm")
    if not algorithm:
        raise _Refused(f"{_local(tag)} has no Algorithm")
    return algorithm


# --------------------------------------------------------------------------
# Key loading with caches


_V = TypeVar("_V")


class _LRU(Generic[_V]):
    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[Any, _V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> _V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Any, value: _V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


_CERT_FORMATS = {
    "pem": _C.KeyDataFormatCertPem,
    "der": _C.KeyDataFormatCertDer,
}


class XmlsecBackend(CryptoBackend):
    """pysaml2 ``CryptoBackend`` running libxmlsec in-process.

    :param allow_sha1: accept (and produce) RSA-SHA1 / ECDSA-SHA1 signatures
        and SHA-1 digests; refused by default.

    Errors follow ``CryptoBackendXmlSec1``: signing and verification failures
    raise ``saml2.sigver.SignatureError``, encryption failures
    ``EncryptError``, decryption failures ``DecryptError`` (all subclasses of
    ``XmlsecError``, which ``SecurityContext`` catches to try the next
    certificate or key).
    """

    def __init__(self, allow_sha1: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.allow_sha1 = allow_sha1
        signature_methods = _SHA2_SIGNATURE_METHODS + (
            _SHA1_SIGNATURE_METHODS if allow_sha1 else ()
        )
        digest_methods = _SHA2_DIGEST_METHODS + (
            _SHA1_DIGEST_METHODS if allow_sha1 else ()
        )
        self._signature_methods = tuple(signature_methods)
        self._digest_methods = tuple(digest_methods)
        self._signature_hrefs = frozenset(t.href for t in signature_methods)
        self._digest_hrefs = frozenset(t.href for t in digest_methods)
        self._sha1_hrefs = frozenset(
            t.href for t in _SHA1_SIGNATURE_METHODS + _SHA1_DIGEST_METHODS
        )
        self._private_keys: _LRU[xmlsec.Key] = _LRU(_CACHE_SIZE)
        self._certificates: _LRU[xmlsec.Key] = _LRU(_CACHE_SIZE)
        self._managers: _LRU[xmlsec.KeysManager] = _LRU(_CACHE_SIZE)
        # path -> (key, when its file was last looked at; time.monotonic())
        self._signing_keys: _LRU[tuple[xmlsec.Key, float]] = _LRU(_CACHE_SIZE)
        self._rsa_keys: _LRU[tuple[RSAPrivateKey | None]] = _LRU(_CACHE_SIZE)
        self._rsa_signing_keys: _LRU[tuple[RSAPrivateKey | None, float]] = _LRU(
            _CACHE_SIZE
        )

    # -- CryptoBackend interface -------------------------------------------

    @property
    def version(self) -> str:
        """The libxmlsec version linked into the bindings, e.g. ``"1.3.9"``."""
        # Present since python-xmlsec 1.3.14 but missing from its stubs.
        version = xmlsec.get_libxmlsec_version()  # type: ignore[attr-defined]
        return ".".join(str(part) for part in version)

    def sign_statement(
        self,
        statement: Any,
        node_name: str,
        key_file: str,
        node_id: str | None,
    ) -> str:
        """Fill in the ``ds:Signature`` template of the element ``node_id``.

        :param statement: XML text (or a pysaml2 object) holding the template
        :param node_name: pysaml2 class name of the signed element
        :param key_file: PEM file with the private key
        :param node_id: value of the element's ``ID`` attribute
        :return: the signed document as text
        """
        try:
            root, declaration = _parse(statement)
            signature = self._checked_signature(root, node_name, node_id)
            ctx = self._signature_context(self._private_key(key_file))
            xmlsec.tree.add_ids(root, ["ID"])
            ctx.sign(signature)
        except (XmlRefused, xmlsec.Error, OSError) as exc:
            raise SignatureError(f"cannot sign {node_name} {node_id}: {exc}") from exc
        return serialize(root, declaration)

    def validate_signature(
        self,
        signedtext: Any,
        cert_file: str,
        cert_type: str,
        node_name: str,
        node_id: str | None,
    ) -> bool:
        """Verify the enveloped signature of element ``node_id`` with ``cert_file``.

        Only the given certificate is used; keys in ``ds:KeyInfo`` are never
        consulted.  Returns True, or raises ``SignatureError`` (the contract of
        ``CryptoBackendXmlSec1.validate_signature``, which
        ``SecurityContext._check_signature`` relies on).
        """
        try:
            root, _ = _parse(signedtext)
            signature = self._checked_signature(root, node_name, node_id)
            ctx = self._signature_context(self._certificate(cert_file, cert_type))
            xmlsec.tree.add_ids(root, ["ID"])
            ctx.verify(signature)
        except (XmlRefused, xmlsec.Error, OSError) as exc:
            raise SignatureError(
                f"signature of {node_name} {node_id} refused: {exc}"
            ) from exc
        return True

    def encrypt_assertion(
        self,
        statement: Any,
        enc_key: str,
        template: Any,
        key_type: str | None = None,
        node_xpath: str | None = None,
        node_id: str | None = None,
    ) -> str:
        """Encrypt the assertion of a Response for the holder of ``enc_key``.

        Mirrors ``CryptoBackendXmlSec1.encrypt_assertion``: ``statement`` is a
        Response (text or ``samlp.Response``) whose assertion sits inside
        ``saml:EncryptedAssertion``; the element at ``node_xpath`` (default:
        ``Response/EncryptedAssertion/Assertion``), or with ``ID=node_id``, is
        replaced by ``xenc:EncryptedData``.  ``template`` is pysaml2's
        ``pre_encryption_part()``; its ``Id`` attributes, ``KeyName`` and
        certificate are kept, but its algorithms and ``key_type`` are not
        honoured: data is encrypted with AES-256-GCM under a fresh session
        key, transported with RSA-OAEP (``rsa-oaep-mgf1p``).

        :param enc_key: PEM certificate file of the recipient
        :param key_type: ignored (pysaml2 passes its default, ``"des-192"``)
        :return: the document, as text, with the assertion encrypted
        """
        try:
            # pysaml2 may hand over a Response it already moved the assertion
            # out of; moving it again would drop the assertion.
            if isinstance(statement, SamlBase) and getattr(
                statement, "assertion", None
            ):
                statement = pre_encrypt_assertion(statement)
            root, declaration = _parse(statement)
            node = self._node_to_encrypt(root, node_xpath, node_id)
            hints = _template_hints(template)
            manager = self._keys_manager(enc_key)

            data_method, key_bits = _DATA_ENCRYPTION[AES256_GCM]
            enc_data = xmlsec.template.encrypted_data_create(
                root,
                data_method,
                id=hints["data_id"],
                type=_C.TypeEncElement,
                ns="xenc",
            )
            xmlsec.template.encrypted_data_ensure_cipher_value(enc_data)
            key_info = xmlsec.template.encrypted_data_ensure_key_info(enc_data, ns="ds")
            enc_key_node = xmlsec.template.add_encrypted_key(
                key_info, _C.TransformRsaOaep, id=hints["key_id"]
            )
            xmlsec.template.encrypted_data_ensure_cipher_value(enc_key_node)

            ctx = xmlsec.EncryptionContext(manager)
            ctx.key = xmlsec.Key.generate(
                _C.KeyDataAes, key_bits, _C.KeyDataTypeSession
            )
            enc_data = ctx.encrypt_xml(enc_data, node)
            _add_recipient_key_info(enc_data, hints)
        except (XmlRefused, xmlsec.Error, OSError, etree.XPathError) as exc:
            raise EncryptError(f"cannot encrypt the assertion: {exc}") from exc
        return serialize(root, declaration)

    def decrypt(self, enctext: Any, key_file: str) -> str:
        """Decrypt the first ``xenc:EncryptedData`` of ``enctext`` with ``key_file``.

        Like ``xmlsec1 --decrypt``: returns the document with that element
        replaced by its plaintext.  The session key may be transported in an
        ``EncryptedKey`` inside the ``EncryptedData``'s ``KeyInfo`` or in a
        sibling ``EncryptedKey`` (as SAML's ``EncryptedAssertion`` allows);
        any algorithm libxmlsec supports is accepted.  External references
        (``CipherReference``, ``RetrievalMethod`` to anything but ``#id``)
        are refused.  Raises ``DecryptError`` on any failure.
        """
        try:
            root, declaration = _parse(enctext)
            enc_data = next(root.iter(_XENC_ENCRYPTED_DATA), None)
            if enc_data is None:
                raise _Refused("no EncryptedData in the document")
            parent = enc_data.getparent()
            _check_no_external_references(enc_data if parent is None else parent)
            private_key = self._private_key(key_file)
            manager = xmlsec.KeysManager()
            manager.add_key(private_key)
            ctx = xmlsec.EncryptionContext(manager)
            inline = any(
                c.tag == _DS_KEY_INFO
                and next(c.iter(_XENC_ENCRYPTED_KEY), None) is not None
                for c in enc_data
            )
            if not inline:
                ctx.key = self._sibling_session_key(enc_data, manager)
            result = ctx.decrypt(enc_data)
        except (XmlRefused, xmlsec.Error, OSError) as exc:
            raise DecryptError(f"cannot decrypt: {exc}") from exc
        if isinstance(result, bytes):
            return result.decode("utf-8")
        return serialize(result, declaration)

    # -- helpers -------------------------------------------------------------

    def verify_root(
        self, root: etree._Element, node_name: str, certificates: Iterable[str]
    ) -> str:
        """Verify the enveloped signature of ``root`` with one of ``certificates``.

        For messages the IdP receives: ``root`` is the parsed message (see
        :func:`idp.saml.xml.parse_xml`), ``certificates`` the PEM signing
        certificates of the registered sender, never a key from the message.
        The same shape rules as :meth:`validate_signature` apply, and the
        signed element must be the root itself, so what the caller reads is
        what was signed.
        Returns the signature algorithm URI, or raises ``SignatureError``.
        """
        try:
            node_id = root.get("ID")
            if not node_id:
                raise _Refused("the message has no ID")
            signature = self._checked_signature(root, node_name, node_id)
            if signature.getparent() is not root:
                raise _Refused("the signature does not sign the message itself")
            algorithm = _algorithm(
                next(c for c in signature if c.tag == _DS_SIGNED_INFO),
                _DS_SIGNATURE_METHOD,
            )
            xmlsec.tree.add_ids(root, ["ID"])
            for pem in certificates:
                ctx = self._signature_context(self._certificate_from_pem(pem))
                try:
                    ctx.verify(signature)
                except xmlsec.Error:
                    continue
                return algorithm
            raise _Refused("no registered key of the sender verifies it")
        except (XmlRefused, xmlsec.Error, StopIteration) as exc:
            raise SignatureError(f"signature refused: {exc}") from exc

    def check_metadata_signature(self, root: etree._Element) -> etree._Element:
        """Vet the enveloped signature of a metadata document; return it.

        ``root`` is the document element of a parsed metadata document (an
        ``md:EntitiesDescriptor`` or ``md:EntityDescriptor``).  Its one
        direct ``ds:Signature`` child must reference the document itself,
        ``URI=""`` or ``URI="#<root ID>"``, in the metadata profile (the
        message rules of :meth:`validate_signature`, plus inclusive c14n;
        never "with comments").  Refused, before any cryptography: a
        signature below the document element that references the document
        (a signed original wrapped in an unsigned one), a second signature,
        a Reference to anything else, duplicate IDs.  Entities' own
        signatures inside an aggregate reference themselves and are left
        alone.  Raises :class:`Unsigned`, :class:`AlgorithmRefused` or
        another :class:`idp.saml.xml.XmlRefused` with a one-line reason.
        """
        if root.getparent() is not None or root.getroottree().getroot() is not root:
            raise _Refused("the signed element is not the document element")
        root_id = root.get("ID")
        uris = {""} | ({f"#{root_id}"} if root_id else set())
        for other in root.iter(_DS_SIGNATURE):
            if other.getparent() is root:
                continue
            for reference in other.iter(_DS_REFERENCE):
                uri = reference.get("URI")
                if uri in uris:
                    where = _local(other.getparent().tag)
                    what = "the whole document" if uri == "" else repr(uri)
                    raise _Refused(
                        f"a ds:Signature inside a nested {where} references "
                        f"{what} (signature wrapping)"
                    )
        signatures = [c for c in root if c.tag == _DS_SIGNATURE]
        if not signatures:
            # Entities may sign themselves inside an aggregate; a signed
            # element of the document element's own kind, or a signed
            # aggregate, below an unsigned one is a wrapped original.
            for other in root.iter(_DS_SIGNATURE):
                holder = other.getparent()
                if holder is not None and (
                    holder.tag == root.tag or _local(holder.tag) == "EntitiesDescriptor"
                ):
                    raise _Refused(
                        f"the {_local(root.tag)} is unsigned but wraps a signed "
                        f"{_local(holder.tag)} (signature wrapping)"
                    )
            raise Unsigned(f"the {_local(root.tag)} carries no ds:Signature")
        if len(signatures) > 1:
            raise _Refused(
                f"need exactly one ds:Signature on the {_local(root.tag)}, "
                f"found {len(signatures)}"
            )
        _check_unique_ids(root, root_id)
        self._vet_signature(signatures[0], uris, _METADATA)
        return signatures[0]

    def verify_metadata_signature(
        self,
        root: etree._Element,
        signature: etree._Element,
        certificates: Iterable[str],
    ) -> str | None:
        """The first PEM certificate of ``certificates`` whose key verifies
        ``signature`` (vetted by :meth:`check_metadata_signature`), or None.

        Only those keys are tried; ``ds:KeyInfo`` is never read.
        """
        xmlsec.tree.add_ids(root, ["ID"])
        for pem in certificates:
            ctx = self._signature_context(self._certificate_from_pem(pem), _METADATA)
            try:
                ctx.verify(signature)
            except xmlsec.Error:
                continue
            return pem
        return None

    def encrypt_element(
        self,
        element: etree._Element,
        certificate_pem: str,
        algorithm: str,
        key_transport: str = RSA_OAEP_MGF1P,
        digest: str | None = None,
    ) -> etree._Element:
        """Replace ``element`` in its document by ``xenc:EncryptedData``.

        The plaintext is a standalone copy of the element carrying the
        namespace declarations it uses *with the prefixes it has in the
        document*: a recipient that decrypts and puts the element back
        (python3-saml, php-saml) then sees the very bytes that were signed.
        (pysaml2's "self-contained" encryption renames the prefixes, and
        exclusive c14n includes prefixes, so such a recipient's signature
        check fails.) Data is encrypted with ``algorithm`` (a value of
        :data:`DATA_ENCRYPTIONS`) under a fresh key of its size, sent to
        ``certificate_pem`` with ``key_transport`` (one of
        :data:`KEY_TRANSPORTS`) using the OAEP ``digest`` (one of
        :data:`OAEP_DIGESTS`; None: the algorithm's default, SHA-1).
        Returns the EncryptedData; raises ``EncryptError``.
        """
        try:
            if algorithm not in _DATA_ENCRYPTION:
                raise _Refused(f"unsupported data encryption {algorithm}")
            if key_transport not in KEY_TRANSPORTS:
                raise _Refused(f"unsupported key transport {key_transport}")
            if digest is not None and digest not in OAEP_DIGESTS:
                raise _Refused(f"unsupported OAEP digest {digest}")
            data_method, key_bits = _DATA_ENCRYPTION[algorithm]
            standalone = etree.fromstring(etree.tostring(element), parser())
            plaintext = etree.tostring(standalone)
            enc_data = xmlsec.template.encrypted_data_create(
                element, data_method, type=_C.TypeEncElement, ns="xenc"
            )
            xmlsec.template.encrypted_data_ensure_cipher_value(enc_data)
            key_info = xmlsec.template.encrypted_data_ensure_key_info(enc_data, ns="ds")
            enc_key = xmlsec.template.add_encrypted_key(key_info, _C.TransformRsaOaep)
            _key_transport_method(enc_key, key_transport, digest)
            xmlsec.template.encrypted_data_ensure_cipher_value(enc_key)
            ctx = xmlsec.EncryptionContext(self._keys_manager_pem(certificate_pem))
            ctx.key = xmlsec.Key.generate(
                _C.KeyDataAes, key_bits, _C.KeyDataTypeSession
            )
            enc_data = ctx.encrypt_binary(enc_data, plaintext)
            parent = element.getparent()
            if parent is None:
                raise _Refused("the element to encrypt has no parent")
            parent.replace(element, enc_data)
        except (XmlRefused, xmlsec.Error, etree.XMLSyntaxError) as exc:
            raise EncryptError(f"cannot encrypt: {exc}") from exc
        return enc_data

    def sign_element(
        self, element: etree._Element, key_file: str, cert_pem: str | None = None
    ) -> None:
        """Add an enveloped RSA-SHA256 signature to ``element``, after its Issuer.

        Exclusive c14n, one Reference to the element's ID, SHA-256 digest:
        the shape :meth:`verify_root` and SAML's signature profile expect.
        ``cert_pem`` goes into KeyInfo as a hint for the recipient.
        """
        try:
            node_id = element.get("ID")
            if not node_id:
                raise _Refused("the element to sign has no ID")
            signature = signature_template(cert_pem)
            issuer = next(
                (i for i, child in enumerate(element) if _local(child.tag) == "Issuer"),
                None,
            )
            element.insert(0 if issuer is None else issuer + 1, signature)
            signature_reference(signature).set("URI", f"#{node_id}")
        except XmlRefused as exc:
            raise SignatureError(f"cannot sign: {exc}") from exc
        self.sign_in_place(signature, key_file)

    def sign_in_place(self, signature: etree._Element, key_file: str) -> None:
        """Fill in a ds:Signature template already in place in its document.

        The template (:func:`signature_template`, its Reference URI set to
        the ID of the element that holds it) is signed over the tree as it is
        now, with the private key in ``key_file`` (:meth:`signing_key`).
        """
        try:
            signed = signature.getparent()
            node_id = None if signed is None else signed.get("ID")
            if not node_id:
                raise _Refused("the signature is not inside an element with an ID")
            if signature_reference(signature).get("URI") != f"#{node_id}":
                raise _Refused("the signature does not reference its parent's ID")
            rsa_key = self.signing_rsa_key(key_file)
            if rsa_key is not None and _sign_enveloped(signed, signature, rsa_key):
                return
            ctx = xmlsec.SignatureContext()
            ctx.key = self.signing_key(key_file)
            xmlsec.tree.add_ids(signed, ["ID"])
            ctx.sign(signature)
        except (XmlRefused, xmlsec.Error, OSError, etree.LxmlError) as exc:
            raise SignatureError(f"cannot sign: {exc}") from exc

    def signing_rsa_key(self, key_file: str | os.PathLike[str]) -> RSAPrivateKey | None:
        """The RSA private key in ``key_file`` for :func:`_sign_enveloped`
        (None for another kind of key), looked at again at most once a
        second, as :meth:`signing_key`.
        """
        path = os.fspath(key_file)
        now = time.monotonic()
        held = self._rsa_signing_keys.get(path)
        if held is not None and now - held[1] < KEY_RECHECK_SECONDS:
            return held[0]
        with open(path, "rb") as handle:
            stat = os.fstat(handle.fileno())
            cache_key = (path, stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
            loaded = self._rsa_keys.get(cache_key)
            if loaded is None:
                try:
                    key = load_pem_private_key(handle.read(), password=None)
                except (ValueError, TypeError, UnsupportedAlgorithm):
                    # Not a key cryptography reads without a password:
                    # libxmlsec signs, or says why it cannot, as before.
                    key = None
                loaded = (key if isinstance(key, RSAPrivateKey) else None,)
                self._rsa_keys.put(cache_key, loaded)
        self._rsa_signing_keys.put(path, (loaded[0], now))
        return loaded[0]

    def signing_key(self, key_file: str | os.PathLike[str]) -> xmlsec.Key:
        """The private key in ``key_file``, looked at again at most once a second.

        Signing is on every SSO; opening the file each time cost more than
        the check is worth. A key rollover names another file (the next
        signature uses it at once); a file replaced in place is seen within
        :data:`KEY_RECHECK_SECONDS`.
        """
        path = os.fspath(key_file)
        now = time.monotonic()
        held = self._signing_keys.get(path)
        if held is not None and now - held[1] < KEY_RECHECK_SECONDS:
            return held[0]
        key = self._private_key(path)
        self._signing_keys.put(path, (key, now))
        return key

    def _keys_manager_pem(self, certificate_pem: str) -> xmlsec.KeysManager:
        data = certificate_pem.encode("ascii")
        cache_key = hashlib.sha256(b"manager|" + data).digest()
        manager = self._managers.get(cache_key)
        if manager is None:
            manager = xmlsec.KeysManager()
            manager.add_key(self._certificate_from_pem(certificate_pem))
            self._managers.put(cache_key, manager)
        return manager

    def _certificate_from_pem(self, pem: str) -> xmlsec.Key:
        data = pem.encode("ascii")
        cache_key = (_C.KeyDataFormatCertPem, hashlib.sha256(data).digest())
        key = self._certificates.get(cache_key)
        if key is None:
            key = xmlsec.Key.from_memory(data, _C.KeyDataFormatCertPem)
            self._certificates.put(cache_key, key)
        return key

    def _keys_manager(self, cert_file: str | os.PathLike[str]) -> xmlsec.KeysManager:
        """A keys manager holding one recipient certificate, cached by content.

        Creating a ``KeysManager`` costs about 9 ms (libxmlsec sets up its
        default stores), more than the RSA work of an encryption.
        """
        data = Path(cert_file).read_bytes()
        cache_key = hashlib.sha256(data).digest()
        manager = self._managers.get(cache_key)
        if manager is None:
            manager = xmlsec.KeysManager()
            manager.add_key(self._certificate(cert_file, "pem"))
            self._managers.put(cache_key, manager)
        return manager

    def _signature_context(
        self, key: xmlsec.Key, profile: _Profile = _MESSAGE
    ) -> xmlsec.SignatureContext:
        ctx = xmlsec.SignatureContext()
        ctx.key = key  # duplicated by the bindings; the cached key stays intact
        for transform in (
            _C.TransformEnveloped,
            *profile.c14n,
            *self._digest_methods,
        ):
            ctx.enable_reference_transform(transform)
        for transform in (*profile.c14n, *self._signature_methods):
            ctx.enable_signature_transform(transform)
        return ctx

    def _checked_signature(
        self, root: etree._Element, node_name: str | None, node_id: str | None
    ) -> etree._Element:
        """Find the one signature of the element ``node_id`` and vet its shape.

        saml-core 5.4: enveloped signature, exactly one Reference pointing at
        the enclosing element's ID, only enveloped-signature and exclusive
        c14n transforms, no ``ds:Object``; plus no duplicate IDs, no second
        signature over the same element, and no SHA-1 unless allowed.
        """
        target = _target(root, node_name, node_id)
        node_id = target.get("ID")
        _check_unique_ids(root, node_id)
        signatures = [c for c in target if c.tag == _DS_SIGNATURE]
        if len(signatures) != 1:
            raise _Refused(
                f"need exactly one ds:Signature child of {node_id!r}, "
                f"found {len(signatures)}"
            )
        signature = signatures[0]
        uri = f"#{node_id}"
        for other in root.iter(_DS_SIGNATURE):
            if other is not signature and any(
                r.get("URI") == uri for r in other.iter(_DS_REFERENCE)
            ):
                raise _Refused(f"a second ds:Signature references {uri}")
        self._vet_signature(signature, {uri}, _MESSAGE)
        return signature

    def _vet_signature(
        self, signature: etree._Element, uris: set[str], profile: _Profile
    ) -> etree._Element:
        """Check one ds:Signature's shape; return its one ds:Reference.

        No ``ds:Object``; one SignedInfo with a canonicalization of
        ``profile``, an allowed signature algorithm and exactly one Reference
        whose URI is one of ``uris``, with the enveloped-signature transform
        and at most one canonicalization of ``profile``, and an allowed
        digest.
        """
        if any(c.tag == _DS_OBJECT for c in signature):
            raise _Refused(f"ds:Object is not allowed in {profile.name}")
        signed_infos = [c for c in signature if c.tag == _DS_SIGNED_INFO]
        if len(signed_infos) != 1:
            raise _Refused("need exactly one ds:SignedInfo")
        signed_info = signed_infos[0]

        c14n = _algorithm(signed_info, _DS_C14N_METHOD)
        if c14n not in profile.c14n_hrefs:
            raise AlgorithmRefused(
                f"canonicalization {c14n} is not allowed in {profile.name}"
            )
        self._check_algorithm(
            _algorithm(signed_info, _DS_SIGNATURE_METHOD), "signature"
        )

        references = [c for c in signed_info if c.tag == _DS_REFERENCE]
        if len(references) != 1:
            raise _Refused(f"need exactly one ds:Reference, found {len(references)}")
        reference = references[0]
        if reference.get("URI") not in uris:
            expected = " or ".join(repr(u) for u in sorted(uris))
            raise _Refused(f"Reference URI {reference.get('URI')!r} is not {expected}")
        transform_lists = [c for c in reference if c.tag == _DS_TRANSFORMS]
        if len(transform_lists) != 1:
            raise _Refused("need exactly one ds:Transforms")
        transforms = [t.get("Algorithm") for t in transform_lists[0]]
        if not all(t.tag == _DS_TRANSFORM for t in transform_lists[0]):
            raise _Refused("unexpected element in ds:Transforms")
        if (
            not 1 <= len(transforms) <= 2
            or _C.TransformEnveloped.href not in transforms
        ):
            raise _Refused("need the enveloped-signature transform (and at most c14n)")
        for transform in transforms:
            if transform not in profile.reference_transforms:
                raise AlgorithmRefused(
                    f"transform {transform} is not allowed in {profile.name}"
                )
        self._check_algorithm(_algorithm(reference, _DS_DIGEST_METHOD), "digest")
        return reference

    def _check_algorithm(self, href: str, kind: str) -> None:
        allowed = self._signature_hrefs if kind == "signature" else self._digest_hrefs
        if href in allowed:
            return
        if href in self._sha1_hrefs:
            raise AlgorithmRefused(
                f"SHA-1 {kind} algorithm {href} refused (allow_sha1 is off)"
            )
        raise AlgorithmRefused(f"{kind} algorithm {href} is not allowed")

    def _private_key(self, key_file: str | os.PathLike[str]) -> xmlsec.Key:
        """Load a PEM private key, cached per (path, inode, size, mtime)."""
        path = os.fspath(key_file)
        with open(path, "rb") as handle:
            stat = os.fstat(handle.fileno())
            cache_key = (path, stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
            key = self._private_keys.get(cache_key)
            if key is None:
                key = xmlsec.Key.from_memory(handle.read(), _C.KeyDataFormatPem)
                self._private_keys.put(cache_key, key)
        return key

    def _certificate(
        self, cert_file: str | os.PathLike[str], cert_type: str
    ) -> xmlsec.Key:
        """Load the public key of a certificate, cached by the file's content.

        pysaml2 hands over certificates from metadata in fresh temporary files,
        so the content, not the path, identifies them.
        """
        fmt = _CERT_FORMATS.get((cert_type or "pem").lower())
        if fmt is None:
            raise _Refused(f"unsupported certificate type {cert_type!r}")
        data = Path(cert_file).read_bytes()
        cache_key = (fmt, hashlib.sha256(data).digest())
        key = self._certificates.get(cache_key)
        if key is None:
            key = xmlsec.Key.from_memory(data, fmt)
            self._certificates.put(cache_key, key)
        return key

    @staticmethod
    def _node_to_encrypt(
        root: etree._Element, node_xpath: str | None, node_id: str | None
    ) -> etree._Element:
        if node_id:
            found = [e for e in _elements(root) if e.get("ID") == node_id]
        else:
            found = root.getroottree().xpath(node_xpath or ASSERT_XPATH)
        if len(found) != 1 or not isinstance(found[0], etree._Element):
            # xmlsec1 would take the first match and leave the others in clear.
            raise _Refused(f"need exactly one element to encrypt, found {len(found)}")
        return found[0]

    @staticmethod
    def _sibling_session_key(
        enc_data: etree._Element, manager: xmlsec.KeysManager
    ) -> xmlsec.Key:
        """Decrypt the session key carried in an EncryptedKey next to enc_data."""
        method = _algorithm(enc_data, _XENC_ENCRYPTION_METHOD)
        klass = _SYMMETRIC_KEY_KLASS.get(method)
        if klass is None:
            raise _Refused(f"unsupported data encryption {method}")
        parent = enc_data.getparent()
        candidates = (
            []
            if parent is None
            else [c for c in parent if c.tag == _XENC_ENCRYPTED_KEY]
        )
        data_id = enc_data.get("Id")
        if data_id and len(candidates) > 1:
            # Prefer the key whose ReferenceList points at this EncryptedData.
            referencing = [
                k
                for k in candidates
                if any(r.get("URI") == f"#{data_id}" for r in k.iter())
            ]
            candidates = referencing or candidates
        for enc_key in candidates:
            try:
                raw = xmlsec.EncryptionContext(manager).decrypt(enc_key)
            except xmlsec.Error:
                continue
            if isinstance(raw, bytes) and raw:
                return xmlsec.Key.from_binary_data(klass, raw)
        raise _Refused("no EncryptedKey could be decrypted with this key")


def _check_no_external_references(scope: etree._Element) -> None:
    for element in _elements(scope):
        if element.tag == _XENC_CIPHER_REFERENCE:
            raise _Refused("CipherReference is not allowed")
        if element.tag == _DS_RETRIEVAL_METHOD and not (
            element.get("URI") or ""
        ).startswith("#"):
            raise _Refused("RetrievalMethod may only point into the document")


def _template_hints(template: Any) -> dict[str, str | None]:
    """Ids, key name and certificate from pysaml2's pre_encryption_part()."""
    hints: dict[str, str | None] = {
        "data_id": None,
        "key_id": None,
        "key_name": None,
        "certificate": None,
    }
    if template is None or (isinstance(template, str | bytes) and not template.strip()):
        return hints
    root, _ = _parse(template)
    if root.tag != _XENC_ENCRYPTED_DATA:
        raise _Refused(f"template is {root.tag}, not xenc:EncryptedData")
    if root.get("Type", _XENC_TYPE_ELEMENT) != _XENC_TYPE_ELEMENT:
        raise _Refused("only element encryption is supported")
    hints["data_id"] = root.get("Id")
    enc_key = next(root.iter(_XENC_ENCRYPTED_KEY), None)
    if enc_key is not None:
        hints["key_id"] = enc_key.get("Id")
        name = next(enc_key.iter(_DS_KEY_NAME), None)
        if name is not None and (name.text or "").strip():
            hints["key_name"] = name.text.strip()
        cert = next(enc_key.iter(_DS_X509_CERTIFICATE), None)
        if cert is not None and (cert.text or "").strip():
            hints["certificate"] = "".join(cert.text.split())
    return hints


def _add_recipient_key_info(
    enc_data: etree._Element, hints: dict[str, str | None]
) -> None:
    """Tell the recipient which of its keys was used (KeyName / certificate).

    Added after encryption: it is only a hint, and letting libxmlsec read it
    while looking up the RSA key would make it try to validate the
    certificate.
    """
    if not hints["key_name"] and not hints["certificate"]:
        return
    enc_key = next(enc_data.iter(_XENC_ENCRYPTED_KEY))
    key_info = etree.Element(_DS_KEY_INFO, nsmap={"ds": DS_NS})
    if hints["key_name"]:
        etree.SubElement(key_info, _DS_KEY_NAME).text = hints["key_name"]
    if hints["certificate"]:
        x509 = etree.SubElement(key_info, _DS_X509_DATA)
        etree.SubElement(x509, _DS_X509_CERTIFICATE).text = hints["certificate"]
    # xenc:EncryptedKey content order: EncryptionMethod, ds:KeyInfo, CipherData.
    enc_key.insert(1, key_info)


# --------------------------------------------------------------------------
# SecurityContext construction


def make_security_context(
    key_file: str | None,
    cert_file: str | None,
    metadata: Any = None,
    *,
    allow_sha1: bool = False,
    backend: CryptoBackend | None = None,
    only_use_keys_in_metadata: bool = True,
    **kwargs: Any,
) -> SecurityContext:
    """A pysaml2 ``SecurityContext`` signing and verifying with :class:`XmlsecBackend`.

    ``key_file`` / ``cert_file`` are this entity's signing key and certificate
    (PEM files); ``metadata`` is the ``MetadataStore`` whose certificates
    verify incoming messages.  ``only_use_keys_in_metadata`` defaults to True
    (pysaml2's configuration default too): otherwise pysaml2 verifies messages
    from unknown issuers with the certificate they carry themselves.  Other
    keyword arguments go to ``SecurityContext`` (e.g. ``encryption_keypairs``,
    ``enc_key_files``, ``delete_tmpfiles``).  Also sets ``sec_backend`` (used
    for HTTP-Redirect binding signatures) from ``key_file``, as pysaml2 does.
    """
    if backend is None:
        backend = XmlsecBackend(allow_sha1=allow_sha1)
    if key_file and "sec_backend" not in kwargs:
        kwargs["sec_backend"] = RSACrypto(import_rsa_key_from_file(key_file))
    return SecurityContext(
        backend,
        key_file or "",
        cert_file=cert_file or "",
        metadata=metadata,
        only_use_keys_in_metadata=only_use_keys_in_metadata,
        **kwargs,
    )


def security_context_from_config(conf: Any, **kwargs: Any) -> SecurityContext:
    """What ``saml2.sigver.security_context(conf)`` builds, with this backend.

    :param conf: a ``saml2.config.Config`` (e.g. ``server.config``)
    :param kwargs: ``allow_sha1`` or ``backend``, passed to
        :func:`make_security_context`
    """
    enc_key_files = [
        pair["key_file"]
        for pair in (conf.encryption_keypairs or [])
        if "key_file" in pair
    ]
    return make_security_context(
        conf.key_file,
        conf.cert_file,
        getattr(conf, "metadata", None),
        only_use_keys_in_metadata=conf.only_use_keys_in_metadata,
        cert_handler_extra_class=conf.cert_handler_extra_class,
        generate_cert_info=conf.generate_cert_info,
        tmp_cert_file=conf.tmp_cert_file,
        tmp_key_file=conf.tmp_key_file,
        validate_certificate=conf.validate_certificate,
        enc_key_files=enc_key_files,
        encryption_keypairs=conf.encryption_keypairs,
        delete_tmpfiles=conf.delete_tmpfiles,
        **kwargs,
    )


def install_security_context(
    entity: Any, sec: SecurityContext | None = None, **kwargs: Any
) -> SecurityContext:
    """Make a pysaml2 ``Server`` / ``Saml2Client`` (any ``Entity``) use ``sec``.

    ``sec`` defaults to ``security_context_from_config(entity.config,
    **kwargs)``.  Replaces ``entity.sec`` and the contexts the metadata store
    and its remote/MDQ sources keep for verifying signed metadata.  pysaml2
    hands ``entity.sec`` to the request/response objects it creates later, and
    metadata sources loaded later through ``MetadataStore.load`` get the
    store's context, which is this one.  Returns the installed context.
    """
    if sec is None:
        sec = security_context_from_config(entity.config, **kwargs)
    elif kwargs:
        raise TypeError("pass either a SecurityContext or options to build one")
    entity.sec = sec
    candidates = (getattr(entity, "metadata", None), sec.metadata)
    # (A MetadataStore with no entities is falsy: compare with None.)
    stores = {id(s): s for s in candidates if s is not None}
    for store in stores.values():
        if hasattr(store, "security"):
            store.security = sec
        for source in getattr(store, "metadata", {}).values():
            if hasattr(source, "security"):
                source.security = sec
    return sec


# --------------------------------------------------------------------------
# HTTP-Redirect binding signatures (saml-bindings 3.4.4.1)

_REDIRECT_HASHES = {
    _C.TransformRsaSha256.href: ("rsa", "sha256"),
    _C.TransformRsaSha384.href: ("rsa", "sha384"),
    _C.TransformRsaSha512.href: ("rsa", "sha512"),
    _C.TransformEcdsaSha256.href: ("ec", "sha256"),
    _C.TransformEcdsaSha384.href: ("ec", "sha384"),
    _C.TransformEcdsaSha512.href: ("ec", "sha512"),
}
_REDIRECT_SHA1 = {
    _C.TransformRsaSha1.href: ("rsa", "sha1"),
    _C.TransformEcdsaSha1.href: ("ec", "sha1"),
}


def verify_redirect_signature(
    signed_octets: bytes,
    sig_alg: str,
    signature: bytes,
    certificates: Iterable[str],
    *,
    allow_sha1: bool = False,
) -> None:
    """Verify a Redirect-binding signature over the query octets as received.

    ``signed_octets`` is ``SAMLRequest=...&RelayState=...&SigAlg=...`` built
    from the raw, still URL-encoded values the browser sent (SAML-11: a
    re-encoded query would verify a different string); ``certificates`` are
    the sender's registered PEM signing certificates. Raises
    ``SignatureError``.
    """
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    kind_hash = _REDIRECT_HASHES.get(sig_alg)
    if kind_hash is None and allow_sha1:
        kind_hash = _REDIRECT_SHA1.get(sig_alg)
    if kind_hash is None:
        if sig_alg in _REDIRECT_SHA1:
            raise SignatureError(f"SHA-1 signature {sig_alg} refused (allow_sha1 off)")
        raise SignatureError(f"signature algorithm {sig_alg!r} is not allowed")
    kind, hash_name = kind_hash
    hash_classes: dict[str, type[hashes.HashAlgorithm]] = {
        "sha1": hashes.SHA1,
        "sha256": hashes.SHA256,
        "sha384": hashes.SHA384,
        "sha512": hashes.SHA512,
    }
    algorithm = hash_classes[hash_name]()
    for pem in certificates:
        public_key = x509.load_pem_x509_certificate(pem.encode("ascii")).public_key()
        try:
            if kind == "rsa" and isinstance(public_key, rsa.RSAPublicKey):
                public_key.verify(
                    signature, signed_octets, padding.PKCS1v15(), algorithm
                )
                return
            if kind == "ec" and isinstance(public_key, ec.EllipticCurvePublicKey):
                public_key.verify(signature, signed_octets, ec.ECDSA(algorithm))
                return
        except InvalidSignature:
            continue
    raise SignatureError("no registered key of the sender verifies the signature")
