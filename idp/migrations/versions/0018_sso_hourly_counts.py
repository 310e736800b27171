"""Assertions per SP and hour, and logout outcomes per hour, for the dashboard.

Revision ID: 0018_sso_hourly_counts
Revises: 0017_admin_roles

Issue 15: the dashboard's "SSO per module" over 30 days needs a count that
outlives the session rows it was read from (purged within hours). Each node
adds its in-memory counts about once a minute (``idp.saml.tally``). Single
logout's outcomes likewise outlive their flows (purged within minutes): the
purge adds a flow's legs to ``slo_hourly_counts`` before it deletes them.
"""

import sqlalchemy as sa
from alembic import op

import idp.db

revision = "0018_sso_hourly_counts"
down_revision = "0017_admin_roles"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sso_hourly_counts",
        sa.Column("sp_id", sa.Integer(), nullable=False),
        sa.Column("hour", idp.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["sp_id"],
            ["service_providers.id"],
            name=op.f("fk_sso_hourly_counts_sp_id_service_providers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("sp_id", "hour", name=op.f("pk_sso_hourly_counts")),
    )

    op.create_table(
        "slo_hourly_counts",
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("hour", idp.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("status", "hour", name=op.f("pk_slo_hourly_counts")),
    )


def downgrade() -> None:
    op.drop_table("slo_hourly_counts")
    op.drop_table("sso_hourly_counts")
