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
  encrypted) Response: a per-shape template (:class:`Shape`), parsed,
  filled in with lxml, signed in place and serialised once;
  :func:`build_error` the same for a status-only Response.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import functools
import hashlib
import hmac
import secrets
import string
import uuid
from dataclasses import dataclass

from lxml import etree
from saml2.saml import (
    NAME_FORMAT_URI,
    NAMEID_FORMAT_EMAILADDRESS,
    NAMEID_FORMAT_PERSISTENT,
    NAMEID_FORMAT_TRANSIENT,
    NAMEID_FORMAT_UNSPECIFIED,
)
from saml2.server import Server
from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from idp.identifiers import alpha2
from idp.models import PersistentNameId, ServiceProvider, User
from idp.saml.crypto import (
    AES256_GCM,
    DATA_ENCRYPTIONS,
    OAEP_DIGESTS,
    OAEP_SHA256,
    RSA_OAEP_11,
    RSA_OAEP_MGF1P,
    XmlsecBackend,
    signature_reference,
    signature_template,
)
from idp.saml.errors import (
    STATUS_INVALID_NAMEID_POLICY,
    STATUS_NO_AUTHN_CONTEXT,
    STATUS_REQUESTER,
    STATUS_RESPONDER,
    STATUS_SUCCESS,
    SamlRefused,
)
from idp.saml.registry import RELEASABLE, signing
from idp.saml.requests import AuthnRequest, RequestedContext
from idp.saml.server import attribute_uri_names
from idp.saml.sp_metadata import SpMetadata
from idp.saml.xml import DS_NS, SAML_NS, SAMLP_NS, XS_NS, XSI_NS, parser

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


# Built once, with bind parameters: building it per call cost about as much
# as running it, on every SSO, even when the value was already known.
_PERSISTENT = select(PersistentNameId.name_id).where(
    PersistentNameId.user_id == bindparam("user_id"),
    PersistentNameId.sp_id == bindparam("sp_id"),
)


def _persistent(
    dbsession: Session, user: User, sp: ServiceProvider, create: bool, known=UNKNOWN
):
    keys = {"user_id": user.id, "sp_id": sp.id}
    value = dbsession.scalar(_PERSISTENT, keys) if known is UNKNOWN else known
    if value is not None or not create:
        return value
    # Random, so two SPs cannot correlate a person by comparing (SAML-34).
    value = secrets.token_urlsafe(32)
    try:
        with dbsession.begin_nested():
            dbsession.add(PersistentNameId(user_id=user.id, sp_id=sp.id, name_id=value))
    except IntegrityError:
        # Another request made it first; (user, SP) is unique.
        return dbsession.scalar(_PERSISTENT, keys)
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


class UnknownAttribute(ValueError):
    """An attribute name outside :data:`RELEASABLE` was handed to :func:`build`."""


@dataclass(frozen=True)
class Shape:
    """What fixes a success Response's elements: one template per value.

    Everything else (IDs, times, addresses, the NameID and attribute
    values, the session and context) is filled in per Response. The SP's
    policy is part of the shape through what it decides (the NameID format,
    the attributes released, the signatures), so a policy change makes
    another shape and takes effect on the next Response; a key rollover
    changes ``certificate``. Old shapes age out of the bounded cache.
    """

    issuer: str
    certificate: str  # the signing certificate, as sent in KeyInfo
    audience: str  # the SP's entity ID
    name_id_format: str
    attributes: tuple[str, ...]  # friendly names, in the order sent
    sign_response: bool
    sign_assertion: bool


# Templates kept: a few per SP (NameID formats, attributes some users lack),
# each about 6 KB of XML text; making one again costs about 60 us.
TEMPLATE_CACHE_SIZE = 1024

# pysaml2 wrote these prefixes; SPs have received them since the start.
# (xsi only where an AttributeValue uses it.)
_NSMAP = {"ns0": SAMLP_NS, "ns1": SAML_NS}
_NSMAP_XSI = {**_NSMAP, "xsi": XSI_NS}
_ERROR_NSMAP = {"ds": DS_NS, "ns0": SAMLP_NS, "ns1": SAML_NS}
_XS_NSMAP = {"xs": XS_NS}
_P = f"{{{SAMLP_NS}}}"
_A = f"{{{SAML_NS}}}"
_XSI_TYPE = f"{{{XSI_NS}}}type"
_ENCRYPTED_ASSERTION = f"{_A}EncryptedAssertion"
NAMEID_FORMAT_ENTITY = "urn:oasis:names:tc:SAML:2.0:nameid-format:entity"
CM_BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# pysaml2's sid(): "id-" and 17 of these, 101 random bits.
_ID_ALPHABET = string.ascii_letters + string.digits
_ID_LENGTH = 17
_UNBIASED = 256 - 256 % len(_ID_ALPHABET)
# Attribute FriendlyName -> URI Name (NameFormat uri), as pysaml2's map sent them.
_URI_NAMES = attribute_uri_names()


def new_id() -> str:
    """A fresh message or assertion ID: ``id-`` and 17 random letters or digits."""
    while True:
        picked = [
            _ID_ALPHABET[byte % len(_ID_ALPHABET)]
            for byte in secrets.token_bytes(2 * _ID_LENGTH)
            if byte < _UNBIASED
        ]
        if len(picked) >= _ID_LENGTH:
            return "id-" + "".join(picked[:_ID_LENGTH])


def _issuer(parent: etree._Element, issuer: str) -> None:
    element = etree.SubElement(parent, f"{_A}Issuer", Format=NAMEID_FORMAT_ENTITY)
    element.text = issuer


def _message(nsmap: dict[str, str], issuer: str) -> etree._Element:
    """A samlp:Response with its attributes in pysaml2's order, and its Issuer."""
    response = etree.Element(f"{_P}Response", nsmap=nsmap)
    for name in ("ID", "InResponseTo", "Version", "IssueInstant", "Destination"):
        response.set(name, "")
    response.set("Version", "2.0")
    _issuer(response, issuer)
    return response


def _document(root: etree._Element) -> bytes:
    """A template as the text each Response is parsed from.

    Parsed (22 us) rather than deep-copied (15 us): the ID libxmlsec
    registers in a deep copy stays in lxml's per-thread string dictionary,
    a few dozen bytes of memory per Response that are never given back
    (bench: RSS up 2.5 MB per 15,000 Responses); a parsed document's do not.
    """
    return etree.tostring(root, encoding="UTF-8")


def _parsed(template: bytes) -> etree._Element:
    return etree.fromstring(template, parser())


@functools.lru_cache(maxsize=TEMPLATE_CACHE_SIZE)
def success_template(shape: Shape) -> bytes:
    """The success Response of ``shape``, every per-call value left empty.

    Raises :class:`UnknownAttribute`.
    """
    unknown = [name for name in shape.attributes if name not in _URI_NAMES]
    if unknown:
        raise UnknownAttribute(f"not a releasable attribute: {', '.join(unknown)}")
    response = _message(_NSMAP_XSI if shape.attributes else _NSMAP, shape.issuer)
    if shape.sign_response:
        response.append(signature_template(shape.certificate))
    status = etree.SubElement(response, f"{_P}Status")
    etree.SubElement(status, f"{_P}StatusCode", Value=STATUS_SUCCESS)

    assertion = etree.SubElement(response, f"{_A}Assertion")
    for name, value in (("Version", "2.0"), ("ID", ""), ("IssueInstant", "")):
        assertion.set(name, value)
    _issuer(assertion, shape.issuer)
    if shape.sign_assertion:
        assertion.append(signature_template(shape.certificate))

    subject = etree.SubElement(assertion, f"{_A}Subject")
    name_id = etree.SubElement(subject, f"{_A}NameID")
    if shape.name_id_format != NAMEID_FORMAT_EMAILADDRESS:
        name_id.set("NameQualifier", shape.issuer)
        name_id.set("SPNameQualifier", shape.audience)
    name_id.set("Format", shape.name_id_format)
    confirmation = etree.SubElement(
        subject, f"{_A}SubjectConfirmation", Method=CM_BEARER
    )
    data = etree.SubElement(confirmation, f"{_A}SubjectConfirmationData")
    for name in ("NotOnOrAfter", "Recipient", "InResponseTo"):
        data.set(name, "")

    conditions = etree.SubElement(assertion, f"{_A}Conditions")
    for name in ("NotBefore", "NotOnOrAfter"):
        conditions.set(name, "")
    restriction = etree.SubElement(conditions, f"{_A}AudienceRestriction")
    etree.SubElement(restriction, f"{_A}Audience").text = shape.audience

    statement = etree.SubElement(assertion, f"{_A}AuthnStatement")
    for name in ("AuthnInstant", "SessionIndex"):
        statement.set(name, "")
    context = etree.SubElement(statement, f"{_A}AuthnContext")
    etree.SubElement(context, f"{_A}AuthnContextClassRef")

    if shape.attributes:
        attributes = etree.SubElement(assertion, f"{_A}AttributeStatement")
        for friendly in shape.attributes:
            attribute = etree.SubElement(attributes, f"{_A}Attribute")
            attribute.set("Name", _URI_NAMES[friendly])
            attribute.set("NameFormat", NAME_FORMAT_URI)
            attribute.set("FriendlyName", friendly)
            # The value's prototype: copied for each further value.
            value = etree.SubElement(attribute, f"{_A}AttributeValue", nsmap=_XS_NSMAP)
            value.set(_XSI_TYPE, "xs:string")
    return _document(response)


def _fill_values(attribute: etree._Element, values: list[str]) -> None:
    prototype = attribute[0]
    if not values:
        attribute.remove(prototype)
        return
    for _ in values[1:]:
        attribute.append(copy.copy(prototype))
    # lxml escapes text (and refuses characters XML cannot carry): values
    # are user data and never become markup.
    for element, value in zip(attribute, values, strict=True):
        element.text = value


def _times(lifetime: int) -> tuple[str, str]:
    """IssueInstant (and NotBefore), and NotOnOrAfter: exactly ``lifetime`` later.

    One reading of the clock, whole seconds, so every NotOnOrAfter is the
    IssueInstant plus the lifetime exactly.
    """
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    until = now + dt.timedelta(seconds=lifetime)
    return now.strftime(_TIME_FORMAT), until.strftime(_TIME_FORMAT)


def _sign(element: etree._Element, position: int, key_file: str) -> None:
    signature = element[position]
    signature_reference(signature).set("URI", "#" + element.get("ID"))
    _BACKEND.sign_in_place(signature, key_file)


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
) -> bytes:
    """The signed (and maybe encrypted) Response, as UTF-8 XML.

    The template of its :class:`Shape` (Issuer, Status, Subject with a
    bearer SubjectConfirmation, Conditions with the Audience,
    AuthnStatement, the attributes released, each signature's template
    after its Issuer), parsed into a tree of this call's own, gets its
    values: IDs, times (NotOnOrAfter exactly ``idp.saml.assertion_lifetime``
    after IssueInstant), the ACS as Destination and Recipient, InResponseTo
    (none for IdP-initiated SSO), the NameID, SessionIndex, AuthnInstant,
    the context class and the attribute values, in the order given. Then,
    on that one tree: the Assertion signed, encrypted when the SP publishes
    a key and its policy asks, the Response signed, and one serialisation.
    Raises :class:`UnknownAttribute` for a name outside ``RELEASABLE``,
    ``SignatureError`` or ``EncryptError`` (never a plain assertion instead).
    """
    issuer = settings["idp.entity_id"]
    sign_response, sign_assertion = signing(sp, metadata)
    shape = Shape(
        issuer=issuer,
        certificate=server.sec.my_cert,
        audience=sp.entity_id,
        name_id_format=subject.format,
        attributes=tuple(attributes),
        sign_response=sign_response,
        sign_assertion=sign_assertion,
    )
    root = _parsed(success_template(shape))
    issued, until = _times(settings["idp.saml.assertion_lifetime"])

    _fill_response(root, in_response_to, issued, acs_url)

    position = 2 + shape.sign_response  # Issuer, [Signature], Status
    assertion = root[position]
    assertion.set("ID", new_id())
    assertion.set("IssueInstant", issued)
    first = 1 + shape.sign_assertion  # Issuer, [Signature]
    subject_element, conditions, statement = assertion[first : first + 3]
    subject_element[0].text = subject.value
    data = subject_element[1][0]
    data.set("NotOnOrAfter", until)
    data.set("Recipient", acs_url)
    if in_response_to:
        data.set("InResponseTo", in_response_to)
    else:
        del data.attrib["InResponseTo"]
    conditions.set("NotBefore", issued)
    conditions.set("NotOnOrAfter", until)
    statement.set(
        "AuthnInstant",
        dt.datetime.fromtimestamp(int(authn_instant.timestamp()), dt.UTC).strftime(
            _TIME_FORMAT
        ),
    )
    statement.set("SessionIndex", session_index)
    statement[0][0].text = context_class
    if attributes:
        for element, values in zip(
            assertion[first + 3], attributes.values(), strict=True
        ):
            _fill_values(element, values)

    key_file = server.config.key_file
    if shape.sign_assertion:
        _sign(assertion, 1, key_file)
    if sp.encrypt_assertion and metadata.encryption_certificates:
        # Sign-then-encrypt; on any failure EncryptError propagates and no
        # Response leaves, never a plain assertion instead (SAML-35).
        holder = etree.Element(_ENCRYPTED_ASSERTION)
        root.replace(assertion, holder)
        holder.append(assertion)
        transport, digest = key_transport(metadata)
        _BACKEND.encrypt_element(
            assertion,
            metadata.encryption_certificates[0],
            encryption_algorithm(metadata, sp.encryption_method),
            transport,
            digest,
        )
    if shape.sign_response:
        _sign(root, 1, key_file)
    return etree.tostring(root, encoding="UTF-8")


@functools.lru_cache(maxsize=16)
def error_template(issuer: str, certificate: str) -> bytes:
    """An error Response (signed, no assertion) with its Status left empty.

    The signature is shaped as pysaml2 sent it: ``Id="Signature1"``, no
    whitespace, its namespace declared on the Response.
    """
    response = _message(_ERROR_NSMAP, issuer)
    signature = signature_template(certificate)
    for element in signature.iter():
        element.tail = None
        if element.text is not None and not element.text.strip():
            element.text = None
    signature.set("Id", "Signature1")
    response.append(signature)
    etree.SubElement(response, f"{_P}Status")
    return _document(response)


def _fill_response(
    root: etree._Element, in_response_to: str | None, issued: str, acs_url: str
) -> None:
    """The Response element's own ID, InResponseTo (None: unsolicited), time
    and Destination, in a fresh copy of a template."""
    root.set("ID", new_id())
    if in_response_to:
        root.set("InResponseTo", in_response_to)
    else:
        del root.attrib["InResponseTo"]
    root.set("IssueInstant", issued)
    root.set("Destination", acs_url)


def build_error(
    server: Server,
    *,
    acs_url: str,
    in_response_to: str | None,
    status: tuple[str | None, str | None],
    message: str | None = None,
) -> bytes:
    """A signed Response carrying only a status (no assertion), as UTF-8 XML.

    ``status`` is the top-level code (Requester when None) and the
    second-level one, if any; ``message`` goes into StatusMessage.
    """
    root = _parsed(error_template(server.config.entityid, server.sec.my_cert))
    issued, _ = _times(0)
    _fill_response(root, in_response_to, issued, acs_url)
    top, second = status
    code = etree.SubElement(root[2], f"{_P}StatusCode", Value=top or STATUS_REQUESTER)
    if second:
        etree.SubElement(code, f"{_P}StatusCode", Value=second)
    if message:
        etree.SubElement(root[2], f"{_P}StatusMessage").text = message
    _sign(root, 1, server.config.key_file)
    return etree.tostring(root, encoding="UTF-8")


def encode(xml: bytes) -> str:
    """The SAMLResponse form field of the HTTP-POST binding."""
    return base64.b64encode(xml).decode("ascii")
