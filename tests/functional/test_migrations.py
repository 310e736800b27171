"""Alembic is the only way the schema is made: models and migrations agree."""

from __future__ import annotations

from alembic import command
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from idp.cli.db import pending_difference
from idp.db import Base
from idp.migrations import alembic_config


def test_database_is_at_the_newest_revision(db_engine):
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with db_engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == head


def test_autogenerate_finds_no_difference(db_engine):
    with db_engine.connect() as conn:
        assert pending_difference(conn) == []


def test_every_model_table_is_created_by_migrations(db_engine):
    tables = set(inspect(db_engine).get_table_names())
    assert set(Base.metadata.tables) <= tables


def test_sqlite_enforces_foreign_keys(db_engine):
    if db_engine.dialect.name != "sqlite":
        return
    with db_engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_downgrade_and_upgrade_round_trip(tmp_path):
    """Every migration can be undone and redone (on a scratch SQLite file)."""
    from idp.db import make_engine

    engine = make_engine({"sqlalchemy.url": f"sqlite:///{tmp_path / 'rt.sqlite'}"})
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    engine.dispose()
