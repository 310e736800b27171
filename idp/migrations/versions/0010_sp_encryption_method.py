"""An SP's data encryption may be fixed by its policy (legacy SPs).

NULL, the default for every existing SP, follows the SP's metadata: the
strongest AES mode it lists, AES-256-GCM when it lists none.

Revision ID: 0010_sp_encryption_method
Revises: 0009_number_locks
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_sp_encryption_method"
down_revision = "0009_number_locks"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("service_providers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("encryption_method", sa.String(length=16), nullable=True)
        )


def downgrade():
    with op.batch_alter_table("service_providers", schema=None) as batch_op:
        batch_op.drop_column("encryption_method")
