"""idMe's own signing keys and who fetched idMe's metadata.

Private keys never enter the database: they stay files in ``certs/``
(``<kid>.key``, mode 0600), and a row holds what every node must agree on:
which certificate is in which state of the rollover. The states run
``next`` (published, not signing) -> ``current`` (signing) -> ``previous``
(still published and usable to decrypt) -> ``retired`` (gone from the
metadata). The database holds at most one ``next`` and one ``current``.
"""

import datetime as dt

from sqlalchemy import CheckConstraint, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from idp.db import Base, utcnow

KEY_STATES = ("next", "current", "previous", "retired")
# The states in which a key is published in idMe's metadata, and so needed
# (its private key) on every node.
PUBLISHED_STATES = ("current", "next", "previous")
ONE_PER_STATE_WHERE = "state IN ('next', 'current')"


class SigningKey(Base):
    """One of idMe's key pairs, by its short id (``kid``), and its state."""

    __tablename__ = "signing_keys"
    __table_args__ = (
        CheckConstraint(
            "state IN ({})".format(", ".join(f"'{state}'" for state in KEY_STATES)),
            name="state",
        ),
        # At most one next and one current key, whatever two operators do at
        # once: the database settles it.
        Index(
            "uq_signing_keys_live_state",
            "state",
            unique=True,
            sqlite_where=text(ONE_PER_STATE_WHERE),
            postgresql_where=text(ONE_PER_STATE_WHERE),
        ),
    )

    # The first 16 hex digits of the certificate's SHA-256 fingerprint: the
    # name of its files in certs/ (<kid>.key, <kid>.crt).
    kid: Mapped[str] = mapped_column(String(16), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    certificate_pem: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    not_after: Mapped[dt.datetime]
    prepared_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    activated_at: Mapped[dt.datetime | None]
    retired_at: Mapped[dt.datetime | None]


class MetadataFetch(Base):
    """Who fetched idMe's metadata (``/saml/metadata`` or MDQ), and when.

    One row per (SP, client address): a fetch updates ``last_at`` and
    ``count``, so a partner polling every few minutes adds no rows. The SP is
    known only when the fetch used its per-partner URL (an HMAC token, so an
    outsider cannot pose as a partner); other fetches keep an empty
    ``sp_entity_id``.
    """

    __tablename__ = "metadata_fetches"

    id: Mapped[int] = mapped_column(primary_key=True)
    # SHA-256 of (SP, client address): the one-row-per-pair key.
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    sp_entity_id: Mapped[str] = mapped_column(String(1024), index=True)
    client_address: Mapped[str] = mapped_column(String(64))
    user_agent: Mapped[str] = mapped_column(String(256))
    endpoint: Mapped[str] = mapped_column(String(16))
    first_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    count: Mapped[int] = mapped_column(default=1)
