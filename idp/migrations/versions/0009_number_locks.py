"""When each number's latest failure lock ends, for registered and unknown numbers.

Revision ID: 0009_number_locks
Revises: 0008_email_change

The password step now states how long the next lock would last, which
depends on how many locks the number had today. Those were counted only for
registered accounts, so the stated length would have told who is
registered; ``number_locks`` lets every number count its locks the same way
(issue 12, AUTH-01).
"""

import sqlalchemy as sa
from alembic import op

import idp.db

revision = "0009_number_locks"
down_revision = "0008_email_change"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "number_locks",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("until", idp.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_number_locks")),
    )
    with op.batch_alter_table("number_locks", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_number_locks_until"), ["until"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("number_locks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_number_locks_until"))
    op.drop_table("number_locks")
