"""Sources of SP metadata: where a bulk of SPs comes from, and what became of it.

A :class:`MetadataSource` is a partner's document (a file, an upload, a URL
or an MDQ responder) with its trust anchor, the policy its SPs get, and its
refresh state. ``idp.saml.sources`` applies a document to the registry; the
entities it could not take wait in :class:`QuarantinedEntity`, the trust
changes an operator must approve in :class:`PendingChange`.
"""

import datetime as dt

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from idp.db import Base, utcnow

# What each kind's ``location`` holds: a path on this machine, a path under
# idp.metadata_dir made by ``source add --upload``, an https URL, an MDQ base.
SOURCE_KINDS = ("file", "upload", "url", "mdq")
SOURCE_NAME_PATTERN = r"[a-z0-9][a-z0-9-]{0,63}"
# idp.saml.registry.DEFAULT_RELEASE, which the models cannot import (it
# imports them); tests/unit/saml/test_sources.py holds the two equal.
DEFAULT_RELEASE = ("uid", "isMemberOf")


class MetadataSource(Base):
    """A partner's metadata document: its trust anchor, policy and refresh state."""

    __tablename__ = "metadata_sources"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    location: Mapped[str] = mapped_column(String(2048))
    # The partner's signing certificate (PEM) and/or its SHA-256 fingerprint
    # (64 hex digits): the root signature must verify under it.
    anchor_pem: Mapped[str | None] = mapped_column(Text)
    anchor_fingerprint: Mapped[str | None] = mapped_column(String(64))
    # Development only: an unsigned document is taken without an anchor.
    unsigned_ok: Mapped[bool] = mapped_column(default=False, server_default=false())
    # Policy for the SPs it brings.
    module_id: Mapped[int | None] = mapped_column(
        ForeignKey("modules.id", ondelete="SET NULL")
    )
    release: Mapped[list[str]] = mapped_column(
        JSON, default=lambda: list(DEFAULT_RELEASE)
    )
    # Allowed entityIDs; empty: every entity in the document.
    entity_filter: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Trust changes applied at refresh (a signed federation) or held for
    # ``source approve``.
    auto_apply: Mapped[bool] = mapped_column(default=False, server_default=false())
    allow_http: Mapped[bool] = mapped_column(default=False, server_default=false())
    # SAML-29: entityID -> hosts an operator confirmed it may use although
    # another entity's endpoints are there too.
    confirmed_hosts: Mapped[dict[str, list[str]]] = mapped_column(JSON, default=dict)
    # Refresh state: the last good copy (the backing copy) and what it said.
    # Deferred: tens of megabytes for a federation, read only when needed.
    document: Mapped[str | None] = mapped_column(Text, deferred=True)
    document_sha256: Mapped[str | None] = mapped_column(String(64))
    fetched_at: Mapped[dt.datetime | None]
    valid_until: Mapped[dt.datetime | None]
    cache_duration: Mapped[int | None] = mapped_column(Integer)  # seconds
    next_refresh_at: Mapped[dt.datetime | None]
    etag: Mapped[str | None] = mapped_column(String(1024))
    last_modified: Mapped[str | None] = mapped_column(String(64))
    last_attempt_at: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    failures: Mapped[int] = mapped_column(default=0, server_default="0")
    # One node refreshes a source at a time: who holds it, until when.
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class QuarantinedEntity(Base):
    """An entity of a source's document that was not taken, and why."""

    __tablename__ = "quarantined_entities"
    __table_args__ = (UniqueConstraint("source_id", "entity_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[int] = mapped_column(
        ForeignKey("metadata_sources.id", ondelete="CASCADE"), index=True
    )
    entity_id: Mapped[str] = mapped_column(String(1024))
    reason: Mapped[str] = mapped_column(Text)
    first_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class PendingChange(Base):
    """New metadata for a registered SP that changes trust, held for approval."""

    __tablename__ = "pending_changes"
    __table_args__ = (UniqueConstraint("source_id", "entity_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[int] = mapped_column(
        ForeignKey("metadata_sources.id", ondelete="CASCADE"), index=True
    )
    entity_id: Mapped[str] = mapped_column(String(1024))
    metadata_xml: Mapped[str] = mapped_column(Text)
    metadata_sha256: Mapped[str] = mapped_column(String(64))
    diff: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
