import datetime as dt
import uuid

from sqlalchemy import BigInteger, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

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


class LogoutFlow(Base):
    """One single logout: the IdP session is already ended; the SPs follow.

    Started by an SP's LogoutRequest (``initiator_*`` set, answered with a
    LogoutResponse at the end) or by sign-out at the IdP. Each other SP of
    the session is a :class:`LogoutLeg`; the flow is over when every leg has
    answered or ``deadline_at`` has passed, so one silent SP never blocks
    the others.
    """

    __tablename__ = "logout_flows"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    initiator_sp_id: Mapped[int | None] = mapped_column(
        ForeignKey("service_providers.id", ondelete="SET NULL")
    )
    initiator_request_id: Mapped[str | None] = mapped_column(String(256))
    relay_state: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    deadline_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)

    initiator = relationship("ServiceProvider")
    legs = relationship(
        "LogoutLeg",
        back_populates="flow",
        cascade="all, delete-orphan",
        order_by="LogoutLeg.id",
    )


class LogoutLeg(Base):
    """One SP to be told of a logout, and what it answered."""

    __tablename__ = "logout_legs"

    id: Mapped[int] = mapped_column(primary_key=True)
    flow_id: Mapped[int] = mapped_column(
        ForeignKey("logout_flows.id", ondelete="CASCADE"), index=True
    )
    sp_id: Mapped[int] = mapped_column(
        ForeignKey("service_providers.id", ondelete="CASCADE")
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    request_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    name_id: Mapped[str] = mapped_column(String(256))
    name_id_format: Mapped[str] = mapped_column(String(256))
    session_index: Mapped[str] = mapped_column(String(64))
    # pending -> sent -> done | failed
    status: Mapped[str] = mapped_column(String(16), default="pending")
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    flow = relationship("LogoutFlow", back_populates="legs")
    sp = relationship("ServiceProvider")


class SloHourlyCount(Base):
    """Single-logout legs of purged flows, per outcome and UTC hour.

    A logout flow goes within minutes of its end (``idp.services.purge``);
    the purge adds its legs' outcomes here first, so the console's charts
    cover 30 days. A leg still pending or sent at the purge never had an
    answer: it counts as ``timeout``.
    """

    __tablename__ = "slo_hourly_counts"

    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    hour: Mapped[dt.datetime] = mapped_column(primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)
