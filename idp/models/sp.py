import datetime as dt
import uuid
from typing import TYPE_CHECKING

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from idp.db import Base, utcnow

NAMEID_PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"


class ServiceProvider(Base):
    """A registered SAML service provider: its metadata and its policy."""

    __tablename__ = "service_providers"

    if TYPE_CHECKING:
        # Not a column: idp.saml.registry.import_sp sets it on the instance
        # it returns, for the caller to report (kept out of the mapping).
        trust_changes: list[str]

    id: Mapped[int] = mapped_column(primary_key=True)
    entity_id: Mapped[str] = mapped_column(String(1024), unique=True)
    module_id: Mapped[int | None] = mapped_column(
        ForeignKey("modules.id", ondelete="SET NULL")
    )
    # The metadata source that brought the SP (idp.saml.sources), or None for
    # one registered by ``sp import``. Only that source changes or removes it.
    source_id: Mapped[int | None] = mapped_column(
        ForeignKey("metadata_sources.id"), index=True
    )
    enabled: Mapped[bool] = mapped_column(default=True)
    metadata_xml: Mapped[str] = mapped_column(Text)
    metadata_sha256: Mapped[str] = mapped_column(String(64))
    metadata_valid_until: Mapped[dt.datetime | None]
    name_id_format: Mapped[str] = mapped_column(String(256), default=NAMEID_PERSISTENT)
    attributes_released: Mapped[list[str]] = mapped_column(JSON, default=list)
    # uid is per SP (pairwise) unless this is set: the account's one global
    # reference, which lets SPs that hold it correlate a person (SAML-38).
    global_uid: Mapped[bool] = mapped_column(default=False, server_default=false())
    sign_response: Mapped[bool] = mapped_column(default=True)
    sign_assertion: Mapped[bool] = mapped_column(default=True)
    encrypt_assertion: Mapped[bool] = mapped_column(default=True)
    # The data encryption the operator chose for a legacy SP (a key of
    # idp.saml.crypto.DATA_ENCRYPTIONS); None follows its metadata.
    encryption_method: Mapped[str | None] = mapped_column(String(16))
    allow_sha1: Mapped[bool] = mapped_column(default=False)
    required_authn_context: Mapped[str | None] = mapped_column(String(256))
    clock_skew: Mapped[int | None]
    relay_state_max: Mapped[int | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    module = relationship("Module", back_populates="service_providers")
    source = relationship("MetadataSource")


class SpRegistryState(Base):
    """One row whose generation rises with every SP registry change.

    Each process frees the SPs that changed when it sees a new generation,
    so every node converges without rebuilding per request.
    """

    __tablename__ = "sp_registry_state"

    id: Mapped[int] = mapped_column(primary_key=True)
    generation: Mapped[int] = mapped_column(default=0)
    changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class PersistentNameId(Base):
    """The opaque, stable NameID a user has at one SP (random, per SP)."""

    __tablename__ = "persistent_name_ids"
    __table_args__ = (UniqueConstraint("user_id", "sp_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE")
    )
    sp_id: Mapped[int] = mapped_column(
        ForeignKey("service_providers.id", ondelete="CASCADE"), index=True
    )
    name_id: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SsoHourlyCount(Base):
    """How many assertions an SP received in one UTC hour (the console's charts).

    Kept because nothing else about a successful SSO lasts: session rows and
    replay records are purged within hours. Each node counts in memory and
    adds its counts here about once a minute (``idp.saml.tally``); a node
    that dies loses at most that minute. Rows go with their SP.
    """

    __tablename__ = "sso_hourly_counts"

    sp_id: Mapped[int] = mapped_column(
        ForeignKey("service_providers.id", ondelete="CASCADE"), primary_key=True
    )
    hour: Mapped[dt.datetime] = mapped_column(primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)
