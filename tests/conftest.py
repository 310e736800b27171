"""The fixture ladder: settings -> keys -> database -> app -> per-test transaction.

Every test that touches the database runs on SQLite. Tests marked
``@pytest.mark.postgresql`` (the dialect matters: races, row locks,
``ON CONFLICT``, ``SKIP LOCKED``, triggers, advisory locks, migrations) run on
PostgreSQL as well; ``IDP_TEST_ALL_DATABASES=1`` (``scripts/test
--all-databases``) runs every database test on both. Each test runs inside an
outer transaction that is rolled back at teardown, so tests never see each
other's rows; the app's own commits become SAVEPOINTs inside it.

PostgreSQL comes from ``IDP_TEST_POSTGRESQL_URL`` (the test command starts
the cluster and provisions a role and database). Under pytest-xdist each
worker makes its own database next to that one (``<name>_gw0``...; the role
needs ``CREATEDB``) and drops it at the end, as SQLite's file already lives in
the worker's own tmp directory. Without the URL the PostgreSQL half is
skipped with the reason printed, unless ``IDP_TEST_REQUIRE_POSTGRESQL=1``
(set by the test command) makes that an error: in CI a missing database must
fail, not pass quietly.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import transaction
import webtest
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from idp.db import make_engine
from idp.saml import keys as keystore
from tests.app import (
    TEST_HOST,
    base_settings,
    committing_browser,
    environ,
    make_app,
)
from tests.cli import ok, scratch_ini
from tests.partner_server import PartnerServer, ThrowawayCA
from tests.postgresql import drop_database

POSTGRESQL_ENV = "IDP_TEST_POSTGRESQL_URL"
REQUIRE_POSTGRESQL_ENV = "IDP_TEST_REQUIRE_POSTGRESQL"
ALL_DATABASES_ENV = "IDP_TEST_ALL_DATABASES"


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


DATABASES = ("sqlite", "postgresql")


def all_databases() -> bool:
    """True when every database test should run on both databases."""
    return os.environ.get(ALL_DATABASES_ENV) == "1"


def pytest_generate_tests(metafunc):
    """SQLite for every database test; PostgreSQL too where marked ``postgresql``."""
    if "db_url" not in metafunc.fixturenames:
        return
    both = all_databases() or metafunc.definition.get_closest_marker("postgresql")
    metafunc.parametrize(
        "db_url", DATABASES if both else DATABASES[:1], indirect=True, scope="session"
    )


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """Long tests first, so parallel workers never wait on one started last.

    pytest-xdist hands out tests in collection order; a browser module or a
    slow test near the end would run alone while the other workers idle.
    The sort is stable: within each kind, pytest's own order (grouped by
    database, to set each one up once) stays.
    """

    def kind(item) -> int:
        if item.get_closest_marker("e2e"):
            return 0
        if item.get_closest_marker("slow"):
            return 1
        return 2

    items.sort(key=kind)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup``, plus: each browser module's tests on one worker,
    and the scale-out module's (one cluster of nginx and nodes per module).

    A browser module's IdP, service and Chromium are module fixtures; split
    over workers, each would start them again. (The ``xdist_group`` mark
    cannot say this: pytest-xdist 3.8 renames ``item._nodeid``, which
    pytest 9 no longer reads, so marked tests are not grouped.)
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class BrowserModulesTogether(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.startswith(("tests/e2e/", "tests/functional/test_scaleout.py")):
                return nodeid.split("::", 1)[0]
            return super()._split_scope(nodeid)

    return BrowserModulesTogether(config, log)


class DatabaseUnavailable(Exception):
    """PostgreSQL is not configured or does not answer; the message says which."""


class WorkerDatabases:
    """This process's test databases, each made and migrated once.

    pytest finalises a session fixture when the next test wants another
    parameter, and tests alternate between SQLite and PostgreSQL as the
    ``postgresql`` marker and xdist's scheduling lay them out. Keeping the
    migrated engines here, not in ``db_engine``, means a switch costs nothing;
    :meth:`close` disposes of them at the end of the session and drops the
    databases this process created.
    """

    def __init__(self, tmp: Path, worker: str | None) -> None:
        self.tmp = tmp
        self.worker = worker
        self.engines: dict[str, Engine] = {}
        self.created: list[URL] = []
        self.postgresql: str | None = None
        self.unavailable: str | None = None

    def url(self, name: str) -> str:
        if name == "sqlite":
            return f"sqlite:///{self.tmp / 'test.sqlite'}"
        if self.unavailable:
            raise DatabaseUnavailable(self.unavailable)
        if self.postgresql is None:
            try:
                self.postgresql = self._postgresql()
            except DatabaseUnavailable as exc:
                self.unavailable = str(exc)
                raise
        return self.postgresql

    def _postgresql(self) -> str:
        configured = os.environ.get(POSTGRESQL_ENV)
        if not configured:
            raise DatabaseUnavailable(
                f"PostgreSQL tests need {POSTGRESQL_ENV} (the test command sets it)"
            )
        base = make_url(configured)
        engine = make_engine(
            {"sqlalchemy.url": configured, "sqlalchemy.isolation_level": "AUTOCOMMIT"}
        )
        try:
            with engine.connect() as conn:
                if self.worker is None:
                    return configured
                # One database per xdist worker, so concurrent workers never
                # share rows, locks or a schema being rebuilt.
                url = base.set(database=f"{base.database}_{self.worker}")
                exists = conn.scalar(
                    text("SELECT 1 FROM pg_database WHERE datname = :name"),
                    {"name": url.database},
                )
                if not exists:
                    try:
                        conn.execute(text(f'CREATE DATABASE "{url.database}"'))
                    except ProgrammingError as exc:
                        raise DatabaseUnavailable(
                            f"cannot create {url.database}: {exc.orig} (the role"
                            " needs CREATEDB, which the test command grants)"
                        ) from exc
                    self.created.append(url)
                return url.render_as_string(hide_password=False)
        except OperationalError as exc:
            raise DatabaseUnavailable(
                f"PostgreSQL at {POSTGRESQL_ENV} unreachable: {exc.orig}"
            ) from exc
        finally:
            engine.dispose()

    def engine(self, url: str) -> Engine:
        if url not in self.engines:
            engine = make_engine({"sqlalchemy.url": url})
            reset_schema(engine)
            upgrade(engine)
            self.engines[url] = engine
        return self.engines[url]

    def close(self) -> None:
        for engine in self.engines.values():
            engine.dispose()
        configured = os.environ.get(POSTGRESQL_ENV)
        if not self.created or not configured:
            return
        engine = make_engine(
            {"sqlalchemy.url": configured, "sqlalchemy.isolation_level": "AUTOCOMMIT"}
        )
        try:
            with engine.connect() as conn:
                for url in self.created:
                    drop_database(conn, url.database)
        finally:
            engine.dispose()


@pytest.fixture(scope="session")
def test_databases(tmp_root):
    databases = WorkerDatabases(tmp_root, os.environ.get("PYTEST_XDIST_WORKER"))
    yield databases
    databases.close()


@pytest.fixture(scope="session")
def db_url(request, test_databases) -> str:
    """The database of this test's parameter (see ``pytest_generate_tests``)."""
    try:
        return test_databases.url(request.param)
    except DatabaseUnavailable as exc:
        if os.environ.get(REQUIRE_POSTGRESQL_ENV) == "1":
            pytest.fail(str(exc))
        pytest.skip(str(exc))


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
def db_engine(db_url, test_databases):
    """The migrated engine of ``db_url``; ``test_databases`` disposes of it."""
    return test_databases.engine(db_url)


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

    yield committing_browser(app)
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


@pytest.fixture(scope="session")
def ca(tmp_path_factory):
    """A throwaway CA, trusted by the tests' fetch policies, for partner servers."""
    return ThrowawayCA(tmp_path_factory.mktemp("partner-ca"))


@pytest.fixture(scope="module")
def partner_server(ca):
    """A partner's HTTPS server on 127.0.0.1 (tests/partner_server.py), per module;
    each test resets it."""
    with PartnerServer(ca) as server:
        yield server
