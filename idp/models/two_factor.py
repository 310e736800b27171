import datetime as dt
import uuid

from sqlalchemy import BigInteger, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from idp.db import Base, new_uuid, utcnow


class TotpCredential(Base):
    """A user's authenticator (RFC 6238): its secret, sealed, and the last step used.

    ``secret`` is the 160-bit key sealed with AES-256-GCM under a key derived
    from ``idp.hmac_key``, bound to the user's id (a row's secret cannot be
    moved to another user). ``confirmed_at`` is None while the user has
    scanned the QR code but not yet typed a code from it: the second factor
    is on only once confirmed. ``last_step`` is the 30-second step of the
    last code accepted; a code of that step or an earlier one is refused, so
    a code is good once (replay).
    """

    __tablename__ = "totp_credentials"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    secret: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    confirmed_at: Mapped[dt.datetime | None]
    last_step: Mapped[int | None] = mapped_column(BigInteger)


class RecoveryCode(Base):
    """One single-use recovery code, for when the authenticator is lost.

    Only a keyed hash is stored (HMAC-SHA256 under a key derived from
    ``idp.hmac_key``): a database dump alone cannot be searched for codes.
    ``used_at`` is set, once, by the sign-in or change that used it.
    """

    __tablename__ = "recovery_codes"
    __table_args__ = (UniqueConstraint("user_id", "code_hash"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_uuid)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    used_at: Mapped[dt.datetime | None]
