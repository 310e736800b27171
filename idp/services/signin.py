"""Checking a password at sign-in: throttling, lockout, and one answer for all.

Every attempt ends in one of three outcomes, and the page shows one message
per outcome whatever the reason behind it: a wrong password, an unknown
identifier, a locked or disabled account and an expired temporary password
are all ``FAILED``. Throttling is checked before any hashing (a blocked
request never costs a bcrypt).

Two kinds of limits, because they slow different people:

- Per identifier (registered or not): past ``login.identifier`` every
  attempt is refused, the right password too (AUTH-07), and a registered
  account is locked, told by email and signed out everywhere. Anyone who
  knows an identity number can cause this, so a lock caused by failures is
  always temporary (AUTH-29): the n-th lock within ``login.locks``' window
  lasts :data:`LOCK_PERIOD` times :data:`LOCK_GROWTH` ** (n - 1), growing
  only until the n that reaches ``login.locks``' count (15 minutes, 1 hour,
  then 4 hours with the defaults), and a password reset by email ends it at
  once. Only an operator (``idp-admin user lock``) disables an account.
- Per client address and its network prefix: a school or a carrier's NAT
  puts many honest people behind one address, so exceeding these limits
  never refuses a right password; it makes every attempt from there solve
  the captcha first (AUTH-30). Only with the captcha switched off (tests)
  do they refuse outright, since nothing else tells a person from a script.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
from dataclasses import dataclass
from typing import cast

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from zope.interface import implementer

from idp.db import utcnow
from idp.identifiers import Identifier, IdentifierKind
from idp.models import NumberLock, User
from idp.models.session import end_user_sessions
from idp.services import mail
from idp.services.interfaces import (
    IAuditLog,
    IOutbox,
    IPasswordService,
    IRateLimiter,
    ISignInService,
    ITwoFactorService,
    IUserService,
)
from idp.services.two_factor import has_second_factor
from idp.services.users import use_up_temporary_password

# The first lock of a day; each later one lasts LOCK_GROWTH times longer,
# until the lock that reaches login.locks' count (4 hours by default).
LOCK_PERIOD = dt.timedelta(minutes=15)
LOCK_GROWTH = 4
# The password step warns once this many failures or fewer are left before
# the number locks: enough to make a person stop and choose "Forgot
# password", too few to tell a guesser anything the limit does not.
WARN_WITHIN = 3
# A number's lock mark is kept this long after its lock ended: as long as
# login.locks remembers the lock itself, by default.
LOCK_MEMORY = dt.timedelta(days=1)
# How every sign-in here authenticates: the user confirmed their security
# image, then gave the password. Sessions record it; SAML maps it to an
# AuthnContextClassRef.
AUTHN_METHOD = "password+security-image"
# The same, then a code from the user's authenticator or a recovery code.
AUTHN_METHOD_TWO_STEP = "password+security-image+totp"
# The lock reason of wrong codes after a right password: its email says the
# password is known to someone, which a lock from wrong passwords must not.
CODE_FAILURES = "code-failures"


class Outcome(enum.StrEnum):
    OK = "ok"
    FAILED = "failed"
    THROTTLED = "throttled"
    # The password is right and the user has a second factor: no sign-in
    # yet, and the identifier's failures stay counted until the code is right.
    SECOND_STEP = "second-step"


@dataclass(frozen=True)
class Attempt:
    outcome: Outcome
    user: User | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK


@dataclass(frozen=True)
class LockWarning:
    """Failures left before a number locks, and how long that lock would last."""

    remaining: int
    period: dt.timedelta


def lock_period(locks) -> dt.timedelta:
    """How long the lock counted by ``locks`` (a ``login.locks`` hit) lasts."""
    return LOCK_PERIOD * LOCK_GROWTH ** (max(1, min(locks.count, locks.limit)) - 1)


def password_mark(user: User) -> str:
    """A fingerprint of the user's stored password, kept between the two steps.

    If it changes before the code step is done (a reset, the temporary
    password used up in another browser), the code step starts over.
    """
    return hashlib.sha256((user.password_hash or "").encode()).hexdigest()[:32]


def masked(identifier_value: str, kind: str) -> str:
    return Identifier(cast(IdentifierKind, kind), identifier_value).masked


@implementer(ISignInService)
class SignInService:
    def __init__(
        self,
        dbsession,
        *,
        users,
        passwords,
        limiter,
        audit,
        outbox,
        two_factor=None,
        clock=utcnow,
    ) -> None:
        self.dbsession = dbsession
        self.two_factor = two_factor
        self.users = users
        self.passwords = passwords
        self.limiter = limiter
        self.audit = audit
        self.outbox = outbox
        self.clock = clock

    @classmethod
    def create_service(cls, context, request) -> SignInService:
        return cls(
            request.dbsession,
            users=request.service(IUserService),
            passwords=request.service(IPasswordService),
            limiter=request.service(IRateLimiter),
            audit=request.service(IAuditLog),
            outbox=request.service(IOutbox),
            two_factor=request.service(ITwoFactorService),
        )

    @staticmethod
    def _address_keys(address: str) -> list[tuple[str, str]]:
        from idp.services.ratelimit import address_prefix

        return [("login.address", address), ("login.prefix", address_prefix(address))]

    def _exhausted(self, keys: list[tuple[str, str]]) -> bool:
        return any(not self.limiter.check(name, key).allowed for name, key in keys)

    def throttled(self, identifier: str, address: str) -> bool:
        """True if this identifier is past its limit: even right passwords fail."""
        return self._exhausted([("login.identifier", identifier)])

    def address_limited(self, address: str) -> bool:
        """True if failures from ``address`` or its prefix are past their limits."""
        return self._exhausted(self._address_keys(address))

    def captcha_required(self, address: str) -> bool:
        """True if an attempt from ``address`` must solve the captcha first.

        So it must while failures across the whole site run above their limit
        (AUTH-09), or from this address or its network (AUTH-08, AUTH-30).
        """
        return self._exhausted([("login.global", "site")]) or self.address_limited(
            address
        )

    def lock_warning(self, identifier: str) -> LockWarning | None:
        """The warning due before ``identifier`` locks, or None while many tries remain.

        Both counts it reads are kept per number whether or not anyone
        registered it (see :meth:`_failed`), so a number nobody owns gets
        the very warning a registered one would (AUTH-01).
        """
        failures = self.limiter.check("login.identifier", identifier)
        remaining = failures.limit - failures.count
        if not 0 < remaining <= WARN_WITHIN:
            return None
        locks = self.limiter.check("login.locks", identifier)
        upcoming = dataclasses.replace(locks, count=locks.count + 1)
        return LockWarning(remaining, lock_period(upcoming))

    def attempt(
        self,
        identifier: str,
        kind: str,
        password: str,
        address: str,
        user_agent: str | None = None,
        *,
        captcha_solved: bool = False,
    ) -> Attempt:
        """Check ``password`` for the normalised ``identifier``.

        ``captcha_solved`` says the caller checked a captcha answer for this
        very attempt; without it an address past its limits is refused, so a
        caller that forgets the captcha fails closed. ``user_agent`` is kept
        with a successful sign-in, for the user's own list of recent sign-ins.
        """
        if self.throttled(identifier, address) or (
            not captcha_solved and self.address_limited(address)
        ):
            self.audit.record(
                "login.throttled",
                client_address=address,
                detail={"identifier": masked(identifier, kind)},
            )
            return Attempt(Outcome.THROTTLED)
        user = self.users.find_by_identifier(identifier)
        ok = second_step = False
        now = self.clock()
        if user is not None and user.usable(now) and user.password_hash:
            if user.must_change_password and user.temp_password_expires_at:
                # With a second factor, used up only once the code is right
                # too (second_step()): a code step never finished must not
                # strand the owner. Asked only of a right password, so the
                # query costs nothing a wrong guess could time (AUTH-06).
                ok = self.passwords.verify(password, user.password_hash) and (
                    now < user.temp_password_expires_at
                )
                second_step = ok and has_second_factor(self.dbsession, user.id)
                if ok and not second_step:
                    use_up_temporary_password(user)
            else:
                ok = self.passwords.verify(password, user.password_hash)
                if ok and self.passwords.needs_rehash(user.password_hash):
                    user.password_hash = self.passwords.hash(password)
                second_step = ok and has_second_factor(self.dbsession, user.id)
        else:
            self.passwords.dummy_verify(password)
        if ok and second_step:
            # Not reset here: were a right password to forget the failures,
            # whoever holds it could type it again every nine codes and walk
            # all million of them (tests/functional/test_two_step_signin.py).
            self.audit.record(
                "login.second_step",
                subject_user_id=user.id,
                client_address=address,
            )
            return Attempt(Outcome.SECOND_STEP, user)
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

    def second_step(
        self,
        user: User,
        kind: str,
        code: str,
        address: str,
        user_agent: str | None = None,
    ) -> Attempt:
        """Check the code typed after a right password (:attr:`Outcome.SECOND_STEP`).

        ``code`` is an authenticator code or a recovery code. A wrong one
        counts exactly as a wrong password: against ``login.identifier`` (and
        the address limits), audited as ``login.code_failure``, locking the
        account at the limit; past the limit every code is refused, the right
        one too. A right one finishes the sign-in: the failures are
        forgotten, a pending temporary password is used up, and
        ``login.success`` records which factor was used.
        """
        assert self.two_factor is not None, "built without the two-factor service"
        identifier = user.identifier
        if self.throttled(identifier, address):
            self.audit.record(
                "login.throttled",
                client_address=address,
                detail={"identifier": masked(identifier, kind), "step": "code"},
            )
            return Attempt(Outcome.THROTTLED)
        now = self.clock()
        expires = user.temp_password_expires_at if user.must_change_password else None
        verdict = None
        if user.usable(now) and (expires is None or now < expires):
            verdict = self.two_factor.verify(user, code)
        if verdict is not None and verdict.ok:
            if expires is not None:
                # The temporary password, kept by attempt(), is used up now.
                use_up_temporary_password(user)
            self.limiter.reset("login.identifier", identifier)
            self.audit.record(
                "login.success",
                subject_user_id=user.id,
                client_address=address,
                detail={
                    "user_agent": (user_agent or "")[:200],
                    "second_factor": verdict.value,
                },
            )
            return Attempt(Outcome.OK, user)
        self._failed(identifier, kind, user, address, event="login.code_failure")
        return Attempt(Outcome.FAILED)

    def reauthenticate(
        self, user: User, password: str, *, forget_failures: bool = True
    ) -> Outcome:
        """Check the signed-in ``user``'s current password, as "Akaun saya" asks.

        The identifier's limit is sign-in's own: a wrong password counts as
        a failed sign-in, and the one that reaches ``login.identifier``
        returns ``THROTTLED``, for the caller to end the browser's session
        and then :meth:`lock` the account (the other order would delete that
        session's row twice). A right one forgets the failures, unless
        ``forget_failures`` is False: a change that also asks for a code
        (:meth:`check_code`) forgets them only once the code is right too, or
        the password, typed again with each wrong code, would let the codes
        be walked.
        """
        if user.password_hash and self.passwords.verify(password, user.password_hash):
            if forget_failures:
                self.limiter.reset("login.identifier", user.identifier)
            return Outcome.OK
        if not user.password_hash:
            self.passwords.dummy_verify(password)
        decision = self.limiter.hit("login.identifier", user.identifier)
        if decision.count >= decision.limit:
            return Outcome.THROTTLED
        return Outcome.FAILED

    def check_code(self, user: User, code: str, address: str | None = None) -> Outcome:
        """Check a code the signed-in ``user`` gives for a two-step change.

        ``code`` is an authenticator code or a recovery code, used up if
        right. A wrong one counts as a wrong password (``login.identifier``),
        and ``THROTTLED`` means this one reached the limit: as with
        :meth:`reauthenticate`, the caller ends the browser's session, then
        calls :meth:`lock`. A right one forgets the failures.
        """
        assert self.two_factor is not None, "built without the two-factor service"
        if self.two_factor.verify(user, code).ok:
            self.limiter.reset("login.identifier", user.identifier)
            return Outcome.OK
        decision = self.limiter.hit("login.identifier", user.identifier)
        self.audit.record(
            "account.code_failure", subject_user_id=user.id, client_address=address
        )
        if decision.count >= decision.limit:
            return Outcome.THROTTLED
        return Outcome.FAILED

    def _failed(
        self, identifier: str, kind: str, user, address: str, event="login.failure"
    ) -> None:
        decision = self.limiter.hit("login.identifier", identifier)
        for name, key in [*self._address_keys(address), ("login.global", "site")]:
            self.limiter.hit(name, key)
        self.audit.record(
            event,
            subject_user_id=user.id if user is not None else None,
            client_address=address,
            detail={"identifier": masked(identifier, kind)},
        )
        if decision.count < decision.limit:
            return
        # Every number that reaches its limit while no lock of it runs counts
        # a lock, registered or not, and its end is kept alike: the next
        # lock's length, which the password step states, must not tell who
        # is registered. While one runs, more failures make no new lock.
        now = self.clock()
        mark = self._lock_mark(identifier, now)
        if mark is None:
            return
        locks = self.limiter.hit("login.locks", identifier)
        mark.until = now + lock_period(locks)
        if user is not None and user.usable(now):
            reason = CODE_FAILURES if event == "login.code_failure" else "failures"
            self.lock(user, reason=reason, address=address, locks=locks)

    def _lock_mark(self, identifier: str, now: dt.datetime) -> NumberLock | None:
        """The number's lock mark, held for this request; None if a lock runs.

        Two requests reaching the limit at once must count one lock: an
        existing mark is read FOR UPDATE, so the second waits and then sees
        the lock running; a new one is inserted in a savepoint, and the
        request that loses the insert leaves the counting to the winner.
        """
        key = self.limiter.private_key("login.locks", identifier)
        mark = self.dbsession.get(NumberLock, key, with_for_update=True)
        if mark is not None:
            return None if mark.until > now else mark
        self.dbsession.execute(
            delete(NumberLock).where(NumberLock.until < now - LOCK_MEMORY)
        )
        mark = NumberLock(key=key, until=now)
        try:
            with self.dbsession.begin_nested():
                self.dbsession.add(mark)
        except IntegrityError:
            return None
        return mark

    def lock(
        self,
        user: User,
        *,
        reason: str,
        address: str | None = None,
        actor_user_id=None,
        locks=None,
    ) -> None:
        """Lock ``user`` for a while: longer for each lock of the day, never for good.

        Ends every session of the user at once and tells the owner by email
        what happened and what to do (wait, or reset the password by email,
        which ends the lock). Never sets ``disabled_at``: that is the
        operator's lock, and failures anyone can cause must not reach it.
        ``locks`` is the ``login.locks`` hit the caller already counted for
        this lock; without it the lock counts itself.
        """
        now = self.clock()
        if locks is None:
            locks = self.limiter.hit("login.locks", user.identifier)
        period = lock_period(locks)
        # A lock never shortens one already running (a lock at the password
        # change page while a longer one is in force, for instance).
        until = now + period
        if user.locked_until is None or user.locked_until < until:
            user.locked_until = until
        end_user_sessions(self.dbsession, user.id)
        self.audit.record(
            "account.locked",
            subject_user_id=user.id,
            actor_user_id=actor_user_id,
            client_address=address,
            detail={
                "reason": reason,
                "until_unlocked": False,
                "minutes": int(period.total_seconds() // 60),
            },
        )
        if reason == CODE_FAILURES:
            # The password was right: the owner must hear that it is known.
            mail.account_locked_codes(self.outbox, user, until=user.locked_until)
        else:
            mail.account_locked(self.outbox, user, until=user.locked_until)


def includeme(config) -> None:
    config.register_service_factory(SignInService.create_service, ISignInService)
