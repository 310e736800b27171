"""A database that fails on cue: statements refused in-process, or the wire cut.

``failing_statements`` (and ``failing_commits``) make chosen statements
of one engine raise the driver's own ``OperationalError``, as a server that went away mid-request
would (SQLAlchemy wraps it exactly as it wraps the real one). ``TcpProxy``
stands between an engine and PostgreSQL on a port the test controls:
``cut()`` drops every open connection and refuses new ones the way a
restarting server does, ``restore()`` lets them through again, so a node's
recovery is seen without stopping a shared PostgreSQL.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator

from sqlalchemy import event, text
from sqlalchemy.engine import Engine


@contextlib.contextmanager
def failing_statements(
    engine: Engine,
    pattern: str,
    message: str = "disk I/O error",
    *,
    times: int | None = None,
    error: str = "OperationalError",
) -> Iterator[list[str]]:
    """Statements matching ``pattern`` (a regex, case-insensitive) raise.

    With ``times``, only the first that many do: a database that comes
    back. ``error`` names another of the driver's exceptions (e.g.
    ``IntegrityError``, a bug rather than a fault). Yields the list of
    statements refused, so a test can show the fault was reached.
    """
    refused: list[str] = []
    before = refusing(
        engine, pattern, message, times=times, refused=refused, error=error
    )
    event.listen(engine, "before_cursor_execute", before)
    try:
        yield refused
    finally:
        event.remove(engine, "before_cursor_execute", before)


def refusing(
    engine: Engine,
    pattern: str,
    message: str = "disk I/O error",
    *,
    times: int | None = None,
    refused: list[str] | None = None,
    error: str = "OperationalError",
):
    """The ``before_cursor_execute`` listener of ``failing_statements``."""
    wanted = re.compile(pattern, re.IGNORECASE)
    exception = getattr(engine.dialect.loaded_dbapi, error)
    refused = [] if refused is None else refused

    def before(conn, cursor, statement, parameters, context, executemany):
        if wanted.search(statement) and (times is None or len(refused) < times):
            refused.append(statement)
            raise exception(message)

    return before


@contextlib.contextmanager
def failing_commits(engine: Engine, message: str = "disk I/O error") -> Iterator[list]:
    """Every COMMIT on ``engine`` raises the driver's ``OperationalError``.

    The driver's own commit call, not a statement: SQLAlchemy wraps the
    error as it wraps a real one (the connection gone between the last
    statement and the commit). Yields the list of refused commits.
    """
    dialect = engine.dialect
    error = dialect.loaded_dbapi.OperationalError
    refused: list = []

    def do_commit(dbapi_connection):
        refused.append(dbapi_connection)
        # What SQLite does on an I/O error at COMMIT, and what a server
        # gone away amounts to: the transaction is rolled back.
        dbapi_connection.rollback()
        raise error(message)

    dialect.do_commit = do_commit  # type: ignore[method-assign]
    try:
        yield refused
    finally:
        del dialect.do_commit


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target``; can be cut and restored."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._cut = False
        self._closed = False
        self._accepting = threading.Thread(
            target=self._accept, name="tcp-proxy", daemon=True
        )
        self._accepting.start()

    def cut(self) -> None:
        """Drop every open connection; refuse new ones until ``restore``."""
        with self._lock:
            self._cut = True
            sockets, self._open = self._open, set()
        for sock in sockets:
            _close(sock)

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        _close(self._listener)
        self._accepting.join(timeout=5)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                refused = self._cut
            if refused:
                # What a server shutting down does: the connection is taken
                # and closed before a word of the protocol.
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=_pump, args=(source, sink, self._forget), daemon=True
                ).start()

    def _forget(self, *sockets: socket.socket) -> None:
        with self._lock:
            self._open.difference_update(sockets)


def _pump(
    source: socket.socket,
    sink: socket.socket,
    forget: Callable[..., None],
) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        forget(source, sink)
        _close(source)
        _close(sink)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


@contextlib.contextmanager
def dropped_connections(
    engine: Engine,
    pattern: str,
    *,
    after: bool = False,
    skip: int = 0,
    times: int = 1,
) -> Iterator[list[str]]:
    """The connection running a statement matching ``pattern`` is cut for real.

    On PostgreSQL its server process is ended (``pg_terminate_backend``,
    what ``pg_ctl stop -m fast`` does to every connection), and the test
    waits until it is gone; on SQLite the driver's connection is closed.
    Before the statement by default, so the statement itself meets the
    dead connection; with ``after``, once it has run, so the next use does
    (a later statement, the ROLLBACK). SQLAlchemy then sees the driver's
    own error, as in an outage: no exception is made up here. The first
    ``skip`` matching statements pass, the next ``times`` are cut; yields
    the list of those cut.
    """
    wanted = re.compile(pattern, re.IGNORECASE)
    cut: list[str] = []
    seen = [0]

    def drop(conn, cursor, statement, parameters, context, executemany):
        if len(cut) >= times or not wanted.search(statement):
            return
        seen[0] += 1
        if seen[0] > skip:
            cut.append(statement)
            drop_connection(engine, conn.connection.driver_connection)

    name = "after_cursor_execute" if after else "before_cursor_execute"
    event.listen(engine, name, drop)
    try:
        yield cut
    finally:
        event.remove(engine, name, drop)


@contextlib.contextmanager
def dropped_before_end(engine: Engine, end: str = "rollback") -> Iterator[list]:
    """The first connection of ``engine`` to roll back (or, with ``end``
    "commit", to commit) is cut just before.

    What a request meets when PostgreSQL stops after its last statement
    but before its transaction ends: the ROLLBACK (an abort's) or the
    COMMIT finds the connection dead. Yields the list of connections cut
    (one at most).
    """
    cut: list = []

    def drop(conn):
        if not cut and not conn.invalidated:
            cut.append(conn)
            drop_connection(engine, conn.connection.driver_connection)

    event.listen(engine, end, drop)
    try:
        yield cut
    finally:
        event.remove(engine, end, drop)


def drop_connection(engine: Engine, driver) -> None:
    """End ``driver``'s connection as a stopping server does, and wait for it.

    PostgreSQL: ``pg_terminate_backend`` from another connection, then
    until its process is gone. SQLite: the driver's connection closed.
    """
    if engine.dialect.name != "postgresql":
        driver.close()
        return
    pid = driver.info.backend_pid
    alive = text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")
    with engine.connect() as killer:
        killer.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        killer.commit()
        deadline = time.monotonic() + 10
        # One transaction per look: pg_stat_activity is a snapshot per
        # transaction.
        while killer.scalar(alive, {"pid": pid}) and time.monotonic() < deadline:
            killer.commit()
            time.sleep(0.01)
