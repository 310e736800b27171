"""Accounts: registration and the temporary password.

Registration never says whether an identity number or an email is already
registered: a duplicate gets the same answer as a success, and the owner of
the existing account gets an email instead (at most one a day, and none in
the first hour after they registered, when a double submission is the
likely cause). Uniqueness is the database's: the insert runs in a SAVEPOINT
and a unique violation, even one caused by a concurrent registration, turns
into that notice.
"""

from __future__ import annotations

import datetime as dt
import enum
import secrets
from dataclasses import dataclass
from typing import cast

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from zope.interface import implementer

from idp.db import utcnow
from idp.identifiers import Identifier, IdentifierKind
from idp.models import OneTimeToken, User
from idp.models.session import end_user_sessions
from idp.services import mail
from idp.services.audit import AuditLog
from idp.services.interfaces import (
    IAuditLog,
    IOutbox,
    IPasswordService,
    IUserService,
)

# Lower-case letters and digits without the ones people confuse (i l o 0 1).
TEMPORARY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
TEMPORARY_LENGTH = 16  # about 79 bits
NOTICE_GRACE = dt.timedelta(hours=1)


class EmailTaken(Exception):
    """Another account has the address; nothing was changed."""


class PasswordChange(enum.StrEnum):
    """How a new password came about, as the audit log tells it."""

    # "Forgot password": the link, the email and the identity number proved
    # it; audited as ``password.reset``, with no actor (nobody signed in).
    RESET = "reset"
    # The forced change after a temporary password.
    FIRST_SIGN_IN = "first sign-in"
    # "Akaun saya", with the current password.
    ACCOUNT = "account"


@dataclass(frozen=True)
class Registration:
    """What a person submitted on the registration form, already checked."""

    category: str
    identifier: Identifier
    full_name: str
    email: str
    phone: str
    institution: str | None
    security_image: str
    security_phrase: str
    locale: str


def new_temporary_password() -> str:
    return "".join(secrets.choice(TEMPORARY_ALPHABET) for _ in range(TEMPORARY_LENGTH))


@implementer(IUserService)
class UserService:
    def __init__(
        self,
        dbsession,
        passwords,
        outbox,
        *,
        temporary_hours: int,
        clock=utcnow,
        audit=None,
    ):
        self.dbsession = dbsession
        self.passwords = passwords
        self.outbox = outbox
        self.temporary_lifetime = dt.timedelta(hours=temporary_hours)
        self.clock = clock
        self.audit = audit or AuditLog(dbsession, clock)

    @classmethod
    def create_service(cls, context, request) -> UserService:
        return cls(
            request.dbsession,
            request.service(IPasswordService),
            request.service(IOutbox),
            temporary_hours=request.registry.settings["idp.temporary_password_hours"],
            audit=request.service(IAuditLog),
        )

    def build(self, registration: Registration, now: dt.datetime | None = None) -> User:
        """A new, unsaved user from checked registration values, no password yet."""
        now = now or self.clock()
        return User(
            identifier_kind=registration.identifier.kind,
            identifier=registration.identifier.value,
            email=registration.email,
            full_name=registration.full_name,
            phone=registration.phone,
            category=registration.category,
            institution=registration.institution,
            locale=registration.locale,
            security_image=registration.security_image or None,
            security_phrase=registration.security_phrase or None,
            created_at=now,
            updated_at=now,
        )

    def issue_temporary_password(
        self, user: User, now: dt.datetime | None = None
    ) -> str:
        """Give ``user`` a fresh temporary password and return it, once.

        Only its hash is kept; it expires after ``idp.temporary_password_hours``
        and the user must choose a new password at the sign-in that uses it.
        """
        password = new_temporary_password()
        user.password_hash = self.passwords.hash(password)
        user.must_change_password = True
        user.temp_password_expires_at = (now or self.clock()) + self.temporary_lifetime
        return password

    def register(self, registration: Registration) -> User | None:
        now = self.clock()
        user = self.build(registration, now)
        # Hash before knowing whether the insert succeeds, so a duplicate
        # costs the same time as a new account.
        password = self.issue_temporary_password(user, now)
        try:
            with self.dbsession.begin_nested():
                self.dbsession.add(user)
        except IntegrityError:
            self._notify_owners(registration, now)
            return None
        mail.temporary_password(
            self.outbox,
            user,
            password=password,
            expires_at=user.temp_password_expires_at,
        )
        return user

    def _notify_owners(self, registration: Registration, now: dt.datetime) -> None:
        owners = self.dbsession.scalars(
            select(User).where(
                or_(
                    User.identifier == registration.identifier.value,
                    User.email == registration.email,
                )
            )
        ).all()
        for owner in owners:
            if now - owner.created_at < NOTICE_GRACE:
                continue
            mail.already_registered(
                self.outbox,
                owner,
                dedupe_key=f"already-registered:{owner.id}:{now:%Y-%m-%d}",
            )

    def find_by_identifier(self, value: str) -> User | None:
        """The user with this normalised identifier (12 digits or CCC:NUMBER)."""
        return self.dbsession.scalars(
            select(User).where(User.identifier == value)
        ).one_or_none()

    def find_by_email(self, email: str) -> User | None:
        """The user with this normalised (lower-case) email."""
        return self.dbsession.scalars(
            select(User).where(User.email == email)
        ).one_or_none()

    def policy_violations(self, user: User, password: str) -> list:
        """What is wrong with ``password`` as ``user``'s new password."""
        kind = cast(IdentifierKind, user.identifier_kind)
        identifier = Identifier(kind, user.identifier)
        return self.passwords.check_policy(
            password,
            identifiers=[
                identifier.number,
                identifier.display,
                user.email,
                user.email.partition("@")[0],
                *user.full_name.split(),
            ],
            phrase=user.security_phrase,
        )

    def set_password(
        self,
        user: User,
        password: str,
        *,
        how: PasswordChange,
        client_address: str | None = None,
        keep_session=None,
    ) -> None:
        """Give ``user`` a new password (already checked against the policy).

        Everything a new password entails, in one place: every other session
        of the user ends (all of them without ``keep_session``, the row of
        the session the change was made in), unused links are voided, the
        change is audited as ``how`` says, and the owner is emailed.
        """
        now = self.clock()
        user.password_hash = self.passwords.hash(password)
        user.password_changed_at = now
        user.must_change_password = False
        user.temp_password_expires_at = None
        self.dbsession.execute(
            update(OneTimeToken)
            .where(OneTimeToken.user_id == user.id, OneTimeToken.used_at.is_(None))
            .values(used_at=now)
        )
        end_user_sessions(self.dbsession, user.id, keep=keep_session)
        mail.password_changed(self.outbox, user, changed_at=now)
        if how is PasswordChange.RESET:
            self.audit.record(
                "password.reset", subject_user_id=user.id, client_address=client_address
            )
        else:
            self.audit.record(
                "password.changed",
                subject_user_id=user.id,
                actor_user_id=user.id,
                client_address=client_address,
                detail={"how": str(how)},
            )

    def change_email(self, user: User, email: str, *, by_helpdesk: bool = False) -> str:
        now = self.clock()
        old = user.email
        try:
            with self.dbsession.begin_nested():
                user.email = email
                user.updated_at = now
                self.dbsession.flush()
        except IntegrityError:
            # The SAVEPOINT's rollback expired the user: it reads the old
            # address again.
            raise EmailTaken(email) from None
        # Links mailed to the old address, and other addresses waiting for
        # their confirmation, die with the change (AUTH-17).
        self.dbsession.execute(
            update(OneTimeToken)
            .where(OneTimeToken.user_id == user.id, OneTimeToken.used_at.is_(None))
            .values(used_at=now)
        )
        mail.email_changed(
            self.outbox,
            user,
            recipient=old,
            new_email=email,
            changed_at=now,
            by_helpdesk=by_helpdesk,
        )
        if by_helpdesk:
            mail.email_set_by_helpdesk(self.outbox, user, changed_at=now)
        return old

    def consume_temporary_password(self, user: User, password: str) -> bool:
        temporary = user.must_change_password and user.password_hash is not None
        expires_at = user.temp_password_expires_at
        if not temporary or expires_at is None:
            self.passwords.dummy_verify(password)
            return False
        if not self.passwords.verify(password, user.password_hash):
            return False
        if self.clock() >= expires_at:
            return False
        use_up_temporary_password(user)
        return True


def use_up_temporary_password(user: User) -> None:
    """A temporary password signs in once (AUTH-12): it is gone from now on."""
    user.password_hash = None
    user.temp_password_expires_at = None


def includeme(config) -> None:
    config.register_service_factory(UserService.create_service, IUserService)
