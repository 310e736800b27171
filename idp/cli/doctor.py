"""``doctor``: is this node fit to serve? One line per check, exit 1 on a failure.

Run on each node as the service user, after an install, an upgrade or a
change of key, database or relay. Every check says what it looked at and,
when it is not ``ok``, why and what to do::

    ok   settings: production, base URL https://idme.moe.gov.my
    FAIL keys: signing.key is owned by uid 0, not by the service user (uid 998)

``warn`` is worth a look and does not fail the run; ``FAIL`` does. Nothing
is changed: no key is created, no table written, no mail sent.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from idp.cli.common import CommandError

HELP = "check this node: libraries, keys, database, clock, settings, mail, sources"
OK, WARN, FAIL = "ok", "warn", "FAIL"
# The most a node's clock may differ from the database's: session and
# token expiry, SAML validity windows and the audit chain's times are
# written by one and compared by the other.
MAX_CLOCK_SKEW_SECONDS = 2.0
# A relay or database that has not answered by then is as good as down.
NETWORK_TIMEOUT_SECONDS = 5
# A certificate this close to its end needs a rollover now: partners take
# idp.key_rollover_min_publish_days to pick up the next one.
CERT_WARN_DAYS = 30
# A source whose refresh is this late has no refresher running.
OVERDUE = dt.timedelta(hours=1)


@dataclass(frozen=True)
class Result:
    status: str
    name: str
    detail: str

    @property
    def line(self) -> str:
        return f"{self.status:<4} {self.name}: {self.detail}"


def register(groups) -> None:
    parser = groups.add_parser(
        "doctor",
        help=HELP,
        description=(
            "Check that this node can serve: the XML security libraries and the "
            "signature verifier, the key files (readable only by this user, "
            "matching their certificates), the database (reachable, at the newest "
            "migration, its clock within 2 s of this one), the settings "
            "(complete and safe for production), the mail relay (connect, EHLO, "
            "TLS, sign-in) and the partners' metadata sources (fresh). One line "
            "per check; exit status 1 if any check fails. Changes nothing."
        ),
    )
    parser.set_defaults(handler=doctor)


def doctor(args) -> int:
    path = Path(args.config_uri.split("#")[0])
    if not path.is_file():
        raise CommandError(f"{args.config_uri}: no such configuration file")
    failed = False
    for result in _results(path):
        print(result.line, flush=True)
        failed = failed or result.status == FAIL
    return 1 if failed else 0


def _results(path: Path) -> Iterator[Result]:
    settings, result = check_settings(path)
    yield result
    yield from check_libraries()
    if settings is None:
        return
    yield check_keys(settings)
    engine = _engine(settings)
    if engine is None:
        yield Result(FAIL, "database", "sqlalchemy.url is not a database URL")
        return
    try:
        database = check_database(engine)
        yield database
        if database.status != OK:
            for name in ("clock", "metadata sources"):
                yield Result(WARN, name, "not checked: the database is not usable")
        else:
            yield check_clock(engine)
            yield check_sources(engine)
    finally:
        engine.dispose()
    yield check_mail(settings)


# -- settings --------------------------------------------------------------


def check_settings(path: Path) -> tuple[dict | None, Result]:
    """The settings as the app reads them, and whether production may run on them."""
    from configparser import Error as IniError

    from idp.cli.common import read_ini
    from idp.logmask import install
    from idp.settings import SettingsError, parse_settings

    install()
    try:
        settings = parse_settings(read_ini(path))
    except SettingsError as exc:
        return None, Result(FAIL, "settings", str(exc))
    except (IniError, LookupError, ValueError, OSError) as exc:
        reason = " ".join(str(exc).split())
        return None, Result(FAIL, "settings", f"cannot read {path}: {reason}")
    if settings["idp.development"]:
        return settings, Result(
            WARN,
            "settings",
            "idp.environment = development: keys made on demand, http allowed; "
            "not for a production node",
        )
    problems, cautions = production_concerns(settings)
    if problems:
        return settings, Result(FAIL, "settings", "; ".join(problems))
    summary = f"production, base URL {settings['idp.base_url']}"
    if cautions:
        return settings, Result(WARN, "settings", "; ".join(cautions))
    return settings, Result(OK, "settings", summary)


def production_concerns(settings: dict) -> tuple[list[str], list[str]]:
    """What start-up lets through but a production node should not run with.

    Start-up already refuses missing or development secrets, http, keys
    made on demand (idp.settings); these are the choices left to the
    operator that weaken a defence (problems) or an operation (cautions).
    """
    from pyramid.settings import asbool
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    problems, cautions = [], []
    if not settings["captcha.enabled"]:
        problems.append(
            "captcha.enabled = false: sign-in and registration floods meet no "
            "captcha (AUTH-08, AUTH-09)"
        )
    if settings["idp.bcrypt_rounds"] < 12:
        problems.append(
            f"idp.bcrypt_rounds = {settings['idp.bcrypt_rounds']}: below 12, "
            "stolen hashes are cheap to crack"
        )
    try:
        backend = make_url(settings["sqlalchemy.url"]).get_backend_name()
    except ArgumentError:
        backend = ""
    if backend == "sqlite":
        cautions.append(
            "sqlalchemy.url is SQLite: one node only; production runs PostgreSQL"
        )
    elif not asbool(settings.get("sqlalchemy.pool_pre_ping", False)):
        cautions.append(
            "sqlalchemy.pool_pre_ping is off: after a database restart each "
            "pooled connection fails one request before it is replaced"
        )
    if not settings["idp.queue_timeout_seconds"]:
        cautions.append(
            "idp.queue_timeout_seconds = 0: a burst's queued requests are worked "
            "on however long they waited"
        )
    if settings["mail.backend"] != "idp.services.delivery.SMTPSender":
        cautions.append(
            f"mail.backend = {settings['mail.backend']}: no mail leaves this node"
        )
    return problems, cautions


# -- libraries -------------------------------------------------------------


def check_libraries() -> Iterator[Result]:
    """libxmlsec and libxml2 (one copy for xmlsec and lxml), then the verifier."""
    from idp.saml import libraries
    from idp.saml.selftest import VerifierSelfTestError, self_test

    found = libraries.versions()
    listed = ", ".join(f"{name} {version}" for name, version in found.items())
    if found["libxml2 (xmlsec)"] != found["libxml2 (lxml)"]:
        yield Result(
            FAIL,
            "libraries",
            f"xmlsec and lxml are built on different libxml2 ({listed}); "
            "reinstall both from source against one libxml2 "
            "(pip install --no-binary lxml,xmlsec lxml xmlsec)",
        )
    else:
        yield Result(OK, "libraries", listed)
    try:
        self_test()
    except VerifierSelfTestError as exc:
        yield Result(FAIL, "verifier", f"the signature self-test failed: {exc}")
    else:
        binary = libraries.xmlsec1_binary()
        if binary is None:
            yield Result(
                WARN,
                "verifier",
                "accepts a good signature and refuses tampered ones; the xmlsec1 "
                "program (for cross-checks by hand) is not installed",
            )
        else:
            yield Result(
                OK, "verifier", "accepts a good signature and refuses tampered ones"
            )


# -- keys ------------------------------------------------------------------


def check_keys(settings: dict) -> Result:
    """The published keys' files: present, matching, readable by this user only."""
    from sqlalchemy.exc import SQLAlchemyError

    from idp.dbfaults import describe_database, fault_cause
    from idp.saml import certs_dir, load_keypair, load_keys
    from idp.saml.keyring import KeyRing, keyset_of
    from idp.saml.keys import KeyPairError

    folder = certs_dir(settings)
    # Never the development habit of making a missing pair: doctor changes nothing.
    settings = {**settings, "idp.auto_create_keys": False}
    engine = _engine(settings)
    try:
        if engine is None:
            keyset = keyset_of(load_keypair(settings))
        else:
            keyset = load_keys(settings, KeyRing(folder), engine)
    except KeyPairError as exc:
        return Result(FAIL, "keys", str(exc))
    except SQLAlchemyError as exc:
        return Result(
            FAIL,
            "keys",
            "cannot list the published keys: "
            f"{describe_database(engine.url)}: {fault_cause(exc, engine.url)}",
        )
    finally:
        if engine is not None:
            engine.dispose()
    problems = [
        problem
        for path in sorted(folder.glob("*.key"))
        if (problem := _private_file_problem(path))
    ]
    mode = stat.S_IMODE(folder.stat().st_mode)
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        # Whoever may write the folder may swap a key file for their own.
        problems.append(
            f"{folder} is writable by others (mode {mode:04o}): chmod go-w it"
        )
    if problems:
        return Result(FAIL, "keys", "; ".join(problems))
    now = dt.datetime.now(dt.UTC)
    for key in keyset.keys:
        left = key.not_after - now
        if left <= dt.timedelta(0):
            return Result(
                FAIL,
                "keys",
                f"the {key.state} certificate {key.pair.cert_file.name} "
                f"expired on {key.not_after:%Y-%m-%d}",
            )
        if key.state == "current" and left < dt.timedelta(days=CERT_WARN_DAYS):
            return Result(
                WARN,
                "keys",
                f"the signing certificate expires on {key.not_after:%Y-%m-%d}: "
                "start a rollover ('idp-admin CONFIG keys rollover prepare')",
            )
    names = ", ".join(f"{key.state} {key.pair.key_file.name}" for key in keyset.keys)
    return Result(
        OK,
        "keys",
        f"{names}: each matches its certificate, readable only by uid {os.geteuid()}",
    )


def _private_file_problem(path: Path) -> str | None:
    info = path.stat()
    user = os.geteuid()
    if info.st_uid != user:
        return (
            f"{path.name} is owned by uid {info.st_uid}, not by the service user "
            f"(uid {user}, who runs this check): chown it"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"{path.name} is readable by others (mode {mode:04o}): chmod 600 it"
    return None


# -- database and clock ----------------------------------------------------


def _engine(settings: dict):
    """An engine that gives up connecting after a few seconds, or None."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from idp.db import make_engine

    try:
        url = make_url(settings["sqlalchemy.url"])
        if (
            url.get_backend_name() == "postgresql"
            and "connect_timeout" not in url.query
        ):
            url = url.update_query_dict(
                {"connect_timeout": str(NETWORK_TIMEOUT_SECONDS)}
            )
        return make_engine(
            {**settings, "sqlalchemy.url": url.render_as_string(hide_password=False)}
        )
    except (ArgumentError, ImportError):
        return None


def check_database(engine) -> Result:
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy.exc import SQLAlchemyError

    from idp.dbfaults import describe_database, fault_cause
    from idp.migrations import alembic_config

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    where = describe_database(engine.url)
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    except SQLAlchemyError as exc:
        return Result(
            FAIL,
            "database",
            f"{where} is unreachable: {fault_cause(exc, engine.url)}",
        )
    if current == head:
        return Result(OK, "database", f"{where}, at the newest migration {head}")
    if current is None:
        return Result(
            FAIL,
            "database",
            f"{where} has no schema; run 'idp-admin CONFIG db upgrade'",
        )
    scripts = ScriptDirectory.from_config(alembic_config())
    known = {script.revision for script in scripts.walk_revisions()}
    if current not in known:
        return Result(
            FAIL,
            "database",
            f"{where} is at {current}, which this version of idMe does not know "
            "(newer code migrated it): upgrade idMe on this node",
        )
    return Result(
        FAIL,
        "database",
        f"{where} is at {current}, the newest is {head}; run "
        "'idp-admin CONFIG db upgrade'",
    )


def _local_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def check_clock(engine) -> Result:
    """This node's clock against the database's, to within 2 s."""
    from sqlalchemy import text

    query = (
        "SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')"
        if engine.dialect.name == "sqlite"
        else "SELECT clock_timestamp()"
    )
    with engine.connect() as connection:
        before = time.monotonic()
        value = connection.scalar(text(query))
        elapsed = time.monotonic() - before
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC)
    # The database read its clock somewhere within the round trip.
    ours = _local_now() - dt.timedelta(seconds=elapsed / 2)
    skew = (ours - value).total_seconds()
    where = "ahead of" if skew > 0 else "behind"
    detail = f"{abs(skew):.3f} s {where} the database's"
    if abs(skew) > MAX_CLOCK_SKEW_SECONDS:
        return Result(
            FAIL,
            "clock",
            f"{detail} (at most {MAX_CLOCK_SKEW_SECONDS:.0f} s): sync both with NTP "
            "(systemd-timesyncd or chrony)",
        )
    return Result(OK, "clock", detail)


# -- metadata sources ------------------------------------------------------


def check_sources(engine) -> Result:
    """Every partner's metadata in force, and fetched sources refreshed on time."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from idp.models import MetadataSource

    now = _local_now()
    with Session(engine) as session:
        sources = session.scalars(
            select(MetadataSource).order_by(MetadataSource.name)
        ).all()
    if not sources:
        return Result(OK, "metadata sources", "none configured")
    problems, cautions = [], []
    for source in sources:
        fetched = source.kind != "file"
        if source.valid_until is not None and source.valid_until <= now:
            problems.append(
                f"{source.name}: its copy expired at "
                f"{source.valid_until:%Y-%m-%d %H:%M} UTC, so its SPs are refused"
            )
        elif fetched and source.fetched_at is None:
            cautions.append(f"{source.name}: never fetched")
        elif fetched and source.failures:
            error = _one_line(source.last_error or "")[:160]
            cautions.append(
                f"{source.name}: the last {source.failures} refresh(es) failed: {error}"
            )
        elif (
            fetched
            and source.next_refresh_at is not None
            and source.next_refresh_at < now - OVERDUE
        ):
            cautions.append(
                f"{source.name}: refresh overdue since "
                f"{source.next_refresh_at:%Y-%m-%d %H:%M} UTC; is 'mail deliver "
                "--loop' or 'source refresh --loop' running?"
            )
    if problems:
        return Result(FAIL, "metadata sources", "; ".join(problems + cautions))
    if cautions:
        return Result(WARN, "metadata sources", "; ".join(cautions))
    return Result(OK, "metadata sources", f"{len(sources)} in force and on schedule")


# -- mail ------------------------------------------------------------------


def check_mail(settings: dict) -> Result:
    """The relay answers: connect, EHLO, TLS and sign-in, as delivery does."""
    from idp.services.delivery import DeliveryError, SMTPSender

    backend = settings["mail.backend"]
    if backend != "idp.services.delivery.SMTPSender":
        status = WARN if not settings["idp.development"] else OK
        return Result(status, "mail relay", f"not used: mail.backend = {backend}")
    sender = SMTPSender.from_settings(
        {
            **settings,
            "mail.timeout": min(settings["mail.timeout"], NETWORK_TIMEOUT_SECONDS),
        }
    )
    try:
        with sender.connect():
            pass
    except DeliveryError as exc:
        return Result(FAIL, "mail relay", _one_line(str(exc)))
    steps = ["EHLO"]
    if sender.security != "none":
        steps.append("TLS" if sender.security == "ssl" else "STARTTLS")
    if sender.username:
        steps.append(f"signed in as {sender.username}")
    return Result(
        OK, "mail relay", f"{sender.host}:{sender.port} answered ({', '.join(steps)})"
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())
