"""``keys generate`` and ``keys rollover status|prepare|activate|retire``.

``generate`` makes the first signing pair of an install. A running install
changes keys with the guided rollover (:mod:`idp.saml.rollover`): each step
is one transaction, audited, and reaches every node without a restart.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from idp.cli.common import CommandError, load_settings
from idp.saml import certs_dir
from idp.saml import keys as keystore


def register(groups) -> None:
    parser = groups.add_parser("keys", help="signing keys")
    commands = parser.add_subparsers(dest="command", metavar="ACTION", required=True)
    generate_parser = commands.add_parser(
        "generate",
        help="create an RSA signing key (0600) and a self-signed certificate",
    )
    generate_parser.add_argument(
        "--force",
        action="store_true",
        help="replace an existing pair (every SP must get the new metadata)",
    )
    generate_parser.set_defaults(handler=generate)
    rollover = commands.add_parser(
        "rollover",
        help="change idMe's signing key without breaking SPs: "
        "status, prepare, activate, retire",
    )
    steps = rollover.add_subparsers(dest="step", metavar="STEP", required=True)
    steps.add_parser(
        "status",
        help="the keys, and per SP whether it has fetched the next key",
    ).set_defaults(handler=status)
    steps.add_parser(
        "prepare",
        help="make the next key and publish it beside the current one",
    ).set_defaults(handler=prepare)
    activate_parser = steps.add_parser(
        "activate",
        help="sign with the next key (after idp.key_rollover_min_publish_days)",
    )
    activate_parser.add_argument(
        "--force",
        action="store_true",
        help="switch before the minimum publish period (audited; SPs that have "
        "not fetched the new key will refuse idMe's responses)",
    )
    activate_parser.set_defaults(handler=activate)
    retire_parser = steps.add_parser(
        "retire",
        help="remove the previous key from the metadata "
        "(after idp.key_rollover_min_overlap_days)",
    )
    retire_parser.add_argument(
        "--force",
        action="store_true",
        help="retire before the minimum overlap (audited)",
    )
    retire_parser.set_defaults(handler=retire)


def _recorded_keys(settings) -> list[str]:
    """The keys the database records as published; none before it is set up."""
    from pathlib import Path

    from sqlalchemy import inspect, select
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.orm import Session

    from idp.db import make_engine
    from idp.models import SigningKey
    from idp.models.keys import PUBLISHED_STATES

    url = make_url(settings["sqlalchemy.url"])
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        return []  # not created yet: nothing to ask, and nothing to create
    engine = make_engine(settings)
    try:
        with Session(engine) as session:
            if not inspect(session.connection()).has_table("signing_keys"):
                return []
            return list(
                session.scalars(
                    select(SigningKey.kid).where(SigningKey.state.in_(PUBLISHED_STATES))
                )
            )
    except OperationalError:
        return []  # a first install whose database is not up yet
    finally:
        engine.dispose()


def generate(args) -> int:
    settings = load_settings(args.config_uri)
    recorded = _recorded_keys(settings)
    if recorded:
        # Replacing a recorded key's file would stop every node signing (its
        # certificate no longer matches the database); a new key goes through
        # the rollover, which publishes it first.
        raise CommandError(
            f"the database records idMe's keys ({', '.join(sorted(recorded))}); "
            "change them with 'keys rollover prepare', not 'keys generate'"
        )
    host = urlsplit(settings["idp.base_url"]).hostname or "idp"
    try:
        pair = keystore.generate(
            certs_dir(settings),
            host,
            key_size=settings["idp.key_size"],
            overwrite=args.force,
        )
    except (keystore.KeyPairError, OSError) as exc:
        raise CommandError(str(exc)) from None
    print(f"private key: {pair.key_file} (mode 0600)")
    print(f"certificate: {pair.cert_file}")
    print(f"SHA-256 fingerprint: {pair.fingerprint}")
    return 0


@contextmanager
def _transaction(settings) -> Iterator:
    """One committed transaction; a refusal is one line and writes nothing."""
    from sqlalchemy.orm import Session

    from idp.db import make_engine
    from idp.saml.rollover import RolloverRefused

    engine = make_engine(settings)
    try:
        with Session(engine) as session, session.begin():
            yield session
    except RolloverRefused as exc:
        raise CommandError(str(exc)) from None
    except (keystore.KeyPairError, OSError) as exc:
        raise CommandError(str(exc)) from None
    finally:
        engine.dispose()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _when(value: dt.datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M} UTC" if value else "-"


def prepare(args) -> int:
    from sqlalchemy.exc import IntegrityError

    from idp.saml import rollover

    settings = load_settings(args.config_uri)
    host = urlsplit(settings["idp.base_url"]).hostname or "idp"
    made = None
    try:
        with _transaction(settings) as session:
            made = rollover.prepare(
                session,
                certs_dir(settings),
                host,
                key_size=settings["idp.key_size"],
                now=_now(),
            )
            key = made.key
            lines = []
            if made.adopted is not None:
                lines.append(
                    f"recorded the existing signing key {made.adopted.kid} "
                    "as the current key"
                )
            allowed = rollover.activate_after(
                key, settings["idp.key_rollover_min_publish_days"]
            )
            lines += [
                f"next key {key.kid} prepared and published in idMe's metadata "
                "(signing goes on with the current key)",
                f"private key: {made.pair.key_file} (mode 0600)",
                f"certificate: {made.pair.cert_file}",
                f"SHA-256 fingerprint: {keystore.colons(key.fingerprint)}",
                f"copy both files to every node's {certs_dir(settings)} now; "
                "a node without them answers 503 until they are there",
                f"activate from {_when(allowed)} "
                "('keys rollover status' shows which SPs have fetched it)",
            ]
    except IntegrityError:
        if made is not None:
            rollover.discard_files(made.pair)
        raise CommandError(
            "another 'keys rollover' step ran at the same time; "
            "run 'keys rollover status' and try again"
        ) from None
    except BaseException:
        if made is not None:
            rollover.discard_files(made.pair)
        raise
    print("\n".join(lines))
    return 0


def activate(args) -> int:
    from idp.saml import rollover

    settings = load_settings(args.config_uri)
    with _transaction(settings) as session:
        current, previous, forced = rollover.activate(
            session,
            certs_dir(settings),
            now=_now(),
            min_publish_days=settings["idp.key_rollover_min_publish_days"],
            force=args.force,
        )
        overlap = dt.timedelta(days=settings["idp.key_rollover_min_overlap_days"])
        lines = [
            f"idMe now signs with key {current.kid}"
            + (
                " (forced before the minimum publish period; audited)" if forced else ""
            ),
            f"key {previous.kid} stays published and decrypts until it is retired",
            f"retire it from {_when(current.activated_at + overlap)} "
            "with 'keys rollover retire'",
        ]
    print("\n".join(lines))
    return 0


def retire(args) -> int:
    from idp.saml import rollover
    from idp.saml.keyring import files_for

    settings = load_settings(args.config_uri)
    with _transaction(settings) as session:
        retired = rollover.retire(
            session,
            now=_now(),
            min_overlap_days=settings["idp.key_rollover_min_overlap_days"],
            force=args.force,
        )
        pair = files_for(certs_dir(settings), retired.kid, retired.fingerprint)
        line = (
            f"key {retired.kid} retired: no longer in idMe's metadata; its files "
            f"{pair.key_file} and {pair.cert_file} are no longer needed "
            "(keep the key file only as long as your records policy requires)"
        )
    print(line)
    return 0


def status(args) -> int:
    settings = load_settings(args.config_uri)
    with _transaction(settings) as session:
        lines = status_lines(session, settings, _now())
    print("\n".join(lines))
    return 0


def status_lines(session, settings, now: dt.datetime) -> list[str]:
    """The keys, and per enabled SP whether it can have seen the newest key."""
    from sqlalchemy import func, select

    from idp.models import (
        MetadataFetch,
        ServiceProvider,
        SessionParticipant,
        SigningKey,
    )
    from idp.models.keys import PUBLISHED_STATES
    from idp.saml.rollover import activate_after, days

    publish = settings["idp.key_rollover_min_publish_days"]
    overlap = settings["idp.key_rollover_min_overlap_days"]
    rows = {
        row.state: row
        for row in session.scalars(
            select(SigningKey).where(SigningKey.state.in_(PUBLISHED_STATES))
        )
    }
    lines = ["keys:"]
    if not rows:
        legacy = keystore.signing_pair(certs_dir(settings))
        try:
            shown = f"SHA-256 {keystore.colons(legacy.fingerprint)}"
        except (OSError, ValueError):
            shown = "its certificate is missing or unreadable"
        lines.append(f"  current   {legacy.key_file}  {shown}")
        lines.append("            not recorded yet: 'keys rollover prepare' records it")
    for state in ("current", "next", "previous"):
        row = rows.get(state)
        if row is None:
            continue
        detail = f"valid until {row.not_after:%Y-%m-%d}"
        if state == "current":
            detail += f", signing since {_when(row.activated_at)}"
        elif state == "next":
            allowed = activate_after(row, publish)
            detail += (
                f", published {days(now - row.prepared_at)} ago; minimum "
                f"{publish} d: "
                + (
                    "may be activated now"
                    if now >= allowed
                    else f"activate from {_when(allowed)}"
                )
            )
        else:
            since = rows["current"].activated_at if "current" in rows else None
            detail += ", decrypts only; " + (
                f"retire from {_when(since + dt.timedelta(days=overlap))}"
                if since
                else "retire when ready"
            )
        shown = keystore.colons(row.fingerprint)
        lines.append(f"  {state:<9} {row.kid}  SHA-256 {shown}")
        lines.append(f"            {detail}")
    newest = rows.get("next") or (rows.get("current") if "previous" in rows else None)
    fetches = session.scalars(select(MetadataFetch)).all()
    by_sp: dict[str, MetadataFetch] = {}
    for fetch in fetches:
        if fetch.sp_entity_id and (
            fetch.sp_entity_id not in by_sp
            or fetch.last_at > by_sp[fetch.sp_entity_id].last_at
        ):
            by_sp[fetch.sp_entity_id] = fetch
    sps = session.scalars(
        select(ServiceProvider.entity_id)
        .where(ServiceProvider.enabled.is_(True))
        .order_by(ServiceProvider.entity_id)
    ).all()
    # Sign-ins since the newest key was published: an SP people use that
    # has not fetched the key is the one to call before activating.
    signins: dict[str, int] = {}
    if newest is not None:
        signins = dict(
            session.execute(
                select(ServiceProvider.entity_id, func.count())
                .join(
                    SessionParticipant,
                    SessionParticipant.sp_id == ServiceProvider.id,
                )
                .where(SessionParticipant.created_at >= newest.prepared_at)
                .group_by(ServiceProvider.entity_id)
            ).all()
        )
    if newest is None:
        lines.append("no rollover under way; last fetch of idMe's metadata per SP:")
    else:
        lines.append(
            f"SPs, and whether they fetched idMe's metadata since key {newest.kid} "
            f"was published ({_when(newest.prepared_at)}):"
        )
    if not sps:
        lines.append("  no SP is enabled")
    seen = 0
    for entity_id in sps:
        fetch = by_sp.get(entity_id)
        if fetch is None:
            verdict = "unknown   never fetched through its per-partner URL"
        else:
            agent = fetch.user_agent or "no user agent"
            where = f"{_when(fetch.last_at)} from {fetch.client_address} ({agent})"
            if newest is None:
                verdict = f"fetched   {where}"
            elif fetch.last_at >= newest.prepared_at:
                verdict = f"yes       {where}"
                seen += 1
            else:
                verdict = f"not yet   last {where}"
        if newest is not None:
            count = signins.get(entity_id, 0)
            verdict += f"; {count} sign-in{'' if count == 1 else 's'} since"
        lines.append(f"  {entity_id}  {verdict}")
    if newest is not None:
        lines.append(f"{seen} of {len(sps)} enabled SPs have fetched the new key")
        others = [
            fetch
            for fetch in fetches
            if not fetch.sp_entity_id and fetch.last_at >= newest.prepared_at
        ]
        if others:
            lines.append(
                "other fetches since then (no per-partner URL, so not attributed):"
            )
            for fetch in sorted(others, key=lambda f: f.last_at, reverse=True):
                lines.append(
                    f"  {fetch.client_address} ({fetch.user_agent or 'no user agent'}) "
                    f"last {_when(fetch.last_at)}, {fetch.count} fetches"
                )
    return lines
