"""The decoy pool: an index over the users whose pair may stand in as a decoy.

Revision ID: 0012_decoy_pool
Revises: 0011_registry_codes

For a number nobody registered, the identifier step shows the image and
phrase of a real user, chosen by an HMAC of the number (AUTH-26, see
``idp/services/security_image.py``). The pool is not a copy: it is the users
themselves, those matching ``idp.models.user.DECOY_POOL_WHERE``, read in the
order of their random ids. This partial index holds exactly them, so each
lookup reads a few of its rows from one position and counts it up to the
readiness threshold, never touching the rest of the table.
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_decoy_pool"
down_revision = "0011_registry_codes"
branch_labels = None
depends_on = None

# As in idp.models.user at the time of writing; a migration never imports
# the models, which move on.
WHERE = "security_image IS NOT NULL AND security_phrase IS NOT NULL"


def upgrade() -> None:
    op.create_index(
        "ix_users_decoy_pool",
        "users",
        ["id"],
        sqlite_where=sa.text(WHERE),
        postgresql_where=sa.text(WHERE),
    )


def downgrade() -> None:
    op.drop_index("ix_users_decoy_pool", table_name="users")
