"""Accounts as the helpdesk and operators manage them.

Creating an account for someone, granting and revoking roles, locking and
unlocking, an administrator's password reset, correcting an email: the
rules of each, its audit event (with the :class:`Actor`) and its email,
in one place that ``idp-admin user`` and the admin console both call.

Unlike the public registration page, an administrator is trusted: a
refusal names what is wrong (an identity number or email already
registered, say). A new or reset account gets a temporary password that
works once, for ``idp.temporary_password_hours``, and must be changed at
the first sign-in. It is emailed through the outbox and never returned,
unless the caller asks to show it once instead (``reveal_password``): for
the first administrator, before mail works. Every operation runs in a
SAVEPOINT (:func:`atomic`): a refusal leaves nothing behind.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import cast

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from zope.interface import implementer

from idp.contact import InvalidContact, normalise_email
from idp.db import utcnow
from idp.identifiers import Identifier, IdentifierKind
from idp.models import AuditEvent, OneTimeToken, User
from idp.models.session import end_user_sessions
from idp.services import mail
from idp.services.actor import Actor
from idp.services.errors import Conflict, Invalid, NotFound, atomic
from idp.services.interfaces import (
    IAccountService,
    IAuditLog,
    IModuleRegistry,
    IOutbox,
    IRateLimiter,
    IUserService,
)
from idp.services.modules import clean_label, set_membership
from idp.services.users import EmailTaken, Registration

#: The limiters an unlock clears: a third lock in a day needs an operator.
SIGN_IN_LIMITS = ("login.identifier", "login.locks")


@dataclass(frozen=True)
class TemporaryPassword:
    """A temporary password issued to ``user``.

    ``password`` is the password itself only when the caller asked to
    reveal it (it was then not emailed); None when it went by email.
    """

    user: User
    expires_at: dt.datetime
    password: str | None


@dataclass(frozen=True)
class Standing:
    """Where an account stands, for the helpdesk to answer "I can't sign in"."""

    # Locked by an administrator: until unlocked, never by itself.
    disabled_since: dt.datetime | None
    # Locked after wrong passwords (and not disabled): ends by itself then.
    locked_until: dt.datetime | None
    must_change_password: bool
    # The pending temporary password's expiry, if one is still usable.
    temporary_until: dt.datetime | None
    last_sign_in: dt.datetime | None
    # Past the wrong-password limit (login.identifier): even the right
    # password is refused until then. None when not throttled.
    throttled_until: dt.datetime | None = None


#: The profile fields the helpdesk may correct (update_profile).
PROFILE_FIELDS = ("full_name", "phone", "institution", "category")


@dataclass(frozen=True)
class EmailCorrected:
    previous: str
    email: str
    # A temporary password still pending had gone to the old address: a new
    # one went to the new address and the old one no longer works.
    reissued: bool


def check_email(text: str) -> str:
    """``text`` as an email address, normalised; :class:`Invalid` if it is not one."""
    try:
        return normalise_email(text)
    except InvalidContact as exc:
        raise Invalid(
            "email.invalid",
            f"{text!r} is not an email address ({exc.message.interpolate()})",
            field="email",
        ) from None


#: The shortest name fragment a search looks for (one letter finds everyone).
SEARCH_MIN = 2
SEARCH_MAX = 200


def search(text: str, country: str | None = None):
    """The users ``text`` finds, as a ``SELECT`` for the caller to page and sort.

    An identity number (with ``country``, a passport number) finds exactly
    its account; an email address its account (or, unfinished, those it
    begins); a phone number the accounts with it; anything else is a part of
    a name, matched whatever its case. :class:`Invalid` (``search.short``,
    ``search.long``) for a text too short or too long to be a search.
    """
    from idp.contact import normalise_phone
    from idp.identifiers import InvalidIdentifier, parse_identifier

    text = " ".join(text.split())
    if len(text) > SEARCH_MAX:
        raise Invalid("search.long", "the search is too long", field="q")
    if len(text) < SEARCH_MIN:
        raise Invalid("search.short", "the search is too short", field="q")
    statement = select(User)
    try:
        identifier = parse_identifier(text, country)
    except InvalidIdentifier:
        identifier = None
    if identifier is not None:
        return statement.where(User.identifier == identifier.value)
    if "@" in text:
        try:
            return statement.where(User.email == normalise_email(text))
        except InvalidContact:
            return statement.where(User.email.startswith(text.lower(), autoescape=True))
    if sum(ch.isdigit() for ch in text) >= 7 and not any(ch.isalpha() for ch in text):
        try:
            return statement.where(User.phone == normalise_phone(text))
        except InvalidContact:
            pass
    return statement.where(
        func.lower(User.full_name).contains(text.lower(), autoescape=True)
    )


def masked(user: User) -> str:
    """The user's identity number with all but its tail hidden."""
    return Identifier(
        cast(IdentifierKind, user.identifier_kind), user.identifier
    ).masked


@implementer(IAccountService)
class AccountService:
    def __init__(
        self,
        dbsession,
        *,
        users,
        registry,
        outbox,
        limiter,
        audit,
        clock=utcnow,
    ) -> None:
        self.dbsession = dbsession
        self.users = users
        self.registry = registry
        self.outbox = outbox
        self.limiter = limiter
        self.audit = audit
        self.clock = clock

    @classmethod
    def create_service(cls, context, request) -> AccountService:
        return cls(
            request.dbsession,
            users=request.service(IUserService),
            registry=request.service(IModuleRegistry),
            outbox=request.service(IOutbox),
            limiter=request.service(IRateLimiter),
            audit=request.service(IAuditLog),
        )

    def find(self, identifier: Identifier) -> User:
        """The account of ``identifier``, or :class:`NotFound`."""
        user = self.users.find_by_identifier(identifier.value)
        if user is None:
            raise NotFound(
                "account.not_found",
                f"no user with identity number {identifier.display}",
            )
        return user

    def standing(self, user: User) -> Standing:
        """Where the account stands now: locks, a pending temporary password,
        the last sign-in."""
        now = self.clock()
        expires = user.temp_password_expires_at
        limit = self.limiter.check("login.identifier", user.identifier)
        return Standing(
            disabled_since=user.disabled_at,
            locked_until=(
                user.locked_until
                if user.disabled_at is None and not user.usable(now)
                else None
            ),
            must_change_password=user.must_change_password,
            temporary_until=(
                expires
                if user.must_change_password and expires is not None and expires > now
                else None
            ),
            last_sign_in=self.dbsession.scalar(
                select(func.max(AuditEvent.occurred_at)).where(
                    AuditEvent.event == "login.success",
                    AuditEvent.subject_user_id == user.id,
                )
            ),
            throttled_until=(
                None
                if limit.allowed
                else now + dt.timedelta(seconds=max(limit.retry_after, 1))
            ),
        )

    def create(
        self,
        registration: Registration,
        *,
        roles: tuple[str, ...] | list[str] = (),
        reveal_password: bool = False,
        actor: Actor,
    ) -> TemporaryPassword:
        """Create the account ``registration`` describes, holding ``roles``.

        Refused (:class:`Conflict`) when its identity number or email is
        registered already, even by a registration racing this one, and
        (:class:`NotFound`) for a role that does not exist. Audited as
        ``account.created``.
        """
        identifier = registration.identifier
        with atomic(self.dbsession):
            if self.users.find_by_identifier(identifier.value) is not None:
                raise Conflict(
                    "account.identifier_taken",
                    f"a user with identity number {identifier.display} already exists",
                )
            if self.users.find_by_email(registration.email) is not None:
                raise Conflict(
                    "account.email_taken",
                    f"a user with email {registration.email} already exists",
                )
            # "guru" and "GURU" name one role: granted once.
            found = [self.registry.find_role(name) for name in roles]
            granted = list({role.id: role for role in found}.values())
            now = self.clock()
            user = self.users.build(registration, now)
            password = self.users.issue_temporary_password(user, now)
            try:
                with self.dbsession.begin_nested():
                    self.dbsession.add(user)
            except IntegrityError:
                raise Conflict(
                    "account.taken_just_now",
                    "that identity number or email was registered just now",
                ) from None
            user.roles.extend(granted)
            actor.record(
                self.audit,
                "account.created",
                subject_user_id=user.id,
                roles=[role.name for role in granted],
            )
            return self._deliver(user, password, reveal_password, mail.account_created)

    def grant_role(self, user: User, role_name: str, *, actor: Actor) -> bool:
        """Give ``user`` the role; False (nothing audited) if they hold it."""
        return self._set_role(user, role_name, True, actor)

    def revoke_role(self, user: User, role_name: str, *, actor: Actor) -> bool:
        """Take the role from ``user``; False (nothing audited) if they did
        not hold it."""
        return self._set_role(user, role_name, False, actor)

    def _set_role(self, user: User, role_name: str, grant: bool, actor: Actor) -> bool:
        with atomic(self.dbsession):
            role = self.registry.find_role(role_name)
            if not set_membership(user.roles, role, grant):
                return False
            actor.record(
                self.audit,
                "role.granted" if grant else "role.revoked",
                subject_user_id=user.id,
                role=role.name,
            )
        return True

    def lock(self, user: User, *, reason: str | None, actor: Actor) -> int | None:
        """An administrator's lock: until :meth:`unlock`, never by itself.

        Ends every session of the user (AUTH-18) and tells the owner.
        Returns how many sessions ended; None when the account was locked
        already (nothing changes, nothing is sent).
        """
        reason = clean_label("reason", reason, required=False)
        with atomic(self.dbsession):
            if user.disabled_at is not None:
                return None
            now = self.clock()
            user.disabled_at = now
            ended = end_user_sessions(self.dbsession, user.id)
            actor.record(
                self.audit,
                "account.locked",
                subject_user_id=user.id,
                reason=reason,
                until_unlocked=True,
            )
            mail.account_locked_by_helpdesk(self.outbox, user, locked_at=now)
        return ended

    def unlock(self, user: User, *, actor: Actor) -> bool:
        """Lift any lock and forget the sign-in failures; True if it was locked."""
        with atomic(self.dbsession):
            was_locked = not user.usable(self.clock())
            user.locked_until = None
            user.disabled_at = None
            for name in SIGN_IN_LIMITS:
                self.limiter.reset(name, user.identifier)
            actor.record(self.audit, "account.unlocked", subject_user_id=user.id)
        return was_locked

    def reset_password(
        self, user: User, *, reveal_password: bool = False, actor: Actor
    ) -> tuple[int, TemporaryPassword]:
        """Replace the password with a temporary one.

        Every session ends and every unused link dies; returns how many
        sessions ended, and the temporary password (see
        :class:`TemporaryPassword`).
        """
        with atomic(self.dbsession):
            now = self.clock()
            password = self.users.issue_temporary_password(user, now)
            self._void_links(user, now)
            ended = end_user_sessions(self.dbsession, user.id)
            actor.record(self.audit, "password.admin_reset", subject_user_id=user.id)
            issued = self._deliver(
                user, password, reveal_password, mail.temporary_password_reset
            )
        return ended, issued

    def set_email(self, user: User, email: str, *, actor: Actor) -> EmailCorrected:
        """The helpdesk's fix for a mistyped or lost address.

        Both addresses are told. A temporary password still pending went to
        the old address (the typo that brought the owner to the helpdesk):
        it is replaced, and the new one mailed to the new address, so the
        copy in the wrong mailbox is useless.
        """
        email = check_email(email)
        with atomic(self.dbsession):
            if email == user.email:
                raise Invalid(
                    "account.email_unchanged",
                    f"{email} is already the email of {masked(user)}",
                    field="email",
                )
            if self.users.find_by_email(email) is not None:
                raise Conflict(
                    "account.email_taken",
                    f"{email} is already the email of another account",
                    field="email",
                )
            try:
                previous = self.users.change_email(user, email, by_helpdesk=True)
            except EmailTaken:
                raise Conflict(
                    "account.email_taken",
                    f"{email} was given to another account just now",
                    field="email",
                ) from None
            actor.record(
                self.audit, "email.changed", subject_user_id=user.id, previous=previous
            )
            now = self.clock()
            expires = user.temp_password_expires_at
            reissued = bool(
                user.must_change_password and expires is not None and expires > now
            )
            if reissued:
                password = self.users.issue_temporary_password(user, now)
                mail.temporary_password_reset(
                    self.outbox,
                    user,
                    password=password,
                    expires_at=user.temp_password_expires_at,
                )
                actor.record(
                    self.audit,
                    "password.admin_reset",
                    subject_user_id=user.id,
                    reason="email-changed",
                )
        return EmailCorrected(previous, email, reissued)

    def update_profile(
        self, user: User, *, actor: Actor, **values: str | None
    ) -> list[str]:
        """Correct profile fields (:data:`PROFILE_FIELDS`), already checked
        and normalised by the caller's form; the names of those that changed.

        Audited as ``account.profile_changed`` with the fields' names (not
        their values: the audit log outlives the account's data). Nothing
        changed, nothing audited. :class:`Invalid` for another field.
        """
        unknown = set(values) - set(PROFILE_FIELDS)
        if unknown:
            raise Invalid(
                "account.field_unknown",
                f"not a profile field: {', '.join(sorted(unknown))}",
            )
        with atomic(self.dbsession):
            changed = [
                name for name, value in values.items() if getattr(user, name) != value
            ]
            if not changed:
                return []
            for name in changed:
                setattr(user, name, values[name])
            self.dbsession.flush()
            actor.record(
                self.audit,
                "account.profile_changed",
                subject_user_id=user.id,
                fields=sorted(changed),
            )
        return sorted(changed)

    def end_sessions(self, user: User, *, actor: Actor) -> int:
        """Sign ``user`` out everywhere (``sessions.ended``); how many ended."""
        with atomic(self.dbsession):
            ended = end_user_sessions(self.dbsession, user.id)
            actor.record(
                self.audit,
                "sessions.ended",
                subject_user_id=user.id,
                how="helpdesk",
                count=ended,
            )
        return ended

    def _void_links(self, user: User, now: dt.datetime) -> None:
        self.dbsession.execute(
            update(OneTimeToken)
            .where(OneTimeToken.user_id == user.id, OneTimeToken.used_at.is_(None))
            .values(used_at=now)
        )

    def _deliver(
        self, user: User, password: str, reveal: bool, send
    ) -> TemporaryPassword:
        """Email ``password`` with ``send`` (a :mod:`idp.services.mail`
        function), or hand it back once instead when ``reveal``."""
        expires_at = user.temp_password_expires_at
        assert expires_at is not None  # just issued
        if not reveal:
            send(self.outbox, user, password=password, expires_at=expires_at)
        return TemporaryPassword(user, expires_at, password if reveal else None)


def includeme(config) -> None:
    config.register_service_factory(AccountService.create_service, IAccountService)
