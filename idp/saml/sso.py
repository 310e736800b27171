"""Single sign-on: from a checked AuthnRequest or an IdP-initiated start to a Response.

The views (``idp/views/saml.py``) call in here with plain values and get
back plain values; this module and ``idp/saml/response.py`` are the only
ones that talk to pysaml2 for SSO.

* Every way SSO begins becomes one :class:`Start`: an AuthnRequest over
  HTTP-Redirect (:func:`redirected`) or HTTP-POST (:func:`posted`), a parked
  request continued after the sign-in (:func:`resume`), or a portal link
  (:func:`idp_initiated`). Each refuses what it cannot check with
  :class:`SamlRefused`.
* :func:`decide` is the one place that says what happens to a start, from
  plain facts; :func:`answer` does it (parks, signs, records) and returns
  one :class:`Answer`, which the view only renders. The sign-in pages and
  the forced password change continue at the same view, so they meet the
  same decision.
* :func:`park` stores a request server-side while the user signs in (and
  always for the POST binding, whose cross-site POST carries no
  SameSite=Lax cookie), and :func:`resume` takes it back, once.
* :func:`may_reach` is the role gate (SAML-32): a user reaches an SP only
  through a role granting the SP's module, checked at every SSO.
* :func:`assertion_for` makes the Response and records the SP as a
  participant of the IdP session, for single logout.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from lxml import etree
from sqlalchemy import (
    CursorResult,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Session

from idp.db import PlainSql, execute_write, plain_value, utc_from_row
from idp.models import (
    IdpSession,
    PendingSamlRequest,
    ServiceProvider,
    SessionParticipant,
    User,
)
from idp.saml import response as responses
from idp.saml.errors import STATUS_NO_PASSIVE, STATUS_RESPONDER, Reply, SamlRefused
from idp.saml.registry import REGISTRY_STATE_ID, sp_metadata, usable_metadata
from idp.saml.requests import (
    AuthnRequest,
    Discover,
    Received,
    from_post,
    from_redirect,
    one_relay_state,
    receive_authn_request,
    record,
    reparse_authn_request,
    resolve_acs,
    usable_sp,
)
from idp.saml.server import ServerCache
from idp.saml.tally import SsoTally
from idp.saml.xml import parse_xml

# --------------------------------------------------------------------------
# Starts: every way single sign-on begins, checked


@dataclass(frozen=True)
class Start:
    """One checked start of single sign-on, whichever way it came.

    ``reply`` is where the answer goes (the request's ACS, or the SP's
    default one for IdP-initiated SSO); ``request`` the SP's AuthnRequest,
    None for IdP-initiated SSO, which answers no request; ``arrived_at``
    when the request reached the IdP (ForceAuthn wants a sign-in after it);
    ``token`` continues the request once parked, ``received`` is the message
    as it arrived, kept to park it; ``cross_site`` says it came in a
    cross-site POST, which carries no SameSite=Lax cookie.
    """

    sp: ServiceProvider = field(repr=False)
    reply: Reply
    arrived_at: dt.datetime
    request: AuthnRequest | None = None
    token: str | None = field(default=None, repr=False)
    received: Received | None = field(default=None, repr=False)
    cross_site: bool = False

    @property
    def force_authn(self) -> bool:
        return self.request is not None and self.request.force_authn

    @property
    def is_passive(self) -> bool:
        return self.request is not None and self.request.is_passive


def _start(
    dbsession: Session,
    request: AuthnRequest,
    *,
    arrived_at: dt.datetime,
    token: str | None = None,
    received: Received | None = None,
    cross_site: bool = False,
) -> Start:
    # The SP row travels with the request from its checks: no second query.
    sp = request.sp or dbsession.get_one(ServiceProvider, request.sp_id)
    return Start(
        sp,
        request.reply(),
        arrived_at,
        request=request,
        token=token,
        received=received,
        cross_site=cross_site,
    )


def redirected(
    dbsession: Session,
    query_string: str,
    *,
    destination: str,
    settings,
    discover: Discover | None = None,
) -> Start:
    """An AuthnRequest sent with the HTTP-Redirect binding, checked.

    ``discover`` looks up an unknown issuer (:class:`idp.saml.mdq.Discovery`).
    """
    arrived_at = dt.datetime.now(dt.UTC)
    received = from_redirect(query_string)
    request = receive_authn_request(
        dbsession,
        received,
        destination=destination,
        settings=settings,
        discover=discover,
    )
    return _start(dbsession, request, arrived_at=arrived_at, received=received)


def posted(
    dbsession: Session,
    params,
    *,
    destination: str,
    settings,
    discover: Discover | None = None,
) -> Start:
    """An AuthnRequest sent with the HTTP-POST binding (``params``), checked."""
    arrived_at = dt.datetime.now(dt.UTC)
    received = from_post(params)
    request = receive_authn_request(
        dbsession,
        received,
        destination=destination,
        settings=settings,
        discover=discover,
    )
    return _start(
        dbsession, request, arrived_at=arrived_at, received=received, cross_site=True
    )


def idp_initiated(
    dbsession: Session, sp_key: str, relay_states: list[str]
) -> Start | None:
    """Unsolicited SSO to the SP numbered ``sp_key`` (a portal link); None if none.

    The answer goes to the SP's default ACS and answers no request. The
    link's RelayState follows the rule an SP's request does (SAML-22/23,
    :func:`one_relay_state`): a link anyone can craft is no more trusted.
    """
    if not sp_key.isdigit() or len(sp_key) > 12:
        return None
    sp = dbsession.get(ServiceProvider, int(sp_key))
    if sp is None:
        return None
    relay_state = one_relay_state(relay_states, sp.relay_state_max)
    acs = resolve_acs(usable_sp(sp), None, None, None)
    reply = Reply(sp.id, sp.entity_id, acs.location, "", relay_state)
    return Start(sp, reply, dt.datetime.now(dt.UTC))


# --------------------------------------------------------------------------
# Parking a request while the user signs in


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
    return token


def _as_text(xml: bytes) -> str:
    """The request as text, whatever encoding it declared (checked on arrival)."""
    try:
        return xml.decode("utf-8")
    except UnicodeDecodeError:
        return etree.tostring(parse_xml(xml), encoding="unicode")


def resume(dbsession: Session, token: str, settings) -> Start:
    """The parked request for ``token``; refused once used or expired.

    The SP is looked up again (:func:`reparse_authn_request`), so one
    switched off meanwhile is refused, and the token kept: the request is
    answered if the SP is switched on again before it expires.
    """
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
    return _start(dbsession, request, arrived_at=row.created_at, token=token)


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


# --------------------------------------------------------------------------
# The decision


@dataclass(frozen=True)
class SignedIn:
    """The signed-in user who follows a start, and their IdP session."""

    user: User
    session: IdpSession = field(repr=False)
    authn_at: dt.datetime | None = None

    def fresh_for(self, start: Start) -> bool:
        """Whether the sign-in is recent enough: after the request, if ForceAuthn."""
        return not start.force_authn or (
            self.authn_at is not None and self.authn_at >= start.arrived_at
        )


class Outcome(enum.StrEnum):
    """What single sign-on does with a start; see :func:`decide`."""

    CONTINUE = "continue"
    CHANGE_PASSWORD = "change-password"  # noqa: S105 (an outcome, not a password)
    SIGN_IN = "sign-in"
    NO_PASSIVE = "no-passive"
    NO_ACCESS = "no-access"
    ASSERTION = "assertion"
    REFUSED = "refused"


@dataclass(frozen=True)
class Answer:
    """The one answer to a start, for the view to render.

    * ``CONTINUE``: a cross-site POST, parked; continue with ``token`` on
      this site, where the session cookie is sent.
    * ``SIGN_IN``: sign in (again, for ForceAuthn) first; the request waits
      under ``token`` (None for IdP-initiated SSO: the link itself is
      followed again).
    * ``CHANGE_PASSWORD``: the temporary password is replaced first
      (AUTH-13); then ``token`` continues, through the sign-in if
      ``reauthenticate``.
    * ``NO_PASSIVE``: IsPassive could not be met without a page; the signed
      error Response ``saml_response`` goes straight back to ``reply``.
    * ``NO_ACCESS``: no role grants ``sp``'s module (SAML-32): a page, and
      nothing for the SP.
    * ``ASSERTION``: the signed Response ``saml_response``, posted to ``reply``.
    * ``REFUSED``: the page for ``refusal``, which carries an error Response
      when its reply address is trusted.
    """

    outcome: Outcome
    reply: Reply | None = None
    saml_response: str | None = field(default=None, repr=False)
    refusal: SamlRefused | None = None
    sp: ServiceProvider | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    reauthenticate: bool = False


def decide(
    start: Start,
    signed_in: Callable[[], SignedIn | None],
    access: Callable[[User], Access],
) -> Outcome:
    """What happens to ``start``: the one place SSO decides, with no side effects.

    ``signed_in`` (None: nobody) and ``access`` (the role gate for a user)
    cost a query each, so they are asked for only when the answer depends on
    them. In order:

    1. a cross-site POST carries no session cookie: ``CONTINUE`` on this
       site, whoever sent it;
    2. a user who must replace a temporary password gets nothing before
       (AUTH-13): ``CHANGE_PASSWORD``;
    3. nobody signed in, or ForceAuthn and a sign-in older than the
       request: ``SIGN_IN``;
    4. IsPassive turns 2 and 3 into ``NO_PASSIVE``: never a page of ours;
    5. the role gate (SAML-32): ``NO_ACCESS``;
    6. ``ASSERTION``.

    A switched-off SP never gets here: each start refuses it
    (:func:`usable_sp`). ``REFUSED`` comes later, from the assertion itself.
    """
    if start.cross_site:
        return Outcome.CONTINUE
    who = signed_in()
    if who is not None and who.user.must_change_password:
        return Outcome.NO_PASSIVE if start.is_passive else Outcome.CHANGE_PASSWORD
    if who is None or not who.fresh_for(start):
        return Outcome.NO_PASSIVE if start.is_passive else Outcome.SIGN_IN
    if not access(who.user):
        return Outcome.NO_ACCESS
    return Outcome.ASSERTION


def answer(
    dbsession: Session,
    start: Start,
    signed_in: Callable[[], SignedIn | None],
    *,
    servers: ServerCache,
    audit: Callable[[], Any],
    address: str | None,
    settings,
    tally: SsoTally | None = None,
) -> Answer:
    """Decide (:func:`decide`) and do it: park, sign, record; one :class:`Answer`.

    The request's replay record (SAML-17, :func:`record`) is written first
    for every answer but an assertion, which writes it after signing.
    ``tally`` counts each assertion for the console's charts
    (:mod:`idp.saml.tally`). ``servers`` gives the pysaml2 ``Server``
    (asked for only to sign), ``audit()`` the audit log that records a
    refusal by the role gate, from ``address``. A parked request is marked
    answered by its final answer; an assertion for one answered meanwhile
    (another tab, a replayed continuation) is ``REFUSED`` instead.
    """
    signed_in = functools.cache(signed_in)
    read: list[Access] = []

    def access(user: User) -> Access:
        who = signed_in()
        facts = may_reach(
            dbsession,
            user,
            start.sp,
            who.session if who is not None else None,
            start.request,
        )
        read.append(facts)
        return facts

    access = functools.cache(access)
    outcome = decide(start, signed_in, access)
    if outcome is Outcome.ASSERTION:
        answer = _assertion(dbsession, start, signed_in(), access, servers, settings)
        if tally is not None and answer.outcome is Outcome.ASSERTION:
            tally.count(start.sp.id)
            if tally.due():
                tally.flush(dbsession)
        return answer
    try:
        # Answers without a signature record their request first (the role
        # gate's statement may have, on PostgreSQL).
        recorded_request(dbsession, start.request, read[0] if read else None)
    except SamlRefused as exc:
        return Answer(Outcome.REFUSED, reply=exc.reply, refusal=exc)
    if outcome in (Outcome.CONTINUE, Outcome.SIGN_IN, Outcome.CHANGE_PASSWORD):
        pending = signed_in() if outcome is Outcome.CHANGE_PASSWORD else None
        return Answer(
            outcome,
            reply=start.reply,
            token=_parked(dbsession, start, settings),
            reauthenticate=pending is not None and not pending.fresh_for(start),
        )
    if outcome is Outcome.NO_PASSIVE:
        finish(dbsession, start.token)
        status = (STATUS_RESPONDER, STATUS_NO_PASSIVE)
        saml_response = error_response(servers.get(dbsession), start.reply, status)
        return Answer(outcome, reply=start.reply, saml_response=saml_response)
    who = signed_in()
    assert who is not None, "decide() lets only a signed-in user reach the gate"
    finish(dbsession, start.token)
    audit().record(
        "saml.sso.refused",
        subject_user_id=who.user.id,
        client_address=address,
        detail={
            "sp": start.sp.entity_id,
            "reason": "no role grants the SP's module",
        },
    )
    return Answer(outcome, reply=start.reply, sp=start.sp)


def _assertion(
    dbsession: Session,
    start: Start,
    who: SignedIn | None,
    access: Callable[[User], Access],
    servers: ServerCache,
    settings,
) -> Answer:
    """The ASSERTION outcome: sign, then write (replay record, parked request).

    The writes come after the signatures, so SQLite's writer's turn
    (:mod:`idp.db`) is held only for them; a request seen before is
    refused then, and its signed Response never leaves. On PostgreSQL the
    replay record was written by the role gate's statement
    (:func:`may_reach`), and a request seen before is refused before
    anything is signed.
    """
    assert who is not None, "decide() lets only a signed-in user have an assertion"
    facts = access(who.user)
    try:
        request = start.request
        if facts.recorded is not None:
            # Recorded by the role gate's statement: a replay is refused
            # before anything is signed.
            request = recorded_request(dbsession, request, facts)
        saml_response = assertion_for(
            dbsession,
            servers.get(dbsession, version=facts.registry),
            user=who.user,
            session_row=who.session,
            sp=start.sp,
            reply=start.reply,
            request=request,
            access=facts,
            settings=settings,
        )
    except SamlRefused as exc:
        finish(dbsession, start.token)
        return Answer(Outcome.REFUSED, reply=exc.reply, refusal=exc)
    if not finish(dbsession, start.token):
        refusal = SamlRefused("saml_expired", "answered twice")
        return Answer(Outcome.REFUSED, refusal=refusal)
    return Answer(Outcome.ASSERTION, reply=start.reply, saml_response=saml_response)


def _parked(dbsession: Session, start: Start, settings) -> str | None:
    """The start's token, parking its request first if it is not parked yet."""
    if start.token is not None or start.request is None:
        return start.token
    received = start.received
    assert received is not None, "a request not parked yet keeps its message"
    return park(dbsession, start.request, received.xml, received.binding, settings)


# --------------------------------------------------------------------------
# The role gate and the Response


@dataclass(frozen=True)
class Access:
    """Whether a user's roles reach an SP, and the facts its Response needs.

    ``roles``: the role names released in ``isMemberOf``; ``persistent``:
    the user's persistent NameID at the SP (None: none yet); ``participant``:
    this session's record of the SP as (id, NameID, format, SessionIndex),
    None if the session has not been to the SP; ``registry``: the
    registry's version, for :class:`ServerCache`. All read in one statement
    (:func:`may_reach`); ``participant`` and ``registry`` only when asked.
    ``recorded``: whether that statement wrote the request's replay record
    (True) or found it written before (False); None if it did not try.
    """

    allowed: bool
    roles: tuple[str, ...]
    persistent: str | None = None
    participant: tuple[int, str, str, str] | None = None
    registry: tuple[int, dt.datetime | None] | None = None
    recorded: bool | None = None

    def __bool__(self) -> bool:
        return self.allowed


# Role names are codes (letters, digits, ".", "_", "-"): this never occurs.
_ROLE_SEPARATOR = "\x1f"


# The one SELECT of :func:`may_reach`, as DB-API text (``idp.db.PlainSql``:
# a third of the Core statement's cost; nothing in it is an entity). The
# role names are aggregated with the dialect's function; every other part
# is the same text on both. ``{seen}`` and ``{recorded}`` are empty, except
# in :data:`_FACTS_RECORDING`.
_FACTS_TEXT = """
{seen}SELECT
  (SELECT {aggregate}(roles.name, :separator)
     FROM roles JOIN user_roles ON user_roles.role_id = roles.id
    WHERE user_roles.user_id = :user_id) AS roles,
  EXISTS (SELECT 1
     FROM user_roles
     JOIN role_modules ON role_modules.role_id = user_roles.role_id
    WHERE user_roles.user_id = :user_id
      AND role_modules.module_id = :module_id) AS allowed,
  (SELECT persistent_name_ids.name_id FROM persistent_name_ids
    WHERE persistent_name_ids.user_id = :user_id
      AND persistent_name_ids.sp_id = :sp_id) AS persistent,
  (SELECT sp_registry_state.generation FROM sp_registry_state
    WHERE sp_registry_state.id = :state_id) AS generation,
  (SELECT sp_registry_state.changed_at FROM sp_registry_state
    WHERE sp_registry_state.id = :state_id) AS changed_at,
  session_participants.id,
  session_participants.name_id,
  session_participants.name_id_format,
  session_participants.session_index{recorded}
FROM (SELECT 1 AS one) AS anchor
LEFT OUTER JOIN session_participants
  ON session_participants.session_id = :session_id
 AND session_participants.sp_id = :sp_id
ORDER BY session_participants.id DESC
LIMIT 1
"""
_FACTS = {
    "sqlite": PlainSql(
        _FACTS_TEXT.format(aggregate="group_concat", seen="", recorded="")
    ),
    "postgresql": PlainSql(
        _FACTS_TEXT.format(aggregate="string_agg", seen="", recorded="")
    ),
}
# On PostgreSQL, where every statement is a round trip, the request's replay
# record (SAML-17; the INSERT of :func:`idp.saml.requests.record_seen`) rides
# in the same statement: a data-modifying WITH runs once, whatever the
# SELECT reads, and ``recorded`` says whether this request inserted the row.
# On SQLite (no INSERT in a WITH) the record stays a statement of its own,
# written after signing so the writer's turn is held only for the writes.
_FACTS_RECORDING = PlainSql(
    _FACTS_TEXT.format(
        aggregate="string_agg",
        seen="""WITH seen AS (
  INSERT INTO seen_request_ids (issuer, request_id, expires_at)
  VALUES (:issuer, :request_id, :expires_at)
  ON CONFLICT DO NOTHING RETURNING request_id)
""",
        recorded=",\n  (SELECT count(*) FROM seen) AS recorded",
    ),
    writes=True,
)


def may_reach(
    dbsession: Session,
    user: User,
    sp: ServiceProvider,
    session_row: IdpSession | None = None,
    request: AuthnRequest | None = None,
) -> Access:
    """Does one of the user's roles grant the SP's module? (SAML-32)

    Checked at every SSO, in the one statement that also reads what the
    assertion needs (:class:`Access`): the role names, the persistent
    NameID, this session's participant record (given ``session_row``) and
    the registry's version. A user holding no role, or an SP in no module,
    is refused.

    Given a ``request`` not recorded yet, PostgreSQL writes its replay
    record in the same statement (:data:`_FACTS_RECORDING`), and
    ``recorded`` says whether it was new; see :func:`recorded_request`.
    """
    dialect = dbsession.get_bind().dialect.name
    session_id = session_row.id if session_row is not None else None
    parameters = {
        "separator": _ROLE_SEPARATOR,
        "user_id": plain_value(user.id, dialect),
        "module_id": sp.module_id,
        "sp_id": sp.id,
        "session_id": plain_value(session_id, dialect),
        "state_id": REGISTRY_STATE_ID,
    }
    statement = _FACTS[dialect]
    recording = (
        dialect == "postgresql"
        and request is not None
        and request.unrecorded_until is not None
    )
    if recording:
        assert request is not None and request.unrecorded_until is not None
        statement = _FACTS_RECORDING
        parameters["issuer"] = request.issuer
        parameters["request_id"] = request.id
        parameters["expires_at"] = plain_value(request.unrecorded_until, dialect)
    (row,) = statement.execute(dbsession, parameters)
    names, allowed, persistent, generation, changed_at = row[:5]
    roles = tuple(sorted(set(names.split(_ROLE_SEPARATOR)))) if names else ()
    participant = None
    if row[5] is not None:
        participant = (row[5], row[6], row[7], row[8])
    return Access(
        allowed=sp.module_id is not None and bool(allowed),
        roles=roles,
        persistent=persistent,
        participant=participant,
        registry=(generation or 0, utc_from_row(changed_at) if generation else None),
        recorded=bool(row[9]) if recording else None,
    )


def recorded_request(
    dbsession: Session, request: AuthnRequest | None, facts: Access | None
) -> AuthnRequest | None:
    """``request`` once its replay record is written; SamlRefused if seen before.

    Where the role gate's statement wrote it (``facts.recorded`` is not
    None), its answer decides; otherwise :func:`idp.saml.requests.record`
    writes it now. Either way the request comes back marked as recorded, so
    nothing writes it a second time.
    """
    if request is None or request.unrecorded_until is None:
        return request
    if facts is not None and facts.recorded is not None:
        if not facts.recorded:
            raise SamlRefused("saml_replay", request.id).with_reply(request.reply())
    else:
        record(dbsession, request)
    return dataclasses.replace(request, unrecorded_until=None)


def service_name(sp: ServiceProvider, locale: str) -> str:
    """The SP's display name in ``locale``: mdui, then its module, then entity ID."""
    metadata = usable_metadata(sp)
    names = metadata.display_names if metadata is not None else {}
    if names.get(locale):
        return names[locale]
    if sp.module is not None:
        return getattr(sp.module, f"display_name_{locale}", None) or sp.module.code
    return next(iter(names.values()), sp.entity_id)


def _participant(
    subject, known: tuple[int, str, str, str] | None
) -> tuple[str, Callable[[Session, IdpSession, ServiceProvider], None] | None]:
    """The SessionIndex of this session at an SP, and the write recording it.

    ``known`` is the session's record of the SP, read with the role gate
    (:func:`may_reach`). The SessionIndex is kept while the NameID stays
    the same, so a second SSO to the same SP writes nothing (the write is
    None) and a LogoutRequest naming the index of any assertion the SP
    holds from this session still matches. A new NameID (another format
    asked for) starts a new index; a first visit records one.
    """
    if known is not None:
        _, value, name_format, index = known
        if value == subject.value and name_format == subject.format and index:
            return index, None
    index = responses.session_index()
    values = {
        "name_id": subject.value,
        "name_id_format": subject.format,
        "session_index": index,
    }

    def write(dbsession: Session, session_row: IdpSession, sp: ServiceProvider):
        if known is not None:
            execute_write(
                dbsession,
                update(SessionParticipant)
                .where(SessionParticipant.id == known[0])
                .values(**values),
            )
            return
        execute_write(
            dbsession,
            insert(SessionParticipant).values(
                session_id=session_row.id,
                sp_id=sp.id,
                created_at=dt.datetime.now(dt.UTC),
                **values,
            ),
        )

    return index, write


def assertion_for(
    dbsession: Session,
    server,
    *,
    user: User,
    session_row: IdpSession,
    sp: ServiceProvider,
    reply: Reply,
    request: AuthnRequest | None,
    access: Access,
    settings,
) -> str:
    """The signed Response for ``user`` at ``sp``, recorded for logout.

    The request's replay record and the session's record of the SP are
    written after signing (:func:`_assertion`). ``access`` is what the role
    gate read (:func:`may_reach`): the roles released, the persistent
    NameID and this session's record of the SP.

    Raises :class:`SamlRefused` (with ``reply`` set) for NoAuthnContext and
    InvalidNameIDPolicy.
    """
    metadata = sp_metadata(sp)
    try:
        context = responses.authn_context(
            request.requested_context if request else None, sp, settings
        )
        subject = responses.name_id(
            dbsession, user, sp, request, persistent=access.persistent
        )
    except SamlRefused as exc:
        raise exc.with_reply(reply) from None
    index, write_participant = _participant(subject, access.participant)
    xml = responses.build(
        server,
        sp=sp,
        metadata=metadata,
        acs_url=reply.acs_url,
        in_response_to=reply.in_response_to or None,
        subject=subject,
        attributes=responses.attributes(user, sp, list(access.roles), settings),
        context_class=context,
        authn_instant=session_row.authn_at or dt.datetime.now(dt.UTC),
        session_index=index,
        settings=settings,
    )
    # Written after the signatures: the replay record (which may still
    # refuse), then the session's record of the SP.
    if request is not None:
        record(dbsession, request)
    if write_participant is not None:
        write_participant(dbsession, session_row, sp)
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
