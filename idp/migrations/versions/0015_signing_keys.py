"""idMe's signing keys in the database, and fetches of idMe's metadata.

Revision ID: 0015_signing_keys
Revises: 0014_metadata_sources

``signing_keys`` records which of idMe's certificates is next, current,
previous or retired, so every node signs with the same key and publishes
the same ones (the private keys stay files in ``certs/``). An install
upgraded from one ``signing.key`` has no row: that pair is the current key
until the first ``keys rollover prepare`` records it. ``metadata_fetches``
tells ``keys rollover status`` which partners fetched idMe's metadata since
the next key was published.
"""

import sqlalchemy as sa
from alembic import op

import idp.db

revision = "0015_signing_keys"
down_revision = "0014_metadata_sources"
branch_labels = None
depends_on = None

# As in idp.models.keys at the time of writing.
ONE_PER_STATE_WHERE = "state IN ('next', 'current')"


def upgrade() -> None:
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(length=16), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("certificate_pem", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("not_after", idp.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("prepared_at", idp.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("activated_at", idp.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("retired_at", idp.db.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('next', 'current', 'previous', 'retired')",
            name=op.f("ck_signing_keys_state"),
        ),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_signing_keys")),
        sa.UniqueConstraint("fingerprint", name=op.f("uq_signing_keys_fingerprint")),
    )
    op.create_index(
        "uq_signing_keys_live_state",
        "signing_keys",
        ["state"],
        unique=True,
        sqlite_where=sa.text(ONE_PER_STATE_WHERE),
        postgresql_where=sa.text(ONE_PER_STATE_WHERE),
    )
    op.create_table(
        "metadata_fetches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("sp_entity_id", sa.String(length=1024), nullable=False),
        sa.Column("client_address", sa.String(length=64), nullable=False),
        sa.Column("user_agent", sa.String(length=256), nullable=False),
        sa.Column("endpoint", sa.String(length=16), nullable=False),
        sa.Column("first_at", idp.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_at", idp.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metadata_fetches")),
        sa.UniqueConstraint("digest", name=op.f("uq_metadata_fetches_digest")),
    )
    op.create_index(
        op.f("ix_metadata_fetches_last_at"), "metadata_fetches", ["last_at"]
    )
    op.create_index(
        op.f("ix_metadata_fetches_sp_entity_id"), "metadata_fetches", ["sp_entity_id"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_metadata_fetches_sp_entity_id"), "metadata_fetches")
    op.drop_index(op.f("ix_metadata_fetches_last_at"), "metadata_fetches")
    op.drop_table("metadata_fetches")
    op.drop_index("uq_signing_keys_live_state", table_name="signing_keys")
    op.drop_table("signing_keys")
