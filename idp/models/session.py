import datetime as dt
import uuid

from sqlalchemy import JSON, ForeignKey, String, delete
from sqlalchemy.orm import Mapped, mapped_column, relationship

from idp.db import Base, new_uuid, utcnow


class IdpSession(Base):
    """A server-side IdP session. Only the SHA-256 of its cookie is stored."""

    __tablename__ = "idp_sessions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_uuid)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    authn_method: Mapped[str | None] = mapped_column(String(256))
    authn_at: Mapped[dt.datetime | None]
    client_address: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)

    participants = relationship(
        "SessionParticipant", back_populates="session", cascade="all, delete-orphan"
    )


def end_user_sessions(dbsession, user_id, *, keep: IdpSession | None = None) -> int:
    """Delete every session of a user (lock, password change); return how many.

    ``keep`` is a session row to spare: the one the user is changing their
    password in. Whoever holds the current browser's session ends it first
    (``request.session.invalidate()``), or its row would be deleted twice.
    """
    query = delete(IdpSession).where(IdpSession.user_id == user_id)
    if keep is not None:
        query = query.where(IdpSession.id != keep.id)
    return dbsession.execute(query).rowcount


class SessionParticipant(Base):
    """An SP this session sent an assertion to, kept for single logout."""

    __tablename__ = "session_participants"

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("idp_sessions.id", ondelete="CASCADE"), index=True
    )
    sp_id: Mapped[int] = mapped_column(
        ForeignKey("service_providers.id", ondelete="CASCADE"), index=True
    )
    name_id: Mapped[str] = mapped_column(String(256))
    name_id_format: Mapped[str] = mapped_column(String(256))
    session_index: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    session = relationship("IdpSession", back_populates="participants")
