"""The database away, restarting or locked: the bilingual 503 page, then recovery.

Whatever statement fails (the session read before the view, a write in
it, the session's save after it, the commit), the browser gets the
bilingual 503 page with ``Retry-After`` and a reference, the log one line
naming the database and the cause, and the database nothing of the
request. When the database answers again the node serves again by itself.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import re
import secrets
import time

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.orm import Session

import idp
import idp.db
from idp.db import make_engine, utcnow
from idp.dbfaults import AbortFaultFilter
from idp.models import IdpSession
from idp.requestlog import REFERENCE_PATTERN
from idp.sessions import COOKIE_NAME, hash_token
from tests.app import committing_browser, make_app
from tests.dbfaults import (
    TcpProxy,
    dropped_before_end,
    dropped_connections,
    failing_commits,
    failing_statements,
)
from tests.probe import PROBE_ROLE
from tests.served import exchange, request_bytes, serve

# A cookie of the session id's shape: the request reads the session table.
SESSION_COOKIE = "idp_session=" + "A" * 43
MS_TITLE = "Perkhidmatan tidak tersedia buat sementara waktu"
EN_TITLE = "The service is temporarily unavailable"
SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"


@pytest.fixture
def fault_engine(db_url, db_engine):
    """An engine of its own on the test database, so faults stay in this test."""
    engine = make_engine({"sqlalchemy.url": db_url})
    yield engine
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM roles WHERE name = :n"), {"n": PROBE_ROLE})
        conn.execute(text("DELETE FROM idp_sessions"))
    engine.dispose()


@pytest.fixture
def fault_app(settings, fault_engine):
    return make_app(settings, fault_engine, "tests.probe")


def probe_rows(engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(
            text("SELECT count(*) FROM roles WHERE name = :n"), {"n": PROBE_ROLE}
        )


def session_rows(engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(text("SELECT count(*) FROM idp_sessions"))


def assert_unavailable_page(status: int, headers, body: str, locale: str = "ms"):
    assert status == 503
    assert int(headers["Retry-After"]) > 0
    assert 'data-error-code="database_unavailable"' in body
    assert MS_TITLE in body and EN_TITLE in body
    assert f'<html lang="{locale}">' in body
    assert re.search(f'class="reference">{REFERENCE_PATTERN}<', body)
    for leak in ("Traceback", "OperationalError", "disk I/O", "INSERT", "sqlite"):
        assert leak not in body


def db_fault_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "database unavailable" in r.getMessage()]


def test_data_10_session_save_failing_gives_the_503_page_not_waitress_500(
    fault_app, fault_engine
):
    """DATA-10: the session's save runs after the view; its failure is still the page.

    Through waitress, as a browser meets it: before, this was waitress's
    plain-text 500. The view's own write is not kept (DATA-03).
    """
    raw = request_bytes("GET", b"/_probe/write")
    with serve(fault_app) as port:
        with failing_statements(fault_engine, r"^\s*INSERT INTO idp_sessions") as hit:
            answer = exchange(port, raw)
        assert hit, "the fault was never reached"
        headers = dict(answer.headers)
        assert_unavailable_page(answer.status, headers, answer.text)
        assert headers["Content-Type"].startswith("text/html")
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert probe_rows(fault_engine) == 0
        assert session_rows(fault_engine) == 0
        # Control: the same request with the database answering commits both.
        answer = exchange(port, raw)
    assert answer.status == 200
    assert probe_rows(fault_engine) == 1
    assert session_rows(fault_engine) == 1


def test_data_10_a_bug_in_the_session_save_is_the_500_page_not_waitress(
    fault_app, fault_engine
):
    """DATA-10: not only database faults: whatever fails there gets the page."""
    raw = request_bytes("GET", b"/_probe/write")
    with (
        serve(fault_app) as port,
        failing_statements(
            fault_engine,
            r"^\s*INSERT INTO idp_sessions",
            "UNIQUE constraint failed: idp_sessions.token_hash",
            error="IntegrityError",
        ),
    ):
        answer = exchange(port, raw)
    assert answer.status == 500
    assert 'data-error-code="server_error"' in answer.text
    assert "UNIQUE" not in answer.text and "Traceback" not in answer.text
    assert probe_rows(fault_engine) == 0


@pytest.mark.parametrize("locale", ["ms", "en"])
def test_data_10_a_read_failing_before_the_view_gives_the_503_page(
    fault_app, fault_engine, caplog, locale
):
    """DATA-10: the session's read (before any view) fails: 503, one log line."""
    browser = committing_browser(fault_app)
    caplog.set_level(logging.INFO)
    with failing_statements(fault_engine, r"FROM idp_sessions"):
        page = browser.get(
            f"/login?lang={locale}",
            headers={"Cookie": SESSION_COOKIE},
            status=503,
            expect_errors=True,
        )
    assert_unavailable_page(page.status_int, page.headers, page.text, locale)
    reference = re.search(f'class="reference">({REFERENCE_PATTERN})<', page.text)[1]
    (record,) = db_fault_records(caplog)
    line = record.getMessage()
    assert reference in line
    assert "disk I/O error" in line  # the cause
    assert str(fault_engine.url.database) in line  # which database
    assert record.exc_info is None and "\n" not in line
    # Control: the database answering, the same page is the sign-in form.
    browser.get(f"/login?lang={locale}", headers={"Cookie": SESSION_COOKIE})


def test_data_10_the_commit_failing_gives_the_503_page(fault_app, fault_engine):
    """DATA-10: a fault at COMMIT, after every statement went through."""
    browser = committing_browser(fault_app)
    with failing_commits(fault_engine) as hit:
        page = browser.get("/_probe/write", status=503, expect_errors=True)
    assert hit
    assert_unavailable_page(page.status_int, page.headers, page.text)
    assert probe_rows(fault_engine) == 0
    browser.get("/_probe/write", status=200)
    assert probe_rows(fault_engine) == 1


def test_data_10_an_unexpected_error_stays_the_500_page(fault_app, caplog):
    """DATA-10 control: only database faults are 503; a bug keeps its 500 and trace."""
    caplog.set_level(logging.INFO)
    page = committing_browser(fault_app).get("/_probe/boom", status=500)
    assert 'data-error-code="server_error"' in page.text
    assert "Retry-After" not in page.headers
    assert not db_fault_records(caplog)


def test_data_10_the_sqlite_writer_queue_timing_out_gives_the_503_page(
    settings, db_url, db_engine, monkeypatch
):
    """DATA-10: another writer holds SQLite past the wait: 503, not a hang or 500."""
    if not db_url.startswith("sqlite"):
        pytest.skip("the writer queue is SQLite's")
    monkeypatch.setattr(idp.db, "SQLITE_BUSY_TIMEOUT_MS", 200)
    engine = make_engine({"sqlalchemy.url": db_url})
    try:
        app = make_app(settings, engine, "tests.probe")
        browser = committing_browser(app)
        with engine.connect() as holder:
            holder.begin()
            # A write takes the writer's turn and keeps it to the rollback.
            holder.execute(text("DELETE FROM roles WHERE name = :n"), {"n": "none"})
            started = time.monotonic()
            page = browser.get("/_probe/write", status=503, expect_errors=True)
            assert time.monotonic() - started < 5
            holder.rollback()
        assert_unavailable_page(page.status_int, page.headers, page.text)
        assert probe_rows(engine) == 0
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM roles WHERE name = :n"), {"n": PROBE_ROLE})
            conn.execute(text("DELETE FROM idp_sessions"))
        engine.dispose()


def test_data_10_sqlite_locked_by_another_process_gives_the_503_page(
    settings, db_url, db_engine, monkeypatch, caplog
):
    """DATA-10: "database is locked" (another process writing) is the 503 page."""
    import sqlite3

    if not db_url.startswith("sqlite"):
        pytest.skip("another process's lock on the file is SQLite's")
    monkeypatch.setattr(idp.db, "SQLITE_BUSY_TIMEOUT_MS", 200)
    engine = make_engine({"sqlalchemy.url": db_url})
    other = sqlite3.connect(engine.url.database, isolation_level=None)
    try:
        app = make_app(settings, engine, "tests.probe")
        caplog.set_level(logging.INFO)
        other.execute("BEGIN IMMEDIATE")
        page = committing_browser(app).get(
            "/_probe/write", status=503, expect_errors=True
        )
        other.execute("ROLLBACK")
        assert_unavailable_page(page.status_int, page.headers, page.text)
        (record,) = db_fault_records(caplog)
        assert "database is locked" in record.getMessage()
        assert probe_rows(engine) == 0
    finally:
        other.close()
        engine.dispose()


@pytest.mark.postgresql
def test_data_10_postgresql_restarting_gives_503_then_the_node_recovers(
    settings, db_url, db_engine, caplog
):
    """DATA-10: PostgreSQL's connections cut and refused, then back: 503, then 200.

    The engine reaches PostgreSQL through a proxy the test cuts, as a
    server restart does to every node: pooled connections die, new ones
    are refused. The log names the host, never the URL's password.
    """
    if not db_url.startswith("postgresql"):
        pytest.skip("the wire to a database server is PostgreSQL's")
    from sqlalchemy.engine import make_url

    real = make_url(db_url)
    with TcpProxy((real.host or "127.0.0.1", real.port or 5432)) as proxy:
        url = real.set(host="127.0.0.1", port=proxy.port)
        engine = make_engine(
            {
                "sqlalchemy.url": url.render_as_string(hide_password=False),
                "sqlalchemy.pool_pre_ping": "true",
            }
        )
        try:
            app = make_app(settings, engine, "tests.probe")
            caplog.set_level(logging.INFO)
            raw = request_bytes(
                "GET", b"/login", headers=((b"Cookie", SESSION_COOKIE.encode()),)
            )
            with serve(app) as port:
                assert exchange(port, raw).status == 200
                proxy.cut()
                answer = exchange(port, raw)
                headers = dict(answer.headers)
                assert_unavailable_page(answer.status, headers, answer.text)
                proxy.restore()
                started = time.monotonic()
                assert exchange(port, raw).status == 200
                recovered = time.monotonic() - started
        finally:
            engine.dispose()
    assert recovered < 2
    records = db_fault_records(caplog)
    assert records
    for record in records:
        line = record.getMessage()
        assert f"127.0.0.1:{proxy.port}" in line
        assert record.exc_info is None
        if real.password:
            assert real.password not in line


def test_data_10_a_database_server_refusing_connections_gives_the_503_page(
    settings, caplog
):
    """DATA-10: nothing listens at the database's address (connection refused)."""
    from tests.smtp import free_port

    port = free_port()
    engine = make_engine(
        {
            "sqlalchemy.url": f"postgresql+psycopg://idp:n0t-shown-pw@127.0.0.1:{port}/idp"
        }
    )
    try:
        app = make_app(settings, engine)
        caplog.set_level(logging.INFO)
        page = committing_browser(app).get(
            "/login", headers={"Cookie": SESSION_COOKIE}, status=503
        )
    finally:
        engine.dispose()
    assert_unavailable_page(page.status_int, page.headers, page.text)
    (record,) = db_fault_records(caplog)
    line = record.getMessage()
    assert f"the postgresql server at 127.0.0.1:{port}, database idp as idp" in line
    assert "refused" in line.lower()
    assert "n0t-shown-pw" not in line and "n0t-shown-pw" not in page.text


def session_due_a_touch(engine) -> str:
    """A browser's session last seen two minutes ago: this request saves it
    (``idp.sessions.TOUCH_INTERVAL``). Its cookie header."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    with Session(engine) as session, session.begin():
        session.add(
            IdpSession(
                token_hash=hash_token(token),
                data={"note": "kept"},
                created_at=now - dt.timedelta(minutes=5),
                last_seen_at=now - dt.timedelta(minutes=2),
                expires_at=now + dt.timedelta(hours=1),
            )
        )
    return f"{COOKIE_NAME}={token}"


def last_seen(engine, cookie: str) -> dt.datetime:
    token = cookie.split("=", 1)[1]
    with Session(engine) as session:
        return session.scalars(
            select(IdpSession.last_seen_at).where(
                IdpSession.token_hash == hash_token(token)
            )
        ).one()


def unhandled_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "unhandled error" in r.getMessage()]


@pytest.mark.postgresql
@pytest.mark.parametrize(
    ("path", "pattern", "after"),
    [
        # The view's own write meets the closed connection.
        ("/_probe/write", r"^\s*INSERT INTO roles", False),
        # Closed just after the session's read: the page's next statement.
        ("/login", r"FROM idp_sessions", True),
    ],
)
def test_data_10_connection_closed_mid_request_with_a_session_to_save_is_503(
    fault_app, fault_engine, caplog, path, pattern, after
):
    """DATA-10: PostgreSQL gone between the session's read and the view's next
    statement, the session due a save: the 503 page, not the 500 page.

    The connection is closed for real (PostgreSQL's server process ended,
    as ``pg_ctl stop -m fast`` ends them all; SQLite's closed). SQLAlchemy
    invalidates it; saving the session after the 503 page then raised
    ``PendingRollbackError`` ("Can't reconnect until invalid transaction
    is rolled back"), which the exception views took for a bug: the one
    500 page of a restart under load (docs/performance.md).
    """
    cookie = session_due_a_touch(fault_engine)
    seen = last_seen(fault_engine, cookie)
    caplog.set_level(logging.INFO)
    browser = committing_browser(fault_app)
    with dropped_connections(fault_engine, pattern, after=after) as cut:
        page = browser.get(path, headers={"Cookie": cookie}, expect_errors=True)
    assert cut, "the connection was never closed"
    assert_unavailable_page(page.status_int, page.headers, page.text)
    assert not unhandled_records(caplog)
    (record,) = db_fault_records(caplog)
    assert record.exc_info is None
    assert probe_rows(fault_engine) == 0
    assert last_seen(fault_engine, cookie) == seen
    # Control: the database answering, the same request saves the session.
    browser.get(path, headers={"Cookie": cookie}, status=200)
    assert last_seen(fault_engine, cookie) > seen


def test_data_10_a_bug_with_a_session_to_save_stays_the_500_page(
    fault_app, fault_engine, caplog
):
    """DATA-10 control: the session's save is skipped after a database fault
    only; a bug in the view is still the 500 page with its traceback."""
    cookie = session_due_a_touch(fault_engine)
    caplog.set_level(logging.INFO)
    page = committing_browser(fault_app).get(
        "/_probe/boom", headers={"Cookie": cookie}, status=500
    )
    assert 'data-error-code="server_error"' in page.text
    (record,) = unhandled_records(caplog)
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError
    assert not db_fault_records(caplog)


@pytest.mark.postgresql
def test_data_10_a_rollback_on_a_closed_connection_logs_one_line(
    fault_app, fault_engine, caplog, abort_filter
):
    """DATA-10: PostgreSQL gone after the request's last statement: the abort's
    ROLLBACK fails, and the log has one line for it, without a traceback.

    ``/healthz`` dooms its transaction, so it always ends in an abort:
    the request that met this most often in a restart under load. The
    ``transaction`` package logged "Failed to abort resource manager"
    with a full traceback (:class:`idp.dbfaults.AbortFaultFilter`).
    """
    caplog.set_level(logging.INFO)
    with dropped_before_end(fault_engine) as cut:
        page = committing_browser(fault_app).get("/healthz", expect_errors=True)
    assert cut, "the connection was never closed"
    assert page.status_int == 503 and int(page.headers["Retry-After"]) > 0
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    (record,) = records
    assert "database unavailable" in record.getMessage()
    assert record.exc_info is None


def test_data_10_the_abort_filter_drops_only_an_outage_s_traceback():
    """DATA-10: a failed abort's record goes only when its exception is a
    database fault; a bug's failed abort keeps its traceback."""
    from sqlalchemy.exc import OperationalError

    def record(name: str, msg: str, exc: BaseException) -> logging.LogRecord:
        return logging.LogRecord(
            name, logging.ERROR, __file__, 1, msg, (), (type(exc), exc, None)
        )

    fault = OperationalError("ROLLBACK", {}, Exception("server closed"))
    bug = RuntimeError("a bug")
    aborting = "Failed to abort resource manager: %s"
    keep = AbortFaultFilter().filter
    assert not keep(record("txn.140001", aborting, fault))
    assert not keep(record("txn.140001", "Error in abort() on manager %s", fault))
    assert keep(record("txn.140001", aborting, bug))
    assert keep(record("idp.views.errors", aborting, fault))
    assert keep(record("txn.140001", "something else", fault))


def test_data_10_the_app_factory_installs_the_abort_filter(settings):
    """DATA-10: ``idp:main`` (pserve, ``idp-admin serve``) puts the filter on
    the handlers logging is configured with."""
    root = logging.getLogger()
    handler = logging.StreamHandler(io.StringIO())
    root.addHandler(handler)
    try:
        idp.main({}, **settings)
        assert any(isinstance(f, AbortFaultFilter) for f in handler.filters)
    finally:
        root.removeHandler(handler)


@pytest.mark.parametrize(
    ("error", "fault"), [("OperationalError", True), ("ProgrammingError", False)]
)
def test_data_10_healthz_logs_an_outage_in_one_line(
    fault_app, fault_engine, caplog, error, fault
):
    """DATA-10: a probe meeting the outage logs one line with the cause (a
    load balancer probes every few seconds); a bug keeps its traceback."""
    caplog.set_level(logging.INFO)
    with failing_statements(fault_engine, r"^SELECT 1", "gone away", error=error):
        page = committing_browser(fault_app).get("/healthz", status=503)
    assert page.json["database"] == "unavailable"
    (record,) = [r for r in caplog.records if "health check" in r.getMessage()]
    line = record.getMessage()
    assert "database unreachable" in line
    if fault:
        assert record.exc_info is None and "\n" not in line
        assert "gone away" in line
        assert str(fault_engine.url.database) in line
    else:
        assert record.exc_info is not None and record.exc_info[0].__name__ == error


@pytest.fixture
def abort_filter(caplog):
    """caplog's handler with the filter ``idp:main`` installs in production."""
    installed = AbortFaultFilter()
    caplog.handler.addFilter(installed)
    yield
    caplog.handler.removeFilter(installed)


@pytest.mark.postgresql
@pytest.mark.parametrize("due", ["nothing", "the touch", "the touch and the tally"])
def test_data_10_an_sso_cut_off_at_any_statement_is_the_503_page(
    committing_testapp, db_engine, caplog, abort_filter, monkeypatch, due
):
    """DATA-10: PostgreSQL gone before or after any statement of a signed-in
    user's SSO, or at its COMMIT: the 503 page and one log line, never the
    500 page or a traceback; the next SSO is served.

    The sweep that found the restart's 500 (with the session due its 60 s
    touch). The touch and the tally's flush (once a minute per node, a
    SAVEPOINT, an upsert and a RELEASE) add statements, so each is swept
    too. Each cut ends the request's server process for real.
    """
    if db_engine.dialect.name != "postgresql":
        pytest.skip("a server's restart is PostgreSQL's (SQLite's faults: above)")
    from tests.factories import commit_sp_and_user
    from tests.saml_pages import response_of, status_of
    from tests.saml_requests import authn_request, redirect_query
    from tests.signin import sign_in

    number = commit_sp_and_user(db_engine)
    browser = committing_testapp
    sign_in(browser, number)
    if "tally" in due:
        tally = browser.app.registry["idp.saml.tally"]
        monkeypatch.setattr(tally, "due", lambda: True)

    def make_due() -> None:
        if "touch" in due:
            with db_engine.begin() as conn:
                conn.execute(
                    IdpSession.__table__.update().values(
                        last_seen_at=utcnow() - dt.timedelta(minutes=2)
                    )
                )

    def sso():
        query = redirect_query(authn_request())
        return browser.get(f"/saml/sso/redirect?{query}", expect_errors=True)

    statements: list[str] = []

    def seen(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    # The first SSO to the SP also records its NameID and participant.
    assert status_of(response_of(sso())) == [SUCCESS]
    make_due()
    event.listen(db_engine, "before_cursor_execute", seen)
    try:
        assert status_of(response_of(sso())) == [SUCCESS]
    finally:
        event.remove(db_engine, "before_cursor_execute", seen)
    if "touch" in due:
        assert any(s.startswith("UPDATE idp_sessions") for s in statements)
    if "tally" in due:
        assert any(s.startswith("SAVEPOINT") for s in statements)
    cuts = [
        ("statement", index, after)
        for index in range(len(statements))
        for after in (False, True)
    ]
    cuts.append(("commit", 0, False))
    for kind, index, after in cuts:
        make_due()
        caplog.clear()
        if kind == "statement":
            cutting = dropped_connections(db_engine, ".", skip=index, after=after)
        else:
            cutting = dropped_before_end(db_engine, "commit")
        with cutting as cut:
            page = sso()
        where = f"{kind} {index} ({statements[index][:60]!r}, after={after})"
        assert cut, f"never cut: {where}"
        assert page.status_int == 503, where
        # sign_in chose English.
        assert_unavailable_page(page.status_int, page.headers, page.text, "en")
        noisy = [
            r
            for r in caplog.records
            if r.levelno >= logging.WARNING and r.exc_info is not None
        ]
        assert not noisy, where
        assert len(db_fault_records(caplog)) == 1, where
        assert status_of(response_of(sso())) == [SUCCESS], f"no recovery: {where}"
