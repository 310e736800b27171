"""Audit log append-only: the database refuses UPDATE and DELETE on audit_events.

Revision ID: 0003
Revises: 0002

DATA-07. The hash chain (idp/services/audit.py) detects an edit; these
triggers stop one from happening through any path that speaks SQL, the
application's included. INSERT is untouched.

UPDATE is refused always. DELETE (and TRUNCATE on PostgreSQL) is refused
unless the current transaction turned on the maintenance switch, which only
the test suite's teardown uses (``idp.services.audit.audit_maintenance``):

* PostgreSQL: the transaction-local setting ``idp.audit_maintenance = 'on'``
  (``SELECT set_config('idp.audit_maintenance', 'on', true)``); it ends with
  the transaction, so a pooled connection never carries it over.
* SQLite has no session settings. The DELETE trigger asks the SQL function
  ``idp_audit_maintenance()``, which a connection must register itself (and
  make return 1) to delete. A connection that never registered it, such as
  the ``sqlite3`` shell, gets "no such function: idp_audit_maintenance": the
  DELETE is refused all the same.

Both raise an integrity error (SQLSTATE 23001 on PostgreSQL, a constraint
failure on SQLite), so callers see the same exception class on either.

The switch keeps honest code from deleting by accident; whoever may change
the schema can also drop a trigger, and the hash chain is what catches that.
On SQLite a later batch migration that rebuilds audit_events drops these
triggers with the old table: such a migration must create them again.
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

POSTGRESQL_UPGRADE = (
    """
    CREATE FUNCTION audit_events_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP IN ('DELETE', 'TRUNCATE')
           AND current_setting('idp.audit_maintenance', true) = 'on' THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
            USING ERRCODE = 'restrict_violation';
    END
    $$
    """,
    """
    CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()
    """,
    # Row triggers do not fire on TRUNCATE.
    """
    CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()
    """,
)

POSTGRESQL_DOWNGRADE = (
    "DROP TRIGGER audit_events_no_truncate ON audit_events",
    "DROP TRIGGER audit_events_append_only ON audit_events",
    "DROP FUNCTION audit_events_append_only()",
)

SQLITE_UPGRADE = (
    """
    CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
    BEGIN
        SELECT RAISE(ABORT, 'audit_events is append-only: UPDATE refused');
    END
    """,
    """
    CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
    WHEN NOT idp_audit_maintenance()
    BEGIN
        SELECT RAISE(ABORT, 'audit_events is append-only: DELETE refused');
    END
    """,
)

SQLITE_DOWNGRADE = (
    "DROP TRIGGER audit_events_no_delete",
    "DROP TRIGGER audit_events_no_update",
)


def _run(statements):
    for statement in statements:
        op.execute(statement)


def upgrade():
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        _run(POSTGRESQL_UPGRADE)
    elif dialect == "sqlite":
        _run(SQLITE_UPGRADE)
    else:
        raise RuntimeError(
            f"audit_events triggers: only SQLite and PostgreSQL, not {dialect}"
        )


def downgrade():
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        _run(POSTGRESQL_DOWNGRADE)
    elif dialect == "sqlite":
        _run(SQLITE_DOWNGRADE)
    else:
        raise RuntimeError(
            f"audit_events triggers: only SQLite and PostgreSQL, not {dialect}"
        )
