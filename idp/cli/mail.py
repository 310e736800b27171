"""``mail deliver [--loop]`` and ``mail status``: the outbox, from the shell."""

from __future__ import annotations

import logging

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

    settings = load_settings(args.config_uri)
    engine = _engine(settings)
    try:
        worker = OutboxWorker.from_settings(settings, engine)
    except (ImportError, ValueError, OSError) as exc:
        raise CommandError(f"mail.backend: {exc}") from None
    try:
        if args.loop:
            _deliver_loop(settings, engine, worker)
            return 0
        report = worker.run()
        print(f"sent {report.sent}, failed {report.failed}", flush=True)
    finally:
        engine.dispose()
    return 1 if report.failed else 0


def _deliver_loop(settings, engine, worker) -> None:
    """Deliver, purge and refresh sources until SIGTERM or SIGINT.

    The long-running worker is the one scheduled process every deployment
    has, so it also keeps the tables bounded and partners' metadata fresh.
    Each of the three backs off on its own when it fails (the database
    restarting): one line each time, and it goes on (idp.services.worker).
    """
    from idp.services.purge import Purger
    from idp.services.worker import Task, keep_running

    purger = Purger.from_settings(settings, engine)
    refresher = _refresher(settings, engine)

    def deliver_round() -> float:
        report = worker.run()
        if report.sent or report.failed:
            print(f"sent {report.sent}, failed {report.failed}", flush=True)
        return settings["mail.poll_seconds"]

    def purge_round() -> float:
        purged = {table: rows for table, rows in purger.run().items() if rows}
        if purged:
            print(
                "purged " + ", ".join(f"{t} {n}" for t, n in purged.items()),
                flush=True,
            )
        return settings["idp.purge.interval_seconds"]

    with stop_on_signals() as stopping:

        def refresh_round() -> float:
            for outcome in refresher.run(stop=stopping.is_set):
                print(outcome.line, flush=True)
            return refresher.seconds_until_due()

        report = logging.getLogger(__name__).warning
        keep_running(
            [
                Task("mail delivery", deliver_round, report, url=engine.url),
                Task("purging", purge_round, report, url=engine.url),
                Task(
                    "refreshing metadata sources", refresh_round, report, url=engine.url
                ),
            ],
            stopping,
        )


def _refresher(settings, engine):
    from idp.saml.refresh import Refresher

    return Refresher.from_settings(settings, engine)


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
