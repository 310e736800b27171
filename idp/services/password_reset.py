"""Forgot password ("Lupa Kata Laluan"): every rule of the flow behind its pages.

The pages (:mod:`idp.views.reset`) keep where the browser is in the flow;
this service decides everything else: what asking for a link costs and
queues, which link and user a step may act on, when wrong answers use a
link up, and what a reset changes. The links themselves are
:class:`~idp.services.tokens.ResetTokens`, mailed by the delivery worker's
:class:`~idp.services.tokens.ResetLinkJob`.
"""

from __future__ import annotations

import logging

from zope.interface import implementer

from idp.db import utcnow
from idp.models import OneTimeToken, User
from idp.services.interfaces import (
    IAuditLog,
    IOutbox,
    IPasswordResetService,
    IRateLimiter,
    IUserService,
)
from idp.services.tokens import (
    MISMATCH_EVENT,
    RESET_LIFETIME,
    ResetTokens,
    request_link,
)
from idp.services.users import PasswordChange

log = logging.getLogger(__name__)

# Wrong email and identity number pairs a link survives; the next one uses
# it up (AUTH-16).
MAX_MISMATCHES = 5
# What asking for a link counts against, by client address and by email.
REQUEST_LIMITS = ("reset.address", "reset.email")


@implementer(IPasswordResetService)
class PasswordResetService:
    lifetime = RESET_LIFETIME

    def __init__(self, dbsession, *, users, limiter, audit, outbox, clock=utcnow):
        self.dbsession = dbsession
        self.users = users
        self.limiter = limiter
        self.audit = audit
        self.outbox = outbox
        self.tokens = ResetTokens(dbsession, clock)

    @classmethod
    def create_service(cls, context, request) -> PasswordResetService:
        return cls(
            request.dbsession,
            users=request.service(IUserService),
            limiter=request.service(IRateLimiter),
            audit=request.service(IAuditLog),
            outbox=request.service(IOutbox),
        )

    def request_link(self, email: str, *, client_address: str) -> None:
        """Queue a reset link for ``email``; say nothing either way.

        The request does the same for every email, registered or not
        (AUTH-28): count it against the limits and queue one job. Finding
        the account, issuing the token and writing the email happen in the
        delivery worker (:class:`idp.services.tokens.ResetLinkJob`).
        """
        for name, key in zip(REQUEST_LIMITS, (client_address, email), strict=True):
            if not self.limiter.hit(name, key).allowed:
                log.info("password reset throttled by %s", name)
                self.audit.record(
                    "password.reset_throttled",
                    client_address=client_address,
                    detail={"limit": name},
                )
                return
        request_link(self.outbox, email, client_address=client_address)

    def find(self, token: str) -> OneTimeToken | None:
        return self.tokens.find(token)

    def progress(self, token_id: str | None) -> tuple[OneTimeToken, User] | None:
        row = self.tokens.get(token_id)
        if row is None:
            return None
        user = self.dbsession.get(User, row.user_id)
        if user is None or user.disabled_at is not None:
            return None
        return row, user

    def mismatch(
        self, row: OneTimeToken, user: User, *, client_address: str | None
    ) -> bool:
        # A wrong answer counts as a failed sign-in of the account too.
        self.limiter.hit("login.identifier", user.identifier)
        self.audit.record(
            MISMATCH_EVENT,
            subject_user_id=user.id,
            client_address=client_address,
            detail={"token": str(row.id)},
        )
        if self.tokens.mismatches(row) < MAX_MISMATCHES:
            return False
        self.tokens.void(row)
        return True

    def use(self, row: OneTimeToken) -> bool:
        return self.tokens.void(row)

    def reset(self, user: User, password: str, *, client_address: str | None) -> None:
        self.users.set_password(
            user, password, how=PasswordChange.RESET, client_address=client_address
        )
        # Proving the mailbox and the identity number lifts a lock from
        # failed sign-ins; an account disabled by the helpdesk stays disabled.
        user.locked_until = None
        self.limiter.reset("login.identifier", user.identifier)


def includeme(config) -> None:
    config.register_service_factory(
        PasswordResetService.create_service, IPasswordResetService
    )
