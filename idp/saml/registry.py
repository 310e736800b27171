"""The SP registry: service providers registered from their SAML metadata.

An SP's metadata is checked once, at registration
(:mod:`idp.saml.sp_metadata`), and the database keeps the document
(``metadata_xml``) next to the policy chosen for the SP. Every change to the
registry raises ``SpRegistryState.generation`` in the same transaction,
which is how every process learns that its pysaml2 ``Server``
(``idp.saml.server.ServerCache``) must be rebuilt.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
from collections.abc import Collection
from urllib.parse import urlsplit

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from idp.models import Module, ServiceProvider, SpRegistryState
from idp.models.sp import NAMEID_PERSISTENT
from idp.saml.sp_metadata import (
    SUBJECT_ID_REQ,
    MetadataError,
    SpMetadata,
    load_sp_source,
    parse_sp_metadata,
)

log = logging.getLogger(__name__)

REGISTRY_STATE_ID = 1


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
    (its ``subject-id:req``, RequestedAttributes and NameID formats,
    SAML-37), which never changes the release by itself but is a partner
    asking for more data, for an operator to see; and its entity attributes
    (a federation's categories and assurance). Names, logos and validity are
    not trust and are left out. Empty when nothing trusted changes.
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
    old_formats, new_formats = set(old.name_id_formats), set(new.name_id_formats)
    for value in sorted(old_formats - new_formats):
        changes.append(f"NameIDFormat removed: {value}")
    for value in sorted(new_formats - old_formats):
        changes.append(f"NameIDFormat added: {value}")
    # subject-id:req is an entity attribute too, reported above.
    old_attributes, new_attributes = (
        {pair for pair in old.entity_attributes if pair[0] != SUBJECT_ID_REQ},
        {pair for pair in new.entity_attributes if pair[0] != SUBJECT_ID_REQ},
    )
    for name, values in sorted(old_attributes - new_attributes):
        changes.append(f"entity attribute removed: {name} = {', '.join(values)}")
    for name, values in sorted(new_attributes - old_attributes):
        changes.append(f"entity attribute added: {name} = {', '.join(values)}")
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


def endpoint_hosts(md: SpMetadata) -> frozenset[str]:
    """The hosts of an SP's ACS and SLO endpoints (SLO responses included)."""
    hosts = set()
    for endpoint in (*md.assertion_consumer_services, *md.single_logout_services):
        for url in (endpoint.location, endpoint.response_location):
            host = urlsplit(url).hostname if url else None
            if host:
                hosts.add(host.lower())
    return frozenset(hosts)


def hosts_in_use(
    dbsession: Session, known: dict[str, SpMetadata | None] | None = None
) -> dict[str, set[str]]:
    """Host -> the entity IDs of the registered SPs with endpoints there.

    One query; each stored document is parsed once per process (cached by
    its SHA-256), except those in ``known`` (entity ID -> its stored
    metadata, parsed already by the caller). A stored document that no
    longer passes the checks keeps its hosts (parsed leniently, as it was
    stored): its SP still owns them.
    """
    known = known or {}
    in_use: dict[str, set[str]] = {}
    for entity_id, md in known.items():
        for host in endpoint_hosts(md) if md is not None else ():
            in_use.setdefault(host, set()).add(entity_id)
    rows = dbsession.execute(
        select(
            ServiceProvider.entity_id,
            ServiceProvider.metadata_sha256,
            ServiceProvider.metadata_xml,
        )
    )
    for entity_id, sha256, xml in rows:
        if entity_id in known and known[entity_id] is not None:
            continue
        for host in _stored_hosts(sha256, xml):
            in_use.setdefault(host, set()).add(entity_id)
    return in_use


@functools.lru_cache(maxsize=65536)
def _stored_hosts(metadata_sha256: str, metadata_xml: str) -> frozenset[str]:
    try:
        return endpoint_hosts(_parsed(metadata_sha256, metadata_xml))
    except MetadataError:
        return frozenset()


def claimed_hosts(
    new: SpMetadata,
    old: SpMetadata | None,
    in_use: dict[str, set[str]],
    confirmed: Collection[str] = (),
) -> dict[str, list[str]]:
    """SAML-29: hosts ``new`` adds that other entities' endpoints use.

    Host -> those entities. Hosts the SP already had (``old``, its
    registered metadata) and hosts an operator ``confirmed`` are not
    claims; an assertion sent to a host is readable by whoever runs it, so
    an entity listing another's host would receive that entity's users'
    assertions.
    """
    added = endpoint_hosts(new) - (endpoint_hosts(old) if old is not None else set())
    claims = {}
    for host in sorted(added):
        others = in_use.get(host, set()) - {new.entity_id}
        if others and host not in confirmed:
            claims[host] = sorted(others)
    return claims


def describe_claims(claims: dict[str, list[str]]) -> str:
    """``host (used by A, B); ...``: one line, naming three entities a host
    at most (a hosting provider's host may serve hundreds)."""
    parts = []
    for host, owners in claims.items():
        named = ", ".join(owners[:3])
        more = f" and {len(owners) - 3} more" if len(owners) > 3 else ""
        parts.append(f"{host} (used by {named}{more})")
    return "; ".join(parts)


class HostClaimed(MetadataError):
    """SAML-29: endpoints on a host another entity uses, not confirmed."""

    def __init__(self, entity_id: str, claims: dict[str, list[str]]) -> None:
        self.claims = claims
        super().__init__(
            f"{entity_id} lists endpoints on a host another registered entity "
            f"uses: {describe_claims(claims)}; once you know the host serves "
            "both, import it again with --confirm-host HOST"
        )


class UnsignedPolicy(MetadataError):
    """A policy that would send a Response with no signature in it at all."""

    def __init__(self, entity_id: str) -> None:
        super().__init__(
            f"{entity_id}: sign the Response, the assertion or both; an "
            "HTTP-POST Response carries no unsigned assertion"
        )


class SignedAssertionsWanted(MetadataError):
    """A policy leaving unsigned the assertions the SP's metadata asks signed."""

    def __init__(self, entity_id: str) -> None:
        super().__init__(
            f"{entity_id}'s metadata asks for signed assertions "
            "(WantAssertionsSigned): its assertions stay signed"
        )


def signing(sp: ServiceProvider, metadata: SpMetadata) -> tuple[bool, bool]:
    """(sign the Response, sign the assertion) for ``sp``: what is sent.

    The SP's policy, with two rules over it. An assertion is signed when
    the SP's metadata asks for it (``WantAssertionsSigned``), as its SAML
    software then refuses one unsigned. And a Response is never sent with
    no signature at all: in SAML's Web Browser SSO profile every assertion
    sent by HTTP-POST is signed, itself or by the Response around it
    (profiles §4.1.3.5). :func:`set_policy` refuses a policy against
    either rule; a row stored before the rules, or metadata that asks for
    signed assertions only after a refresh, still gets them here.
    """
    assertion = bool(sp.sign_assertion) or metadata.want_assertions_signed
    return bool(sp.sign_response) or not assertion, assertion


def new_sp(parsed: SpMetadata, *, enabled: bool = True) -> ServiceProvider:
    """A ServiceProvider with the default policy, not yet added or filled in."""
    return ServiceProvider(
        entity_id=parsed.entity_id,
        enabled=enabled,
        name_id_format=default_name_id_format(parsed.name_id_formats),
        sign_response=True,
        sign_assertion=True,
        global_uid=False,
        attributes_released=list(DEFAULT_RELEASE),
    )


def store_metadata(
    sp: ServiceProvider, text: str, sha256: str, parsed: SpMetadata
) -> None:
    """Put checked metadata on ``sp``, with what it decides of the policy.

    Encryption follows whether the SP publishes an encryption key, and a
    NameID format the SP no longer lists falls back to the default.
    """
    if parsed.name_id_formats and sp.name_id_format not in parsed.name_id_formats:
        sp.name_id_format = default_name_id_format(parsed.name_id_formats)
    sp.metadata_xml = text
    sp.metadata_sha256 = sha256
    sp.metadata_valid_until = parsed.valid_until
    sp.encrypt_assertion = bool(parsed.encryption_certificates)


def import_sp(
    dbsession: Session,
    data: bytes,
    *,
    module_code: str | None = None,
    enabled: bool | None = None,
    replace: bool = False,
    allow_http: bool = False,
    confirm_hosts: Collection[str] = (),
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

    An SP a metadata source brought is that source's to change: refused. An
    endpoint on a host another registered SP uses is refused with
    :class:`HostClaimed` (SAML-29) unless that host is in ``confirm_hosts``.
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
    old = None
    if sp is not None and sp.source_id is not None:
        raise MetadataError(
            f"{parsed.entity_id} was registered by the metadata source "
            f"{sp.source.name!r} and changes only through it "
            "(idp-admin CONFIG source show|refresh|remove)"
        )
    if sp is None:
        sp = new_sp(parsed, enabled=enabled is not False)
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
    claims = claimed_hosts(parsed, old, hosts_in_use(dbsession), confirm_hosts)
    if claims:
        raise HostClaimed(parsed.entity_id, claims)
    if sp.id is None:
        dbsession.add(sp)
    if module is not None:
        sp.module = module
    store_metadata(
        sp,
        bytes(data).decode("utf-8-sig"),
        hashlib.sha256(data).hexdigest(),
        parsed,
    )
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


# metadata_sha256 -> the document it is the hash of, parsed: what an SP's
# row needs to be known without its document, which an SSO does not read
# (idp.saml.requests). Only entries whose hash was checked against the
# document go in (:func:`_remember`); a new hash means a new document.
_BY_SHA256: dict[str, SpMetadata] = {}
_BY_SHA256_SIZE = 4096
_UTF8_BOM = b"\xef\xbb\xbf"


def _remember(sha256: str | None, text: str, parsed: SpMetadata) -> None:
    """Keep ``parsed`` under ``sha256`` if that is the hash of ``text``, as
    stored (the bytes imported, which may have begun with a BOM)."""
    if sha256 is None:
        return
    data = text.encode("utf-8")
    hashes = (hashlib.sha256(data), hashlib.sha256(_UTF8_BOM + data))
    if sha256 not in {digest.hexdigest() for digest in hashes}:
        return
    if len(_BY_SHA256) >= _BY_SHA256_SIZE:
        _BY_SHA256.clear()
    _BY_SHA256[sha256] = parsed


def sp_metadata(sp: ServiceProvider) -> SpMetadata:
    """The parsed metadata of a registered SP, cached by its SHA-256.

    Registered metadata was checked at import; parsing it again on every
    request would cost a millisecond per SSO. Expiry is the caller's check
    (``valid_until``), since the cache outlives the moment of parsing.
    A document this process has parsed before is known by the row's hash,
    without reading the document (which an SSO's row leaves out, loading
    it here only the first time).
    """
    parsed = _BY_SHA256.get(sp.metadata_sha256)
    if parsed is not None:
        return parsed
    text = sp.metadata_xml
    parsed = _parsed(sp.metadata_sha256, text)
    _remember(sp.metadata_sha256, text, parsed)
    return parsed


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
    ``sign_assertion`` (one of the two at least, and the assertion when the
    metadata asks: :func:`signing`), ``encrypt_assertion`` (needs an
    encryption key in the metadata), ``allow_sha1``, ``global_uid``
    (release the account's global ``uid`` instead of the per-SP one,
    SAML-38), ``required_authn_context`` (a URI or None), ``clock_skew``
    (0-600 s or None for the IdP's), ``relay_state_max`` (80-1024 bytes or
    None), ``encryption_method`` (a key of :data:`ENCRYPTION_METHODS`, or
    None to follow the metadata). Raises :class:`MetadataError`, nothing
    written.
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
    if not sp.sign_response and not sp.sign_assertion:
        raise UnsignedPolicy(entity_id)
    if not sp.sign_assertion and sp_metadata(sp).want_assertions_signed:
        raise SignedAssertionsWanted(entity_id)
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
