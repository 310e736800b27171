"""Accounts disabled by wrong passwords alone are usable again (AUTH-29).

Revision ID: 0005_failure_locks
Revises: 0004

Before this revision the third failure lock of a day set ``disabled_at``,
the operator's lock, so anyone who knew an identity number could put an
account out of its owner's reach until the helpdesk stepped in, and block
its password reset. Failure locks now stay temporary; this data migration
undoes the old rule's work: an account whose ``disabled_at`` is set and
whose latest lock event (``account.locked`` or ``account.unlocked``) is a
lock that did not come from an operator (no ``"by"`` in its detail; the
operator's ``idp-admin user lock`` always records one) gets ``disabled_at``
cleared, and an ``account.unlocked`` event saying why joins the audit hash
chain. Accounts an operator locked stay locked.

Data only: the schema does not change. Downgrade does nothing, since
disabling accounts again would repeat the defect.
"""

import datetime as dt

import sqlalchemy as sa
from alembic import op

import idp.db
from idp.services.audit import ADVISORY_LOCK_KEY, GENESIS_HASH, chain_hash

revision = "0005_failure_locks"
down_revision = "0004"
branch_labels = None
depends_on = None

REVISION_DETAIL = {
    "by": "migration 0005_failure_locks",
    "reason": "failure-locks-are-temporary",
}

users = sa.table(
    "users",
    sa.column("id", sa.Uuid()),
    sa.column("disabled_at", idp.db.UTCDateTime(timezone=True)),
)
audit_events = sa.table(
    "audit_events",
    sa.column("id", sa.Integer()),
    sa.column("occurred_at", idp.db.UTCDateTime(timezone=True)),
    sa.column("event", sa.String(64)),
    sa.column("actor_user_id", sa.Uuid()),
    sa.column("subject_user_id", sa.Uuid()),
    sa.column("client_address", sa.String(64)),
    sa.column("detail", sa.JSON()),
    sa.column("prev_hash", sa.String(64)),
    sa.column("hash", sa.String(64)),
)


def disabled_by_failures(conn) -> list:
    """The disabled accounts whose latest lock event is a failure lock."""
    disabled = set(
        conn.scalars(sa.select(users.c.id).where(users.c.disabled_at.is_not(None)))
    )
    if not disabled:
        return []
    latest = {}
    rows = conn.execute(
        sa.select(
            audit_events.c.subject_user_id, audit_events.c.event, audit_events.c.detail
        )
        .where(audit_events.c.event.in_(["account.locked", "account.unlocked"]))
        .order_by(audit_events.c.id)
    )
    for subject, event, detail in rows:
        if subject in disabled:
            latest[subject] = (event, detail or {})
    return sorted(
        (
            subject
            for subject, (event, detail) in latest.items()
            if event == "account.locked"
            and detail.get("until_unlocked") is True
            and "by" not in detail
        ),
        key=str,
    )


def record_unlock(conn, subject, now: dt.datetime) -> None:
    """Append ``account.unlocked`` for ``subject`` to the hash chain."""
    prev_hash = (
        conn.scalar(
            sa.select(audit_events.c.hash).order_by(audit_events.c.id.desc()).limit(1)
        )
        or GENESIS_HASH
    )
    fields = {
        "occurred_at": now,
        "event": "account.unlocked",
        "actor_user_id": None,
        "subject_user_id": subject,
        "client_address": None,
        "detail": REVISION_DETAIL,
    }
    conn.execute(
        audit_events.insert().values(
            **fields, prev_hash=prev_hash, hash=chain_hash(prev_hash, **fields)
        )
    )


def upgrade():
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        # The lock every audit writer takes, so the chain stays one line.
        conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
        )
    for subject in disabled_by_failures(conn):
        conn.execute(
            users.update().where(users.c.id == subject).values(disabled_at=None)
        )
        record_unlock(conn, subject, idp.db.utcnow())


def downgrade():
    """Nothing to undo: disabling the accounts again would bring back the
    defect this revision repairs, and the schema did not change."""
