"""uid per SP by default; the global one only where an SP's policy asks.

SPs registered before this revision have been receiving the global uid and
have linked their accounts to it: they keep it (global_uid true) until an
operator moves them to the pairwise one with ``sp policy --global-uid no``.
SPs registered from now on get the pairwise uid.

Revision ID: 0006_sp_global_uid
Revises: 0005_failure_locks
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_sp_global_uid"
down_revision = "0005_failure_locks"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("service_providers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "global_uid", sa.Boolean(), server_default=sa.false(), nullable=False
            )
        )
    op.execute(
        sa.text("UPDATE service_providers SET global_uid = :yes").bindparams(yes=True)
    )


def downgrade():
    with op.batch_alter_table("service_providers", schema=None) as batch_op:
        batch_op.drop_column("global_uid")
