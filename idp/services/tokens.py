"""Reset links ("Lupa Kata Laluan"): single use, short-lived, bound to a user.

A link carries 32 random bytes (256 bits); the database holds only their
SHA-256 in a :class:`~idp.models.OneTimeToken` row, so a dump of the table
opens no account. A token is live until it expires (:data:`RESET_LIFETIME`
after it was issued) or is used up; issuing a new link voids the user's older
ones, and a password change voids them all (``UserService.set_password``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid

from sqlalchemy import select, update

from idp.db import utcnow
from idp.models import AuditEvent, OneTimeToken, User

RESET_PURPOSE = "password-reset"
# The audit event of a wrong email or identity number given with a link; the
# events are what :meth:`ResetTokens.mismatches` counts.
MISMATCH_EVENT = "password.reset_mismatch"
RESET_LIFETIME = dt.timedelta(hours=1)
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
