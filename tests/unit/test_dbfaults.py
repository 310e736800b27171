"""Which errors are the database's absence (the 503 page), and how they are told."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

from idp import db
from idp.dbfaults import describe_database, fault_cause, is_database_fault


def wrapped(kind, message: str, *, invalidated: bool = False):
    return kind(
        "SELECT 1",
        {},
        sqlite3.OperationalError(message),
        connection_invalidated=invalidated,
    )


@pytest.mark.parametrize(
    "exc",
    [
        wrapped(OperationalError, "database is locked"),
        wrapped(InterfaceError, "connection already closed"),
        DisconnectionError("server closed the connection"),
        PoolTimeout("QueuePool limit of size 10 overflow 10 reached"),
        wrapped(ProgrammingError, "SSL SYSCALL error: EOF", invalidated=True),
    ],
    ids=["operational", "interface", "disconnect", "pool", "invalidated"],
)
def test_faults_of_the_database(exc):
    assert is_database_fault(exc)


@pytest.mark.parametrize(
    "exc",
    [
        wrapped(IntegrityError, "UNIQUE constraint failed"),
        wrapped(ProgrammingError, "syntax error"),
        TimeoutError("the metadata fetch timed out"),
        RuntimeError("a bug"),
    ],
    ids=["integrity", "programming", "other-timeout", "bug"],
)
def test_bugs_and_other_timeouts_are_not(exc):
    assert not is_database_fault(exc)


def test_the_sqlite_writer_queue_timeout_is_a_fault(tmp_path, monkeypatch):
    """The SQLite writer queue's timeout (idp.db.WriterQueueTimeout) is a fault."""
    from sqlalchemy import text

    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 50)
    engine = db.make_engine({"sqlalchemy.url": f"sqlite:///{tmp_path / 'q.sqlite'}"})
    try:
        with engine.connect() as holder, engine.connect() as waiter:
            holder.begin()
            holder.execute(text("CREATE TABLE t (x INTEGER)"))
            with pytest.raises(db.WriterQueueTimeout) as caught:
                waiter.begin()
                waiter.execute(text("CREATE TABLE u (x INTEGER)"))
            holder.rollback()
    finally:
        engine.dispose()
    assert is_database_fault(caught.value)


def test_the_cause_is_one_line_without_sql_or_password():
    url = make_url("postgresql+psycopg://idp:hunter2-pw@db.internal:5432/idp")
    exc = wrapped(
        OperationalError,
        'connection to server at "db.internal" failed\npassword hunter2-pw rejected\n',
    )
    cause = fault_cause(exc, url)
    assert cause == (
        'connection to server at "db.internal" failed password *** rejected'
    )
    assert "SELECT" not in cause
    assert describe_database(url) == (
        "the postgresql server at db.internal:5432, database idp as idp"
    )


@pytest.mark.parametrize(
    ("url", "where"),
    [
        (
            "postgresql+psycopg://idp:pw@/idme?host=db1.example.my,db2.example.my"
            "&port=5432,5433",
            "the postgresql server at db1.example.my,db2.example.my"
            " (port 5432,5433), database idme as idp",
        ),
        (
            "postgresql+psycopg://idp:pw@/idme?host=db1.example.my&host=db2.example.my",
            "the postgresql server at db1.example.my,db2.example.my,"
            " database idme as idp",
        ),
        (
            "postgresql+psycopg://idp@/idme?host=/var/run/postgresql",
            "the postgresql server at the socket in /var/run/postgresql,"
            " database idme as idp",
        ),
        (
            "postgresql+psycopg://idp@/idme",
            "the postgresql server at the local socket, database idme as idp",
        ),
    ],
)
def test_the_database_is_named_where_libpq_will_look(url, where):
    """A multi-host URL (libpq tries each in turn, as a failover pair is
    written) and a socket directory are named as such in the outage's log
    line, not as "the local socket"; never the password."""
    assert describe_database(url) == where
    assert "pw" not in describe_database(url)
