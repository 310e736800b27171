"""The IdP's own metadata: built by pysaml2, signed in-process.

The signed document is cached per process and rebuilt when half of its
cache duration has passed, so SPs always fetch a copy whose ``validUntil``
is days away while the signature is computed a few times an hour at most.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from saml2.extension.algsupport import DigestMethod, SigningMethod
from saml2.md import Extensions
from saml2.metadata import entity_descriptor, sign_entity_descriptor
from saml2.s_utils import sid

from idp.saml.config import (
    DIGEST_ALGORITHM,
    SECURITY_CONTACT_TYPE,
    SIGNING_ALGORITHM,
    idp_config,
)
from idp.saml.crypto import make_security_context
from idp.saml.keys import KeyPair
from idp.saml.xml import REMD_NS

MEDIA_TYPE = "application/samlmetadata+xml"


def _iso_duration(seconds: int) -> str:
    return f"PT{seconds}S"


def build(settings, keypair: KeyPair) -> bytes:
    """Return the IdP's signed EntityDescriptor as UTF-8 XML."""
    config = idp_config(settings, keypair)
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
    for contact in descriptor.contact_person or []:
        if contact.contact_type == "other":
            contact.extension_attributes = {
                "xmlns:remd": REMD_NS,
                "remd:contactType": SECURITY_CONTACT_TYPE,
            }
    security = make_security_context(str(keypair.key_file), str(keypair.cert_file))
    _signed, xml = sign_entity_descriptor(
        descriptor,
        f"_{sid()}",
        security,
        sign_alg=SIGNING_ALGORITHM,
        digest_alg=DIGEST_ALGORITHM,
    )
    if isinstance(xml, str):
        xml = xml.encode("utf-8")
    if not xml.startswith(b"<?xml"):
        xml = b'<?xml version="1.0" encoding="UTF-8"?>\n' + xml
    return xml


@dataclass
class _Cached:
    xml: bytes
    built_at: float


class MetadataCache:
    """One signed copy per process, refreshed after half its cache duration."""

    def __init__(self, settings, keypair: KeyPair):
        self.settings = settings
        self.keypair = keypair
        self.max_age = settings["idp.metadata_cache_seconds"] / 2
        self._lock = threading.Lock()
        self._cached: _Cached | None = None

    def get(self) -> bytes:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached.built_at > self.max_age:
                self._cached = _Cached(build(self.settings, self.keypair), now)
            return self._cached.xml
