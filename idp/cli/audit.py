"""``audit verify`` and ``audit tail``: the audit log, from the shell."""

from __future__ import annotations

import argparse

from sqlalchemy import select

from idp.cli.common import CommandError, load_settings
from idp.db import make_engine
from idp.logmask import mask
from idp.models import AuditEvent
from idp.services.audit import canonical_json
from idp.services.audit import verify as verify_chain


def register(groups) -> None:
    parser = groups.add_parser("audit", help="the hash-chained audit log")
    commands = parser.add_subparsers(dest="command", metavar="ACTION", required=True)
    verify_parser = commands.add_parser(
        "verify",
        help="recompute the hash chain; exit 1 at the first edited or missing event",
    )
    verify_parser.set_defaults(handler=verify)
    tail_parser = commands.add_parser(
        "tail", help="print the newest events, oldest first, personal data masked"
    )
    tail_parser.add_argument(
        "-n",
        dest="count",
        type=_positive,
        default=20,
        metavar="N",
        help="how many events (default: 20)",
    )
    tail_parser.set_defaults(handler=tail)


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {value!r}")
    return number


def _engine(settings):
    from sqlalchemy.exc import ArgumentError

    try:
        return make_engine(settings)
    except ArgumentError as exc:
        raise CommandError(f"sqlalchemy.url: {exc}") from None


def verify(args) -> int:
    engine = _engine(load_settings(args.config_uri))
    try:
        with engine.connect() as conn:
            result = verify_chain(conn)
    finally:
        engine.dispose()
    if not result.ok:
        raise CommandError(
            f"audit chain broken at event id {result.first_bad_id} "
            f"(edited, or the event before it deleted); "
            f"{result.checked - 1} events before it are intact"
        )
    print(f"audit chain intact: {result.checked} events")
    return 0


def tail(args) -> int:

    engine = _engine(load_settings(args.config_uri))
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(args.count)
    try:
        with engine.connect() as conn:
            rows = conn.execute(query).all()
    finally:
        engine.dispose()
    for row in reversed(rows):
        print(format_event(row))
    return 0


def format_event(row) -> str:
    """One line per event, masked as the logs are (DATA-08)."""
    line = " ".join(
        [
            str(row.id),
            f"{row.occurred_at:%Y-%m-%d %H:%M:%S}Z",
            row.event,
            f"actor={row.actor_user_id or '-'}",
            f"subject={row.subject_user_id or '-'}",
            f"address={row.client_address or '-'}",
            canonical_json(row.detail),
        ]
    )
    return mask(line)
