"""An email-change link remembers the address it confirms.

Revision ID: 0008_email_change
Revises: 0007_captcha

"Akaun saya" lets a person move their account to a new email address,
confirmed by a single-use link sent there. The link is a ``one_time_tokens``
row like a reset link; the new address waits in ``new_email`` until the
link is opened, so nothing about the account changes before that.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_email_change"
down_revision = "0007_captcha"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("one_time_tokens", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("new_email", sa.String(length=254), nullable=True)
        )


def downgrade():
    with op.batch_alter_table("one_time_tokens", schema=None) as batch_op:
        batch_op.drop_column("new_email")
