import datetime as dt

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from idp.db import Base, utcnow


class SeenRequestId(Base):
    """(issuer, request ID) pairs kept for their lifetime: replay defence."""

    __tablename__ = "seen_request_ids"

    issuer: Mapped[str] = mapped_column(String(1024), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)


class PendingSamlRequest(Base):
    """A validated AuthnRequest waiting for the user to sign in.

    POST-binding requests arrive cross-site without the session cookie, so
    they are stored here and continued by a same-site redirect.
    """

    __tablename__ = "pending_saml_requests"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    sp_id: Mapped[int] = mapped_column(
        ForeignKey("service_providers.id", ondelete="CASCADE")
    )
    binding: Mapped[str] = mapped_column(String(128))
    request_xml: Mapped[str] = mapped_column(Text)
    relay_state: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
    consumed_at: Mapped[dt.datetime | None]
