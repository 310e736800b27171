"""The SP registry: service providers registered from their SAML metadata.

An SP's metadata is checked here once, at registration, and the database
keeps the document (``metadata_xml``) next to the policy chosen for the SP.
Every change to the registry raises ``SpRegistryState.generation`` in the
same transaction, which is how every process learns that its pysaml2
``Server`` (``idp.saml.server.ServerCache``) must be rebuilt.

Metadata comes from partners, so it is parsed as hostile input: the size is
capped before the parser sees a byte (OPS-03), any DOCTYPE is refused
(defusedxml: no DTD, no entities, no network), and the document must be one
``md:EntityDescriptor`` with one SAML 2.0 ``md:SPSSODescriptor``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import hashlib
import logging
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from idp.i18n import LOCALES
from idp.models import Module, ServiceProvider, SpRegistryState
from idp.models.sp import NAMEID_PERSISTENT
from idp.redirects import UnsafeUrl, endpoint_url
from idp.saml import xsdatetime
from idp.units import format_over

log = logging.getLogger(__name__)

MAX_METADATA_BYTES = 5 * 1024 * 1024
# Real SP metadata nests about ten elements deep (a signature's transforms
# are the deepest); pysaml2 builds its objects recursively and cannot load
# a few hundred levels (SAML-39).
MAX_METADATA_DEPTH = 64
MAX_ENTITY_ID_LENGTH = 1024  # service_providers.entity_id
REGISTRY_STATE_ID = 1

SAML2_PROTOCOL = "urn:oasis:names:tc:SAML:2.0:protocol"
MD_NS = "urn:oasis:names:tc:SAML:2.0:metadata"
MDUI_NS = "urn:oasis:names:tc:SAML:metadata:ui"
MDATTR_NS = "urn:oasis:names:tc:SAML:metadata:attribute"
SAML_NS = "urn:oasis:names:tc:SAML:2.0:assertion"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
_ENTITY_DESCRIPTOR = f"{{{MD_NS}}}EntityDescriptor"
_ENTITIES_DESCRIPTOR = f"{{{MD_NS}}}EntitiesDescriptor"
_SP_DESCRIPTOR = f"{{{MD_NS}}}SPSSODescriptor"
_ACS = f"{{{MD_NS}}}AssertionConsumerService"
_SLO = f"{{{MD_NS}}}SingleLogoutService"
_KEY_DESCRIPTOR = f"{{{MD_NS}}}KeyDescriptor"
_ENCRYPTION_METHOD = f"{{{MD_NS}}}EncryptionMethod"
_DIGEST_METHOD = f"{{{DS_NS}}}DigestMethod"
_NAMEID_FORMAT = f"{{{MD_NS}}}NameIDFormat"
_UI_INFO = f"{{{MD_NS}}}Extensions/{{{MDUI_NS}}}UIInfo"
_DISPLAY_NAME = f"{{{MDUI_NS}}}DisplayName"
_LOGO = f"{{{MDUI_NS}}}Logo"
_X509_CERTIFICATES = (
    f"{{{DS_NS}}}KeyInfo/{{{DS_NS}}}X509Data/{{{DS_NS}}}X509Certificate"
)


class MetadataError(ValueError):
    """The metadata cannot be registered; the message says why, on one line."""


@dataclass(frozen=True)
class Endpoint:
    """An AssertionConsumerService or SingleLogoutService of the SP."""

    binding: str
    location: str
    index: int | None = None
    is_default: bool | None = None
    response_location: str | None = None


@dataclass(frozen=True)
class SpMetadata:
    """What the IdP uses from an SP's metadata, checked and normalised."""

    entity_id: str
    assertion_consumer_services: tuple[Endpoint, ...]
    single_logout_services: tuple[Endpoint, ...]
    signing_certificates: tuple[str, ...]  # PEM
    encryption_certificates: tuple[str, ...]  # PEM
    authn_requests_signed: bool
    want_assertions_signed: bool
    name_id_formats: tuple[str, ...]
    encryption_methods: tuple[str, ...]  # algorithm URIs, in document order
    display_names: dict[str, str] = field(default_factory=dict)  # lang -> text
    logos: dict[str, str] = field(default_factory=dict)  # lang -> https URL
    valid_until: dt.datetime | None = None
    # What the SP asks for. Neither changes what it receives, which is its
    # policy alone (SAML-33, SAML-37); a change of either is a trust change.
    # OASIS subject-id profile: "subject-id", "pairwise-id", "any" or "none".
    subject_id_req: str | None = None
    # RequestedAttribute Names of its AttributeConsumingServices, sorted.
    requested_attributes: tuple[str, ...] = ()
    # (EncryptionMethod Algorithm, its ds:DigestMethod) where one is given:
    # the digest an RSA-OAEP key transport must use for this SP.
    encryption_digests: tuple[tuple[str, str], ...] = ()


# --------------------------------------------------------------------------
# Parsing


def parse_sp_metadata(
    data: bytes,
    *,
    now: dt.datetime | None = None,
    allow_expired: bool = False,
    allow_http: bool = False,
) -> SpMetadata:
    """Check one SP's metadata document and return what the IdP needs of it.

    Raises :class:`MetadataError` for anything that cannot be registered:
    over :data:`MAX_METADATA_BYTES` (checked before parsing, OPS-03), not
    UTF-8, not well-formed, any DOCTYPE or entity, not exactly one
    ``EntityDescriptor`` with one SAML 2.0 ``SPSSODescriptor``, no usable
    AssertionConsumerService, an endpoint that is not https, a certificate
    that does not parse, or a ``validUntil`` already past (at ``now``,
    default the current time) unless ``allow_expired`` (to show what is
    stored). Endpoints follow :func:`idp.redirects.endpoint_url` (SAML-36):
    https, or http to this machine when ``allow_http`` (development only).
    """
    if not isinstance(data, bytes | bytearray):
        raise MetadataError(f"metadata must be bytes, not {type(data).__name__}")
    if len(data) > MAX_METADATA_BYTES:
        raise MetadataError(f"metadata is {format_over(len(data), MAX_METADATA_BYTES)}")
    root = _parse_xml(bytes(data))
    _check_depth(root)
    if root.tag == _ENTITIES_DESCRIPTOR:
        raise MetadataError(
            "metadata is an EntitiesDescriptor (an aggregate); "
            "register one SP's EntityDescriptor at a time"
        )
    if root.tag != _ENTITY_DESCRIPTOR:
        raise MetadataError(
            f"metadata root is {_display_tag(root.tag)}, not md:EntityDescriptor"
        )
    if sum(1 for _ in root.iter(_ENTITY_DESCRIPTOR)) > 1:
        raise MetadataError("metadata holds more than one EntityDescriptor")

    entity_id = _entity_id(root)
    valid_until = _valid_until(root)
    expired = valid_until is not None and valid_until <= (
        now or dt.datetime.now(dt.UTC)
    )
    if expired and not allow_expired:
        raise MetadataError(
            f"metadata expired at {valid_until:%Y-%m-%d %H:%M:%S} UTC "
            "(validUntil); ask the SP for a current copy"
        )
    descriptor = _sp_descriptor(root)
    signing, encryption, methods, digests = _keys(descriptor)
    ui_info = descriptor.find(_UI_INFO)
    return SpMetadata(
        entity_id=entity_id,
        assertion_consumer_services=_acs_endpoints(descriptor, allow_http),
        single_logout_services=_slo_endpoints(descriptor, allow_http),
        signing_certificates=signing,
        encryption_certificates=encryption,
        authn_requests_signed=_boolean(descriptor, "AuthnRequestsSigned"),
        want_assertions_signed=_boolean(descriptor, "WantAssertionsSigned"),
        name_id_formats=tuple(
            text
            for element in descriptor.findall(_NAMEID_FORMAT)
            if (text := (element.text or "").strip())
        ),
        encryption_methods=methods,
        encryption_digests=digests,
        display_names=_localised(ui_info, _DISPLAY_NAME, https_only=False),
        logos=_localised(ui_info, _LOGO, https_only=True),
        valid_until=valid_until,
        subject_id_req=_subject_id_req(root),
        requested_attributes=_requested_attributes(descriptor),
    )


_ENTITY_ATTRIBUTE = (
    f"{{{MD_NS}}}Extensions/{{{MDATTR_NS}}}EntityAttributes/{{{SAML_NS}}}Attribute"
)
SUBJECT_ID_REQ = "urn:oasis:names:tc:SAML:profiles:subject-id:req"


def _subject_id_req(root: ET.Element) -> str | None:
    """The SP's subject-id:req entity attribute, if it states one we know."""
    for attribute in root.findall(_ENTITY_ATTRIBUTE):
        if attribute.get("Name") != SUBJECT_ID_REQ:
            continue
        for value in attribute.findall(f"{{{SAML_NS}}}AttributeValue"):
            text = (value.text or "").strip()
            if text in ("subject-id", "pairwise-id", "any", "none"):
                return text
    return None


_REQUESTED_ATTRIBUTE = (
    f"{{{MD_NS}}}AttributeConsumingService/{{{MD_NS}}}RequestedAttribute"
)


def _requested_attributes(descriptor: ET.Element) -> tuple[str, ...]:
    names = {
        name
        for element in descriptor.findall(_REQUESTED_ATTRIBUTE)
        if (name := (element.get("Name") or "").strip())
    }
    return tuple(sorted(names))


def _parse_xml(data: bytes) -> ET.Element:
    # Parse the decoded text, so the parser reads exactly what is stored and
    # later handed to pysaml2, whatever encoding the declaration names.
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise MetadataError("metadata is not UTF-8 text") from None
    try:
        return fromstring(text, forbid_dtd=True)
    except DefusedXmlException:
        raise MetadataError(
            "metadata contains a DOCTYPE or entity declaration, which is refused"
        ) from None
    except ET.ParseError as exc:
        raise MetadataError(f"metadata is not well-formed XML ({exc})") from None


def _check_depth(root: ET.Element) -> None:
    """Refuse nesting deeper than :data:`MAX_METADATA_DEPTH` (no recursion here)."""
    pending = [(root, 1)]
    while pending:
        element, depth = pending.pop()
        if depth > MAX_METADATA_DEPTH:
            raise MetadataError(
                f"metadata nests elements more than {MAX_METADATA_DEPTH} deep, "
                "which the SAML server cannot load"
            )
        pending.extend((child, depth + 1) for child in element)


def _display_tag(tag: str) -> str:
    return tag.replace(f"{{{MD_NS}}}", "md:")


def _entity_id(root: ET.Element) -> str:
    entity_id = root.get("entityID") or ""
    if not entity_id:
        raise MetadataError("EntityDescriptor has no entityID")
    if len(entity_id) > MAX_ENTITY_ID_LENGTH:
        raise MetadataError(
            f"entityID is longer than {MAX_ENTITY_ID_LENGTH} characters"
        )
    if entity_id != entity_id.strip() or not entity_id.isprintable():
        raise MetadataError(
            "entityID has leading or trailing spaces or control characters"
        )
    if not is_absolute_uri(entity_id):
        raise MetadataError(
            f"entityID {entity_id!r} is not an absolute URI: use an http(s) URL "
            "with a host (https://sp.example.org/saml) or a URN (urn:...)"
        )
    return entity_id


# RFC 8141: "urn:" NID ":" NSS, the NID 2 to 32 letters, digits or hyphens.
_URN = re.compile(r"urn:[A-Za-z0-9][A-Za-z0-9-]{0,30}[A-Za-z0-9]:\S+", re.ASCII)


def is_absolute_uri(value: str) -> bool:
    """An entity ID SAML can name (saml-core 8.3.6): a URL with a host, or a URN.

    A bare name ("emis-sp") is what a misconfigured SP sends by accident,
    and nothing stops two of them colliding or reading as a path; an
    Audience built from it is not the absolute URI the SP compares against.
    """
    if any(ch.isspace() for ch in value):
        return False
    if value[:4].lower() == "urn:":
        return _URN.fullmatch(value) is not None
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(host) and "@" not in parts.netloc


def _valid_until(root: ET.Element) -> dt.datetime | None:
    value = root.get("validUntil")
    if value is None:
        return None
    try:
        return xsdatetime.parse(value.strip())
    except ValueError as exc:
        raise MetadataError(
            f"validUntil is not a date and time this service can hold ({exc}): "
            f"{value[:80]!r}"
        ) from None


def _sp_descriptor(root: ET.Element) -> ET.Element:
    descriptors = [
        element
        for element in root.findall(_SP_DESCRIPTOR)
        if SAML2_PROTOCOL in (element.get("protocolSupportEnumeration") or "").split()
    ]
    if not descriptors:
        raise MetadataError(
            f"no SPSSODescriptor supporting {SAML2_PROTOCOL} "
            "(is this an SP's metadata?)"
        )
    if len(descriptors) > 1:
        raise MetadataError("more than one SAML 2.0 SPSSODescriptor")
    return descriptors[0]


def _boolean(element: ET.Element, name: str) -> bool:
    value = (element.get(name) or "false").strip()
    if value not in ("true", "1", "false", "0"):
        raise MetadataError(f"{name} is not a boolean: {value!r}")
    return value in ("true", "1")


def _checked_url(value: str | None, what: str, *, allow_http: bool) -> str:
    """An endpoint browsers and the IdP read alike (SAML-36), as published."""
    if not value:
        raise MetadataError(f"{what} has no Location")
    try:
        return endpoint_url(value, allow_http=allow_http).url
    except UnsafeUrl as exc:
        raise MetadataError(f"{what} {value!r} {exc}") from None


def _acs_endpoints(descriptor: ET.Element, allow_http: bool) -> tuple[Endpoint, ...]:
    endpoints = []
    seen: set[int] = set()
    for element in descriptor.findall(_ACS):
        binding = element.get("Binding") or ""
        if not binding:
            raise MetadataError("AssertionConsumerService has no Binding")
        location = _checked_url(
            element.get("Location"), "AssertionConsumerService", allow_http=allow_http
        )
        raw_index = (element.get("index") or "").strip()
        try:
            index = int(raw_index)
        except ValueError:
            raise MetadataError(
                f"AssertionConsumerService {location} has no numeric index"
            ) from None
        if index < 0 or index > 65535:
            raise MetadataError(
                f"AssertionConsumerService index {index} is out of range"
            )
        if index in seen:
            raise MetadataError(f"AssertionConsumerService index {index} repeats")
        seen.add(index)
        is_default = (
            _boolean(element, "isDefault") if "isDefault" in element.attrib else None
        )
        endpoints.append(Endpoint(binding, location, index, is_default))
    if not endpoints:
        raise MetadataError("SPSSODescriptor lists no AssertionConsumerService")
    return tuple(endpoints)


def _slo_endpoints(descriptor: ET.Element, allow_http: bool) -> tuple[Endpoint, ...]:
    endpoints = []
    for element in descriptor.findall(_SLO):
        binding = element.get("Binding") or ""
        if not binding:
            raise MetadataError("SingleLogoutService has no Binding")
        location = _checked_url(
            element.get("Location"), "SingleLogoutService", allow_http=allow_http
        )
        response = element.get("ResponseLocation")
        if response is not None:
            response = _checked_url(
                response, "SingleLogoutService ResponseLocation", allow_http=allow_http
            )
        endpoints.append(Endpoint(binding, location, response_location=response))
    return tuple(endpoints)


def _pem(text: str | None) -> str:
    body = "".join((text or "").split())
    try:
        der = base64.b64decode(body, validate=True)
        certificate = x509.load_der_x509_certificate(der)
    except (binascii.Error, ValueError):
        raise MetadataError(
            "a KeyDescriptor's X509Certificate is not a valid certificate"
        ) from None
    return certificate.public_bytes(Encoding.PEM).decode("ascii")


def _keys(descriptor: ET.Element):
    """Signing and encryption certificates, encryption methods and their digests."""
    signing: list[str] = []
    encryption: list[str] = []
    methods: list[str] = []
    digests: list[tuple[str, str]] = []
    for key in descriptor.findall(_KEY_DESCRIPTOR):
        use = key.get("use")
        if use not in (None, "signing", "encryption"):
            raise MetadataError(
                f"KeyDescriptor use={use!r} is neither signing nor encryption"
            )
        certificates = [
            _pem(element.text) for element in key.findall(_X509_CERTIFICATES)
        ]
        if use in (None, "signing"):
            signing.extend(c for c in certificates if c not in signing)
        if use in (None, "encryption"):
            encryption.extend(c for c in certificates if c not in encryption)
            for method in key.findall(_ENCRYPTION_METHOD):
                algorithm = (method.get("Algorithm") or "").strip()
                if algorithm and algorithm not in methods:
                    methods.append(algorithm)
                    digest = method.find(_DIGEST_METHOD)
                    value = "" if digest is None else digest.get("Algorithm", "")
                    if value.strip():
                        digests.append((algorithm, value.strip()))
    return tuple(signing), tuple(encryption), tuple(methods), tuple(digests)


def _is_https_url(value: str) -> bool:
    try:
        endpoint_url(value, allow_http=False)
    except UnsafeUrl:
        return False
    return True


def _localised(
    ui_info: ET.Element | None, tag: str, *, https_only: bool
) -> dict[str, str]:
    """Text per language (ours only); one without xml:lang fills the gaps."""
    if ui_info is None:
        return {}
    found: dict[str, str] = {}
    fallback = None
    for element in ui_info.findall(tag):
        text = " ".join((element.text or "").split())
        if not text or (https_only and not _is_https_url(text)):
            continue
        lang = element.get(XML_LANG)
        if lang is None:
            fallback = fallback or text
        elif lang in LOCALES:
            found.setdefault(lang, text)
    if fallback:
        for lang in LOCALES:
            found.setdefault(lang, fallback)
    return found


# --------------------------------------------------------------------------
# Loading into the SAML server


@functools.cache
def _attribute_converters():
    from saml2.attribute_converter import ac_factory

    # What IdPConfig loads when no attribute_map_dir is configured (ours).
    return ac_factory()


def load_sp_source(entity_id: str, metadata_xml: str, attribute_converters=None):
    """The SP's metadata loaded exactly as the SAML server loads it.

    :func:`idp.saml.server.build_server` uses this for every enabled SP, and
    :func:`import_sp` before registering one, so an import either registers
    an SP the server can use or is refused (SAML-39). Raises
    :class:`MetadataError` naming why pysaml2 cannot use it. Returns a
    pysaml2 ``InMemoryMetaData``; pysaml2 is imported here, not with the
    module, so that ``idp-admin sp list|show|enable|disable|remove`` do not
    pay half a second for its XML schemas.
    """
    from saml2.mdstore import InMemoryMetaData

    source = InMemoryMetaData(
        attribute_converters or _attribute_converters(), metadata_xml
    )
    try:
        source.load()
    except RecursionError:
        raise MetadataError(
            "the SAML server cannot load this metadata: elements nest too deep"
        ) from None
    except Exception as exc:  # pysaml2 raises a dozen unrelated types here
        raise MetadataError(
            "the SAML server cannot load this metadata "
            f"({exc.__class__.__name__}: {_one_line(str(exc))})"
        ) from None
    if list(source.keys()) != [entity_id]:
        raise MetadataError(
            "the SAML server cannot load this metadata: pysaml2 reads it as "
            f"expired or as naming another entity than {entity_id!r}"
        )
    return source


def _one_line(text: str, limit: int = 200) -> str:
    """Partner-supplied text, safe for one log or CLI line."""
    flat = "".join(ch if ch.isprintable() else " " for ch in text)
    flat = " ".join(flat.split())
    return flat[:limit] + ("..." if len(flat) > limit else "") or "no detail"


# FriendlyName -> what it carries. Names on the wire are the standard
# urn:oid: ones from pysaml2's URI attribute map (saml2/attributemaps).
RELEASABLE = {
    "uid": "an opaque reference to the account, different at each SP "
    "(the global one only with --global-uid)",
    "displayName": "full name",
    "mail": "email address",
    "mobile": "mobile number (E.164)",
    "employeeType": "user category (student, parent, educator, ...)",
    "o": "institution",
    "preferredLanguage": "ms or en",
    "isMemberOf": "roles, one value each",
    "schacPersonalUniqueID": "the MyKad or passport number (only when released)",
    "subject-id": "OASIS subject-id: one stable value per person",
    "pairwise-id": "OASIS pairwise-id: a different value at each SP",
}
# What a newly registered SP receives until an operator says otherwise: an
# opaque reference to the person and their roles, enough for role-based
# access and nothing personal.
DEFAULT_RELEASE = ("uid", "isMemberOf")

# --------------------------------------------------------------------------
# The registry in the database


def default_name_id_format(formats: tuple[str, ...]) -> str:
    """Persistent, unless the SP lists NameID formats and persistent is not one.

    Never the email format: the address is the person's, released only when
    an operator releases ``mail`` and says so (``sp policy``), not because
    the SP's metadata lists it.
    """
    if not formats or NAMEID_PERSISTENT in formats:
        return NAMEID_PERSISTENT
    usable = [value for value in formats if value in NAME_ID_FORMATS.values()]
    return next(
        (value for value in usable if value != NAME_ID_FORMATS["email"]),
        NAMEID_PERSISTENT,
    )


def bump_generation(dbsession: Session) -> int:
    """Raise the registry generation in the current transaction; return it."""
    now = dt.datetime.now(dt.UTC)
    raised = dbsession.execute(
        update(SpRegistryState)
        .where(SpRegistryState.id == REGISTRY_STATE_ID)
        .values(generation=SpRegistryState.generation + 1, changed_at=now)
        .returning(SpRegistryState.generation)
    ).scalar_one_or_none()
    if raised is not None:
        return raised
    try:
        with dbsession.begin_nested():
            dbsession.add(
                SpRegistryState(id=REGISTRY_STATE_ID, generation=1, changed_at=now)
            )
        return 1
    except IntegrityError:
        # Another transaction created the row first; raise it as usual.
        return bump_generation(dbsession)


def current_generation(dbsession: Session) -> int:
    """The registry generation (0 before the first change): one SELECT."""
    value = dbsession.scalar(
        select(SpRegistryState.generation).where(
            SpRegistryState.id == REGISTRY_STATE_ID
        )
    )
    return value or 0


def current_version(dbsession: Session) -> tuple[int, dt.datetime | None]:
    """(generation, when it last rose): one SELECT.

    The time tells apart two registries that reached the same generation
    along different histories (a rolled-back change followed by another).
    """
    row = dbsession.execute(
        select(SpRegistryState.generation, SpRegistryState.changed_at).where(
            SpRegistryState.id == REGISTRY_STATE_ID
        )
    ).first()
    return (row[0], row[1]) if row is not None else (0, None)


def find_sp(dbsession: Session, entity_id: str) -> ServiceProvider:
    """The registered SP with exactly this entity ID, or MetadataError."""
    sp = dbsession.scalar(
        select(ServiceProvider).where(ServiceProvider.entity_id == entity_id)
    )
    if sp is None:
        raise MetadataError(f"no SP is registered as {entity_id!r}")
    return sp


def _fingerprint(pem: str) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    digest = x509.load_pem_x509_certificate(pem.encode()).fingerprint(hashes.SHA256())
    return digest.hex(":")[:23] + "..."


def trust_changes(old: SpMetadata, new: SpMetadata) -> list[str]:
    """What a new metadata document changes in what the IdP trusts (SAML-30).

    Keys and endpoints: the certificates the SP signs and encrypts with, and
    where assertions and logout messages go; and what the SP asks to receive
    (its ``subject-id:req`` and RequestedAttributes, SAML-37), which never
    changes the release by itself but is a partner asking for more data, for
    an operator to see. Names, logos and validity are not trust and are left
    out. Empty when nothing trusted changes.
    """
    changes = []
    for label, before, after in (
        ("signing certificate", old.signing_certificates, new.signing_certificates),
        (
            "encryption certificate",
            old.encryption_certificates,
            new.encryption_certificates,
        ),
    ):
        for pem in sorted(set(before) - set(after)):
            changes.append(f"{label} removed: SHA-256 {_fingerprint(pem)}")
        for pem in sorted(set(after) - set(before)):
            changes.append(f"{label} added: SHA-256 {_fingerprint(pem)}")
    for label, old_endpoints, new_endpoints in (
        (
            "AssertionConsumerService",
            old.assertion_consumer_services,
            new.assertion_consumer_services,
        ),
        ("SingleLogoutService", old.single_logout_services, new.single_logout_services),
    ):
        for endpoint in sorted(set(old_endpoints) - set(new_endpoints), key=str):
            changes.append(f"{label} removed: {endpoint.location} ({endpoint.binding})")
        for endpoint in sorted(set(new_endpoints) - set(old_endpoints), key=str):
            changes.append(f"{label} added: {endpoint.location} ({endpoint.binding})")
    if old.subject_id_req != new.subject_id_req:
        if old.subject_id_req is not None:
            changes.append(f"subject-id:req removed: {old.subject_id_req}")
        if new.subject_id_req is not None:
            changes.append(f"subject-id:req added: {new.subject_id_req}")
    old_names, new_names = set(old.requested_attributes), set(new.requested_attributes)
    for name in sorted(old_names - new_names):
        changes.append(f"RequestedAttribute removed: {name}")
    for name in sorted(new_names - old_names):
        changes.append(f"RequestedAttribute added: {name}")
    if old.authn_requests_signed != new.authn_requests_signed:
        changes.append(
            f"AuthnRequestsSigned: {old.authn_requests_signed} -> "
            f"{new.authn_requests_signed}"
        )
    return changes


class ReplaceRefused(MetadataError):
    """A re-import would change what the IdP trusts without ``replace``."""

    def __init__(self, entity_id: str, changes: list[str]) -> None:
        self.changes = changes
        super().__init__(
            f"{entity_id} is already registered and this metadata changes its "
            f"keys, endpoints or requested attributes ({len(changes)} change"
            f"{'' if len(changes) == 1 else 's'}: {'; '.join(changes)}); "
            "import it again with --replace to accept"
        )


def import_sp(
    dbsession: Session,
    data: bytes,
    *,
    module_code: str | None = None,
    enabled: bool | None = None,
    replace: bool = False,
    allow_http: bool = False,
) -> ServiceProvider:
    """Register an SP from its metadata, or refresh a registered one.

    A new SP gets the default policy: responses and assertions signed,
    assertions encrypted only if the SP publishes an encryption key, NameID
    persistent unless the SP lists only other formats, enabled unless
    ``enabled`` is False. A re-import replaces the metadata and keeps the
    policy chosen since, except what the new metadata decides: encryption
    follows whether the SP still publishes an encryption key, and a NameID
    format the SP no longer lists falls back to the default. ``module_code``
    and ``enabled`` change an existing SP only when given. Raises
    :class:`MetadataError` (nothing written) for bad metadata or an unknown
    module. Flushes; the caller's transaction commits.

    A re-import that changes the SP's keys, endpoints (SAML-30) or the
    attributes it requests (SAML-37) is refused
    with :class:`ReplaceRefused`, which lists the changes, unless
    ``replace`` is true. ``allow_http`` (development only) accepts plain
    http endpoints on this machine; the caller audits an accepted replacement, whose
    changes are then in ``sp.trust_changes`` (empty otherwise).
    """
    parsed = parse_sp_metadata(data, allow_http=allow_http)
    load_sp_source(parsed.entity_id, bytes(data).decode("utf-8-sig"))
    module = None
    if module_code is not None:
        # Codes are unique whatever their case (migration 0007).
        module = dbsession.scalar(
            select(Module).where(func.lower(Module.code) == module_code.lower())
        )
        if module is None:
            raise MetadataError(f"no module has the code {module_code!r}")
    sp = dbsession.scalar(
        select(ServiceProvider).where(ServiceProvider.entity_id == parsed.entity_id)
    )
    if sp is None:
        sp = ServiceProvider(
            entity_id=parsed.entity_id,
            enabled=enabled is not False,
            name_id_format=default_name_id_format(parsed.name_id_formats),
            sign_response=True,
            sign_assertion=True,
            global_uid=False,
            attributes_released=list(DEFAULT_RELEASE),
        )
        dbsession.add(sp)
        sp.trust_changes = []
    else:
        try:
            old = sp_metadata(sp)
        except MetadataError as exc:
            # Stored by an older release under looser rules: replacing it is
            # the way out, and an explicit one.
            sp.trust_changes = [f"stored metadata no longer passes the checks: {exc}"]
        else:
            sp.trust_changes = trust_changes(old, parsed)
        if sp.trust_changes and not replace:
            raise ReplaceRefused(parsed.entity_id, sp.trust_changes)
        if enabled is not None:
            sp.enabled = enabled
        if parsed.name_id_formats and sp.name_id_format not in parsed.name_id_formats:
            sp.name_id_format = default_name_id_format(parsed.name_id_formats)
    if module is not None:
        sp.module = module
    sp.metadata_xml = bytes(data).decode("utf-8-sig")
    sp.metadata_sha256 = hashlib.sha256(data).hexdigest()
    sp.metadata_valid_until = parsed.valid_until
    sp.encrypt_assertion = bool(parsed.encryption_certificates)
    bump_generation(dbsession)
    dbsession.flush()
    return sp


def remove_sp(dbsession: Session, entity_id: str) -> None:
    """Unregister an SP (its persistent NameIDs go with it)."""
    dbsession.delete(find_sp(dbsession, entity_id))
    bump_generation(dbsession)
    dbsession.flush()


def set_enabled(dbsession: Session, entity_id: str, enabled: bool) -> ServiceProvider:
    """Enable or disable an SP; a disabled SP gets no assertion."""
    sp = find_sp(dbsession, entity_id)
    sp.enabled = enabled
    bump_generation(dbsession)
    dbsession.flush()
    return sp


@functools.lru_cache(maxsize=4096)
def _parsed(metadata_sha256: str, metadata_xml: str) -> SpMetadata:
    # Stored metadata passed the scheme rule of the mode it was imported in.
    return parse_sp_metadata(
        metadata_xml.encode("utf-8"), allow_expired=True, allow_http=True
    )


def sp_metadata(sp: ServiceProvider) -> SpMetadata:
    """The parsed metadata of a registered SP, cached by its SHA-256.

    Registered metadata was checked at import; parsing it again on every
    request would cost a millisecond per SSO. Expiry is the caller's check
    (``valid_until``), since the cache outlives the moment of parsing.
    """
    return _parsed(sp.metadata_sha256, sp.metadata_xml)


def usable_metadata(sp: ServiceProvider) -> SpMetadata | None:
    """:func:`sp_metadata`, or None when the stored document fails today's checks.

    Import refuses such metadata; this is one stored by an older release
    under looser rules (SAML-36). Callers treat the SP as unavailable (no
    sign-in, left off the portal, not told of logouts) rather than fail
    every page that touches it; the error is logged, naming the SP, until an
    operator re-imports it with ``--replace``.
    """
    try:
        return sp_metadata(sp)
    except MetadataError as exc:
        log.error(
            "SP %s is unavailable: its stored metadata fails the checks (%s); "
            "re-import it with --replace",
            sp.entity_id,
            exc,
        )
        return None


# The names ``sp policy --encryption-method`` takes, strongest first: the keys
# of idp.saml.crypto.DATA_ENCRYPTIONS, named here so that the CLI need not
# load xmlsec and pysaml2 to offer them (tests/unit/saml holds them equal).
ENCRYPTION_METHODS = ("aes256-gcm", "aes128-gcm", "aes256-cbc", "aes128-cbc")

NAME_ID_FORMATS = {
    "persistent": NAMEID_PERSISTENT,
    "transient": "urn:oasis:names:tc:SAML:2.0:nameid-format:transient",
    "email": "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
}


def _check_email_name_id(sp: ServiceProvider, changes: dict) -> None:
    """Refuse a policy whose NameID would be an address it does not release."""
    released = changes.get("attributes_released", sp.attributes_released) or []
    key = changes.get("name_id_format")
    name_id_format = NAME_ID_FORMATS.get(key, key) if key else sp.name_id_format
    if name_id_format == NAME_ID_FORMATS["email"] and "mail" not in released:
        raise MetadataError(
            "the email NameID format needs mail released "
            "(--release ...,mail), or choose persistent or transient"
        )


def set_policy(dbsession: Session, entity_id: str, **changes) -> ServiceProvider:
    """Change an SP's policy; only the given keys change.

    Keys: ``attributes_released`` (FriendlyNames from :data:`RELEASABLE`),
    ``name_id_format`` (a key of :data:`NAME_ID_FORMATS`), ``sign_response``,
    ``sign_assertion``, ``encrypt_assertion`` (needs an encryption key in the
    metadata), ``allow_sha1``, ``global_uid`` (release the account's global
    ``uid`` instead of the per-SP one, SAML-38), ``required_authn_context``
    (a URI or None), ``clock_skew`` (0-600 s or None for the IdP's), ``relay_state_max``
    (80-1024 bytes or None), ``encryption_method`` (a key of
    :data:`ENCRYPTION_METHODS`, or None to follow the
    metadata). Raises :class:`MetadataError`, nothing written.
    """
    sp = find_sp(dbsession, entity_id)
    # What was typed is checked first; then how the pieces fit together.
    names = list(dict.fromkeys(changes.get("attributes_released") or []))
    unknown = [name for name in names if name not in RELEASABLE]
    if unknown:
        raise MetadataError(
            f"unknown attribute {', '.join(unknown)}; "
            f"releasable: {', '.join(RELEASABLE)}"
        )
    _check_email_name_id(sp, changes)
    if "attributes_released" in changes:
        sp.attributes_released = names
    if "name_id_format" in changes:
        key = changes["name_id_format"]
        if key not in NAME_ID_FORMATS:
            raise MetadataError(
                f"NameID format must be one of {', '.join(NAME_ID_FORMATS)}"
            )
        sp.name_id_format = NAME_ID_FORMATS[key]
    for flag in ("sign_response", "sign_assertion", "allow_sha1", "global_uid"):
        if flag in changes:
            setattr(sp, flag, bool(changes[flag]))
    if "encrypt_assertion" in changes:
        if changes["encrypt_assertion"] and not sp_metadata(sp).encryption_certificates:
            raise MetadataError(
                f"{entity_id} publishes no encryption key; assertions cannot be "
                "encrypted for it"
            )
        sp.encrypt_assertion = bool(changes["encrypt_assertion"])
    if "required_authn_context" in changes:
        value = changes["required_authn_context"]
        if value is not None and (not value or len(value) > 256 or " " in value):
            raise MetadataError("the AuthnContext class must be a URI")
        sp.required_authn_context = value
    if "clock_skew" in changes:
        value = changes["clock_skew"]
        if value is not None and not 0 <= value <= 600:
            raise MetadataError("the clock skew must be 0 to 600 seconds")
        sp.clock_skew = value
    if "relay_state_max" in changes:
        value = changes["relay_state_max"]
        if value is not None and not 80 <= value <= 1024:
            raise MetadataError("the RelayState limit must be 80 to 1024 bytes")
        sp.relay_state_max = value
    if "encryption_method" in changes:
        value = changes["encryption_method"]
        if value is not None and value not in ENCRYPTION_METHODS:
            raise MetadataError(
                "the encryption method must be one of "
                f"{', '.join(ENCRYPTION_METHODS)} (or auto)"
            )
        sp.encryption_method = value
    dbsession.flush()
    return sp
