"""The SQLite engine's settings (idp.db): what development runs on."""

from __future__ import annotations

from sqlalchemy import text

from idp.db import make_engine


def test_a_file_database_runs_wal_with_normal_sync_and_foreign_keys(tmp_path):
    """WAL with synchronous NORMAL (1), the documented development choice:
    a COMMIT does not wait for the disk, a crash of the process loses
    nothing. FULL (2), SQLite's default, would cost an fdatasync a commit.
    """
    engine = make_engine({"sqlalchemy.url": f"sqlite:///{tmp_path}/idp.sqlite"})
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 1
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()


# -- One writer at a time, holding the turn only while writing ----------------

import threading  # noqa: E402

import pytest  # noqa: E402
from sqlalchemy import Column, Integer, MetaData, Table, insert, select, update  # noqa: E402

_meta = MetaData()
_counter = Table(
    "counter", _meta, Column("id", Integer, primary_key=True), Column("n", Integer)
)


@pytest.fixture
def engine(tmp_path):
    engine = make_engine({"sqlalchemy.url": f"sqlite:///{tmp_path}/writers.sqlite"})
    _meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(_counter).values(id=1, n=0))
    yield engine
    engine.dispose()


def _in_thread(target) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_reads_go_on_while_another_transaction_holds_the_writers_turn(engine):
    """A request reads (and signs, and renders) while another writes; it
    queues only at its own first write, until the writer commits. (Before,
    every transaction took the turn at BEGIN and held it to COMMIT.)
    """
    read, wrote = threading.Event(), threading.Event()
    with engine.connect() as holder:
        holder.begin()
        holder.execute(update(_counter).values(n=1))  # holds the turn

        def other():
            with engine.begin() as conn:
                conn.execute(select(_counter.c.n)).scalar()
                read.set()
                conn.execute(update(_counter).values(n=_counter.c.n + 10))
            wrote.set()

        thread = _in_thread(other)
        assert read.wait(5), "a read waited for another transaction's writes"
        assert not wrote.wait(0.3), "a write went through while the turn was taken"
        holder.commit()
        thread.join(5)
    assert wrote.is_set()
    with engine.connect() as conn:
        assert conn.execute(select(_counter.c.n)).scalar() == 11


def test_a_read_for_update_waits_for_the_turn(engine):
    """SQLite drops FOR UPDATE from the SQL; the read takes the turn instead,
    so a check that must hold while it writes still does."""
    done = threading.Event()
    with engine.connect() as holder:
        holder.begin()
        holder.execute(update(_counter).values(n=1))

        def other():
            with engine.begin() as conn:
                conn.execute(select(_counter.c.n).with_for_update()).scalar()
            done.set()

        thread = _in_thread(other)
        assert not done.wait(0.3), "a read FOR UPDATE went on during another's write"
        holder.commit()
        thread.join(5)
    assert done.is_set()


def test_a_write_after_another_commit_does_not_fail_the_transaction(engine):
    """The reason the read part ends before BEGIN IMMEDIATE: upgrading a
    read snapshot that another commit made stale fails at once with
    "database is locked" (SQLITE_BUSY_SNAPSHOT)."""
    with engine.connect() as reader:
        reader.begin()
        assert reader.execute(select(_counter.c.n)).scalar() == 0
        with engine.begin() as writer:
            writer.execute(update(_counter).values(n=5))
        reader.execute(update(_counter).values(n=_counter.c.n + 1))
        reader.commit()
    with engine.connect() as conn:
        assert conn.execute(select(_counter.c.n)).scalar() == 6


def test_read_modify_write_under_for_update_loses_no_update(engine):
    """Eight threads x 25 increments, each read FOR UPDATE then written:
    all 200 count, and no thread gets "database is locked"."""
    errors: list[BaseException] = []

    def work():
        try:
            for _ in range(25):
                with engine.begin() as conn:
                    n = conn.execute(select(_counter.c.n).with_for_update()).scalar()
                    conn.execute(update(_counter).values(n=n + 1))
        except BaseException as exc:
            errors.append(exc)

    threads = [_in_thread(work) for _ in range(8)]
    for thread in threads:
        thread.join(60)
    assert errors == []
    with engine.connect() as conn:
        assert conn.execute(select(_counter.c.n)).scalar() == 200


def test_an_invalidated_connection_gives_the_turn_back(engine):
    """A connection lost while it holds the turn (a driver error that
    invalidates it) still gives the turn back at its rollback: the next
    writer is not queued forever."""
    with engine.connect() as lost:
        lost.begin()
        lost.execute(update(_counter).values(n=1))  # holds the turn
        lost.invalidate()
    with engine.begin() as conn:  # within the busy timeout, not forever
        conn.execute(update(_counter).values(n=2))
    with engine.connect() as conn:
        assert conn.execute(select(_counter.c.n)).scalar() == 2


def test_no_turn_in_time_is_a_fault_that_keeps_the_connection(engine, monkeypatch):
    """Waiting too long for the turn raises WriterQueueTimeout (the 503 page,
    idp.dbfaults), not the built-in TimeoutError, which SQLAlchemy takes for
    an exit and answers by invalidating the connection."""
    import idp.db

    monkeypatch.setattr(idp.db, "SQLITE_BUSY_TIMEOUT_MS", 50)
    quick = make_engine({"sqlalchemy.url": engine.url.render_as_string(False)})
    try:
        with quick.connect() as holder, quick.connect() as waiter:
            holder.begin()
            holder.execute(update(_counter).values(n=1))
            waiter.begin()
            with pytest.raises(idp.db.WriterQueueTimeout):
                waiter.execute(update(_counter).values(n=5))
            assert not waiter.invalidated
            waiter.rollback()
            holder.commit()
    finally:
        quick.dispose()


# -- The request's session commits and aborts with its transaction manager ----

import transaction  # noqa: E402
from sqlalchemy.orm import DeclarativeBase  # noqa: E402

from idp.db import execute_write, get_tm_session  # noqa: E402


class _Base(DeclarativeBase):
    pass


class _Counter(_Base):
    __table__ = _counter


def _n(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(_counter.c.n)).scalar_one()


def _manager():
    manager = transaction.TransactionManager(explicit=True)
    manager.begin()
    return manager


@pytest.mark.parametrize("how", ["orm", "core", "bulk"])
def test_a_request_session_write_commits_with_its_manager(engine, how):
    """The listeners added once to the request sessions' class (not per
    session, as zope.sqlalchemy's ``register`` did) still join each session
    to its own manager: every kind of write commits with it, and nothing
    before.
    """
    manager = _manager()
    session = get_tm_session(engine, manager)
    if how == "orm":
        session.get(_Counter, 1).n = 5
        session.flush()
    elif how == "core":
        execute_write(session, update(_counter).values(n=5))
    else:
        session.execute(update(_Counter).values(n=5))
    assert _n(engine) == 0
    manager.commit()
    session.close()
    assert _n(engine) == 5


def test_a_request_session_write_is_undone_by_an_abort(engine):
    manager = _manager()
    session = get_tm_session(engine, manager)
    execute_write(session, update(_counter).values(n=7))
    manager.abort()
    session.close()
    assert _n(engine) == 0


def test_two_request_sessions_follow_their_own_managers(engine):
    """Each session finds its manager in its own ``info``: one request's
    abort does not undo another's commit, nor the other way round.
    """
    first, second = _manager(), _manager()
    one, two = get_tm_session(engine, first), get_tm_session(engine, second)
    one.get(_Counter, 1).n = 3
    one.flush()
    first.commit()
    one.close()
    two.get(_Counter, 1).n = 9
    two.flush()
    second.abort()
    two.close()
    assert _n(engine) == 3


def test_a_request_session_refuses_a_commit_of_its_own(engine):
    """Only the manager commits a request's work (pyramid_tm decides)."""
    manager = _manager()
    session = get_tm_session(engine, manager)
    session.get(_Counter, 1).n = 4
    with pytest.raises(AssertionError, match="transaction manager"):
        session.commit()
    manager.abort()
    session.close()
    assert _n(engine) == 0
