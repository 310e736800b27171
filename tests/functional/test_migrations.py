"""Alembic is the only way the schema is made: models and migrations agree."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from idp.cli.db import pending_difference
from idp.db import Base
from idp.migrations import alembic_config

pytestmark = pytest.mark.postgresql


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


def test_saml_38_sps_registered_before_pairwise_uid_keep_the_global_one(tmp_path):
    """SAML-38: the upgrade changes no registered SP's uid; new SPs get pairwise.

    SPs have linked their accounts to the uid they were sent; switching them
    silently would orphan every account there.
    """
    from sqlalchemy import text

    from idp.db import make_engine

    engine = make_engine({"sqlalchemy.url": f"sqlite:///{tmp_path / 'uid.sqlite'}"})
    insert = text(
        "INSERT INTO service_providers (entity_id, enabled, metadata_xml,"
        " metadata_sha256, name_id_format, attributes_released, sign_response,"
        " sign_assertion, encrypt_assertion, allow_sha1, created_at, updated_at)"
        " VALUES (:e, 1, '<x/>', 'h', 'p', '[]', 1, 1, 0, 0,"
        " '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
    )
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0006_sp_global_uid-1")
        conn.execute(insert, {"e": "https://old.example.org/sp"})
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
        conn.execute(insert, {"e": "https://new.example.org/sp"})
        result = conn.execute(
            text("SELECT entity_id, global_uid FROM service_providers")
        )
        rows = {row.entity_id: row.global_uid for row in result}
    assert rows == {"https://old.example.org/sp": 1, "https://new.example.org/sp": 0}
    engine.dispose()
