"""Metadata sources: partners' documents, quarantined entities, held changes.

``service_providers.source_id`` says which source brought an SP (NULL: one
registered by ``sp import``, as every SP before this revision). The column
is added with ``ALTER TABLE ... ADD COLUMN`` on both engines, never in batch
mode: a batch rebuilds the table, and on SQLite, with foreign keys
enforced, dropping the old ``service_providers`` would delete every
persistent NameID that references it (as migration 0013 explains). SQLite
takes a column's REFERENCES clause in ADD COLUMN when its default is NULL.

Revision ID: 0014_metadata_sources
Revises: 0013_drop_failed_logins
"""

import sqlalchemy as sa
from alembic import op

import idp.db

revision = "0014_metadata_sources"
down_revision = "0013_drop_failed_logins"
branch_labels = None
depends_on = None

FK_NAME = "fk_service_providers_source_id_metadata_sources"
INDEX_NAME = "ix_service_providers_source_id"


def upgrade():
    op.create_table(
        "metadata_sources",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("location", sa.String(length=2048), nullable=False),
        sa.Column("anchor_pem", sa.Text(), nullable=True),
        sa.Column("anchor_fingerprint", sa.String(length=64), nullable=True),
        sa.Column(
            "unsigned_ok", sa.Boolean(), server_default=sa.false(), nullable=False
        ),
        sa.Column("module_id", sa.Integer(), nullable=True),
        sa.Column("release", sa.JSON(), nullable=False),
        sa.Column("entity_filter", sa.JSON(), nullable=False),
        sa.Column(
            "auto_apply", sa.Boolean(), server_default=sa.false(), nullable=False
        ),
        sa.Column(
            "allow_http", sa.Boolean(), server_default=sa.false(), nullable=False
        ),
        sa.Column("confirmed_hosts", sa.JSON(), nullable=False),
        sa.Column("document", sa.Text(), nullable=True),
        sa.Column("document_sha256", sa.String(length=64), nullable=True),
        sa.Column("fetched_at", idp.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("valid_until", idp.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("cache_duration", sa.Integer(), nullable=True),
        sa.Column("next_refresh_at", idp.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("etag", sa.String(length=1024), nullable=True),
        sa.Column("last_modified", sa.String(length=64), nullable=True),
        sa.Column("last_attempt_at", idp.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_until", idp.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", idp.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", idp.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["module_id"],
            ["modules.id"],
            name=op.f("fk_metadata_sources_module_id_modules"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metadata_sources")),
        sa.UniqueConstraint("name", name=op.f("uq_metadata_sources_name")),
    )
    for table in ("quarantined_entities", "pending_changes"):
        columns = [
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("source_id", sa.Integer(), nullable=False),
            sa.Column("entity_id", sa.String(length=1024), nullable=False),
        ]
        if table == "quarantined_entities":
            columns += [
                sa.Column("reason", sa.Text(), nullable=False),
                sa.Column(
                    "first_seen_at", idp.db.UTCDateTime(timezone=True), nullable=False
                ),
                sa.Column(
                    "last_seen_at", idp.db.UTCDateTime(timezone=True), nullable=False
                ),
            ]
        else:
            columns += [
                sa.Column("metadata_xml", sa.Text(), nullable=False),
                sa.Column("metadata_sha256", sa.String(length=64), nullable=False),
                sa.Column("diff", sa.JSON(), nullable=False),
                sa.Column(
                    "created_at", idp.db.UTCDateTime(timezone=True), nullable=False
                ),
            ]
        op.create_table(
            table,
            *columns,
            sa.ForeignKeyConstraint(
                ["source_id"],
                ["metadata_sources.id"],
                name=op.f(f"fk_{table}_source_id_metadata_sources"),
                ondelete="CASCADE",
            ),
            sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
            sa.UniqueConstraint(
                "source_id", "entity_id", name=op.f(f"uq_{table}_source_id")
            ),
        )
        op.create_index(
            op.f(f"ix_{table}_source_id"), table, ["source_id"], unique=False
        )
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            f"ALTER TABLE service_providers ADD COLUMN source_id INTEGER "
            f"CONSTRAINT {FK_NAME} REFERENCES metadata_sources (id)"
        )
    else:
        op.add_column(
            "service_providers", sa.Column("source_id", sa.Integer(), nullable=True)
        )
        op.create_foreign_key(
            FK_NAME, "service_providers", "metadata_sources", ["source_id"], ["id"]
        )
    op.create_index(INDEX_NAME, "service_providers", ["source_id"], unique=False)


def downgrade():
    op.drop_index(INDEX_NAME, table_name="service_providers")
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint(FK_NAME, "service_providers", type_="foreignkey")
    # SQLite (3.35+) drops a column that only a column-level REFERENCES names.
    op.execute("ALTER TABLE service_providers DROP COLUMN source_id")
    for table in ("pending_changes", "quarantined_entities"):
        op.drop_index(op.f(f"ix_{table}_source_id"), table_name=table)
        op.drop_table(table)
    op.drop_table("metadata_sources")
