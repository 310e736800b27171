"""Server-side sessions: Pyramid's ``ISession`` on an ``idp_sessions`` row.

The browser holds a random 256-bit id in an HttpOnly, SameSite=Lax cookie
(Secure outside development); the database holds only its SHA-256. A row is
written only when the session is first given data (a flash, flow state),
so pages that need no session, like the metadata, write nothing. A form
shown to an anonymous browser writes nothing either: its CSRF token is a
keyed hash of the cookie's id, and the id gets a row (under a new id, so
one planted beforehand names nothing) only when something must be stored.
A flood of anonymous GET /login therefore leaves the table as it was.
Changes are saved by a tween under pyramid_tm, inside the request's
transaction, so they commit or abort with everything else.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets

from pyramid.i18n import TranslationString
from pyramid.interfaces import ISession
from sqlalchemy import bindparam, select
from zope.interface import implementer

from idp.db import utcnow
from idp.dbfaults import is_database_fault
from idp.models import IdpSession, User

COOKIE_NAME = "idp_session"
# How stale last_seen_at may get before a read-only request refreshes it.
TOUCH_INTERVAL = dt.timedelta(seconds=60)
# Ids are secrets.token_urlsafe(32): 43 characters. A shorter cookie is not
# one of ours and is not adopted as a cookie-only session's id.
MIN_TOKEN_LENGTH = 43
MAX_TOKEN_LENGTH = 128
ANONYMOUS_CSRF_CONTEXT = b"idp.sessions.anonymous-csrf\x00"
_SESSION_WITH_USER = (
    select(IdpSession, User)
    .outerjoin(User, User.id == IdpSession.user_id)
    .where(IdpSession.token_hash == bindparam("token_hash"))
)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _mutator(name):
    method = getattr(dict, name)

    def changed_method(self, *args, **kwargs):
        self._dirty = True
        return method(self, *args, **kwargs)

    changed_method.__name__ = name
    return changed_method


def _flash_stored(message):
    """A flash message as JSON can hold it: a translatable one as its parts."""
    if not isinstance(message, TranslationString):
        return message
    return {
        "msgid": str(message),
        "domain": message.domain,
        "default": str(message.default),
        "mapping": {
            key: value if isinstance(value, int | float) else str(value)
            for key, value in (message.mapping or {}).items()
        },
    }


def _flash_message(stored):
    """The flash message ``_flash_stored`` kept, translatable again."""
    if isinstance(stored, dict) and "msgid" in stored:
        return TranslationString(
            stored["msgid"],
            domain=stored.get("domain"),
            default=stored.get("default"),
            mapping=stored.get("mapping") or None,
        )
    return stored


@implementer(ISession)
class DatabaseSession(dict):
    """The session of one request; loaded lazily, saved at response time."""

    def __init__(self, request):
        super().__init__()
        self.request = request
        self.row: IdpSession | None = None
        self._dirty = False
        self._rotated_from: str | None = None
        self._invalidated = False
        settings = request.registry.settings
        self.idle = dt.timedelta(seconds=settings["idp.session_idle_seconds"])
        self.lifetime = dt.timedelta(seconds=settings["idp.session_max_seconds"])
        self._token: str | None = None
        self._signed_in: tuple | None = None
        self._user: User | None = None
        # The id of a cookie-only session: no row yet, only a CSRF token
        # derived from it. _pending_is_new: the cookie must be set.
        self._pending: str | None = None
        self._pending_is_new = False
        self._csrf_key = settings["idp.session_secret"].encode()
        self._load()

    def _load(self) -> None:
        token = self.request.cookies.get(COOKIE_NAME)
        if not token or not MIN_TOKEN_LENGTH <= len(token) <= MAX_TOKEN_LENGTH:
            return
        # The session's user comes in the same statement, into the ORM
        # session's identity map, where the security policy finds it
        # (``Session.get``) without a query of its own.
        found = self.request.dbsession.execute(
            _SESSION_WITH_USER, {"token_hash": hash_token(token)}
        ).one_or_none()
        row = found[0] if found is not None else None
        # Held here: the identity map keeps objects only while referenced.
        self._user = found[1] if found is not None else None
        now = utcnow()
        if row is None:
            self._pending = token
            return
        if row.expires_at <= now or row.last_seen_at + self.idle <= now:
            self.request.dbsession.delete(row)
            return
        self.row = row
        self._token = token
        dict.update(self, row.data or {})

    # ISession
    @property
    def created(self) -> float:
        return (self.row.created_at if self.row else utcnow()).timestamp()

    @property
    def new(self) -> bool:
        return self.row is None

    def changed(self) -> None:
        self._dirty = True

    def invalidate(self) -> None:
        """End this session: its row is deleted and the cookie cleared."""
        if self.row is not None:
            self.request.dbsession.delete(self.row)
        self.row = None
        self._token = None
        self._invalidated = True
        self._pending = None
        self._pending_is_new = False
        self._dirty = False
        self._signed_in = None
        dict.clear(self)

    def rotate(self) -> None:
        """Give the session a new id, keeping its data (sign-in, password change)."""
        self._rotated_from = self._token
        self._token = None
        self._dirty = True

    # Who is signed in
    @property
    def user_id(self):
        """The signed-in user's id, or None."""
        if self._signed_in is not None:
            return self._signed_in[0]
        return self.row.user_id if self.row is not None else None

    @property
    def authn_at(self) -> dt.datetime | None:
        if self._signed_in is not None:
            return self._signed_in[2]
        return self.row.authn_at if self.row is not None else None

    def sign_in(self, user_id, method: str) -> None:
        """Bind the session to a user who just proved who they are.

        The id rotates, so a cookie planted or seen before the sign-in is
        worth nothing afterwards (session fixation). The address and browser
        are recorded for the user's list of sign-ins.
        """
        self.rotate()
        self._signed_in = (user_id, method, utcnow())
        self["_uid"] = str(user_id)

    def reauthenticated(self) -> None:
        """Mark the sign-in as fresh again (after a password change)."""
        user_id = self.user_id
        if user_id is not None:
            method = self.row.authn_method if self.row is not None else "password"
            self.sign_in(user_id, method)

    def flash(self, msg, queue="", allow_duplicate=True):
        """Keep ``msg`` for the next page, translatable in that page's language.

        The session is stored as JSON, where a ``TranslationString`` would
        become its bare English msgid; it is kept as its parts instead.
        """
        storage = self.setdefault("_f_" + queue, [])
        stored = _flash_stored(msg)
        if allow_duplicate or stored not in storage:
            storage.append(stored)
            self._dirty = True

    def pop_flash(self, queue=""):
        return [_flash_message(item) for item in self.pop("_f_" + queue, [])]

    def peek_flash(self, queue=""):
        return [_flash_message(item) for item in self.get("_f_" + queue, [])]

    def new_csrf_token(self):
        token = secrets.token_urlsafe(32)
        self["_csrft_"] = token
        return token

    def get_csrf_token(self):
        token = self.get("_csrft_")
        if token is not None:
            return token
        if self.row is None:
            return self._anonymous_csrf_token()
        return self.new_csrf_token()

    def _anonymous_csrf_token(self) -> str:
        """The CSRF token of a session with no row: a keyed hash of its id.

        Only the browser holding the cookie can present it, as with a stored
        token, and showing a form writes nothing.
        """
        if self._pending is None:
            self._pending = secrets.token_urlsafe(32)
            self._pending_is_new = True
        digest = hmac.new(
            self._csrf_key,
            ANONYMOUS_CSRF_CONTEXT + self._pending.encode(),
            hashlib.sha256,
        ).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    __setitem__ = _mutator("__setitem__")
    __delitem__ = _mutator("__delitem__")
    clear = _mutator("clear")
    pop = _mutator("pop")
    popitem = _mutator("popitem")
    setdefault = _mutator("setdefault")
    update = _mutator("update")

    # Saving
    def save(self, response) -> None:
        request = self.request
        dbsession = request.dbsession
        if self._invalidated and self.row is None and not self._dirty:
            if self._pending_is_new:
                # A page shown after the sign-out carries a form: its token
                # is bound to a new cookie-only id, which replaces the old.
                self._set_cookie(response, self._pending)
            else:
                response.delete_cookie(COOKIE_NAME, path="/")
            return
        now = utcnow()
        if self.row is not None and now - self.row.last_seen_at > TOUCH_INTERVAL:
            self._dirty = True
        if self.row is None and not dict.__len__(self):
            if self._pending_is_new:
                self._set_cookie(response, self._pending)
            return
        if not self._dirty and self._rotated_from is None:
            return
        if self.row is None:
            if self._pending is not None:
                # Forms already shown carry the derived token: keep it valid.
                dict.setdefault(self, "_csrft_", self._anonymous_csrf_token())
            self.row = IdpSession(
                created_at=now,
                expires_at=now + self.lifetime,
                client_address=request.client_addr,
                user_agent=(request.user_agent or "")[:512],
            )
            dbsession.add(self.row)
        if self._token is None:
            self._token = secrets.token_urlsafe(32)
            self.row.token_hash = hash_token(self._token)
            self._set_cookie(response, self._token)
        if self._signed_in is not None:
            user_id, method, at = self._signed_in
            if self.row.user_id is not None and self.row.user_id != user_id:
                # Another person signs in on this browser: the services the
                # previous one reached are not theirs to log out of.
                self.row.participants.clear()
            self.row.user_id = user_id
            self.row.authn_method = method
            self.row.authn_at = at
            self.row.client_address = request.client_addr
            self.row.user_agent = (request.user_agent or "")[:512]
            self._signed_in = None
        self.row.data = dict(self)
        self.row.last_seen_at = now
        dbsession.flush()

    def _set_cookie(self, response, token: str) -> None:
        response.set_cookie(
            COOKIE_NAME,
            token,
            httponly=True,
            secure=not self.request.registry.settings["idp.development"],
            samesite="Lax",
            path="/",
        )


def _session_factory(request):
    return DatabaseSession(request)


def session_tween_factory(handler, registry):
    """Save the session once the view (or exception view) has answered.

    This tween sits under pyramid_tm, so the session row is written in the
    request's own transaction, before the commit: a ``NewResponse``
    subscriber would run after pyramid_tm has already committed.

    Not after a database fault (the 503 page, :mod:`idp.dbfaults`): the
    transaction is lost, pyramid_tm aborts it, and its connection may be
    gone. Saving then meant a statement on a connection SQLAlchemy had
    invalidated (``PendingRollbackError``) or in a failed transaction
    (``InFailedSqlTransaction``): a bug's 500 instead of the 503 page,
    whenever the session had something to save (a flow's state, a 60 s
    touch) and PostgreSQL went away between its read and the view's next
    statement.
    """

    def session_tween(request):
        response = handler(request)
        session = request.__dict__.get("session")
        if isinstance(session, DatabaseSession) and not is_database_fault(
            request.exception
        ):
            session.save(response)
        return response

    return session_tween


def includeme(config):
    from pyramid.tweens import EXCVIEW

    config.set_session_factory(_session_factory)
    config.add_tween(
        "idp.sessions.session_tween_factory",
        under="pyramid_tm.tm_tween_factory",
        over=EXCVIEW,
    )
