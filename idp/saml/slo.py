"""Single logout: end the IdP session, then tell every service it reached.

A logout starts from a service's signed LogoutRequest or from sign-out at
the IdP. The IdP session ends at once — whatever the services do next, the
person is signed out of idMe. Each other service the session sent an
assertion to becomes a *leg* of a :class:`~idp.models.LogoutFlow`: the
status page loads every leg in its own frame at the same time (front
channel: the browser carries a signed LogoutRequest to the service and its
LogoutResponse back), so a service that fails or never answers holds up no
other, and the flow ends when all have answered or its deadline
(``idp.saml.logout_seconds``) has passed. A service-initiated logout is
then answered with a signed LogoutResponse: Success, or PartialLogout when
some service did not confirm.

SAML-26: a LogoutRequest must be signed by a registered SP, and its NameID
and SessionIndex must be exactly what that SP was sent; otherwise no one is
logged out.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, samlp
from saml2.saml import NAMEID_FORMAT_EMAILADDRESS, NameID
from saml2.server import Server
from sqlalchemy import select
from sqlalchemy.orm import Session

from idp.models import (
    IdpSession,
    LogoutFlow,
    LogoutLeg,
    ServiceProvider,
    SessionParticipant,
)
from idp.redirects import origin
from idp.saml.config import DIGEST_ALGORITHM, SIGNING_ALGORITHM
from idp.saml.errors import (
    STATUS_PARTIAL_LOGOUT,
    STATUS_RESPONDER,
    STATUS_SUCCESS,
    STATUS_UNKNOWN_PRINCIPAL,
    SamlRefused,
)
from idp.saml.registry import usable_metadata
from idp.saml.requests import (
    Received,
    check_destination,
    check_fresh,
    check_not_replayed,
    verify,
)
from idp.saml.sp_metadata import Endpoint
from idp.saml.xml import SAML_NS, SAMLP_NS

_LOGOUT_REQUEST = f"{{{SAMLP_NS}}}LogoutRequest"
_LOGOUT_RESPONSE = f"{{{SAMLP_NS}}}LogoutResponse"
_NAME_ID = f"{{{SAML_NS}}}NameID"
_SESSION_INDEX = f"{{{SAMLP_NS}}}SessionIndex"
_STATUS_CODE = f"{{{SAMLP_NS}}}Status/{{{SAMLP_NS}}}StatusCode"

# Leg states: told (sent) or not yet; answered done/failed; or no answer.
PENDING, SENT, DONE, FAILED, TIMED_OUT = "pending", "sent", "done", "failed", "timeout"
FLOW_LIFETIME = dt.timedelta(hours=1)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --------------------------------------------------------------------------
# Incoming LogoutRequest


@dataclass(frozen=True)
class LogoutRequestIn:
    id: str
    sp: ServiceProvider
    name_id: str
    name_id_format: str | None
    session_indexes: tuple[str, ...]
    relay_state: str | None


def receive_logout_request(
    dbsession: Session, received: Received, *, destination: str, settings
) -> LogoutRequestIn:
    """A LogoutRequest from an SP: always signed, fresh, never replayed."""
    verified = verify(
        dbsession,
        received,
        expect=(_LOGOUT_REQUEST,),
        require_signature=True,
        settings=settings,
    )
    check_destination(verified, destination)
    names = [c for c in verified.root if c.tag == _NAME_ID]
    if len(names) != 1 or len(names[0]):
        raise SamlRefused("saml_bad_message", "need one plain NameID")
    expires_at = check_fresh(verified, settings)
    check_not_replayed(dbsession, verified, expires_at)
    return LogoutRequestIn(
        id=verified.id,
        sp=verified.sp,
        name_id=names[0].text or "",
        name_id_format=names[0].get("Format"),
        session_indexes=tuple(
            c.text or "" for c in verified.root if c.tag == _SESSION_INDEX
        ),
        relay_state=received.relay_state,
    )


def sessions_named(dbsession: Session, request: LogoutRequestIn) -> list[IdpSession]:
    """The IdP sessions whose record of this SP matches the request exactly.

    The NameID (and the SessionIndex, when given) must be what this very SP
    was sent; another SP's NameID or an unknown SessionIndex matches
    nothing (SAML-26).
    """
    query = select(SessionParticipant).where(
        SessionParticipant.sp_id == request.sp.id,
        SessionParticipant.name_id == request.name_id,
    )
    if request.session_indexes:
        query = query.where(
            SessionParticipant.session_index.in_(request.session_indexes)
        )
    sessions: dict = {}
    for participant in dbsession.scalars(query):
        if participant.name_id != request.name_id:  # exact, whatever the collation
            continue
        sessions[participant.session_id] = participant.session
    return list(sessions.values())


# --------------------------------------------------------------------------
# The flow


def start(
    dbsession: Session,
    sessions: list[IdpSession],
    *,
    settings,
    initiator: LogoutRequestIn | None = None,
    keep: IdpSession | None = None,
) -> str:
    """End ``sessions`` and open a flow telling each other SP; its token.

    ``keep`` is the browser's own session, which the caller ends through the
    session object (so its cookie is cleared too).
    """
    now = _now()
    flow = LogoutFlow(
        token_hash="",
        user_id=next((s.user_id for s in sessions if s.user_id), None),
        initiator_sp_id=initiator.sp.id if initiator else None,
        initiator_request_id=initiator.id if initiator else None,
        relay_state=initiator.relay_state if initiator else None,
        created_at=now,
        deadline_at=now + dt.timedelta(seconds=settings["idp.saml.logout_seconds"]),
        expires_at=now + FLOW_LIFETIME,
    )
    token = secrets.token_urlsafe(32)
    flow.token_hash = _hash(token)
    seen: set[tuple[int, str]] = set()
    for session in sessions:
        for participant in session.participants:
            if initiator is not None and participant.sp_id == initiator.sp.id:
                continue
            key = (participant.sp_id, participant.session_index)
            if key in seen:
                continue
            seen.add(key)
            flow.legs.append(
                LogoutLeg(
                    sp_id=participant.sp_id,
                    token_hash=_hash(secrets.token_urlsafe(32)),
                    name_id=participant.name_id,
                    name_id_format=participant.name_id_format,
                    session_index=participant.session_index,
                    status=PENDING,
                    updated_at=now,
                )
            )
    dbsession.add(flow)
    for session in sessions:
        if session is not keep:
            dbsession.delete(session)
    dbsession.flush()
    return token


def leg_tokens(dbsession: Session, flow: LogoutFlow) -> dict[int, str]:
    """Fresh tokens for the legs not yet sent (shown once, in frame URLs)."""
    tokens = {}
    for leg in flow.legs:
        if leg.status == PENDING:
            token = secrets.token_urlsafe(32)
            leg.token_hash = _hash(token)
            tokens[leg.id] = token
    dbsession.flush()
    return tokens


def find_flow(dbsession: Session, token: str) -> LogoutFlow:
    if not token or len(token) > 128:
        raise SamlRefused("saml_logout_expired", "no token", status=404)
    flow = dbsession.scalar(
        select(LogoutFlow).where(LogoutFlow.token_hash == _hash(token))
    )
    if flow is None or flow.expires_at <= _now():
        raise SamlRefused("saml_logout_expired", "unknown or expired flow", status=404)
    return flow


def settle(flow: LogoutFlow) -> bool:
    """True once every leg has answered or the deadline has passed."""
    now = _now()
    if now >= flow.deadline_at:
        for leg in flow.legs:
            if leg.status in (PENDING, SENT):
                leg.status = TIMED_OUT
                leg.updated_at = now
    return all(leg.status in (DONE, FAILED, TIMED_OUT) for leg in flow.legs)


def slo_endpoint(sp: ServiceProvider) -> Endpoint | None:
    """The SP's SingleLogoutService: Redirect preferred, else POST."""
    metadata = usable_metadata(sp)
    if metadata is None:
        return None
    endpoints = metadata.single_logout_services
    for binding in (BINDING_HTTP_REDIRECT, BINDING_HTTP_POST):
        for endpoint in endpoints:
            if endpoint.binding == binding:
                return endpoint
    return None


@dataclass(frozen=True)
class Outgoing:
    """A message for the browser to carry: a redirect URL or a POST form."""

    binding: str
    url: str
    fields: dict[str, str]


def _carry(server: Server, binding: str, xml: str, url: str, relay_state, response):
    if binding == BINDING_HTTP_REDIRECT:
        info = server.apply_binding(
            BINDING_HTTP_REDIRECT,
            xml,
            url,
            relay_state=relay_state or "",
            response=response,
            sign=True,
            sigalg=SIGNING_ALGORITHM,
        )
        location = dict(info["headers"])["Location"]
        return Outgoing(binding, location, {})
    field = "SAMLResponse" if response else "SAMLRequest"
    fields = {field: base64.b64encode(xml.encode("utf-8")).decode("ascii")}
    if relay_state is not None:
        fields["RelayState"] = relay_state
    return Outgoing(binding, url, fields)


def _name_id(leg: LogoutLeg, settings) -> NameID:
    """The NameID exactly as the SP received it in the assertion."""
    qualified = leg.name_id_format != NAMEID_FORMAT_EMAILADDRESS
    return NameID(
        format=leg.name_id_format,
        text=leg.name_id,
        name_qualifier=settings["idp.entity_id"] if qualified else None,
        sp_name_qualifier=leg.sp.entity_id if qualified else None,
    )


def leg_request(
    dbsession: Session, server: Server, token: str, settings
) -> tuple[LogoutLeg, Outgoing | None]:
    """The signed LogoutRequest for one leg (at most once); None if it has no SLO."""
    leg = dbsession.scalar(
        select(LogoutLeg).where(LogoutLeg.token_hash == _hash(token))
    )
    if leg is None or leg.status != PENDING or leg.flow.expires_at <= _now():
        raise SamlRefused("saml_logout_expired", "unknown or used leg", status=404)
    endpoint = slo_endpoint(leg.sp) if leg.sp.enabled else None
    if endpoint is None:
        leg.status = FAILED
        leg.updated_at = _now()
        return leg, None
    sign_xml = endpoint.binding == BINDING_HTTP_POST
    request_id, message = server.create_logout_request(
        endpoint.location,
        leg.sp.entity_id,
        name_id=_name_id(leg, settings),
        session_indexes=[leg.session_index],
        expire=None,
        sign=sign_xml,
        sign_alg=SIGNING_ALGORITHM,
        digest_alg=DIGEST_ALGORITHM,
    )
    leg.request_id = request_id
    leg.status = SENT
    leg.updated_at = _now()
    dbsession.flush()
    return leg, _carry(
        server, endpoint.binding, str(message), endpoint.location, None, False
    )


# --------------------------------------------------------------------------
# Incoming LogoutResponse


def receive_logout_response(
    dbsession: Session, received: Received, *, destination: str, settings
) -> LogoutLeg:
    """An SP's answer to one of our LogoutRequests: signed, matching, once."""
    verified = verify(
        dbsession,
        received,
        expect=(_LOGOUT_RESPONSE,),
        require_signature=True,
        settings=settings,
    )
    check_destination(verified, destination)
    check_fresh(verified, settings)
    in_response_to = verified.root.get("InResponseTo") or ""
    leg = dbsession.scalar(
        select(LogoutLeg).where(LogoutLeg.request_id == in_response_to)
    )
    if leg is None or leg.sp_id != verified.sp.id or leg.status != SENT:
        raise SamlRefused("saml_logout_expired", "no logout awaits this answer")
    code = verified.root.find(_STATUS_CODE)
    leg.status = (
        DONE if code is not None and code.get("Value") == STATUS_SUCCESS else FAILED
    )
    leg.updated_at = _now()
    dbsession.flush()
    return leg


# --------------------------------------------------------------------------
# Answers to the initiating SP


def answer(
    server: Server,
    sp: ServiceProvider,
    in_response_to: str,
    relay_state: str | None,
    status: tuple[str, str | None],
) -> Outgoing | None:
    """A signed LogoutResponse to ``sp``'s SLO endpoint (None if it has none)."""
    endpoint = slo_endpoint(sp)
    if endpoint is None:
        return None
    url = endpoint.response_location or endpoint.location
    top, second = status
    saml_status = samlp.Status(
        status_code=samlp.StatusCode(
            value=top,
            status_code=samlp.StatusCode(value=second) if second else None,
        )
    )
    message = server._status_response(
        samlp.LogoutResponse,
        server._issuer(),
        saml_status,
        sign=endpoint.binding == BINDING_HTTP_POST,
        sign_alg=SIGNING_ALGORITHM,
        digest_alg=DIGEST_ALGORITHM,
        in_response_to=in_response_to,
        destination=url,
    )
    return _carry(server, endpoint.binding, str(message), url, relay_state, True)


def flow_status(flow: LogoutFlow) -> tuple[str, str | None]:
    """Success when every service confirmed, else Success/PartialLogout."""
    if all(leg.status == DONE for leg in flow.legs):
        return (STATUS_SUCCESS, None)
    return (STATUS_SUCCESS, STATUS_PARTIAL_LOGOUT)


UNKNOWN_PRINCIPAL = (STATUS_RESPONDER, STATUS_UNKNOWN_PRINCIPAL)


def origins(flow: LogoutFlow) -> list[str]:
    """The SLO origins the status page's frames may load (its CSP frame-src)."""
    found = []
    for leg in flow.legs:
        endpoint = slo_endpoint(leg.sp)
        if endpoint is not None:
            source = origin(endpoint.location)
            if source not in found:
                found.append(source)
    return found
