"""The audit log in a real database: refused edits, one chain under load, the CLI.

DATA-07: the triggers of migration 0003 refuse UPDATE and DELETE while INSERT
works; an edit made with a trigger out of the way is caught by ``verify``;
concurrent writers still build one linear chain.
"""

from __future__ import annotations

import sqlite3
import threading

import pytest
from alembic import command
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from idp.db import make_engine
from idp.migrations import alembic_config
from idp.models import AuditEvent
from idp.services.audit import (
    MAINTENANCE_FUNCTION,
    AuditLog,
    VerifyResult,
    audit_maintenance,
    chain_hash,
    verify,
)
from tests.cli import admin
from tests.factories import count

pytestmark = pytest.mark.postgresql

TRIGGERS = {
    "postgresql": {"audit_events_append_only", "audit_events_no_truncate"},
    "sqlite": {"audit_events_no_update", "audit_events_no_delete"},
}


def triggers(conn) -> set[str]:
    if conn.dialect.name == "postgresql":
        query = (
            "SELECT tgname FROM pg_trigger"
            " WHERE tgrelid = 'audit_events'::regclass AND NOT tgisinternal"
        )
    else:
        query = (
            "SELECT name FROM sqlite_master"
            " WHERE type = 'trigger' AND tbl_name = 'audit_events'"
        )
    return set(conn.execute(text(query)).scalars())


def drop_guards(session) -> None:
    """Take the triggers away inside the test's transaction (rolled back after).

    What someone allowed to change the schema could do; both databases undo
    DDL with the transaction.
    """
    dialect = session.get_bind().dialect.name
    for name in TRIGGERS[dialect]:
        on = " ON audit_events" if dialect == "postgresql" else ""
        session.execute(text(f"DROP TRIGGER {name}{on}"))


def refused(session, statement) -> None:
    """Assert the database refuses ``statement``; the transaction lives on."""
    with pytest.raises(IntegrityError, match="append-only"), session.begin_nested():
        session.execute(statement)


@pytest.fixture
def audit(dbsession) -> AuditLog:
    assert count(dbsession, AuditEvent) == 0, "the audit log should start empty"
    conn = dbsession.connection()
    if conn.dialect.name == "sqlite":
        # As idp.db registers it on every connection (the switch, off), so a
        # refused DELETE reads "append-only" rather than "no such function".
        conn.connection.driver_connection.create_function(
            MAINTENANCE_FUNCTION, 0, lambda: 0
        )
    return AuditLog(dbsession)


def test_data_07_update_and_delete_refused_insert_accepted(audit, dbsession):
    """DATA-07: the database refuses UPDATE and DELETE of audit rows, not INSERT."""
    first = audit.record("account.locked", detail={"reason": "too many attempts"})
    row_id = first.id

    refused(dbsession, update(AuditEvent).values(event="account.unlocked"))
    refused(
        dbsession, update(AuditEvent).where(AuditEvent.id == row_id).values(detail={})
    )
    refused(dbsession, delete(AuditEvent).where(AuditEvent.id == row_id))
    refused(dbsession, delete(AuditEvent))
    if dbsession.get_bind().dialect.name == "postgresql":
        refused(dbsession, text("TRUNCATE audit_events"))
    with pytest.raises(IntegrityError, match="append-only"), dbsession.begin_nested():
        first.event = "account.unlocked"
        dbsession.flush()

    # The control: appending still works, and nothing was changed.
    second = audit.record("account.unlocked", actor_user_id=None)
    dbsession.expire_all()
    # In id order: without ORDER BY, PostgreSQL may return rows in any order.
    rows = dbsession.scalars(select(AuditEvent).order_by(AuditEvent.id))
    assert [row.event for row in rows] == ["account.locked", "account.unlocked"]
    assert second.prev_hash == first.hash
    assert verify(dbsession) == VerifyResult(ok=True, checked=2, first_bad_id=None)


def test_data_07_maintenance_switch_allows_delete_never_update(audit, dbsession):
    """DATA-07: the maintenance switch lets DELETE through, never UPDATE, and
    only inside its block."""
    audit.record("test.one")
    audit.record("test.two")
    conn = dbsession.connection()
    refused(dbsession, delete(AuditEvent))

    with audit_maintenance(conn):
        refused(dbsession, update(AuditEvent).values(event="test.changed"))
        dbsession.execute(delete(AuditEvent).where(AuditEvent.event == "test.one"))

    assert count(dbsession, AuditEvent) == 1
    refused(dbsession, delete(AuditEvent))
    assert count(dbsession, AuditEvent) == 1


@pytest.mark.parametrize(
    ("tamper", "bad_index"),
    [("edit", 2), ("edit and rehash", 3), ("delete", 2)],
)
def test_data_07_tampering_past_the_triggers_is_detected(
    audit, dbsession, tamper, bad_index
):
    """DATA-07: verify names the right row when a row is edited or deleted anyway."""
    rows = [audit.record("test.event", detail={"n": n}) for n in range(5)]
    row_ids = [row.id for row in rows]
    assert verify(dbsession) == VerifyResult(ok=True, checked=5, first_bad_id=None)

    drop_guards(dbsession)
    target = AuditEvent.id == row_ids[2]
    if tamper == "edit":
        dbsession.execute(update(AuditEvent).where(target).values(detail={"n": 99}))
    elif tamper == "edit and rehash":
        forged = chain_hash(
            rows[2].prev_hash,
            occurred_at=rows[2].occurred_at,
            event=rows[2].event,
            actor_user_id=None,
            subject_user_id=None,
            client_address=None,
            detail={"n": 99},
        )
        dbsession.execute(
            update(AuditEvent).where(target).values(detail={"n": 99}, hash=forged)
        )
    else:
        dbsession.execute(delete(AuditEvent).where(AuditEvent.id == row_ids[1]))
    dbsession.expire_all()

    result = verify(dbsession)
    assert result.ok is False
    assert result.first_bad_id == row_ids[bad_index]


def test_data_07_sqlite_connection_without_the_switch_cannot_delete(db_engine):
    """DATA-07: the sqlite3 shell, which never registered the switch, cannot delete."""
    if db_engine.dialect.name != "sqlite":
        return
    shell = sqlite3.connect(db_engine.url.database, isolation_level=None)
    try:
        shell.execute("BEGIN")
        shell.execute(
            "INSERT INTO audit_events (occurred_at, event, detail, prev_hash, hash)"
            " VALUES ('2026-01-01 00:00:00.000000', 'test.shell', '{}', ?, ?)",
            ("0" * 64, "1" * 64),
        )
        with pytest.raises(sqlite3.OperationalError, match="idp_audit_maintenance"):
            shell.execute("DELETE FROM audit_events")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            shell.execute("UPDATE audit_events SET event = 'test.edited'")
        shell.create_function(MAINTENANCE_FUNCTION, 0, lambda: 0)
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            shell.execute("DELETE FROM audit_events")
        assert shell.execute("SELECT event FROM audit_events").fetchall() == [
            ("test.shell",)
        ]
    finally:
        shell.execute("ROLLBACK")
        shell.close()


@pytest.fixture
def committed_audit(db_engine):
    """For tests that commit audit rows: they are deleted afterwards."""
    with db_engine.connect() as conn:
        assert count(conn, AuditEvent) == 0, "committed audit rows left by another test"
    yield db_engine
    with db_engine.begin() as conn, audit_maintenance(conn):
        conn.execute(delete(AuditEvent))


def test_data_07_concurrent_appends_keep_one_linear_chain(committed_audit):
    """DATA-07: threads appending and committing at once still build one chain.

    Without the lock two writers read the same last hash and the chain
    forks, which verify reports.
    """
    engine = committed_audit
    threads, each = 8, 10
    start = threading.Barrier(threads)
    errors = []

    def append(worker: int) -> None:
        try:
            start.wait()
            for n in range(each):
                with Session(engine) as session, session.begin():
                    AuditLog(session).record(
                        "test.concurrent", detail={"worker": worker, "n": n}
                    )
        except Exception as exc:  # reported below, in the test's thread
            errors.append(exc)

    workers = [threading.Thread(target=append, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)

    assert errors == []
    with engine.connect() as conn:
        assert verify(conn) == VerifyResult(
            ok=True, checked=threads * each, first_bad_id=None
        )
        prev_hashes = conn.execute(select(AuditEvent.prev_hash)).scalars().all()
    assert len(set(prev_hashes)) == threads * each


def test_committing_testapp_teardown_empties_the_audit_log(
    committing_testapp, db_engine
):
    """The suite's cleanup deletes committed audit rows through the switch."""
    with Session(db_engine) as session, session.begin():
        AuditLog(session).record("test.committed")
    with db_engine.connect() as conn:
        assert count(conn, AuditEvent) == 1


def test_migration_0003_downgrade_removes_the_guard_and_upgrade_restores_it(
    db_engine,
):
    with db_engine.connect() as conn, conn.begin() as transaction:
        session = Session(bind=conn, join_transaction_mode="create_savepoint")
        row_id = AuditLog(session).record("test.migration").id
        assert triggers(conn) == TRIGGERS[conn.dialect.name]

        command.downgrade(alembic_config(conn), "0002")
        assert triggers(conn) == set()
        conn.execute(update(AuditEvent).values(event="test.edited"))

        command.upgrade(alembic_config(conn), "head")
        assert triggers(conn) == TRIGGERS[conn.dialect.name]
        refused(
            session, update(AuditEvent).where(AuditEvent.id == row_id).values(event="x")
        )
        session.close()
        transaction.rollback()


# idp-admin audit, through idp.cli.main, on a scratch SQLite database.


def test_data_07_cli_verify_and_tail(ini, tmp_path):
    """DATA-07: ``audit verify`` exits 1 naming the edited event; ``tail`` masks."""
    assert admin(ini, "db", "upgrade").returncode == 0
    engine = make_engine({"sqlalchemy.url": f"sqlite:///{tmp_path / 'idp.sqlite'}"})
    try:
        with Session(engine) as session, session.begin():
            log = AuditLog(session)
            log.record("login.success", client_address="192.0.2.10")
            second = log.record(
                "account.email_changed", detail={"to": "siti.nurhaliza@example.com"}
            ).id
            log.record("login.failure", detail={"identifier": "900101-14-5678"})

        result = admin(ini, "audit", "verify")
        assert result.returncode == 0, result.stderr
        assert result.stdout == "audit chain intact: 3 events\n"

        result = admin(ini, "audit", "tail", "-n", "2")
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert len(lines) == 2
        assert lines[0].startswith(f"{second} ")
        assert "account.email_changed" in lines[0]
        assert "s***@example.com" in lines[0]
        assert "XXXXXX-XX-5678" in lines[1]
        assert "siti.nurhaliza" not in result.stdout
        assert "900101" not in result.stdout

        with engine.begin() as conn:
            conn.execute(text("DROP TRIGGER audit_events_no_update"))
            conn.execute(
                update(AuditEvent)
                .where(AuditEvent.id == second)
                .values(detail={"to": "mallory@example.com"})
            )
    finally:
        engine.dispose()

    result = admin(ini, "audit", "verify")
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"idp-admin: audit chain broken at event id {second} "
    )
    assert "Traceback" not in result.stderr
    assert admin(ini, "audit", "tail", "-n", "0").returncode == 2


def test_record_many_appends_one_chain_in_order(audit, dbsession):
    """A bulk change's events: one lock and one flush, the same chain."""
    audit.record("first", detail={"n": 0})
    rows = audit.record_many([("bulk", {"n": n}) for n in range(1, 4)])
    audit.record("last", detail={"n": 4})
    stored = dbsession.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
    assert [row.detail["n"] for row in stored] == [0, 1, 2, 3, 4]
    assert [row.id for row in rows] == [row.id for row in stored[1:4]]
    assert verify(dbsession) == VerifyResult(ok=True, checked=5, first_bad_id=None)
    assert audit.record_many([]) == []
    with pytest.raises(ValueError, match="event must have"):
        audit.record_many([("fine", {}), ("", {})])
    assert count(dbsession, AuditEvent) == 5
