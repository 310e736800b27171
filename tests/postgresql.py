"""Whole PostgreSQL databases of a test's own, for what runs outside the test's transaction.

The ``db_url`` fixture gives each worker one migrated database shared by
its tests. Backup and restore (``pg_dump``/``pg_restore``) and an upgrade
rehearsed with two releases' ``idp-admin db upgrade`` need databases they
may fill, dump, restore into and drop: :func:`scratch_databases` makes them
empty beside the configured one (``IDP_TEST_POSTGRESQL_URL``, one set per
xdist worker) and drops them after, connections and all.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from idp.db import make_engine

POSTGRESQL_ENV = "IDP_TEST_POSTGRESQL_URL"
REQUIRE_POSTGRESQL_ENV = "IDP_TEST_REQUIRE_POSTGRESQL"


def configured_url() -> str:
    """The configured PostgreSQL URL; the test is skipped (or fails) without one."""
    url = os.environ.get(POSTGRESQL_ENV)
    if not url:
        reason = f"needs PostgreSQL: set {POSTGRESQL_ENV} (the test command sets it)"
        if os.environ.get(REQUIRE_POSTGRESQL_ENV) == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return url


def drop_database(conn, name: str) -> None:
    """``DROP DATABASE IF EXISTS name WITH (FORCE)`` on an AUTOCOMMIT ``conn``.

    FORCE ends our own leftover connections (a test that leaked one must
    not keep the database, and its name, for the next run), but a role
    that is not a superuser cannot end an autovacuum worker (a
    superuser's) that fresh tables start: it is done within moments, so
    the drop is tried again for up to 10 s.
    """
    drop = text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    for attempt in range(100):
        try:
            conn.execute(drop)
            return
        except DBAPIError as exc:
            if attempt == 99 or "terminated" not in str(exc.orig):
                raise
            time.sleep(0.1)


@contextlib.contextmanager
def scratch_databases(*names: str) -> Iterator[list[str]]:
    """Empty databases ``<configured>_<name>[_<worker>]``; their URLs, in order."""
    configured = configured_url()
    base = make_url(configured)
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    urls = [
        base.set(database="_".join(filter(None, (base.database, name, worker))))
        for name in names
    ]
    admin = make_engine(
        {"sqlalchemy.url": configured, "sqlalchemy.isolation_level": "AUTOCOMMIT"}
    )

    def drop_all(conn) -> None:
        for url in urls:
            drop_database(conn, url.database)

    try:
        with admin.connect() as conn:
            drop_all(conn)  # left by a run that was killed
            for url in urls:
                conn.execute(text(f'CREATE DATABASE "{url.database}"'))
        yield [url.render_as_string(hide_password=False) for url in urls]
    finally:
        with admin.connect() as conn:
            drop_all(conn)
        admin.dispose()
