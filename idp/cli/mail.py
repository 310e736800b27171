"""``mail deliver [--loop]`` and ``mail status``: the outbox, from the shell."""

from __future__ import annotations

import threading
import time

from sqlalchemy import case, func, select

from idp.cli.common import CommandError, load_settings, stop_on_signals
from idp.db import make_engine
from idp.models import OutboxMessage


def register(groups) -> None:
    parser = groups.add_parser("mail", help="outgoing email")
    commands = parser.add_subparsers(dest="command", metavar="ACTION", required=True)
    deliver_parser = commands.add_parser(
        "deliver",
        help="send the mail waiting in the outbox (safe on several nodes at once)",
    )
    deliver_parser.add_argument(
        "--loop",
        action="store_true",
        help=(
            "keep running, polling every mail.poll_seconds, until stopped; "
            "also purges (as 'idp-admin CONFIG purge') every "
            "idp.purge.interval_seconds, and refreshes URL and MDQ metadata "
            "sources when due (as 'source refresh --loop')"
        ),
    )
    deliver_parser.set_defaults(handler=deliver)
    status_parser = commands.add_parser(
        "status", help="count queued, failing and sent messages"
    )
    status_parser.set_defaults(handler=status)


def _engine(settings):
    from sqlalchemy.exc import ArgumentError

    try:
        return make_engine(settings)
    except ArgumentError as exc:
        raise CommandError(f"sqlalchemy.url: {exc}") from None


def deliver(args) -> int:
    from idp.services.delivery import OutboxWorker
    from idp.services.purge import Purger

    settings = load_settings(args.config_uri)
    engine = _engine(settings)
    try:
        worker = OutboxWorker.from_settings(settings, engine)
    except (ImportError, ValueError, OSError) as exc:
        raise CommandError(f"mail.backend: {exc}") from None
    stopping = threading.Event()
    # The long-running worker is the one scheduled process every deployment
    # has, so it also keeps the tables bounded and partners' metadata fresh.
    purger = Purger.from_settings(settings, engine) if args.loop else None
    refresher = _refresher(settings, engine) if args.loop else None
    next_purge = next_refresh = time.monotonic()
    if args.loop:
        stopping = stop_on_signals()
    try:
        while True:
            report = worker.run()
            if report.sent or report.failed or not args.loop:
                print(f"sent {report.sent}, failed {report.failed}", flush=True)
            if purger is not None and time.monotonic() >= next_purge:
                purged = {t: n for t, n in purger.run().items() if n}
                if purged:
                    print(
                        "purged " + ", ".join(f"{t} {n}" for t, n in purged.items()),
                        flush=True,
                    )
                next_purge = time.monotonic() + settings["idp.purge.interval_seconds"]
            if refresher is not None and time.monotonic() >= next_refresh:
                next_refresh = _refresh_sources(refresher, stopping)
            if not args.loop or stopping.wait(settings["mail.poll_seconds"]):
                break
    finally:
        engine.dispose()
    return 0 if not report.failed or args.loop else 1


def _refresher(settings, engine):
    from idp.saml.refresh import Refresher

    return Refresher.from_settings(settings, engine)


def _refresh_sources(refresher, stopping: threading.Event) -> float:
    """Refresh the due metadata sources; when to look again (monotonic).

    Mail must go on whatever happens to a partner's metadata: a failure here
    (the database away for a moment) is logged and retried a minute later.
    """
    import logging

    try:
        for outcome in refresher.run(stop=stopping.is_set):
            print(outcome.line, flush=True)
        wait = refresher.seconds_until_due()
    except Exception:
        logging.getLogger(__name__).exception(
            "refreshing metadata sources failed; mail delivery goes on"
        )
        wait = 60.0
    return time.monotonic() + wait


def status(args) -> int:

    settings = load_settings(args.config_uri)
    engine = _engine(settings)
    pending = OutboxMessage.sent_at.is_(None)
    query = select(
        func.count().filter(pending),
        func.count().filter(pending, OutboxMessage.last_error.is_not(None)),
        func.count().filter(OutboxMessage.sent_at.is_not(None)),
        func.min(case((pending, OutboxMessage.created_at))),
    )
    try:
        with engine.connect() as conn:
            queued, failing, sent, oldest = conn.execute(query).one()
    finally:
        engine.dispose()
    print(f"queued {queued} (failing {failing}), sent {sent}")
    if oldest is not None:
        print(f"oldest queued since {oldest:%Y-%m-%d %H:%M:%S} UTC")
    return 0
