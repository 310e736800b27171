"""Reset links ("Lupa Kata Laluan"): single use, short-lived, bound to a user.

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


class ResetTokens:
    """Issues, finds and voids the reset tokens of users."""

    def __init__(
        self, dbsession, clock=utcnow, lifetime: dt.timedelta = RESET_LIFETIME
    ):
        self.dbsession = dbsession
        self.clock = clock
        self.lifetime = lifetime

    def issue(self, user: User) -> str:
        """Void ``user``'s unused links; store a new one and return its token."""
        self.void_all(user)
        now = self.clock()
        token = secrets.token_urlsafe(TOKEN_BYTES)
        self.dbsession.add(
            OneTimeToken(
                user_id=user.id,
                purpose=RESET_PURPOSE,
                token_hash=token_hash(token),
                created_at=now,
                expires_at=now + self.lifetime,
            )
        )
        self.dbsession.flush()
        return token

    def _live(self, *criteria) -> OneTimeToken | None:
        return self.dbsession.scalars(
            select(OneTimeToken).where(
                OneTimeToken.purpose == RESET_PURPOSE,
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
        """Use up every unused reset link of ``user``."""
        self.dbsession.execute(
            update(OneTimeToken)
            .where(
                OneTimeToken.user_id == user.id,
                OneTimeToken.purpose == RESET_PURPOSE,
                OneTimeToken.used_at.is_(None),
            )
            .values(used_at=self.clock())
        )


def request_link(outbox, email: str, *, client_address: str | None) -> None:
    """Queue a reset link for ``email``, whoever it belongs to, if anyone.

    The same single outbox row for every email: the lookup and everything
    after it happen in :class:`ResetLinkJob`, outside the request.
    """
    outbox.defer(RESET_JOB, {"email": email, "client_address": client_address})


class ResetLinkJob:
    """Runs a queued :func:`request_link` in the delivery worker's transaction.

    Only an account that exists and is not disabled gets a link; a lock from
    failed sign-ins does not stop it, since the reset is how the owner ends
    one (AUTH-29).
    """

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
    def from_settings(cls, settings, codec: mail.OutboxCodec) -> ResetLinkJob:
        return cls(mail.Composer(settings), codec, settings["idp.base_url"])

    def __call__(self, dbsession, row: OutboxMessage) -> None:
        data = mail.open_job(self.codec, row)
        user = dbsession.scalars(
            select(User).where(User.email == data["email"])
        ).one_or_none()
        if user is None or user.disabled_at is not None:
            return
        tokens = ResetTokens(dbsession, self.clock)
        token = tokens.issue(user)
        mail.password_reset(
            mail.Outbox(dbsession, self.composer, self.codec),
            user,
            link=f"{self.base_url}/password/reset/{token}",
            expires_at=tokens.find(token).expires_at,
        )
        AuditLog(dbsession, self.clock).record(
            "password.reset_requested",
            subject_user_id=user.id,
            client_address=data.get("client_address"),
        )
