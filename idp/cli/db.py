"""``db upgrade`` and ``db check``: Alembic is the only way the schema changes."""

from __future__ import annotations

import logging
import warnings

from alembic import command
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import SAWarning, SQLAlchemyError

from idp.cli.common import CommandError, database_error, load_settings
from idp.db import make_engine
from idp.migrations import alembic_config


def register(groups) -> None:
    parser = groups.add_parser("db", help="database schema")
    commands = parser.add_subparsers(dest="command", metavar="ACTION", required=True)
    upgrade_parser = commands.add_parser(
        "upgrade", help="apply every migration not yet applied"
    )
    upgrade_parser.add_argument(
        "revision", nargs="?", default="head", help="target revision (default: head)"
    )
    upgrade_parser.set_defaults(handler=upgrade)
    check_parser = commands.add_parser(
        "check",
        help="exit 0 only if the database is at the newest revision "
        "and matches the models",
    )
    check_parser.set_defaults(handler=check)


def _engine(args):
    return make_engine(load_settings(args.config_uri))


def upgrade(args) -> int:
    engine = _engine(args)
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), args.revision)
            revision = MigrationContext.configure(connection).get_current_revision()
    except SQLAlchemyError as exc:
        raise CommandError(f"upgrade failed: {database_error(exc)}") from None
    finally:
        engine.dispose()
    print(f"database at revision {revision}")
    return 0


def pending_difference(connection) -> list:
    """What autogenerate would change: empty when models and schema agree."""
    from alembic.autogenerate import compare_metadata

    import idp.models  # noqa: F401  (the tables must be on Base.metadata)
    from idp.db import Base

    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "render_as_batch": True}
    )
    with warnings.catch_warnings():
        # SQLAlchemy cannot reflect SQLite's expression indexes (lower(code))
        # and says so, and Alembic then leaves them out of the comparison and
        # says that; PostgreSQL compares them. Tests insert case variants to
        # prove the indexes are there on both (test_cli_registry.py).
        warnings.filterwarnings(
            "ignore",
            message="Skipped unsupported reflection of expression-based index",
            category=SAWarning,
        )
        warnings.filterwarnings(
            "ignore",
            message="autogenerate skipping metadata-specified expression-based",
            category=UserWarning,
        )
        return compare_metadata(context, Base.metadata)


def check(args) -> int:
    engine = _engine(args)
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    # A check changes nothing: Alembic's INFO lines about its set-up ("Context
    # impl SQLiteImpl", one per autogenerate plugin) would bury the answer.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
            diff = pending_difference(connection) if current == head else []
    except SQLAlchemyError as exc:
        raise CommandError(database_error(exc)) from None
    finally:
        engine.dispose()
    if current != head:
        raise CommandError(
            f"database at revision {current or 'none'}, newest is {head}; "
            "run 'idp-admin CONFIG db upgrade'"
        )
    if diff:
        raise CommandError(f"database schema differs from the models: {diff}")
    print(f"database at revision {current}, matches the models")
    return 0
