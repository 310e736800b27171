"""Outbox dedupe key: a notice is queued at most once per key.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("mail_outbox", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("dedupe_key", sa.String(length=128), nullable=True)
        )
        batch_op.create_unique_constraint(
            batch_op.f("uq_mail_outbox_dedupe_key"), ["dedupe_key"]
        )


def downgrade():
    with op.batch_alter_table("mail_outbox", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_mail_outbox_dedupe_key"), type_="unique")
        batch_op.drop_column("dedupe_key")
