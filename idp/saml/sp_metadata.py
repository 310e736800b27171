"""SP metadata: one partner's document, checked once and read as what the IdP uses.

:func:`parse_sp_metadata` turns an SP's metadata into :class:`SpMetadata`,
and :func:`load_sp_source` proves the SAML server can load it too; the
registry (``idp.saml.registry``) stores what passes, with its policy.

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
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from idp.i18n import LOCALES
from idp.redirects import UnsafeUrl, endpoint_url
from idp.saml import xsdatetime
from idp.saml.xml import DS_NS, MD_NS, MDATTR_NS, MDUI_NS, SAML_NS, SAMLP_NS, XML_NS
from idp.units import format_over

MAX_METADATA_BYTES = 5 * 1024 * 1024
# Real SP metadata nests about ten elements deep (a signature's transforms
# are the deepest); pysaml2 builds its objects recursively and cannot load
# a few hundred levels (SAML-39).
MAX_METADATA_DEPTH = 64
MAX_ENTITY_ID_LENGTH = 1024  # service_providers.entity_id

XML_LANG = f"{{{XML_NS}}}lang"
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
    # The entity's mdattr:EntityAttributes (categories, assurance, the
    # subject-id profile...): (Name, its values sorted), sorted. What a
    # federation says about the entity, so a change is a trust change.
    entity_attributes: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def expired(self, now: dt.datetime | None = None) -> bool:
        """Whether the document's validUntil has passed (at ``now``)."""
        return self.valid_until is not None and self.valid_until <= (
            now or dt.datetime.now(dt.UTC)
        )


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
        entity_attributes=_entity_attributes(root),
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


def _entity_attributes(root: ET.Element) -> tuple[tuple[str, tuple[str, ...]], ...]:
    found: dict[str, set[str]] = {}
    for attribute in root.findall(_ENTITY_ATTRIBUTE):
        name = (attribute.get("Name") or "").strip()
        if not name:
            continue
        values = found.setdefault(name, set())
        for value in attribute.findall(f"{{{SAML_NS}}}AttributeValue"):
            if text := " ".join((value.text or "").split()):
                values.add(text)
    return tuple(
        (name, tuple(sorted(values))) for name, values in sorted(found.items())
    )


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
        if SAMLP_NS in (element.get("protocolSupportEnumeration") or "").split()
    ]
    if not descriptors:
        raise MetadataError(
            f"no SPSSODescriptor supporting {SAMLP_NS} (is this an SP's metadata?)"
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
    :func:`idp.saml.registry.import_sp` before registering one, so an import
    either registers an SP the server can use or is refused (SAML-39).
    Raises :class:`MetadataError` naming why pysaml2 cannot use it. Returns
    a pysaml2 ``InMemoryMetaData``; pysaml2 is imported here, not with the
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
