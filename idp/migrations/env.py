"""Alembic environment: the only way the schema is created or changed.

Called two ways: by ``idp-admin CONFIG db upgrade`` (and the tests), which hand
in a connection through ``config.attributes["connection"]``; or by plain
``alembic -c development.ini upgrade head``, where the database URL comes
from the same ini's ``[app:main]`` settings the app uses.
"""

from alembic import context

import idp.models  # noqa: F401  (registers the tables on Base.metadata)
from idp.db import Base, make_engine

config = context.config
target_metadata = Base.metadata


def _settings():
    from pyramid.paster import get_appsettings

    from idp.settings import SECRET_ENV

    settings = dict(get_appsettings(config.config_file_name, name="main"))
    import os

    url_variable = SECRET_ENV["sqlalchemy.url"]
    if os.environ.get(url_variable):
        settings["sqlalchemy.url"] = os.environ[url_variable]
    return settings


def _run(connection):
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_settings())
    with engine.connect() as connection:
        _run(connection)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("Offline migrations are not supported; connect to a database.")
run_migrations_online()
