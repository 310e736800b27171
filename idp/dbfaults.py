"""A database that is down, restarting or locked: told apart from a bug.

A request can meet its database's absence anywhere: reading the session
before the view, in the view, saving the session after it (a tween under
pyramid_tm, outside the exception views), at COMMIT. Each is the same
fault to the user, the bilingual 503 page with ``Retry-After`` (see
:func:`idp.views.errors.database_unavailable`), and to the operator, one
log line naming the database and the driver's cause, without a
traceback: the fault is the network's or the server's, not the code's.

:func:`fault_tween_factory` sits just above pyramid_tm and renders what
escapes it through the exception views, so a fault there is that page
too; pyramid_tm has aborted the transaction by then, so nothing of the
request is kept. Recovery needs nothing from here: SQLAlchemy
invalidates a pool whose connection dropped, ``sqlalchemy.pool_pre_ping``
tests a pooled connection before use, and the next request connects anew.
"""

from __future__ import annotations

import logging
import sys

from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

from idp.db import WriterQueueTimeout

# What a client told to come back waits: a restart or a failover takes
# seconds, and a node reconnects at its next request.
RETRY_AFTER_SECONDS = 5
CAUSE_MAX = 300


def is_database_fault(exc: BaseException | None) -> bool:
    """Whether ``exc`` says the database is unreachable, restarting or busy.

    Connection refused or dropped, a server shutting down, an admin
    terminating the connection, a lock or pool timeout, SQLite's "database
    is locked" or "unable to open database file": ``OperationalError``,
    ``InterfaceError`` (a connection already closed), a disconnect SQLAlchemy
    noticed on any DBAPI error, the pool's timeout, and the SQLite writer
    queue's ``WriterQueueTimeout``. A wrong statement (``ProgrammingError``,
    ``IntegrityError``) is a bug and stays one.
    """
    if isinstance(exc, OperationalError | InterfaceError | DisconnectionError):
        return True
    if isinstance(exc, PoolTimeout):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, WriterQueueTimeout)


# What the ``transaction`` package logs, with a traceback, when a resource
# manager fails to abort: a ROLLBACK on a connection the outage closed.
_ABORT_FAILURES = (
    "Failed to abort resource manager",
    "Error in abort() on manager",
    "Error in tpc_abort() on manager",
)


class AbortFaultFilter(logging.Filter):
    """Drops ``transaction``'s traceback for an abort that an outage failed.

    A request whose connection PostgreSQL closed after its last statement
    (a fast or immediate stop, an admin's ``pg_terminate_backend``) ends
    in an abort whose ROLLBACK meets the dead connection. ``transaction``
    logs that at ERROR with a full traceback on its ``txn.<thread>``
    logger, then raises the error to pyramid_tm, whose exception view
    gives the 503 page and logs the one line this module promises
    (:func:`idp.views.errors.database_unavailable`). So the record is
    dropped when its exception is a database fault; any other failure to
    abort (a bug) keeps its traceback. It sits on the handlers, not on a
    logger: ``txn`` makes a logger per thread, and a logger's filters do
    not see its children's records.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "txn" and not record.name.startswith("txn."):
            return True
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not is_database_fault(exc):
            return True
        return not str(record.msg).startswith(_ABORT_FAILURES)


def install_log_filter(logger: logging.Logger | None = None) -> None:
    """Add an :class:`AbortFaultFilter` to every handler of ``logger`` (the
    root logger by default), once; call it after logging is configured."""
    logger = logging.getLogger() if logger is None else logger
    for handler in logger.handlers:
        if not any(isinstance(f, AbortFaultFilter) for f in handler.filters):
            handler.addFilter(AbortFaultFilter())


def fault_cause(exc: BaseException, url=None) -> str:
    """The driver's reason on one line, without SQL, parameters or password."""
    cause = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    # SQLAlchemy appends the statement and a documentation link: not causes.
    lines = [
        line
        for line in lines
        if not line.startswith(("[SQL:", "[parameters:", "(Background on"))
    ]
    text = " ".join(lines) or type(cause).__name__
    password = getattr(url, "password", None)
    if password:
        text = text.replace(str(password), "***")
    if len(text) > CAUSE_MAX:
        text = text[: CAUSE_MAX - 3] + "..."
    return text


def describe_database(url) -> str:
    """Where a database URL points, without its password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if not url:
        return "the database"
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "the database (sqlalchemy.url is not a database URL)"
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return f"the SQLite database {parsed.database or '(in memory)'}"
    host, port = parsed.host, f":{parsed.port}" if parsed.port else ""
    if host is None and parsed.query.get("host"):
        # libpq's own spelling: ?host=a,b&port=1,2 (several hosts, tried in
        # turn), or a directory holding the server's socket.
        host = _listed(parsed.query["host"])
        ports = _listed(parsed.query.get("port") or "")
        port = f" (port {ports})" if ports else ""
        if host.startswith("/"):
            host = f"the socket in {host}"
    host = host or "the local socket"
    name = f", database {parsed.database}" if parsed.database else ""
    user = f" as {parsed.username}" if parsed.username else ""
    return f"the {backend} server at {host}{port}{name}{user}"


def _listed(value: str | tuple[str, ...]) -> str:
    """A URL query value given once or several times, as one text."""
    return ",".join(value) if isinstance(value, tuple) else value


def fault_tween_factory(handler, registry):
    """What escapes pyramid_tm is rendered by the exception views after all.

    The session's save and pyramid_tm's abort run outside Pyramid's
    exception view tween; without this a failure there reached waitress,
    which answered with its plain-text 500. A database fault becomes the
    503 page, anything else the 500 page with its traceback logged. A
    retryable error (a serialization failure) is still retried:
    pyramid_retry finds it on ``request.exception``.
    """

    def fault_tween(request):
        try:
            return handler(request)
        except Exception:
            return request.invoke_exception_view(sys.exc_info())

    return fault_tween


def includeme(config) -> None:
    config.add_tween(
        "idp.dbfaults.fault_tween_factory",
        over="pyramid_tm.tm_tween_factory",
        under="idp.tweens.security_headers_tween_factory",
    )
