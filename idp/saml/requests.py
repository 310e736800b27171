"""SAML requests as they arrive: bounded, decoded, parsed and verified.

Everything here treats the message as hostile until proven otherwise, in
this order:

1. sizes are checked on the still-encoded field (SAML-25: 16 KiB in a
   query, 512 KiB in a form) and on RelayState (SAML-23: 1 KiB);
2. base64 is decoded strictly, and a Redirect message is inflated in one
   bounded step that stops at 256 KiB (SAML-24);
3. the XML is parsed with no DTD, entities or network (SAML-14);
4. the Issuer must be one plain text node (SAML-15) naming a registered,
   enabled SP exactly (SAML-16, 19, 31);
5. the signature is checked with that SP's registered keys only (SAML-09,
   10, 11, 12; the shape rules of ``idp.saml.crypto`` for SAML-01..08, 13),
   and a signed POST message is schema-validated first;
6. Destination, IssueInstant and the replay record (SAML-17, 20, 21).

An :class:`AuthnRequest`'s ACS is resolved against the SP's metadata
(SAML-18). Failures raise :class:`~idp.saml.errors.SamlRefused`, which
carries a stable code, the HTTP status of the page, and — once the reply
address is trusted — what a SAML error Response needs.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote_plus

from lxml import etree
from saml2.sigver import SignatureError
from saml2.xml.schema import XMLSchemaError
from saml2.xml.schema import validate as schema_validate
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session, defer

from idp.db import PlainSql, plain_value
from idp.models import ServiceProvider
from idp.saml import xsdatetime
from idp.saml.crypto import XmlsecBackend, verify_redirect_signature
from idp.saml.errors import Reply, SamlRefused
from idp.saml.registry import usable_metadata
from idp.saml.sp_metadata import Endpoint, SpMetadata
from idp.saml.xml import DS_NS, SAML_NS, SAMLP_NS, XINCLUDE_NS, XmlRefused, parse_xml

BINDING_REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
BINDING_POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
NAMEID_ENTITY = "urn:oasis:names:tc:SAML:2.0:nameid-format:entity"

MAX_QUERY_MESSAGE = 16 * 1024  # SAMLRequest in a query, still encoded
MAX_POST_MESSAGE = 512 * 1024  # SAMLRequest in a form, still encoded
MAX_INFLATED = 256 * 1024  # a Redirect message after inflating
MAX_RELAY_STATE = 1024  # bytes
MAX_ID_LENGTH = 256
# Asked for an issuer no SP row has; returns the SP it registered, or None.
Discover = Callable[[str], ServiceProvider | None]

_AUTHN_REQUEST = f"{{{SAMLP_NS}}}AuthnRequest"
_LOGOUT_REQUEST = f"{{{SAMLP_NS}}}LogoutRequest"
_LOGOUT_RESPONSE = f"{{{SAMLP_NS}}}LogoutResponse"
_ISSUER = f"{{{SAML_NS}}}Issuer"
_SIGNATURE = f"{{{DS_NS}}}Signature"
_NAMEID_POLICY = f"{{{SAMLP_NS}}}NameIDPolicy"
_REQUESTED_CONTEXT = f"{{{SAMLP_NS}}}RequestedAuthnContext"
_CLASS_REF = f"{{{SAML_NS}}}AuthnContextClassRef"

_NODE_NAMES = {
    _AUTHN_REQUEST: f"{SAMLP_NS}:AuthnRequest",
    _LOGOUT_REQUEST: f"{SAMLP_NS}:LogoutRequest",
    _LOGOUT_RESPONSE: f"{SAMLP_NS}:LogoutResponse",
}

_STRICT = XmlsecBackend()
_LEGACY = XmlsecBackend(allow_sha1=True)


@dataclass(frozen=True)
class Received:
    """A message as it arrived, decoded but not yet trusted."""

    binding: str
    xml: bytes
    relay_state: str | None
    # Redirect binding: (signed octets, SigAlg, signature bytes), if signed.
    query_signature: tuple[bytes, str, bytes] | None = None


@dataclass
class Verified:
    """A parsed message from a registered, enabled SP whose signature held."""

    root: etree._Element
    sp: ServiceProvider
    metadata: SpMetadata
    id: str
    issuer: str
    issue_instant: dt.datetime
    destination: str | None
    signed: bool
    received: Received = field(repr=False)


# --------------------------------------------------------------------------
# Decoding


def _raw_query(query_string: str) -> dict[str, str]:
    """The query's parameters, values still percent-encoded; no repeats."""
    values: dict[str, str] = {}
    for part in query_string.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        name = unquote_plus(name)
        if name in values:
            raise SamlRefused("saml_bad_message", f"{name} given twice")
        values[name] = value
    return values


def _b64decode(value: str) -> bytes:
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SamlRefused("saml_bad_message", "not base64") from exc


def _inflate(data: bytes) -> bytes:
    """Raw DEFLATE, stopping at :data:`MAX_INFLATED` (SAML-24)."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        xml = inflater.decompress(data, MAX_INFLATED + 1)
    except zlib.error as exc:
        raise SamlRefused("saml_bad_message", "not DEFLATE data") from exc
    if len(xml) > MAX_INFLATED or inflater.unconsumed_tail:
        raise SamlRefused(
            "saml_too_large",
            f"inflates beyond {MAX_INFLATED} bytes",
            status=413,
        )
    return xml


def relay_state_rule(value: str | None, limit: int | None = None) -> str | None:
    """The one RelayState rule, for every endpoint that takes one (SAML-22/23).

    RelayState is opaque to the IdP, but it is text carried back in a form
    field or a query: at most :data:`MAX_RELAY_STATE` UTF-8 bytes, or the
    SP's own ``limit`` when that is lower (never higher, whatever a stored
    policy says), and no control character (a NUL cannot even be stored in
    PostgreSQL; a browser rewrites CR LF in a form field, which would break a
    signed Redirect). Returns ``value``; raises :class:`SamlRefused`
    (``saml_relay_state`` for size, ``saml_bad_message`` for content).
    """
    if value is None:
        return None
    limit = min(limit or MAX_RELAY_STATE, MAX_RELAY_STATE)
    if len(value.encode("utf-8")) > limit:
        raise SamlRefused("saml_relay_state", f"RelayState over {limit} bytes")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise SamlRefused("saml_bad_message", "control character in RelayState")
    return value


def one_relay_state(values: list[str], limit: int | None = None) -> str | None:
    """The RelayState of a form or a link's query: at most one, by the rule."""
    if len(values) > 1:
        raise SamlRefused("saml_bad_message", "RelayState given twice")
    return relay_state_rule(values[0] if values else None, limit)


def from_redirect(query_string: str, field_name: str = "SAMLRequest") -> Received:
    """Decode a message sent with the HTTP-Redirect binding."""
    raw = _raw_query(query_string)
    encoded = raw.get(field_name)
    if not encoded:
        raise SamlRefused("saml_no_message", f"no {field_name}")
    if len(encoded) > MAX_QUERY_MESSAGE:
        raise SamlRefused(
            "saml_too_large", f"{field_name} over {MAX_QUERY_MESSAGE} bytes", status=414
        )
    relay_state = relay_state_rule(
        unquote_plus(raw["RelayState"]) if "RelayState" in raw else None
    )
    xml = _inflate(_b64decode(unquote_plus(encoded)))
    query_signature = None
    if "Signature" in raw or "SigAlg" in raw:
        if not raw.get("Signature") or not raw.get("SigAlg"):
            raise SamlRefused("saml_bad_signature", "Signature without SigAlg")
        octets = f"{field_name}={encoded}"
        if "RelayState" in raw:
            octets += f"&RelayState={raw['RelayState']}"
        octets += f"&SigAlg={raw['SigAlg']}"
        query_signature = (
            octets.encode("ascii", "replace"),
            unquote_plus(raw["SigAlg"]),
            _b64decode(unquote_plus(raw["Signature"])),
        )
    return Received(BINDING_REDIRECT, xml, relay_state, query_signature)


def from_post(params, field_name: str = "SAMLRequest") -> Received:
    """Decode a message sent with the HTTP-POST binding (``params``: a form)."""
    values = params.getall(field_name)
    if len(values) != 1 or not values[0]:
        raise SamlRefused("saml_no_message", f"need one {field_name}")
    if len(values[0]) > MAX_POST_MESSAGE:
        raise SamlRefused(
            "saml_too_large", f"{field_name} over {MAX_POST_MESSAGE} bytes", status=413
        )
    relay_state = one_relay_state(params.getall("RelayState"))
    return Received(BINDING_POST, _b64decode(values[0]), relay_state)


# --------------------------------------------------------------------------
# Parsing and verifying


def _issuer(root: etree._Element) -> str:
    """The Issuer's whole text, exactly as sent (SAML-15, SAML-16)."""
    issuers = [c for c in root if c.tag == _ISSUER]
    if len(issuers) != 1:
        raise SamlRefused("saml_unknown_sp", "need exactly one Issuer")
    issuer = issuers[0]
    if len(issuer):
        # A comment, processing instruction or element inside the Issuer
        # would let a parser that reads only the first text node see a
        # different name than one that reads all of it.
        raise SamlRefused("saml_unknown_sp", "Issuer holds more than text")
    if issuer.get("Format") not in (None, NAMEID_ENTITY):
        raise SamlRefused("saml_unknown_sp", "Issuer is not an entity ID")
    return issuer.text or ""


# Hot-path statements are built once, with bind parameters: building one
# costs more than running it on SQLite.
# The SP's document (metadata_xml, kilobytes) is left out: the parsed copy
# is known by the row's metadata_sha256 (idp.saml.registry.sp_metadata),
# which loads the document only when this process has not parsed it yet.
_SP_BY_ENTITY_ID = (
    select(ServiceProvider)
    .options(defer(ServiceProvider.metadata_xml))
    .where(ServiceProvider.entity_id == bindparam("entity_id"))
)
# The replay record, as DB-API text (``idp.db.PlainSql``; the same on both
# dialects): the primary key decides, and a row comes back only if this
# request inserted it. ``writes``: on SQLite it takes the writer's turn.
_RECORD_SEEN = PlainSql(
    "INSERT INTO seen_request_ids (issuer, request_id, expires_at)"
    " VALUES (:issuer, :request_id, :expires_at)"
    " ON CONFLICT DO NOTHING RETURNING request_id",
    writes=True,
)


def _find_sp(
    dbsession: Session, entity_id: str, discover: Discover | None = None
) -> ServiceProvider:
    if not entity_id or len(entity_id) > 1024:
        raise SamlRefused("saml_unknown_sp", "no usable Issuer")
    sp = dbsession.scalar(_SP_BY_ENTITY_ID, {"entity_id": entity_id})
    if sp is None and discover is not None:
        # First sight of this issuer: an MDQ source may know it (idp.saml.mdq).
        sp = discover(entity_id)
    # The database compares exactly on both engines (binary on SQLite,
    # deterministic collation on PostgreSQL); this guards against a
    # case-insensitive collation configured later.
    if sp is None or sp.entity_id != entity_id:
        raise SamlRefused("saml_unknown_sp", "Issuer is not a registered SP")
    return sp


def usable_sp(sp: ServiceProvider, now: dt.datetime | None = None) -> SpMetadata:
    """The metadata of an SP that may take part now; refuses one that may not.

    The one rule for every start of SSO and logout (SAML-27, SAML-31): the
    operator has not switched the SP off, its stored metadata passes today's
    checks (:func:`usable_metadata`), and its validUntil has not passed.
    Stored metadata was current when imported; the parsed copy is cached
    for the life of the process, so expiry is checked here, every time.
    """
    metadata = usable_metadata(sp)
    if not sp.enabled or metadata is None:
        raise SamlRefused("saml_sp_disabled", sp.entity_id, status=403)
    if metadata.expired(now):
        raise SamlRefused("saml_sp_expired", sp.entity_id, status=403)
    return metadata


def verify(
    dbsession: Session,
    received: Received,
    *,
    expect: tuple[str, ...],
    require_signature: bool | None,
    settings,
    now: dt.datetime | None = None,
    discover: Discover | None = None,
) -> Verified:
    """Parse ``received`` and check everything that needs no user.

    ``expect`` lists the accepted root elements (Clark notation);
    ``require_signature`` None means "as the SP's metadata says"
    (AuthnRequestsSigned). The Destination is checked by the caller, once a
    reply address is known (:func:`check_destination`). ``discover`` is
    asked for an issuer no SP row has (an MDQ lookup) and returns the SP it
    registered, or None. Raises :class:`SamlRefused`.
    """
    now = now or dt.datetime.now(dt.UTC)
    try:
        root = parse_xml(received.xml)
    except XmlRefused as exc:
        raise SamlRefused("saml_bad_message", str(exc)) from exc
    if root.tag not in expect:
        raise SamlRefused("saml_bad_message", f"unexpected {root.tag}")
    if next(root.iter(f"{{{XINCLUDE_NS}}}*"), None) is not None:
        # Never expanded here, but no SAML message has a use for one (SAML-14).
        raise SamlRefused("saml_bad_message", "XInclude element in the message")
    issuer = _issuer(root)
    sp = _find_sp(dbsession, issuer, discover)
    metadata = usable_sp(sp, now)

    if require_signature is None:
        require_signature = metadata.authn_requests_signed
    signed = _check_signature(root, received, sp, metadata, require_signature)

    message_id = root.get("ID") or ""
    if not message_id or len(message_id) > MAX_ID_LENGTH:
        raise SamlRefused("saml_bad_message", "missing or oversized ID")
    if root.get("Version") != "2.0":
        raise SamlRefused("saml_bad_message", "Version is not 2.0")
    try:
        issue_instant = xsdatetime.parse(root.get("IssueInstant"))
    except ValueError as exc:
        raise SamlRefused("saml_bad_message", "bad IssueInstant") from exc
    return Verified(
        root=root,
        sp=sp,
        metadata=metadata,
        id=message_id,
        issuer=issuer,
        issue_instant=issue_instant,
        destination=root.get("Destination"),
        signed=signed,
        received=received,
    )


def check_destination(verified: Verified, destination: str) -> None:
    """Destination must be the URL the message arrived at (SAML-20).

    A signed message must name it: otherwise one signed for another
    endpoint (or another IdP) could be replayed here.
    """
    sent_to = verified.destination
    if sent_to is None and verified.signed:
        raise SamlRefused("saml_destination", "a signed request must name Destination")
    if sent_to is not None and sent_to != destination:
        raise SamlRefused("saml_destination", f"Destination is {sent_to!r}")


def _check_signature(
    root: etree._Element,
    received: Received,
    sp: ServiceProvider,
    metadata: SpMetadata,
    required: bool,
) -> bool:
    """True if signed (and the signature holds); refuses a missing one if required."""
    certificates = metadata.signing_certificates
    embedded = any(c.tag == _SIGNATURE for c in root)
    try:
        if received.query_signature is not None:
            octets, sig_alg, signature = received.query_signature
            verify_redirect_signature(
                octets, sig_alg, signature, certificates, allow_sha1=sp.allow_sha1
            )
            return True
        if received.binding == BINDING_POST and embedded:
            node_name = _NODE_NAMES[root.tag]
            # pysaml2's schemas first (CVE-2021-21238): a document that is
            # not a valid SAML message never reaches the verifier.
            schema_validate(received.xml.decode("utf-8"))
            backend = _LEGACY if sp.allow_sha1 else _STRICT
            backend.verify_root(root, node_name, certificates)
            return True
    except XMLSchemaError as exc:
        # The schema error quotes the document; the log gets no content.
        raise SamlRefused("saml_bad_signature", "not a valid SAML message") from exc
    except (SignatureError, UnicodeDecodeError, ValueError) as exc:
        raise SamlRefused("saml_bad_signature", str(exc)[:200]) from exc
    if required:
        raise SamlRefused("saml_signature_required", "the SP must sign this message")
    return False


def check_fresh(
    verified: Verified, settings, *, now: dt.datetime | None = None
) -> dt.datetime:
    """Refuse a request too old or from the future (SAML-21); its expiry.

    Old means older than ``idp.saml.request_lifetime`` plus the clock skew
    (the SP's own, else ``idp.clock_skew``); future means ahead by more than
    the skew.
    """
    now = now or dt.datetime.now(dt.UTC)
    skew = dt.timedelta(seconds=_skew(verified.sp, settings))
    lifetime = dt.timedelta(seconds=settings["idp.saml.request_lifetime"])
    if verified.issue_instant > now + skew:
        raise SamlRefused("saml_stale", "IssueInstant is in the future")
    if verified.issue_instant < now - lifetime - skew:
        raise SamlRefused("saml_stale", "IssueInstant is too old")
    return verified.issue_instant + lifetime + skew


def _skew(sp: ServiceProvider, settings) -> int:
    return sp.clock_skew if sp.clock_skew is not None else settings["idp.clock_skew"]


def check_not_replayed(
    dbsession: Session, verified: Verified, expires_at: dt.datetime
) -> None:
    """Record (issuer, ID); refuse one seen before on any node (SAML-17).

    The primary key decides (one INSERT ... ON CONFLICT DO NOTHING), so two
    nodes racing with one request cannot both accept it. Nothing is
    deleted here: expired records go in the background
    (:mod:`idp.services.purge`, run by ``idp-admin purge`` and the worker
    loop), so no sign-in waits on a backlog. An expired record left in
    place refuses its (issuer, ID) a little longer, which is harmless: the
    request itself is already too old by then (:func:`check_fresh`).
    """
    record_seen(dbsession, verified.issuer, verified.id, expires_at)


def record_seen(
    dbsession: Session, issuer: str, request_id: str, expires_at: dt.datetime
) -> None:
    """The statement of :func:`check_not_replayed`: SamlRefused if seen before."""
    dialect = dbsession.get_bind().dialect.name
    recorded = _RECORD_SEEN.execute(
        dbsession,
        {
            "issuer": issuer,
            "request_id": request_id,
            "expires_at": plain_value(expires_at, dialect),
        },
    )
    if not recorded:
        raise SamlRefused("saml_replay", request_id)


def check_relay_state(verified: Verified) -> None:
    """The SP's own RelayState cap (the spec's 80 bytes, as an option)."""
    relay_state_rule(verified.received.relay_state, verified.sp.relay_state_max)


# --------------------------------------------------------------------------
# AuthnRequest


@dataclass(frozen=True)
class RequestedContext:
    comparison: str
    class_refs: tuple[str, ...]


@dataclass(frozen=True)
class AuthnRequest:
    """What the IdP acts on in a verified AuthnRequest."""

    id: str
    sp_id: int
    issuer: str
    acs: Endpoint
    force_authn: bool
    is_passive: bool
    name_id_format: str | None
    sp_name_qualifier: str | None
    allow_create: bool
    requested_context: RequestedContext | None
    relay_state: str | None
    signed: bool
    # The SP's row, as loaded for the checks (not compared or shown).
    sp: ServiceProvider | None = field(default=None, compare=False, repr=False)
    # Until when its replay record must stand (SAML-17), for a request not
    # recorded yet (:func:`record`); None once recorded, or read back.
    unrecorded_until: dt.datetime | None = field(default=None, compare=False)

    def reply(self) -> Reply:
        return Reply(
            self.sp_id, self.issuer, self.acs.location, self.id, self.relay_state
        )


def _boolean(value: str | None, name: str) -> bool:
    if value in (None, "false", "0"):
        return False
    if value in ("true", "1"):
        return True
    raise SamlRefused("saml_bad_message", f"{name} is not a boolean")


def resolve_acs(
    metadata: SpMetadata,
    url: str | None,
    index: str | None,
    binding: str | None,
) -> Endpoint:
    """The ACS the Response goes to: exactly one from the metadata (SAML-18).

    A URL must equal an endpoint's Location character for character (and
    its binding, if the request names one); an index must exist; with
    neither, the metadata's default. Only the HTTP-POST binding is served.
    """
    endpoints = metadata.assertion_consumer_services
    if url is not None and index is not None:
        raise SamlRefused("saml_acs", "both an ACS URL and an index")
    if url is not None:
        found = [
            e
            for e in endpoints
            if e.location == url and (binding is None or e.binding == binding)
        ]
    elif index is not None:
        found = [e for e in endpoints if str(e.index) == index]
    else:
        found = [
            next(
                (e for e in endpoints if e.is_default),
                next((e for e in endpoints if e.is_default is not False), endpoints[0]),
            )
        ]
    if not found:
        raise SamlRefused("saml_acs", "the ACS is not in the SP's metadata")
    endpoint = found[0]
    if endpoint.binding != BINDING_POST:
        raise SamlRefused("saml_acs", f"ACS binding {endpoint.binding} is not served")
    return endpoint


def authn_request(verified: Verified) -> AuthnRequest:
    """Read a verified AuthnRequest; its ACS is checked before anything else."""
    root = verified.root
    acs = resolve_acs(
        verified.metadata,
        root.get("AssertionConsumerServiceURL"),
        root.get("AssertionConsumerServiceIndex"),
        root.get("ProtocolBinding"),
    )
    reply = Reply(
        verified.sp.id,
        verified.issuer,
        acs.location,
        verified.id,
        verified.received.relay_state,
    )
    try:
        policy = root.find(_NAMEID_POLICY)
        context = root.find(_REQUESTED_CONTEXT)
        requested = None
        if context is not None:
            requested = RequestedContext(
                context.get("Comparison", "exact"),
                tuple((c.text or "").strip() for c in context.findall(_CLASS_REF)),
            )
        return AuthnRequest(
            id=verified.id,
            sp_id=verified.sp.id,
            issuer=verified.issuer,
            acs=acs,
            force_authn=_boolean(root.get("ForceAuthn"), "ForceAuthn"),
            is_passive=_boolean(root.get("IsPassive"), "IsPassive"),
            name_id_format=policy.get("Format") if policy is not None else None,
            sp_name_qualifier=(
                policy.get("SPNameQualifier") if policy is not None else None
            ),
            allow_create=(
                _boolean(policy.get("AllowCreate"), "AllowCreate")
                if policy is not None and policy.get("AllowCreate") is not None
                else True
            ),
            requested_context=requested,
            relay_state=verified.received.relay_state,
            signed=verified.signed,
            sp=verified.sp,
        )
    except SamlRefused as exc:
        raise exc.with_reply(reply) from None


def receive_authn_request(
    dbsession: Session,
    received: Received,
    *,
    destination: str,
    settings,
    discover: Discover | None = None,
) -> AuthnRequest:
    """Every check an AuthnRequest passes before the user is involved.

    All but the replay record, which the caller writes with :func:`record`
    before answering. ``discover``: see :func:`verify`; only an
    AuthnRequest may bring a new SP.
    """
    verified = verify(
        dbsession,
        received,
        expect=(_AUTHN_REQUEST,),
        require_signature=None,
        settings=settings,
        discover=discover,
    )
    request = authn_request(verified)
    try:
        check_destination(verified, destination)
        check_relay_state(verified)
        expires_at = check_fresh(verified, settings)
    except SamlRefused as exc:
        raise exc.with_reply(request.reply()) from None
    return dataclasses.replace(request, unrecorded_until=expires_at)


def record(dbsession: Session, request: AuthnRequest) -> None:
    """Record a checked request's (issuer, ID); refuse one seen before (SAML-17).

    :func:`receive_authn_request` checks all but this, so that single
    sign-on writes it last, after signing (:func:`idp.saml.sso.answer`):
    on SQLite the writer's turn is then held only for the write. Whatever
    the order, the Response leaves only once its request is recorded, and
    the primary key lets one of two racing requests through.
    """
    if request.unrecorded_until is None:
        return
    try:
        record_seen(dbsession, request.issuer, request.id, request.unrecorded_until)
    except SamlRefused as exc:
        raise exc.with_reply(request.reply()) from None


def reparse_authn_request(
    dbsession: Session, xml: bytes, relay_state: str | None, binding: str, settings
) -> AuthnRequest:
    """An AuthnRequest stored after it was checked, read back for continuing.

    Signature, freshness and replay were checked on arrival; the SP is
    looked up again, so one disabled since is refused now.
    """
    received = Received(binding, xml, relay_state)
    root = parse_xml(xml)
    issuer = _issuer(root)
    sp = _find_sp(dbsession, issuer)
    metadata = usable_sp(sp)
    verified = Verified(
        root=root,
        sp=sp,
        metadata=metadata,
        id=root.get("ID") or "",
        issuer=issuer,
        issue_instant=xsdatetime.parse(root.get("IssueInstant")),
        destination=root.get("Destination"),
        signed=True,
        received=received,
    )
    return authn_request(verified)
