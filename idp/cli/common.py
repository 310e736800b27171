"""What every command needs: the ini's settings, a request, its errors."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from idp.settings import SettingsError, parse_settings


class CommandError(Exception):
    """An expected failure: printed as one line, exit status 1."""


#: What idp-admin adds to a service's refusal, by its code: where to look,
#: what to do first, in terms of idp-admin's own commands.
HINTS = {
    "module.not_found": "see 'module list'",
    "role.not_found": "see 'role list'",
    "role.in_use": "'user revoke' first",
}
#: The same, for each use that keeps a module from being deleted.
MODULE_USE_HINTS = {
    "roles": "'role revoke-module' first",
    "service_providers": "'sp remove' or re-import with another --module",
}


def refusal_line(exc, options: Mapping[str, str]) -> str:
    """The one line idp-admin prints for a service's ``Refused`` ``exc``.

    ``options`` maps the service's field names to the command's options
    (``name_ms`` -> ``--name-ms``), which prefix the message.
    """
    if exc.code == "module.in_use":
        uses = exc.params["uses"]
        message = f"module {exc.params['module']} is in use: " + "; ".join(
            f"{text} ({MODULE_USE_HINTS[use]})" for use, text in uses.items()
        )
    else:
        message = exc.message
        if exc.code in HINTS:
            message = f"{message} ({HINTS[exc.code]})"
    if exc.field is not None:
        message = f"{options.get(exc.field, exc.field)}: {message}"
    return message


@contextmanager
def refusals(options: Mapping[str, str] | None = None) -> Iterator[None]:
    """Turn a service's refusal in the block into idp-admin's one-line error."""
    from idp.services.errors import Refused

    try:
        yield
    except Refused as exc:
        raise CommandError(refusal_line(exc, options or {})) from None


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
    from idp.dbfaults import fault_cause

    url = _loaded.get("sqlalchemy.url")
    detail = fault_cause(exc, _parsed_url(url))
    hint = ""
    if "no such table" in detail or "does not exist" in detail:
        hint = "; run 'idp-admin CONFIG db upgrade' first"
    where = describe_database(url)
    return f"database error at {where}: {detail}{hint}"


def _parsed_url(url: str | None):
    """``url`` parsed (for its password), or None when it does not parse."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url) if url else None
    except ArgumentError:
        return None


@contextmanager
def app_request(config_uri: str, options: Mapping[str, str] | None = None) -> Iterator:
    """A request wired as the web app wires one, inside one transaction.

    Services come from ``request.service(IFoo)`` as in a
    view: the same database wiring, services and translations as
    :func:`idp.config.configure`, through :func:`idp.config.configure_services`,
    without what only a web node needs (the SAML server and its keys, views,
    tweens, the in-process mail thread). A command only queues mail; ``mail
    deliver`` sends it. The transaction commits when the block ends and
    aborts on any exception (a ``CommandError`` included), so a failed
    command writes nothing. A service's refusal becomes the command's
    one-line error (:func:`refusals`, with ``options``); database errors
    become one line in :func:`main`.
    """
    from pyramid.scripting import prepare

    from idp.config import configure_services

    settings = load_settings(config_uri)
    config = configure_services(settings)
    env = prepare(registry=config.registry)
    try:
        request = env["request"]
        with refusals(options), request.tm:
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


def identifier_arguments(parser) -> None:
    """IDENTIFIER and --country: how every account command names the account."""
    parser.add_argument(
        "identifier",
        metavar="IDENTIFIER",
        help="MyKad/MyKid number, or a passport number with --country",
    )
    parser.add_argument(
        "--country",
        metavar="CCC",
        help="the passport's issuing country (ISO 3166 alpha-3, e.g. GBR)",
    )


def identifier_of(args):
    """The checked ``Identifier`` of :func:`identifier_arguments`; else CommandError."""
    from idp.identifiers import InvalidIdentifier, parse_identifier

    try:
        return parse_identifier(args.identifier, args.country)
    except InvalidIdentifier as exc:
        option = "--country" if exc.code == "passport.country" else "IDENTIFIER"
        raise CommandError(f"{option}: {exc.message.interpolate()}") from None
