"""All database wiring in one place: Base, engine, ``request.dbsession``.

Every request gets one SQLAlchemy session joined to the request's
transaction manager (pyramid_tm commits or aborts it); nothing here commits.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import threading
import uuid

from sqlalchemy import MetaData, String, engine_from_config, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Session, configure_mappers
from sqlalchemy.types import DateTime, TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on every backend.

    SQLite keeps no zone, so values are stored as naive UTC and given their
    zone back on load; a naive value handed in is a programming error.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where UTC is required")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_uuid() -> uuid.UUID:
    return uuid.uuid4()


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dt.datetime: UTCDateTime(), str: String()}


SQLITE_BUSY_TIMEOUT_MS = 30_000


def _configure_sqlite(engine: Engine) -> None:
    """foreign_keys on, a busy timeout, WAL (synchronous NORMAL), SAVEPOINTs
    that work, and one writer at a time, who holds the turn only while
    writing.

    pysqlite begins transactions lazily and so breaks SAVEPOINT; take over
    BEGIN ourselves (SQLAlchemy's documented workaround). A transaction
    begins deferred: under WAL its reads take no lock and wait for nobody.
    Its first write (any statement but a plain SELECT; a SELECT ... FOR
    UPDATE, whose clause SQLite drops, counts as a write) first takes the
    writer's turn: a lock of our own inside the process, then the read
    part is ended and ``BEGIN IMMEDIATE`` takes SQLite's write lock, held
    to COMMIT or ROLLBACK. So a request reads, signs and renders while
    others write, and queues only for its writes.

    Why not upgrade in place: a deferred transaction that has read and then
    writes after another connection's commit fails at once with "database
    is locked" (SQLITE_BUSY_SNAPSHOT; the busy timeout does not apply),
    which made concurrent requests fail with 500s. Ending the read part
    first means what was read before the first write may be a moment older
    than what is written: PostgreSQL's READ COMMITTED, which every rule
    here is written and race-tested for (a check that must hold while it
    writes reads FOR UPDATE, or lets a constraint decide). Inside one
    process the queue is a lock, not SQLite's busy handler, which polls
    with growing sleeps and can starve a thread past any timeout; the busy
    timeout still covers other processes (``idp-admin`` beside the server).
    """
    writer = threading.Lock()
    wait = SQLITE_BUSY_TIMEOUT_MS / 1000

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # The audit table's DELETE trigger asks this; 0 outside maintenance
        # (see idp.services.audit.audit_maintenance).
        dbapi_connection.create_function("idp_audit_maintenance", 0, lambda: 0)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
            # SQLite is the development database. Under WAL, NORMAL syncs at
            # checkpoints, not at every COMMIT: a crash of the process loses
            # nothing, a power cut may lose the last transactions but never
            # corrupts the file. A commit costs about 0.05 ms instead of an
            # fdatasync (0.4 ms here). Production runs on PostgreSQL.
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN")
        _turns(conn)[_READING] = writer

    @event.listens_for(engine, "before_cursor_execute")
    def _before_execute(conn, cursor, statement, parameters, context, executemany):
        turns = _turns(conn)
        if _READING in turns and _writes(statement, context):
            _take_turn(turns, cursor, wait)

    @event.listens_for(engine, "commit")
    @event.listens_for(engine, "rollback")
    def _release(conn):
        turns = _turns(conn)
        turns.pop(_READING, None)
        turn = turns.pop(_WRITING, None)
        if turn is not None:
            turn.release()


class WriterQueueTimeout(Exception):
    """No writer's turn on SQLite within the busy timeout (a database fault).

    Not the built-in ``TimeoutError``: SQLAlchemy takes that one, raised
    inside a statement, for an exit and invalidates the connection.
    """


# A SQLite transaction's writer lock, under _READING while it has only read,
# under _WRITING while it holds the turn. Kept on the Connection object, not
# in Connection.info, which is out of reach once a connection is
# invalidated, when the turn must still be given back.
_READING = "reading"
_WRITING = "writing"


def _turns(conn) -> dict:
    turns = conn.__dict__.get("_idp_sqlite_turns")
    if turns is None:
        turns = conn.__dict__["_idp_sqlite_turns"] = {}
    return turns


def _writes(statement: str, context) -> bool:
    """Whether a statement needs the writer's turn: all but a plain SELECT."""
    if statement.lstrip()[:6].upper() != "SELECT":
        return True
    compiled = getattr(context, "compiled", None)
    return (
        getattr(getattr(compiled, "statement", None), "_for_update_arg", None)
        is not None
    )


def _take_turn(info: dict, cursor, wait: float) -> None:
    writer = info.pop(_READING)
    if not writer.acquire(timeout=wait):
        info[_READING] = writer
        raise WriterQueueTimeout(f"SQLite writer queue: no turn within {wait:g} s")
    info[_WRITING] = writer
    try:
        cursor.execute("COMMIT")  # the read part: nothing to write
        cursor.execute("BEGIN IMMEDIATE")
    except BaseException:
        info.pop(_WRITING)
        writer.release()
        raise


def take_write_turn(connection) -> None:
    """On SQLite, take the writer's turn now, before a read that must not
    change until this transaction's writes commit (PostgreSQL's
    ``pg_advisory_xact_lock`` does that job there); otherwise nothing.
    """
    turns = _turns(connection)
    if _READING in turns:
        cursor = connection.connection.dbapi_connection.cursor()
        try:
            _take_turn(turns, cursor, SQLITE_BUSY_TIMEOUT_MS / 1000)
        finally:
            cursor.close()


def make_engine(settings, prefix: str = "sqlalchemy.") -> Engine:
    url = settings[prefix + "url"]
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        import pathlib

        pathlib.Path(url.removeprefix("sqlite:///")).parent.mkdir(
            parents=True, exist_ok=True
        )
    engine = engine_from_config(settings, prefix=prefix, future=True)
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    return engine


class TmSession(Session):
    """A session joined to the transaction manager in its ``info``.

    zope.sqlalchemy's ``register`` on each request's session added seven
    event listeners to it, one by one (about 0.06 ms, 3 % of an SSO's CPU);
    these are the same listeners, added once to this class
    (:func:`_listen_once`), finding each session's manager in its ``info``.
    """


_TRANSACTION_MANAGER = "idp.transaction_manager"
_listening = threading.Lock()
_listeners_added = False


def _listen_once() -> None:
    """zope.sqlalchemy's ``ZopeTransactionEvents``, on :class:`TmSession`.

    The same calls as its ``register`` makes (join the manager's transaction
    at the first statement or added object; mark the session changed after
    a flush, a bulk UPDATE or DELETE, or an ORM DML statement; refuse a
    commit not made by the manager), with ``initial_state`` active and
    ``keep_session`` false, as ``register``'s defaults.
    """
    global _listeners_added
    with _listening:
        if _listeners_added:
            return
        # Imported here: it brings the transaction package and every driver
        # it knows (psycopg, asyncio), which idp-admin's engine-only
        # commands on SQLite never use.
        from zope.sqlalchemy.datamanager import (
            STATUS_ACTIVE,
            ZopeStatus,
            join_transaction,
            mark_changed,
        )

        def manager(session):
            return session.info[_TRANSACTION_MANAGER]

        def join(session, *_args) -> None:
            join_transaction(session, STATUS_ACTIVE, manager(session), False)

        def changed(session, *_args) -> None:
            mark_changed(session, manager(session), False)

        def bulk_changed(context) -> None:
            changed(context.session)

        def before_commit(session) -> None:
            assert (
                session.in_nested_transaction()
                or manager(session).get().status == ZopeStatus.COMMITTING
            ), "Transaction must be committed using the transaction manager"

        def orm_execute(state) -> None:
            dml = state.is_update or state.is_insert or state.is_delete
            if state.is_orm_statement and dml:
                changed(state.session)

        event.listen(TmSession, "after_begin", join)
        event.listen(TmSession, "after_attach", join)
        event.listen(TmSession, "after_flush", changed)
        event.listen(TmSession, "after_bulk_update", bulk_changed)
        event.listen(TmSession, "after_bulk_delete", bulk_changed)
        event.listen(TmSession, "before_commit", before_commit)
        event.listen(TmSession, "do_orm_execute", orm_execute)
        _listeners_added = True


def get_tm_session(engine_or_connection, transaction_manager) -> Session:
    """A session whose work commits or aborts with ``transaction_manager``."""
    if not _listeners_added:
        _listen_once()
    return TmSession(
        bind=engine_or_connection,
        expire_on_commit=False,
        info={_TRANSACTION_MANAGER: transaction_manager},
    )


def execute_write(session: Session, statement, parameters=None):
    """Run a Core INSERT/UPDATE/DELETE on the session's connection; its result.

    Cheaper on a hot path than ``Session.execute``, which sends even a plain
    INSERT through the ORM's bulk machinery. zope.sqlalchemy then sees no
    ORM write and would end a request's transaction with a ROLLBACK, so the
    session is marked changed here, with the manager it was registered with
    (:func:`get_tm_session`). A session outside a transaction manager (the
    CLI's, a test's) commits as its owner says.
    """
    result = session.connection().execute(statement, parameters)
    manager = session.info.get(_TRANSACTION_MANAGER)
    if manager is not None:
        import zope.sqlalchemy

        zope.sqlalchemy.mark_changed(session, manager)
    return result


class PlainContext:
    """The execution context a :class:`PlainSql` statement's listeners get.

    SQLAlchemy's own (``DefaultExecutionContext``) is what it saves; this
    stands in for it with what statement watchers read: the connection, its
    dialect, engine and execution options, the cursor, the statement and
    its parameters, ``compiled`` None (the text was never compiled). Any
    attribute can be set on it, as tracing instrumentations keep their
    span on the context between ``before_cursor_execute`` and ``after``.
    """

    compiled = None
    isddl = False
    isinsert = isupdate = isdelete = False
    executemany = False

    def __init__(self, connection, cursor, statement: str, parameters) -> None:
        self.connection = self.root_connection = connection
        self.dialect = connection.dialect
        self.engine = connection.engine
        self.execution_options = connection.get_execution_options()
        self.cursor = cursor
        self.statement = statement
        self.parameters = parameters


class PlainSql:
    """A hot-path statement as DB-API text, run on a session's own connection.

    SQLAlchemy spends about 40 µs of Python on a Core statement before the
    driver sees it (compile-cache lookup, bind and result processing, the
    execution context); the driver itself, on SQLite, about 5. For the few
    statements every SSO runs, the text is written once (``:name``
    parameters, turned into ``%(name)s`` for psycopg) and handed to the
    driver on the connection the session already uses: same transaction,
    same locks. What SQLAlchemy would still have done is kept:

    * the connection's ``before_cursor_execute`` listeners run first, so on
      SQLite a write takes the writer's turn (:func:`_configure_sqlite`)
      and anything watching statements (fault injection, statement counts,
      ``after_cursor_execute`` timers, tracing) sees these too, with a
      :class:`PlainContext` for the execution context;
    * a driver error is raised as SQLAlchemy's own ``DBAPIError`` (an
      outage is still told apart from a bug, :mod:`idp.dbfaults`), and a
      disconnect invalidates the connection;
    * values cross as SQLAlchemy's types store them (:func:`plain_value`,
      :func:`utc_from_row`).

    Nothing else goes this way: it bypasses the ORM, so it suits only
    statements whose rows are not entities.
    """

    def __init__(self, text: str, *, writes: bool = False) -> None:
        # Stripped: statements start with their keyword, as SQLAlchemy's do
        # (listeners and tests look at the first word).
        text = text.strip()
        self.text = {"sqlite": text, "postgresql": _pyformat(text)}
        self.writes = writes

    def execute(self, session: Session, parameters: dict) -> list[tuple]:
        """Run with ``parameters`` (already :func:`plain_value`); the rows."""
        connection = session.connection()
        dialect = connection.dialect
        statement = self.text[dialect.name]
        dbapi_connection = connection.connection.driver_connection
        assert dbapi_connection is not None, "a live connection has its driver's"
        cursor = dbapi_connection.cursor()
        try:
            dispatch = connection.dispatch
            context = None
            if dispatch.before_cursor_execute or dispatch.after_cursor_execute:
                context = PlainContext(connection, cursor, statement, parameters)
            for listener in dispatch.before_cursor_execute:
                statement, parameters = listener(
                    connection, cursor, statement, parameters, context, False
                )
            cursor.execute(statement, parameters)
            for listener in dispatch.after_cursor_execute:
                listener(connection, cursor, statement, parameters, context, False)
            rows = cursor.fetchall()
        except dialect.loaded_dbapi.Error as error:
            gone = dialect.is_disconnect(error, dbapi_connection, cursor)
            if gone:
                connection.invalidate(error)
            raise DBAPIError.instance(
                statement,
                parameters,
                error,
                dialect.loaded_dbapi.Error,
                connection_invalidated=gone,
                dialect=dialect,
            ) from error
        finally:
            # As SQLAlchemy's own: a cursor of an invalidated connection
            # cannot close, and that is no error of the statement's.
            with contextlib.suppress(dialect.loaded_dbapi.Error):
                cursor.close()
        if self.writes:
            manager = session.info.get(_TRANSACTION_MANAGER)
            if manager is not None:
                import zope.sqlalchemy

                zope.sqlalchemy.mark_changed(session, manager)
        return rows


def _pyformat(text: str) -> str:
    """``:name`` parameters as psycopg's ``%(name)s``."""
    assert "%" not in text, "a literal % would need escaping for psycopg"
    return re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", text)


# SQLAlchemy's DateTime on SQLite: naive UTC text, always with microseconds.
_SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S.%f"


def plain_value(value, dialect_name: str):
    """A parameter as SQLAlchemy's types would bind it for a :class:`PlainSql`.

    On SQLite a UUID is its 32 hex digits (``Uuid`` as CHAR(32)) and a
    datetime naive UTC text in SQLAlchemy's format (so it compares with
    stored values); a naive datetime is refused, as :class:`UTCDateTime`
    refuses it. PostgreSQL's driver takes both as they are.
    """
    if dialect_name != "sqlite":
        if isinstance(value, dt.datetime) and value.tzinfo is None:
            raise ValueError("naive datetime given where UTC is required")
        return value
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime given where UTC is required")
        return value.astimezone(dt.UTC).strftime(_SQLITE_DATETIME)
    return value


def utc_from_row(value) -> dt.datetime | None:
    """A datetime column's value from a :class:`PlainSql` row, UTC-aware.

    SQLite gives SQLAlchemy's stored text (naive UTC), psycopg an aware
    datetime for ``timestamptz``: the same value :class:`UTCDateTime`
    loads.
    """
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def _dbsession(request) -> Session:
    # Test seam: a test hands in a session bound to its outer transaction.
    session = request.environ.get("idp.dbsession")
    if session is None:
        session = get_tm_session(request.registry["dbengine"], request.tm)
        request.add_finished_callback(lambda _request: session.close())
    return session


def includeme(config) -> None:
    settings = config.get_settings()
    engine = settings.get("idp.dbengine") or make_engine(settings)
    config.registry["dbengine"] = engine
    # Make mappers fail at start, not at the first request that touches them.
    import idp.models  # noqa: F401

    configure_mappers()
    config.add_request_method(_dbsession, "dbsession", reify=True)
