"""What every command needs: the ini's settings, a request, its errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from idp.settings import SettingsError, parse_settings


class CommandError(Exception):
    """An expected failure: printed as one line, exit status 1."""


# The database the last loaded ini names, so that an error raised anywhere
# below a command can say which database it was (see database_error).
_loaded: dict = {}


def read_ini(path: Path) -> dict:
    """The ``[app:main]`` settings of ``path``, as PasteDeploy gives them to the app.

    PasteDeploy and plaster find their loaders by reading the metadata of
    every installed distribution, a third of a second before the first line
    of a command runs. The ini format the IdP ships is plain ``configparser``
    with ``%(here)s`` and ``%(__file__)s``, so it is read directly;
    ``tests/unit/test_cli.py`` holds the result equal to
    ``pyramid.paster.get_appsettings`` for both shipped files.
    """
    from configparser import ConfigParser

    parser = ConfigParser(
        defaults={"here": str(path.parent.resolve()), "__file__": str(path.resolve())}
    )
    parser.optionxform = str  # setting names are case-sensitive
    with path.open(encoding="utf-8") as file:
        parser.read_file(file)
    settings = dict(parser.items("app:main"))
    for name in ("use", "here", "__file__"):
        settings.pop(name, None)
    return settings


def setup_logging(path: Path) -> None:
    """The ini's ``[loggers]``, as ``pyramid.paster.setup_logging`` sets them up."""
    import logging.config
    from configparser import ConfigParser

    parser = ConfigParser(interpolation=None)
    parser.read(path, encoding="utf-8")
    if parser.has_section("loggers"):
        logging.config.fileConfig(
            path,
            {"here": str(path.parent.resolve()), "__file__": str(path.resolve())},
            disable_existing_loggers=False,
        )


def load_settings(config_uri: str) -> dict:
    from configparser import Error as IniError

    from idp.logmask import install

    # "production.ini#main" names the section PasteDeploy would read: the
    # IdP's is always [app:main].
    path = Path(config_uri.split("#")[0])
    if not path.is_file():
        raise CommandError(f"{config_uri}: no such configuration file")
    try:
        setup_logging(path)
        install()
        raw = read_ini(path)
        settings = parse_settings(raw)
    except SettingsError as exc:
        raise CommandError(f"{config_uri}: {exc}") from None
    except (IniError, LookupError, ValueError, OSError) as exc:
        reason = " ".join(str(exc).split())
        raise CommandError(f"{config_uri}: cannot read it ({reason})") from None
    _loaded["sqlalchemy.url"] = settings.get("sqlalchemy.url")
    return settings


def describe_database(url: str | None) -> str:
    """Where a database URL points, without its password."""
    from idp.dbfaults import describe_database as describe

    return describe(url)


def database_error(exc: BaseException) -> str | None:
    """One line naming the database and the cause; None if not a database error.

    A driver's message is what an operator acts on ("connection refused",
    "password authentication failed", "no such table"), so it is kept, on
    one line; the exception's class name alone says nothing. The password in
    the URL is never shown.
    """
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    if isinstance(exc, ArgumentError):
        return f"sqlalchemy.url: {exc}"
    if not isinstance(exc, SQLAlchemyError):
        return None
    cause = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    # SQLAlchemy appends the statement and a documentation link: not causes.
    lines = [
        line
        for line in lines
        if not line.startswith(("[SQL:", "[parameters:", "(Background on"))
    ]
    detail = " ".join(lines) or cause.__class__.__name__
    hint = ""
    if "no such table" in detail or "does not exist" in detail:
        hint = "; run 'idp-admin CONFIG db upgrade' first"
    where = describe_database(_loaded.get("sqlalchemy.url"))
    return f"database error at {where}: {detail}{hint}"


@contextmanager
def app_request(config_uri: str) -> Iterator:
    """A request wired as the web app wires one, inside one transaction.

    Services come from ``request.service(IFoo)`` as in a
    view: the same database wiring, services and translations as
    :func:`idp.config.configure`, through :func:`idp.config.configure_services`,
    without what only a web node needs (the SAML server and its keys, views,
    tweens, the in-process mail thread). A command only queues mail; ``mail
    deliver`` sends it. The transaction commits when the block ends and
    aborts on any exception (a ``CommandError`` included), so a failed
    command writes nothing. Database errors become one line in :func:`main`.
    """
    from pyramid.scripting import prepare

    from idp.config import configure_services

    settings = load_settings(config_uri)
    config = configure_services(settings)
    env = prepare(registry=config.registry)
    try:
        request = env["request"]
        with request.tm:
            yield request
    finally:
        env["closer"]()
        config.registry["dbengine"].dispose()


@contextmanager
def stop_on_signals() -> Iterator:
    """An event set by SIGTERM or SIGINT: a ``--loop`` command's clean exit.

    The loop finishes what it is doing (a message being sent, a source
    being applied) and returns, rather than dying half-way. The handlers
    that were there before come back when the block ends.
    """
    import signal
    import threading

    stopping = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda *_: stopping.set())
        for signum in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield stopping
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def confirmed(question: str) -> bool:
    """Ask on the terminal; only "yes" (or "y") goes ahead, end of input refuses."""
    print(f"{question} Type yes to confirm: ", end="", flush=True)
    try:
        answer = input()
    except EOFError:
        print()
        return False
    return answer.strip().lower() in ("y", "yes")
