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
