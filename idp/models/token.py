import datetime as dt
import uuid

from sqlalchemy import ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from idp.db import Base, new_uuid, utcnow


class OneTimeToken(Base):
    """A single-use link (password reset, email change); only its hash.

    ``new_email`` is the address an email-change link confirms.
    """

    __tablename__ = "one_time_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_uuid)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    purpose: Mapped[str] = mapped_column(String(32))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]
    new_email: Mapped[str | None] = mapped_column(String(254))


class CaptchaChallenge(Base):
    """A captcha issued by the server; consumed at its first check.

    It is bound to the form it was shown on (``purpose``) and to the
    session that saw it (``binding``, a keyed hash of a nonce kept in that
    session), so it cannot be answered anywhere else (AUTH-24). Its sound is
    rendered once, at the first fetch, and kept here (AUTH-25).
    """

    __tablename__ = "captcha_challenges"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_uuid)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    answer_hash: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(16))
    binding: Mapped[str] = mapped_column(String(64))
    audio: Mapped[bytes | None] = mapped_column(LargeBinary)
    audio_locale: Mapped[str | None] = mapped_column(String(8))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
    used_at: Mapped[dt.datetime | None]
