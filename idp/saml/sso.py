"""Single sign-on: from a checked AuthnRequest or an IdP-initiated start to a Response.

The views (``idp/views/saml.py``) call in here with plain values and get
back plain values; this module and ``idp/saml/response.py`` are the only
ones that talk to pysaml2 for SSO.

* :func:`park` stores a request server-side while the user signs in (and
  always for the POST binding, whose cross-site POST carries no
  SameSite=Lax cookie), and :func:`resume` takes it back, once.
* :func:`may_reach` is the role gate (SAML-32): a user reaches an SP only
  through a role granting the SP's module, checked at every SSO.
* :func:`assertion_for` makes the Response and records the SP as a
  participant of the IdP session, for single logout.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import cast

from lxml import etree
from sqlalchemy import CursorResult, and_, delete, select, update
from sqlalchemy.orm import Session

from idp.models import (
    IdpSession,
    PendingSamlRequest,
    Role,
    ServiceProvider,
    SessionParticipant,
    User,
)
from idp.models.role import role_modules, user_roles
from idp.saml import response as responses
from idp.saml.crypto import parse_xml
from idp.saml.registry import sp_metadata, usable_metadata
from idp.saml.requests import (
    AuthnRequest,
    Reply,
    SamlRefused,
    reparse_authn_request,
    resolve_acs,
)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def park(
    dbsession: Session,
    request: AuthnRequest,
    xml: bytes,
    binding: str,
    settings,
) -> str:
    """Store a checked request; the returned token continues it, once."""
    token = secrets.token_urlsafe(32)
    now = dt.datetime.now(dt.UTC)
    dbsession.add(
        PendingSamlRequest(
            token_hash=_hash(token),
            sp_id=request.sp_id,
            binding=binding,
            request_xml=_as_text(xml),
            relay_state=request.relay_state,
            created_at=now,
            expires_at=now + dt.timedelta(seconds=settings["idp.saml.pending_seconds"]),
        )
    )
    dbsession.flush()
    purge_expired(dbsession, PendingSamlRequest)
    return token


def purge_expired(dbsession: Session, model, limit: int = 20) -> None:
    """Delete a few expired rows of ``model`` (by ``expires_at``) per call.

    Each new row pays for the removal of a few dead ones, so the table stays
    small without a scheduled job; ``SKIP LOCKED`` (PostgreSQL) keeps two
    nodes from waiting on each other's purge.
    """
    now = dt.datetime.now(dt.UTC)
    ids = select(model.id).where(model.expires_at < now).limit(limit)
    if dbsession.get_bind().dialect.name == "postgresql":
        ids = ids.with_for_update(skip_locked=True)
    found = list(dbsession.scalars(ids))
    if found:
        dbsession.execute(
            delete(model)
            .where(model.id.in_(found))
            .execution_options(synchronize_session=False)
        )


def _as_text(xml: bytes) -> str:
    """The request as text, whatever encoding it declared (checked on arrival)."""
    try:
        return xml.decode("utf-8")
    except UnicodeDecodeError:
        return etree.tostring(parse_xml(xml), encoding="unicode")


@dataclass(frozen=True)
class Resumed:
    request: AuthnRequest
    token: str
    arrived_at: dt.datetime


def resume(dbsession: Session, token: str, settings) -> Resumed:
    """The parked request for ``token``; refused once used or expired."""
    if not token or len(token) > 128:
        raise SamlRefused("saml_expired", "no token")
    row = dbsession.scalar(
        select(PendingSamlRequest).where(PendingSamlRequest.token_hash == _hash(token))
    )
    now = dt.datetime.now(dt.UTC)
    if row is None or row.consumed_at is not None or row.expires_at <= now:
        raise SamlRefused("saml_expired", "unknown, used or expired token")
    request = reparse_authn_request(
        dbsession,
        row.request_xml.encode("utf-8"),
        row.relay_state,
        row.binding,
        settings,
    )
    return Resumed(request, token, row.created_at)


def is_waiting(dbsession: Session, token: str) -> bool:
    """Whether ``token`` still continues a parked request (not used, not expired)."""
    if not token or len(token) > 128:
        return False
    row = dbsession.scalar(
        select(PendingSamlRequest).where(PendingSamlRequest.token_hash == _hash(token))
    )
    now = dt.datetime.now(dt.UTC)
    return row is not None and row.consumed_at is None and row.expires_at > now


def finish(dbsession: Session, token: str | None) -> bool:
    """Mark a parked request answered; False if another request did first."""
    if token is None:
        return True
    done = dbsession.execute(
        update(PendingSamlRequest)
        .where(
            PendingSamlRequest.token_hash == _hash(token),
            PendingSamlRequest.consumed_at.is_(None),
        )
        .values(consumed_at=dt.datetime.now(dt.UTC))
        .execution_options(synchronize_session=False)
    )
    # An UPDATE's result is a CursorResult; Session.execute is typed wider.
    return cast(CursorResult, done).rowcount == 1


@dataclass(frozen=True)
class Access:
    """Whether a user's roles reach an SP, and the roles' names (one query)."""

    allowed: bool
    roles: tuple[str, ...]

    def __bool__(self) -> bool:
        return self.allowed


def may_reach(dbsession: Session, user: User, sp: ServiceProvider) -> Access:
    """Does one of the user's roles grant the SP's module? (SAML-32)

    Checked at every SSO, in the same query that reads the role names the
    assertion releases.
    """
    rows = dbsession.execute(
        select(Role.name, role_modules.c.module_id)
        .join(user_roles, user_roles.c.role_id == Role.id)
        .outerjoin(
            role_modules,
            and_(
                role_modules.c.role_id == Role.id,
                role_modules.c.module_id == sp.module_id,
            ),
        )
        .where(user_roles.c.user_id == user.id)
    ).all()
    allowed = sp.module_id is not None and any(m is not None for _, m in rows)
    return Access(allowed, tuple(sorted({name for name, _ in rows})))


def service_name(sp: ServiceProvider, locale: str) -> str:
    """The SP's display name in ``locale``: mdui, then its module, then entity ID."""
    metadata = usable_metadata(sp)
    names = metadata.display_names if metadata is not None else {}
    if names.get(locale):
        return names[locale]
    if sp.module is not None:
        return getattr(sp.module, f"display_name_{locale}", None) or sp.module.code
    return next(iter(names.values()), sp.entity_id)


def idp_initiated_reply(sp: ServiceProvider, relay_state: str | None) -> Reply:
    """Unsolicited SSO goes to the SP's default ACS, answering no request."""
    metadata = usable_metadata(sp)
    if metadata is None:
        raise SamlRefused("saml_sp_disabled", sp.entity_id, status=403)
    acs = resolve_acs(metadata, None, None, None)
    return Reply(sp.id, sp.entity_id, acs.location, "", relay_state)


def _participant(
    dbsession: Session, session_row: IdpSession, sp: ServiceProvider, subject
) -> SessionParticipant:
    """This session's record of ``sp``: one per SP, refreshed per assertion."""
    participant = dbsession.scalar(
        select(SessionParticipant).where(
            SessionParticipant.session_id == session_row.id,
            SessionParticipant.sp_id == sp.id,
        )
    )
    if participant is None:
        participant = SessionParticipant(session_id=session_row.id, sp_id=sp.id)
        dbsession.add(participant)
    participant.name_id = subject.value
    participant.name_id_format = subject.format
    participant.session_index = responses.session_index()
    return participant


def assertion_for(
    dbsession: Session,
    server,
    *,
    user: User,
    session_row: IdpSession,
    sp: ServiceProvider,
    reply: Reply,
    request: AuthnRequest | None,
    roles: tuple[str, ...],
    settings,
) -> str:
    """The signed Response for ``user`` at ``sp``, recorded for logout.

    Raises :class:`SamlRefused` (with ``reply`` set) for NoAuthnContext and
    InvalidNameIDPolicy.
    """
    metadata = sp_metadata(sp)
    try:
        context = responses.authn_context(
            request.requested_context if request else None, sp, settings
        )
        subject = responses.name_id(dbsession, user, sp, request)
    except SamlRefused as exc:
        raise exc.with_reply(reply) from None
    participant = _participant(dbsession, session_row, sp, subject)
    xml = responses.build(
        server,
        sp=sp,
        metadata=metadata,
        acs_url=reply.acs_url,
        in_response_to=reply.in_response_to or None,
        subject=subject,
        attributes=responses.attributes(user, sp, list(roles), settings),
        context_class=context,
        authn_instant=session_row.authn_at or dt.datetime.now(dt.UTC),
        session_index=participant.session_index,
        settings=settings,
    )
    dbsession.flush()
    return responses.encode(xml)


def error_response(server, reply: Reply, status, message: str | None = None) -> str:
    """A signed error Response for a trusted reply address."""
    xml = responses.build_error(
        server,
        acs_url=reply.acs_url,
        in_response_to=reply.in_response_to or None,
        status=status,
        message=message,
    )
    return responses.encode(xml)
