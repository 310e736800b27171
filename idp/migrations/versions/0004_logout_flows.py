"""Single logout: a flow per logout, a leg per service told of it.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

import idp.db

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "logout_flows",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("initiator_sp_id", sa.Integer(), nullable=True),
        sa.Column("initiator_request_id", sa.String(length=256), nullable=True),
        sa.Column("initiator_status", sa.String(length=128), nullable=True),
        sa.Column("relay_state", sa.Text(), nullable=True),
        sa.Column("created_at", idp.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("deadline_at", idp.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", idp.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["initiator_sp_id"],
            ["service_providers.id"],
            name=op.f("fk_logout_flows_initiator_sp_id_service_providers"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_logout_flows_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_logout_flows")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_logout_flows_token_hash")),
    )
    with op.batch_alter_table("logout_flows", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_logout_flows_expires_at"), ["expires_at"], unique=False
        )
    op.create_table(
        "logout_legs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("flow_id", sa.Integer(), nullable=False),
        sa.Column("sp_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("name_id", sa.String(length=256), nullable=False),
        sa.Column("name_id_format", sa.String(length=256), nullable=False),
        sa.Column("session_index", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("updated_at", idp.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["flow_id"],
            ["logout_flows.id"],
            name=op.f("fk_logout_legs_flow_id_logout_flows"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sp_id"],
            ["service_providers.id"],
            name=op.f("fk_logout_legs_sp_id_service_providers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_logout_legs")),
        sa.UniqueConstraint("request_id", name=op.f("uq_logout_legs_request_id")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_logout_legs_token_hash")),
    )
    with op.batch_alter_table("logout_legs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_logout_legs_flow_id"), ["flow_id"], unique=False
        )


def downgrade():
    with op.batch_alter_table("logout_legs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_logout_legs_flow_id"))
    op.drop_table("logout_legs")
    with op.batch_alter_table("logout_flows", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_logout_flows_expires_at"))
    op.drop_table("logout_flows")
