"""Admin roles: who may use the admin console, and for what.

Revision ID: 0017_admin_roles
Revises: 0016_two_factor

Issue 15: ``admin_grants`` holds the console's roles (helpdesk, registry,
auditor, superadmin), one row per user and role, granted and revoked
through ``idp.services.admin`` (``idp-admin admin grant|revoke``, or a
superadmin). They are not the module roles of ``roles``/``user_roles``.
"""

import sqlalchemy as sa
from alembic import op

import idp.db

revision = "0017_admin_roles"
down_revision = "0016_two_factor"
branch_labels = None
depends_on = None

# As in idp.models.admin.AdminRole at the time of writing.
ROLES = "role IN ('helpdesk', 'registry', 'auditor', 'superadmin')"


def upgrade() -> None:
    op.create_table(
        "admin_grants",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("granted_at", idp.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("granted_by", sa.Uuid(), nullable=True),
        sa.CheckConstraint(ROLES, name=op.f("ck_admin_grants_role")),
        sa.ForeignKeyConstraint(
            ["granted_by"],
            ["users.id"],
            name=op.f("fk_admin_grants_granted_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_admin_grants_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "role", name=op.f("pk_admin_grants")),
    )


def downgrade() -> None:
    op.drop_table("admin_grants")
