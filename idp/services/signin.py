"""Checking a password at sign-in: throttling, lockout, and one answer for all.

Every attempt ends in one of three outcomes, and the page shows one message
per outcome whatever the reason behind it: a wrong password, an unknown
identifier, a locked or disabled account and an expired temporary password
are all ``FAILED``. Throttling is checked before any hashing (a blocked
request never costs a bcrypt), is keyed by the identifier whether or not it
is registered, and by the client address and its network prefix. A user who
reaches the failure limit is locked for a while, told by email, and signed
out everywhere; the third lock in a day needs the helpdesk to unlock.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from zope.interface import implementer

from idp.db import utcnow
from idp.identifiers import Identifier
from idp.models import User
from idp.security import usable
from idp.services import mail
from idp.services.interfaces import (
    IAuditLog,
    IOutbox,
    IPasswordService,
    IRateLimiter,
    ISignInService,
    IUserService,
)
from idp.sessions import end_user_sessions

LOCK_PERIOD = dt.timedelta(minutes=15)
# How every sign-in here authenticates: the user confirmed their security
# image, then gave the password. Sessions record it; SAML maps it to an
# AuthnContextClassRef.
AUTHN_METHOD = "password+security-image"


class Outcome(enum.StrEnum):
    OK = "ok"
    FAILED = "failed"
    THROTTLED = "throttled"


@dataclass(frozen=True)
class Attempt:
    outcome: Outcome
    user: User | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK


def masked(identifier_value: str, kind: str) -> str:
    return Identifier(kind, identifier_value).masked


@implementer(ISignInService)
class SignInService:
    def __init__(
        self, dbsession, *, users, passwords, limiter, audit, outbox, clock=utcnow
    ) -> None:
        self.dbsession = dbsession
        self.users = users
        self.passwords = passwords
        self.limiter = limiter
        self.audit = audit
        self.outbox = outbox
        self.clock = clock

    @classmethod
    def create_service(cls, context, request) -> SignInService:
        def find(iface):
            return request.find_service(iface, context=None)

        return cls(
            request.dbsession,
            users=find(IUserService),
            passwords=find(IPasswordService),
            limiter=find(IRateLimiter),
            audit=find(IAuditLog),
            outbox=find(IOutbox),
        )

    def _keys(self, identifier: str, address: str) -> list[tuple[str, str]]:
        from idp.services.ratelimit import address_prefix

        return [
            ("login.identifier", identifier),
            ("login.address", address),
            ("login.prefix", address_prefix(address)),
        ]

    def throttled(self, identifier: str, address: str) -> bool:
        """True if any limiter on this identifier or address is exhausted."""
        for name, key in self._keys(identifier, address):
            decision = self.limiter.check(name, key)
            if decision.count >= decision.limit:
                return True
        return False

    def captcha_required(self) -> bool:
        """True while failures across the whole site run above their limit."""
        decision = self.limiter.check("login.global", "site")
        return decision.count >= decision.limit

    def attempt(
        self,
        identifier: str,
        kind: str,
        password: str,
        address: str,
        user_agent: str | None = None,
    ) -> Attempt:
        """Check ``password`` for the normalised ``identifier``.

        ``user_agent`` is kept with a successful sign-in, for the user's own
        list of recent sign-ins.
        """
        if self.throttled(identifier, address):
            self.audit.record(
                "login.throttled",
                client_address=address,
                detail={"identifier": masked(identifier, kind)},
            )
            return Attempt(Outcome.THROTTLED)
        user = self.users.find_by_identifier(identifier)
        ok = False
        if usable(user, self.clock()) and user.password_hash:
            if user.must_change_password and user.temp_password_expires_at:
                ok = self.users.consume_temporary_password(user, password)
            else:
                ok = self.passwords.verify(password, user.password_hash)
                if ok and self.passwords.needs_rehash(user.password_hash):
                    user.password_hash = self.passwords.hash(password)
        else:
            self.passwords.dummy_verify(password)
        if ok:
            self.limiter.reset("login.identifier", identifier)
            self.audit.record(
                "login.success",
                subject_user_id=user.id,
                client_address=address,
                detail={"user_agent": (user_agent or "")[:200]},
            )
            return Attempt(Outcome.OK, user)
        self._failed(identifier, kind, user, address)
        return Attempt(Outcome.FAILED)

    def _failed(self, identifier: str, kind: str, user, address: str) -> None:
        decision = None
        for name, key in [*self._keys(identifier, address), ("login.global", "site")]:
            hit = self.limiter.hit(name, key)
            if name == "login.identifier":
                decision = hit
        self.audit.record(
            "login.failure",
            subject_user_id=user.id if user is not None else None,
            client_address=address,
            detail={"identifier": masked(identifier, kind)},
        )
        now = self.clock()
        still_open = user is not None and usable(user, now)
        if still_open and decision.count >= decision.limit:
            self.lock(user, reason="failures", address=address)

    def lock(
        self, user: User, *, reason: str, address: str | None = None, actor_user_id=None
    ) -> None:
        """Lock ``user`` for a while (for good after the third lock in a day).

        Ends every session of the user at once and tells the owner by email.
        """
        now = self.clock()
        locks = self.limiter.hit("login.locks", user.identifier)
        needs_helpdesk = locks.count >= locks.limit
        user.locked_until = now + LOCK_PERIOD
        if needs_helpdesk:
            user.disabled_at = now
        end_user_sessions(self.dbsession, user.id)
        self.audit.record(
            "account.locked",
            subject_user_id=user.id,
            actor_user_id=actor_user_id,
            client_address=address,
            detail={"reason": reason, "until_unlocked": needs_helpdesk},
        )
        mail.account_locked(
            self.outbox, user, until=user.locked_until, needs_helpdesk=needs_helpdesk
        )


def includeme(config) -> None:
    config.register_service_factory(SignInService.create_service, ISignInService)
