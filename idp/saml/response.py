"""The SAML Response to an SP: subject, attributes, context, signature, encryption.

Policy lives here, one function per decision, so each can be read and
tested alone:

* :func:`authn_context` — the AuthnContextClassRef to assert, matched
  against RequestedAuthnContext (else NoAuthnContext);
* :func:`name_id` — the NameID: persistent (random, per user and SP, from
  ``persistent_name_ids``), transient, or email; the request's NameIDPolicy
  honoured when the SP's policy allows it (else InvalidNameIDPolicy);
* :func:`attributes` — exactly what the SP's policy releases (SAML-33), with
  a per-SP ``uid`` unless the policy asks for the global one (SAML-38);
* :func:`build` — the signed (and, when the SP publishes an encryption key,
  encrypted) Response, made by pysaml2 with our crypto backend.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass

from lxml import etree
from saml2 import samlp
from saml2.assertion import Policy
from saml2.saml import (
    NAME_FORMAT_URI,
    NAMEID_FORMAT_EMAILADDRESS,
    NAMEID_FORMAT_PERSISTENT,
    NAMEID_FORMAT_TRANSIENT,
    NAMEID_FORMAT_UNSPECIFIED,
    AuthnContext,
    AuthnContextClassRef,
    AuthnStatement,
    NameID,
)
from saml2.server import Server
from saml2.time_util import instant
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from idp.identifiers import alpha2
from idp.models import PersistentNameId, ServiceProvider, User
from idp.saml import xsdatetime
from idp.saml.config import DIGEST_ALGORITHM, SIGNING_ALGORITHM
from idp.saml.crypto import (
    AES256_GCM,
    DATA_ENCRYPTIONS,
    OAEP_DIGESTS,
    OAEP_SHA256,
    RSA_OAEP_11,
    RSA_OAEP_MGF1P,
    XmlsecBackend,
)
from idp.saml.errors import (
    STATUS_INVALID_NAMEID_POLICY,
    STATUS_NO_AUTHN_CONTEXT,
    STATUS_REQUESTER,
    STATUS_RESPONDER,
    SamlRefused,
)
from idp.saml.registry import RELEASABLE
from idp.saml.requests import AuthnRequest, RequestedContext
from idp.saml.sp_metadata import SpMetadata
from idp.saml.xml import SAML_NS, parse_xml

_ASSERTION = f"{{{SAML_NS}}}Assertion"
_ENCRYPTED_ASSERTION = f"{{{SAML_NS}}}EncryptedAssertion"
_CONDITIONS = f"{{{SAML_NS}}}Conditions"
_CONFIRMATION_DATA = f"{{{SAML_NS}}}SubjectConfirmationData"
_BACKEND = XmlsecBackend()


# -- Authentication contexts ------------------------------------------------

# (Context class URIs, not secrets.)
AC_PASSWORD = "urn:oasis:names:tc:SAML:2.0:ac:classes:Password"  # noqa: S105
AC_PASSWORD_PROTECTED = (
    "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"  # noqa: S105
)
AC_SECURITY_IMAGE_PATH = "/saml/ac/password-security-image"


def security_image_context(settings) -> str:
    """Our own class: a password typed after the security-image check."""
    return settings["idp.base_url"] + AC_SECURITY_IMAGE_PATH


def supported_contexts(settings) -> tuple[str, ...]:
    """What one sign-in here proves, weakest first (for minimum/maximum/better)."""
    return (AC_PASSWORD, AC_PASSWORD_PROTECTED, security_image_context(settings))


def authn_context(
    requested: RequestedContext | None, sp: ServiceProvider, settings
) -> str:
    """The class to assert; refuses what the IdP cannot claim (NoAuthnContext).

    Every sign-in is a password over TLS after the security-image check, so
    it satisfies each supported class; ``exact`` needs one of them named,
    ``minimum``/``maximum``/``better`` compare by the order of
    :func:`supported_contexts`. An SP's ``required_authn_context`` policy is
    asserted when nothing is requested, and refuses a request for another.
    """
    supported = supported_contexts(settings)
    rank = {ref: i for i, ref in enumerate(supported)}
    required = sp.required_authn_context
    if requested is None or not requested.class_refs:
        return required or AC_PASSWORD_PROTECTED
    known = [ref for ref in requested.class_refs if ref in rank]
    if requested.comparison == "exact":
        candidates = known
    elif requested.comparison == "minimum" and known:
        low = min(rank[ref] for ref in known)
        candidates = [ref for ref in supported if rank[ref] >= low][::-1]
    elif requested.comparison == "maximum" and known:
        high = max(rank[ref] for ref in known)
        candidates = [ref for ref in supported if rank[ref] <= high][::-1]
    elif requested.comparison == "better" and known:
        low = min(rank[ref] for ref in known)
        candidates = [ref for ref in supported if rank[ref] > low][::-1]
    else:
        candidates = []
    if required:
        candidates = [ref for ref in candidates if ref == required]
    if not candidates:
        raise SamlRefused(
            "saml_no_authn_context",
            f"cannot satisfy {requested.comparison} {requested.class_refs}",
            saml_status=(STATUS_RESPONDER, STATUS_NO_AUTHN_CONTEXT),
        )
    return candidates[0]


# -- NameID -------------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    format: str
    value: str


def allowed_formats(sp: ServiceProvider) -> set[str]:
    """NameID formats the SP's policy allows: never more than it releases.

    Persistent and transient reveal nothing about the person; an email
    NameID is the person's address, so only an SP released ``mail`` gets it,
    whatever its policy's NameID format says (a row from before
    ``sp policy`` checked this gets InvalidNameIDPolicy, not the address).
    """
    allowed = {NAMEID_FORMAT_PERSISTENT, NAMEID_FORMAT_TRANSIENT}
    if "mail" in (sp.attributes_released or []):
        allowed.add(NAMEID_FORMAT_EMAILADDRESS)
    return allowed


# ``name_id(persistent=...)`` not given: look the persistent NameID up.
UNKNOWN = object()


def _persistent(
    dbsession: Session, user: User, sp: ServiceProvider, create: bool, known=UNKNOWN
):
    query = select(PersistentNameId.name_id).where(
        PersistentNameId.user_id == user.id, PersistentNameId.sp_id == sp.id
    )
    value = dbsession.scalar(query) if known is UNKNOWN else known
    if value is not None or not create:
        return value
    # Random, so two SPs cannot correlate a person by comparing (SAML-34).
    value = secrets.token_urlsafe(32)
    try:
        with dbsession.begin_nested():
            dbsession.add(PersistentNameId(user_id=user.id, sp_id=sp.id, name_id=value))
    except IntegrityError:
        # Another request made it first; (user, SP) is unique.
        return dbsession.scalar(query)
    return value


def name_id(
    dbsession: Session,
    user: User,
    sp: ServiceProvider,
    request: AuthnRequest | None,
    *,
    persistent=UNKNOWN,
) -> Subject:
    """The NameID for ``user`` at ``sp`` (InvalidNameIDPolicy when refused).

    ``persistent``: the user's persistent NameID at ``sp`` if already read
    (None: there is none yet), to spare the lookup.
    """
    requested = request.name_id_format if request else None
    qualifier = request.sp_name_qualifier if request else None
    allow_create = request.allow_create if request else True
    if qualifier is not None and qualifier != sp.entity_id:
        raise _invalid_policy("SPNameQualifier names another SP")
    if requested in (None, NAMEID_FORMAT_UNSPECIFIED):
        requested = sp.name_id_format
    if requested not in allowed_formats(sp):
        raise _invalid_policy(f"format {requested} is not released to this SP")
    if requested == NAMEID_FORMAT_TRANSIENT:
        return Subject(requested, "_" + secrets.token_hex(20))
    if requested == NAMEID_FORMAT_EMAILADDRESS:
        return Subject(requested, user.email)
    value = _persistent(dbsession, user, sp, create=allow_create, known=persistent)
    if value is None:
        raise _invalid_policy("AllowCreate is false and no persistent NameID exists")
    return Subject(requested, value)


def _invalid_policy(detail: str) -> SamlRefused:
    return SamlRefused(
        "saml_name_id_policy",
        detail,
        saml_status=(STATUS_RESPONDER, STATUS_INVALID_NAMEID_POLICY),
    )


# -- Attributes ----------------------------------------------------------------


def _scoped(value: bytes, scope: str) -> str:
    # OASIS subject-id profile: lowercase alphanumerics, then @scope.
    return base64.b32encode(value).decode().rstrip("=").lower() + "@" + scope


def pairwise_uid(user: User, sp: ServiceProvider, key: bytes) -> str:
    """The ``uid`` one SP sees: stable for the person there, unlinkable elsewhere.

    An HMAC of (account, SP entity ID) with the server key, shaped as a UUID
    (RFC 9562 version 8) like the account's own reference, so an SP that
    stores a UUID needs no change (SAML-38). Changing ``idp.hmac_key``
    changes every pairwise value, like ``pairwise-id`` and ``subject-id``.
    """
    message = b"uid|" + user.id.bytes + b"|" + sp.entity_id.encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    number = int.from_bytes(digest[:16], "big")
    number = (number & ~(0xF << 76)) | (0x8 << 76)  # version 8
    number = (number & ~(0x3 << 62)) | (0x2 << 62)  # RFC variant
    return str(uuid.UUID(int=number))


def personal_unique_id(user: User) -> str:
    """schacPersonalUniqueID: urn:schac:personalUniqueID:<country>:<type>:<number>."""
    if user.identifier_kind == "mykad":
        return f"urn:schac:personalUniqueID:my:NIC:{user.identifier}"
    country, _, number = user.identifier.partition(":")
    return f"urn:schac:personalUniqueID:{alpha2(country).lower()}:passport:{number}"


def attributes(
    user: User,
    sp: ServiceProvider,
    role_names: list[str],
    settings,
) -> dict[str, list[str]]:
    """The attributes released to ``sp``: its policy, nothing more (SAML-33).

    Nothing in the SP's metadata (``subject-id:req``, RequestedAttribute)
    adds to it: a partner cannot grant itself data (SAML-37).
    """
    released = set(sp.attributes_released or [])
    key = settings["idp.hmac_key"].encode()
    scope = settings["idp.saml.scope"]
    values: dict[str, list[str]] = {}
    for name in sorted(released & RELEASABLE.keys()):
        if name == "uid":
            value = [str(user.id) if sp.global_uid else pairwise_uid(user, sp, key)]
        elif name == "displayName":
            value = [user.full_name]
        elif name == "mail":
            value = [user.email]
        elif name == "mobile":
            value = [user.phone] if user.phone else []
        elif name == "employeeType":
            value = [user.category]
        elif name == "o":
            value = [user.institution] if user.institution else []
        elif name == "preferredLanguage":
            value = [user.locale]
        elif name == "isMemberOf":
            value = sorted(role_names)
        elif name == "schacPersonalUniqueID":
            value = [personal_unique_id(user)]
        elif name == "subject-id":
            digest = hmac.new(key, b"subject-id|" + user.id.bytes, hashlib.sha256)
            value = [_scoped(digest.digest()[:20], scope)]
        else:  # pairwise-id
            message = b"pairwise-id|" + user.id.bytes + b"|" + sp.entity_id.encode()
            digest = hmac.new(key, message, hashlib.sha256)
            value = [_scoped(digest.digest()[:20], scope)]
        if value:
            values[name] = value
    return values


# -- The Response ----------------------------------------------------------------


class ReleaseAsGiven(Policy):
    """pysaml2's policy, minus its own attribute filtering.

    The attributes handed to pysaml2 are already exactly those the SP's
    policy releases; pysaml2's default would further filter them by the
    SP's RequestedAttribute list and fail the whole response when a
    "required" one is missing. Lifetime and name format come from here.
    """

    def __init__(self, lifetime_seconds: int, mds=None):
        super().__init__(
            {
                "default": {
                    "lifetime": {"seconds": lifetime_seconds},
                    "name_form": NAME_FORMAT_URI,
                }
            },
            mds=mds,
        )

    def restrict(self, ava, sp_entity_id, metadata=None):
        return dict(ava)


def session_index() -> str:
    return "_" + secrets.token_hex(20)


def encryption_algorithm(metadata: SpMetadata, override: str | None = None) -> str:
    """The data encryption for an SP (SAML-35).

    The policy's ``override`` (a key of ``DATA_ENCRYPTIONS``, for a legacy
    SP whose metadata says nothing true) wins; otherwise the strongest mode
    the metadata lists (AES-256-GCM > AES-128-GCM > AES-256-CBC >
    AES-128-CBC), and AES-256-GCM when it lists none of them: an SP that
    lists only CBC may not read GCM, one that lists nothing is assumed
    current.
    """
    if override is not None:
        return DATA_ENCRYPTIONS[override]
    listed = set(metadata.encryption_methods)
    return next(
        (value for value in DATA_ENCRYPTIONS.values() if value in listed), AES256_GCM
    )


def key_transport(metadata: SpMetadata) -> tuple[str, str]:
    """RSA-OAEP as the SP lists it, with the digest it lists (SHA-256 by default).

    XML Encryption 1.0's rsa-oaep-mgf1p unless the SP lists only 1.1's
    rsa-oaep; a digest the SP names that is not SHA-1 or SHA-2 is not
    used (SHA-256 instead).
    """
    methods = metadata.encryption_methods
    transport = RSA_OAEP_MGF1P
    if RSA_OAEP_11 in methods and RSA_OAEP_MGF1P not in methods:
        transport = RSA_OAEP_11
    digest = dict(getattr(metadata, "encryption_digests", ())).get(transport)
    return transport, digest if digest in OAEP_DIGESTS else OAEP_SHA256


def build(
    server: Server,
    *,
    sp: ServiceProvider,
    metadata: SpMetadata,
    acs_url: str,
    in_response_to: str | None,
    subject: Subject,
    attributes: dict[str, list[str]],
    context_class: str,
    authn_instant: dt.datetime,
    session_index: str,
    settings,
) -> str:
    """The signed (and maybe encrypted) Response, as XML text.

    pysaml2 builds the Assertion: Issuer, Subject with SubjectConfirmation
    (Recipient = the ACS, InResponseTo, NotOnOrAfter), Conditions with the
    Audience, the AuthnStatement (our SessionIndex), the attributes.
    ``Server.create_authn_response`` would make up its own SessionIndex, so
    the one step below it that accepts a whole AuthnStatement is used.
    The document is then parsed once: the assertion signed, encrypted when
    the SP publishes a key, the Response signed, and serialised once.
    """
    lifetime = settings["idp.saml.assertion_lifetime"]
    statement = AuthnStatement(
        authn_instant=instant(time_stamp=int(authn_instant.timestamp())),
        session_index=session_index,
        authn_context=AuthnContext(
            authn_context_class_ref=AuthnContextClassRef(text=context_class)
        ),
    )
    name = NameID(
        format=subject.format,
        text=subject.value,
        name_qualifier=(
            settings["idp.entity_id"]
            if subject.format != NAMEID_FORMAT_EMAILADDRESS
            else None
        ),
        sp_name_qualifier=(
            sp.entity_id if subject.format != NAMEID_FORMAT_EMAILADDRESS else None
        ),
    )
    encrypt = bool(sp.encrypt_assertion and metadata.encryption_certificates)
    response = server._authn_response(
        in_response_to,
        acs_url,
        sp.entity_id,
        identity=attributes,
        name_id=name,
        policy=ReleaseAsGiven(lifetime, mds=server.metadata),
        authn_statement=statement,
        sign_assertion=False,
        sign_response=False,
        encrypt_assertion=False,
        sign_alg=SIGNING_ALGORITHM,
        digest_alg=DIGEST_ALGORITHM,
    )
    root = parse_xml(str(response).encode("utf-8"))
    _pin_lifetime(root.find(_ASSERTION), lifetime)
    key_file, certificate = server.config.key_file, server.sec.my_cert
    if sp.sign_assertion:
        _BACKEND.sign_element(root.find(_ASSERTION), key_file, certificate)
    if encrypt:
        # Sign-then-encrypt; on any failure EncryptError propagates and no
        # Response leaves, never a plain assertion instead (SAML-35).
        assertion = root.find(_ASSERTION)
        holder = etree.SubElement(root, _ENCRYPTED_ASSERTION)
        root.insert(root.index(assertion), holder)
        holder.append(assertion)
        transport, digest = key_transport(metadata)
        _BACKEND.encrypt_element(
            assertion,
            metadata.encryption_certificates[0],
            encryption_algorithm(metadata, sp.encryption_method),
            transport,
            digest,
        )
    if sp.sign_response:
        _BACKEND.sign_element(root, key_file, certificate)
    return etree.tostring(root, encoding="unicode")


def _pin_lifetime(assertion: etree._Element, lifetime: int) -> None:
    """Every NotOnOrAfter is exactly the assertion's IssueInstant + lifetime.

    pysaml2 reads the clock once for IssueInstant and again for each
    NotOnOrAfter, whole seconds each time; a second boundary crossed in
    between made an assertion live a second longer than the setting says.
    """
    issued = xsdatetime.parse(assertion.get("IssueInstant"))
    until = (issued + dt.timedelta(seconds=lifetime)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for element in assertion.iter(_CONDITIONS, _CONFIRMATION_DATA):
        if element.get("NotOnOrAfter") is not None:
            element.set("NotOnOrAfter", until)


def build_error(
    server: Server,
    *,
    acs_url: str,
    in_response_to: str | None,
    status: tuple[str, str | None],
    message: str | None = None,
) -> str:
    """A signed Response carrying only a status (no assertion)."""
    top, second = status
    saml_status = samlp.Status(
        status_code=samlp.StatusCode(
            value=top or STATUS_REQUESTER,
            status_code=samlp.StatusCode(value=second) if second else None,
        ),
        status_message=samlp.StatusMessage(text=message) if message else None,
    )
    response = server._response(
        in_response_to,
        acs_url,
        saml_status,
        None,
        True,
        sign_alg=SIGNING_ALGORITHM,
        digest_alg=DIGEST_ALGORITHM,
    )
    return str(response)


def encode(xml: str) -> str:
    """The SAMLResponse form field of the HTTP-POST binding."""
    return base64.b64encode(xml.encode("utf-8")).decode("ascii")
