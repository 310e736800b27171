"""Captcha challenges bound to a session and a form, with their sound kept.

Challenges live minutes and carry no binding yet, so the ones in flight are
dropped rather than given a binding that would match nobody.

Revision ID: 0007_captcha
Revises: 0006_sp_global_uid
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_captcha"
down_revision = "0006_sp_global_uid"
branch_labels = None
depends_on = None


def upgrade():
    op.execute(sa.text("DELETE FROM captcha_challenges"))
    with op.batch_alter_table("captcha_challenges") as batch:
        # previous release: breaks it (its nodes cannot store a challenge);
        # made before rolling upgrades (issue 17): from before 0007, upgrade
        # with every node stopped (docs/deploy.md).
        batch.add_column(sa.Column("purpose", sa.String(length=16), nullable=False))
        # previous release: as above
        batch.add_column(sa.Column("binding", sa.String(length=64), nullable=False))
        batch.add_column(sa.Column("audio", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("audio_locale", sa.String(length=8), nullable=True))


def downgrade():
    with op.batch_alter_table("captcha_challenges") as batch:
        batch.drop_column("audio_locale")
        batch.drop_column("audio")
        batch.drop_column("binding")
        batch.drop_column("purpose")
