"""Single-use links: password reset ("Lupa Kata Laluan") and email change.

Both kinds are rows of one table, handled by :class:`OneTimeTokens`; the
email-change link (:class:`EmailChangeTokens`, 24 hours) also holds the
address it confirms, and is asked for and sent the same way as a reset link
(:func:`request_email_change`, :class:`EmailChangeJob`). The rest of this
note is about reset links.

A link carries 32 random bytes (256 bits); the database holds only their
SHA-256 in a :class:`~idp.models.OneTimeToken` row, so a dump of the table
opens no account. A token is live until it expires (:data:`RESET_LIFETIME`
after it was issued) or is used up; issuing a new link voids the user's older
ones, and a password change voids them all (``UserService.set_password``).

Asking for a link (:func:`request_link`) does the same in the request for
every email, registered or not: it queues a sealed job in the outbox and
looks nothing up. The delivery worker runs the job (:class:`ResetLinkJob`):
it finds the account, issues the token, queues the email and audits it, or,
for an email no usable account has, just drops the job. So the answer's
timing cannot tell a registered email from another (AUTH-28), and the link's
hour starts when it is issued, not when it was asked for.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid

from sqlalchemy import select, update

from idp.db import utcnow
from idp.models import AuditEvent, OneTimeToken, OutboxMessage, User
from idp.services import mail
from idp.services.audit import AuditLog

RESET_PURPOSE = "password-reset"
# The audit event of a wrong email or identity number given with a link; the
# events are what :meth:`ResetTokens.mismatches` counts.
MISMATCH_EVENT = "password.reset_mismatch"
RESET_LIFETIME = dt.timedelta(hours=1)
# The outbox job of a "Forgot password" request (see ResetLinkJob).
RESET_JOB = "password-reset"
TOKEN_BYTES = 32
# token_urlsafe(32) gives 43 characters; anything much longer is not ours and
# is refused before it is hashed.
TOKEN_MAX_LENGTH = 100


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class OneTimeTokens:
    """Issues, finds and voids one purpose's single-use links.

    A subclass names the purpose (``PURPOSE``) and the default lifetime
    (``LIFETIME``); every link of every purpose is 256 random bits, stored
    only as its SHA-256, and used up by a single conditional UPDATE.
    """

    PURPOSE: str
    LIFETIME: dt.timedelta

    def __init__(self, dbsession, clock=utcnow, lifetime: dt.timedelta | None = None):
        self.dbsession = dbsession
        self.clock = clock
        self.lifetime = lifetime or self.LIFETIME

    def issue(self, user: User, **values) -> str:
        """Void ``user``'s unused links; store a new one and return its token.

        ``values`` are further columns of the row (``new_email``).
        """
        self.void_all(user)
        now = self.clock()
        token = secrets.token_urlsafe(TOKEN_BYTES)
        self.dbsession.add(
            OneTimeToken(
                user_id=user.id,
                purpose=self.PURPOSE,
                token_hash=token_hash(token),
                created_at=now,
                expires_at=now + self.lifetime,
                **values,
            )
        )
        self.dbsession.flush()
        return token

    def _live(self, *criteria) -> OneTimeToken | None:
        return self.dbsession.scalars(
            select(OneTimeToken).where(
                OneTimeToken.purpose == self.PURPOSE,
                OneTimeToken.used_at.is_(None),
                OneTimeToken.expires_at > self.clock(),
                *criteria,
            )
        ).one_or_none()

    def find(self, token: str) -> OneTimeToken | None:
        """The live row of the link ``token``, or None (unknown, used, expired)."""
        if not token or len(token) > TOKEN_MAX_LENGTH:
            return None
        return self._live(OneTimeToken.token_hash == token_hash(token))

    def get(self, token_id: str) -> OneTimeToken | None:
        """The live row with this id (as kept in the session), or None."""
        try:
            row_id = uuid.UUID(str(token_id))
        except ValueError:
            return None
        return self._live(OneTimeToken.id == row_id)

    def void(self, row: OneTimeToken) -> bool:
        """Use up ``row``; True only for the one caller that used it up.

        A single conditional UPDATE, so two requests racing with the same
        link cannot both get True.
        """
        result = self.dbsession.execute(
            update(OneTimeToken)
            .where(OneTimeToken.id == row.id, OneTimeToken.used_at.is_(None))
            .values(used_at=self.clock())
        )
        return result.rowcount == 1

    def void_all(self, user: User) -> None:
        """Use up every unused link of this purpose of ``user``."""
        self.dbsession.execute(
            update(OneTimeToken)
            .where(
                OneTimeToken.user_id == user.id,
                OneTimeToken.purpose == self.PURPOSE,
                OneTimeToken.used_at.is_(None),
            )
            .values(used_at=self.clock())
        )


class ResetTokens(OneTimeTokens):
    """The links of "Lupa Kata Laluan"."""

    PURPOSE = RESET_PURPOSE
    LIFETIME = RESET_LIFETIME

    def mismatches(self, row: OneTimeToken) -> int:
        """How many wrong answers were given with the link ``row``.

        Counted from the append-only audit log (``MISMATCH_EVENT`` with
        ``detail["token"]``), not from the browser session, so starting over
        with a fresh session and the same link does not start a new count.
        """
        details = self.dbsession.scalars(
            select(AuditEvent.detail).where(
                AuditEvent.event == MISMATCH_EVENT,
                AuditEvent.subject_user_id == row.user_id,
                AuditEvent.occurred_at >= row.created_at,
            )
        )
        return sum(1 for detail in details if detail.get("token") == str(row.id))


def request_link(outbox, email: str, *, client_address: str | None) -> None:
    """Queue a reset link for ``email``, whoever it belongs to, if anyone.

    The same single outbox row for every email: the lookup and everything
    after it happen in :class:`ResetLinkJob`, outside the request.
    """
    outbox.defer(RESET_JOB, {"email": email, "client_address": client_address})


class LinkJob:
    """A job of the delivery worker that mails a link to the IdP (a base)."""

    def __init__(
        self,
        composer: mail.Composer,
        codec: mail.OutboxCodec,
        base_url: str,
        clock=utcnow,
    ) -> None:
        self.composer = composer
        self.codec = codec
        self.base_url = base_url.rstrip("/")
        self.clock = clock

    @classmethod
    def from_settings(cls, settings, codec: mail.OutboxCodec):
        return cls(mail.Composer(settings), codec, settings["idp.base_url"])


class ResetLinkJob(LinkJob):
    """Runs a queued :func:`request_link` in the delivery worker's transaction.

    Only an account that exists and is not disabled gets a link; a lock from
    failed sign-ins does not stop it, since the reset is how the owner ends
    one (AUTH-29).
    """

    def __call__(self, dbsession, row: OutboxMessage) -> None:
        data = mail.open_job(self.codec, row)
        user = dbsession.scalars(
            select(User).where(User.email == data["email"])
        ).one_or_none()
        if user is None or user.disabled_at is not None:
            return
        tokens = ResetTokens(dbsession, self.clock)
        token = tokens.issue(user)
        issued = tokens.find(token)
        assert issued is not None  # issued just now, in this transaction
        mail.password_reset(
            mail.Outbox(dbsession, self.composer, self.codec),
            user,
            link=f"{self.base_url}/password/reset/{token}",
            expires_at=issued.expires_at,
        )
        AuditLog(dbsession, self.clock).record(
            "password.reset_requested",
            subject_user_id=user.id,
            client_address=data.get("client_address"),
        )


# Changing the email in "Akaun saya"

EMAIL_CHANGE_PURPOSE = "email-change"
# Long enough to reach a mailbox one rarely opens, short enough that a link
# left lying in it soon stops working.
EMAIL_CHANGE_LIFETIME = dt.timedelta(hours=24)
# The outbox job of an email change asked for (see EmailChangeJob).
EMAIL_CHANGE_JOB = "email-change"


class EmailChangeTokens(OneTimeTokens):
    """The links that confirm a new email address; each row holds the address."""

    PURPOSE = EMAIL_CHANGE_PURPOSE
    LIFETIME = EMAIL_CHANGE_LIFETIME

    def issue(self, user: User, email: str) -> str:  # type: ignore[override]
        """A new link making ``email`` (normalised) ``user``'s address once opened."""
        return super().issue(user, new_email=email)


def request_email_change(
    outbox, user: User, email: str, *, client_address: str | None
) -> None:
    """Queue the confirmation of ``email`` as ``user``'s new address.

    The request looks nothing up and writes one sealed job, the same for an
    address another account has and one nobody has (AUTH-05, AUTH-06); the
    delivery worker decides what to send (:class:`EmailChangeJob`).
    """
    outbox.defer(
        EMAIL_CHANGE_JOB,
        {"user_id": str(user.id), "email": email, "client_address": client_address},
    )


class EmailChangeJob(LinkJob):
    """Runs a queued :func:`request_email_change` in the worker's transaction.

    A free address gets the confirmation link. An address another account
    has gets no link, only a note to that account's owner (who alone reads
    that mailbox) that it is already in use: the requester learns nothing,
    and nothing can move an address from one account to another. The
    database's unique constraint still decides at confirm time, for two
    accounts racing to one free address.
    """

    def __call__(self, dbsession, row: OutboxMessage) -> None:
        data = mail.open_job(self.codec, row)
        try:
            user = dbsession.get(User, uuid.UUID(data["user_id"]))
            email = data["email"]
        except (KeyError, ValueError):
            return
        if user is None or user.disabled_at is not None or user.email == email:
            return
        outbox = mail.Outbox(dbsession, self.composer, self.codec)
        owner = dbsession.scalars(select(User).where(User.email == email)).one_or_none()
        if owner is not None:
            # One note a day at most, however many accounts ask for it.
            day = f"{self.clock():%Y-%m-%d}"
            mail.email_change_in_use(
                outbox, owner, dedupe_key=f"email-change-in-use:{owner.id}:{day}"
            )
            return
        tokens = EmailChangeTokens(dbsession, self.clock)
        token = tokens.issue(user, email)
        issued = tokens.find(token)
        assert issued is not None  # issued just now, in this transaction
        mail.email_change_confirm(
            outbox,
            user,
            recipient=email,
            link=f"{self.base_url}/account/email/confirm/{token}",
            expires_at=issued.expires_at,
        )
