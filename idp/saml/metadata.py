"""The IdP's own metadata: built by pysaml2, given plain prefixes, signed in-process.

Every published key is listed (:mod:`idp.saml.keyring`): the current one
first, then, during a rollover, the next one (so partners trust it before it
signs) or the previous one (until it is retired), each for signing and for
encryption. pysaml2 writes ``ns0:``/``ns1:`` prefixes, which partners'
administrators read as a broken file; the document is rewritten with the
conventional ``md:``, ``ds:``, ``mdui:``... before it is signed.

The signed document is cached per process and rebuilt when half of its
cache duration has passed, or when the registry generation (which every key
rollover step raises) has changed, so SPs always fetch a copy whose
``validUntil`` is days away and that lists the keys the database says.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from lxml import etree
from saml2 import class_name
from saml2.extension.algsupport import NAMESPACE as ALG_NS
from saml2.extension.algsupport import DigestMethod, SigningMethod
from saml2.md import Extensions, KeyDescriptor
from saml2.metadata import entity_descriptor
from saml2.s_utils import sid
from saml2.sigver import pre_signature_part
from saml2.xmldsig import KeyInfo, X509Certificate, X509Data
from sqlalchemy.orm import Session

from idp.saml.config import (
    DIGEST_ALGORITHM,
    SECURITY_CONTACT_TYPE,
    SIGNING_ALGORITHM,
    idp_config,
)
from idp.saml.crypto import make_security_context
from idp.saml.keyring import KeyRing, KeySet, keyset_of
from idp.saml.keys import KeyPair
from idp.saml.registry import current_version
from idp.saml.xml import (
    DS_NS,
    MD_NS,
    MDATTR_NS,
    MDUI_NS,
    REMD_NS,
    XENC_NS,
    parse_document,
    serialize,
)

MEDIA_TYPE = "application/samlmetadata+xml"

#: The prefixes idMe's metadata is written with, declared once on the root.
PREFIXES = {
    "md": MD_NS,
    "ds": DS_NS,
    "mdui": MDUI_NS,
    "mdattr": MDATTR_NS,
    "alg": ALG_NS,
    "remd": REMD_NS,
    "xenc": XENC_NS,
}


def _iso_duration(seconds: int) -> str:
    return f"PT{seconds}S"


def _certificate_text(pair: KeyPair) -> str:
    """The certificate as metadata carries it: base64 DER, no PEM armour."""
    lines = pair.cert_pem.strip().splitlines()
    return "".join(line for line in lines if not line.startswith("-----"))


def key_descriptors(keyset: KeySet) -> list[KeyDescriptor]:
    """Every published key, current first, for signing and for encryption."""
    descriptors = []
    for key in keyset.keys:
        text = _certificate_text(key.pair)
        for use in ("signing", "encryption"):
            descriptors.append(
                KeyDescriptor(
                    use=use,
                    key_info=KeyInfo(
                        x509_data=[X509Data(x509_certificate=X509Certificate(text))]
                    ),
                )
            )
    return descriptors


def with_prefixes(document: str | bytes) -> etree._Element:
    """The document rewritten with :data:`PREFIXES`, declared on the root only.

    Element and attribute names, text and order are kept; only the prefixes
    change, which no signature covers yet (this runs before signing).
    """
    source, _declaration = parse_document(document)
    known = {uri: prefix for prefix, uri in PREFIXES.items()}
    used = {
        node.tag.partition("}")[0][1:]
        for node in source.iter()
        if isinstance(node.tag, str) and node.tag.startswith("{")
    }
    nsmap = {prefix: uri for prefix, uri in PREFIXES.items() if uri in used}
    # Namespaces of attributes only (remd:contactType) must be declared too.
    for node in source.iter():
        for name in node.attrib:
            uri = name.partition("}")[0][1:] if name.startswith("{") else ""
            if uri in known:
                nsmap[known[uri]] = uri

    def copy(node: etree._Element, parent: etree._Element | None) -> etree._Element:
        if parent is None:
            made = etree.Element(node.tag, attrib=dict(node.attrib), nsmap=nsmap)
        else:
            made = etree.SubElement(parent, node.tag, attrib=dict(node.attrib))
        made.text = node.text
        made.tail = node.tail
        for child in node:
            if isinstance(child.tag, str):
                copy(child, made)
        return made

    root = copy(source, None)
    # pysaml2 declares xmlns:remd as a literal attribute on the contact; the
    # root now declares it.
    for node in root.iter():
        node.attrib.pop("xmlns:remd", None)
    etree.cleanup_namespaces(root)
    return root


def build(settings, keys: KeySet | KeyPair) -> bytes:
    """Return the IdP's signed EntityDescriptor as UTF-8 XML."""
    keyset = keyset_of(keys)
    config = idp_config(settings, keyset)
    descriptor = entity_descriptor(config)
    descriptor.cache_duration = _iso_duration(settings["idp.metadata_cache_seconds"])
    if descriptor.extensions is None:
        descriptor.extensions = Extensions()
    descriptor.extensions.add_extension_element(
        DigestMethod(algorithm=DIGEST_ALGORITHM)
    )
    descriptor.extensions.add_extension_element(
        SigningMethod(algorithm=SIGNING_ALGORITHM)
    )
    descriptor.idpsso_descriptor.key_descriptor = key_descriptors(keyset)
    for contact in descriptor.contact_person or []:
        if contact.contact_type == "other":
            contact.extension_attributes = {
                "xmlns:remd": REMD_NS,
                "remd:contactType": SECURITY_CONTACT_TYPE,
            }
    signing = keyset.current.pair
    security = make_security_context(str(signing.key_file), str(signing.cert_file))
    ident = f"_{sid()}"
    descriptor.id = ident
    descriptor.signature = pre_signature_part(
        ident,
        security.my_cert,
        1,
        sign_alg=SIGNING_ALGORITHM,
        digest_alg=DIGEST_ALGORITHM,
    )
    unsigned = serialize(with_prefixes(str(descriptor)), declaration=False)
    xml = security.sign_statement(unsigned, class_name(descriptor), node_id=ident)
    if isinstance(xml, str):
        xml = xml.encode("utf-8")
    if not xml.startswith(b"<?xml"):
        xml = b'<?xml version="1.0" encoding="UTF-8"?>\n' + xml
    return xml


@dataclass
class _Cached:
    xml: bytes
    version: tuple
    built_at: float


class MetadataCache:
    """One signed copy per process, refreshed after half its cache duration.

    ``get`` reads the registry generation (one SELECT), so a key rollover
    step on any node or in ``idp-admin`` reaches every node's metadata at
    its next fetch.
    """

    def __init__(self, settings, keys: KeyRing):
        self.settings = settings
        self.keys = keys
        self.max_age = settings["idp.metadata_cache_seconds"] / 2
        self._lock = threading.Lock()
        self._cached: _Cached | None = None

    def get(self, dbsession: Session) -> bytes:
        version = current_version(dbsession)
        with self._lock:
            now = time.monotonic()
            cached = self._cached
            if (
                cached is None
                or cached.version != version
                or now - cached.built_at > self.max_age
            ):
                xml = build(self.settings, self.keys.load(dbsession))
                self._cached = cached = _Cached(xml, version, now)
            return cached.xml
