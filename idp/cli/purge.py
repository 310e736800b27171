"""``purge [--dry-run]``: delete what has outlived its use (idp.services.purge)."""

from __future__ import annotations

from idp.cli.common import CommandError, load_settings


def register(groups) -> None:
    parser = groups.add_parser(
        "purge",
        help="delete expired sessions, tokens, challenges and old sent mail",
        description=(
            "Delete expired or idle sessions, used or expired one-time tokens "
            "older than idp.purge.token_days, expired captcha challenges and "
            "SAML state, and outbox rows sent more than idp.purge.outbox_days "
            "ago; print how many rows of each table. The audit log is never "
            "purged. Safe on several nodes at once."
        ),
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="only count what would be deleted",
    )
    parser.set_defaults(handler=purge)


def print_counts(counts: dict[str, int], *, dry_run: bool) -> None:
    verb = "would delete" if dry_run else "deleted"
    for table, rows in counts.items():
        print(f"{table}: {verb} {rows}", flush=True)


def purge(args) -> int:
    from sqlalchemy.exc import ArgumentError, OperationalError, ProgrammingError

    from idp.db import make_engine
    from idp.services.purge import Purger

    settings = load_settings(args.config_uri)
    try:
        engine = make_engine(settings)
    except ArgumentError as exc:
        raise CommandError(f"sqlalchemy.url: {exc}") from None
    try:
        counts = Purger.from_settings(settings, engine).run(dry_run=args.dry_run)
    except (OperationalError, ProgrammingError) as exc:
        raise CommandError(f"database: {exc.orig}") from None
    finally:
        engine.dispose()
    print_counts(counts, dry_run=args.dry_run)
    return 0
