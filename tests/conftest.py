"""The fixture ladder: settings -> keys -> database -> app -> per-test transaction.

Every test that touches the database runs once on SQLite and once on
PostgreSQL (the ``db_url`` fixture is parametrised). Each test runs inside an
outer transaction that is rolled back at teardown, so tests never see each
other's rows; the app's own commits become SAVEPOINTs inside it.

PostgreSQL comes from ``IDP_TEST_POSTGRESQL_URL`` (the test command starts
the cluster and provisions a role and database). Without it the PostgreSQL
half is skipped with the reason printed, unless
``IDP_TEST_REQUIRE_POSTGRESQL=1`` (set by the test command) makes that an
error: in CI a missing database must fail, not pass quietly.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import transaction
import webtest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from idp.db import make_engine
from idp.saml import keys as keystore
from tests.app import TEST_BASE_URL, TEST_HOST, base_settings, environ, make_app
from tests.cli import ok, scratch_ini

POSTGRESQL_ENV = "IDP_TEST_POSTGRESQL_URL"
REQUIRE_POSTGRESQL_ENV = "IDP_TEST_REQUIRE_POSTGRESQL"


@pytest.fixture(scope="session")
def tmp_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("idp")


@pytest.fixture(scope="session")
def keypair(tmp_root):
    """Made once by idp/saml/keys.py, exactly as the CLI makes it."""
    return keystore.generate(tmp_root / "certs", TEST_HOST, key_size=2048)


@pytest.fixture(scope="session")
def settings(tmp_root, keypair) -> dict:
    return base_settings(tmp_root)


def _postgresql_url() -> str | None:
    return os.environ.get(POSTGRESQL_ENV) or None


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def db_url(request, tmp_root) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_root / 'test.sqlite'}"
    url = _postgresql_url()
    reason = None
    if not url:
        reason = f"PostgreSQL tests need {POSTGRESQL_ENV} (the test command sets it)"
    else:
        engine = make_engine({"sqlalchemy.url": url})
        try:
            engine.connect().close()
        except OperationalError as exc:
            reason = f"PostgreSQL at {POSTGRESQL_ENV} unreachable: {exc.orig}"
        finally:
            engine.dispose()
    if reason:
        if os.environ.get(REQUIRE_POSTGRESQL_ENV) == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return url


def reset_schema(engine) -> None:
    """Start from an empty database, so migrations build everything."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    else:
        database = Path(engine.url.database)
        engine.dispose()
        for suffix in ("", "-wal", "-shm"):
            Path(str(database) + suffix).unlink(missing_ok=True)


def upgrade(engine) -> None:
    from alembic import command

    from idp.migrations import alembic_config

    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")


@pytest.fixture(scope="session")
def db_engine(db_url):
    engine = make_engine({"sqlalchemy.url": db_url})
    reset_schema(engine)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def app(settings, db_engine):
    """The real app, plus a few probe views the tests need (tests/probe.py)."""
    return make_app(settings, db_engine, "tests.probe")


@pytest.fixture
def tm():
    manager = transaction.TransactionManager(explicit=True)
    manager.begin()
    manager.doom()
    yield manager
    manager.abort()


@pytest.fixture
def dbsession(db_engine, tm):
    import zope.sqlalchemy

    connection = db_engine.connect()
    outer = connection.begin()
    session = Session(
        bind=connection,
        join_transaction_mode="create_savepoint",
        expire_on_commit=False,
    )
    zope.sqlalchemy.register(session, transaction_manager=tm)
    yield session
    session.close()
    outer.rollback()
    connection.close()


@pytest.fixture
def testapp(app, tm, dbsession):
    return webtest.TestApp(app, extra_environ=environ(tm, dbsession))


@pytest.fixture
def committing_testapp(app, db_engine):
    """The app with its real transaction handling: commits and aborts happen.

    Shows what the rolled-back ``testapp`` cannot: that a failed request
    writes nothing. Every table is emptied afterwards.
    """
    from idp.db import Base

    yield webtest.TestApp(
        app,
        extra_environ={
            "HTTP_HOST": TEST_HOST,
            "HTTP_ORIGIN": TEST_BASE_URL,
            "wsgi.url_scheme": "https",
            "REMOTE_ADDR": "192.0.2.10",
        },
    )
    from idp.services.audit import audit_maintenance

    # audit_events refuses DELETE unless the transaction turns on the
    # maintenance switch (migration 0003).
    with db_engine.begin() as conn, audit_maintenance(conn):
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())


@pytest.fixture(scope="session")
def captcha_app(settings, db_engine):
    """The app with the captcha on, as both shipped ini files have it."""
    return make_app({**settings, "captcha.enabled": "true"}, db_engine)


@pytest.fixture
def captcha_testapp(captcha_app, tm, dbsession):
    return webtest.TestApp(captcha_app, extra_environ=environ(tm, dbsession))


@pytest.fixture
def mailbox(app, dbsession):
    """The messages queued in this test's transaction, as the recipient gets them.

    Call it (optionally with a recipient) for a list of ``EmailMessage``s.
    The outbox stores each message sealed; this first runs the jobs waiting
    there (a reset link asked for) and then opens the messages, both the way
    the delivery worker does, so what the tests read is what would be sent.
    """
    from sqlalchemy import select

    from idp.models import OutboxMessage
    from idp.services.delivery import MemorySender, OutboxWorker
    from idp.services.mail import JOB_PREFIX, parse_message

    codec = app.registry["idp.mail.codec"]
    worker = OutboxWorker.from_settings(app.registry.settings, None, MemorySender())

    def read(recipient: str | None = None) -> list:
        jobs = dbsession.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.template.startswith(JOB_PREFIX, autoescape=True))
            .order_by(OutboxMessage.id)
        ).all()
        for job in jobs:
            worker.run_job(dbsession, job)
        rows = dbsession.scalars(select(OutboxMessage).order_by(OutboxMessage.id))
        return [
            parse_message(codec.open(row.message))
            for row in rows
            if recipient is None or row.recipient == recipient
        ]

    return read


@pytest.fixture
def ini(tmp_path) -> Path:
    """A scratch development.ini for ``idp-admin`` (tests/cli.py)."""
    return scratch_ini(tmp_path)


@pytest.fixture
def db(ini) -> Path:
    """The scratch ini, its database upgraded."""
    ok(ini, "db", "upgrade")
    return ini


@pytest.fixture
def engine(db, tmp_path):
    """An engine on the scratch database, to read what the commands wrote."""
    engine = make_engine({"sqlalchemy.url": f"sqlite:///{tmp_path / 'idp.sqlite'}"})
    yield engine
    engine.dispose()
