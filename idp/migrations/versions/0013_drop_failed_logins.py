"""Drop what nothing uses: failed_logins, initiator_status, key_records.

``users.failed_logins`` was never read: failed passwords are counted by the
rate limiters (``login.identifier``) and the locks of migration 0009
(``number_locks``). ``logout_flows.initiator_status`` was never written: the
status a service-initiated logout is answered with follows from its legs
when the flow ends. ``key_records`` was never used; key rollover will be
designed afresh.

The columns are dropped with ``ALTER TABLE ... DROP COLUMN`` on both
engines (SQLite has it since 3.35), not in batch mode: a batch rebuilds the
table, and on SQLite, with foreign keys enforced, dropping the old
``users`` would delete every row that references it. The downgrade gives
``failed_logins`` a server default of 0 so that existing rows can take it.

Revision ID: 0013_drop_failed_logins
Revises: 0012_decoy_pool
"""

import sqlalchemy as sa
from alembic import op

import idp.db

revision = "0013_drop_failed_logins"
down_revision = "0012_decoy_pool"
branch_labels = None
depends_on = None


def upgrade():
    # previous release: breaks it (its models still map these columns);
    # made before rolling upgrades (issue 17): from before 0013, upgrade
    # with every node stopped (docs/deploy.md).
    op.drop_column("users", "failed_logins")
    op.drop_column("logout_flows", "initiator_status")  # previous release: as above
    op.drop_table("key_records")  # previous release: as above


def downgrade():
    op.create_table(
        "key_records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("use", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("cert_pem", sa.Text(), nullable=False),
        sa.Column("key_file", sa.String(length=255), nullable=False),
        sa.Column("not_after", idp.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", idp.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("published_at", idp.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("activated_at", idp.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("retired_at", idp.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_key_records")),
        sa.UniqueConstraint("fingerprint", name=op.f("uq_key_records_fingerprint")),
    )
    op.add_column(
        "logout_flows",
        sa.Column("initiator_status", sa.String(length=128), nullable=True),
    )
    op.add_column(
        "users",
        sa.Column("failed_logins", sa.Integer(), nullable=False, server_default="0"),
    )
