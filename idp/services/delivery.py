"""Sending the outbox: senders, and the worker that drives them.

The worker claims due messages in one short transaction (``FOR UPDATE SKIP
LOCKED`` on PostgreSQL, so workers on several nodes never claim the same
row; SQLite serialises writers anyway) by pushing their ``next_attempt_at``
forward by a lease. It then sends them with no transaction open, and
records each outcome in its own short transaction: sent (the body is
emptied), or failed (the error and a retry time with exponential backoff).
A worker that dies mid-batch leaves its claims to expire and be retried, so
a message is never lost; it can, rarely, be sent twice (SMTP has no
exactly-once delivery), but never by two live workers at once.

Rows whose template starts with ``job:`` are jobs, not messages
(:meth:`idp.services.mail.Outbox.defer`): work a request must not do itself.
Before sending, the worker runs each due job in its own transaction with the
handler :attr:`OutboxWorker.jobs` names for it; the job's row is deleted in
that transaction, and any email the job queues is sent in the same run. A
job that fails is retried later with the same backoff as a message.

Senders are chosen by ``mail.backend`` (a dotted name): :class:`SMTPSender`
in production, :class:`FileSender` (``.eml`` files) in development,
:class:`MemorySender` in tests.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import random
import secrets
import smtplib
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from pyramid.path import DottedNameResolver
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from idp.db import utcnow
from idp.models import OutboxMessage
from idp.services.mail import JOB_PREFIX, OutboxCodec, OutboxCodecError, parse_message
from idp.services.worker import Task, keep_running

log = logging.getLogger(__name__)

LEASE = dt.timedelta(minutes=10)
MAX_ERROR_LENGTH = 500


class DeliveryError(Exception):
    """A message could not be handed over; it stays queued for a retry."""


class SMTPSender:
    """Real SMTP: STARTTLS (port 587) or implicit TLS (465), optional AUTH.

    Certificates are verified against the system's CAs, or ``mail.ca_file``.
    With ``mail.security = none`` (a relay on localhost) nothing is
    encrypted, and settings refuse a username then.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        security: str = "starttls",
        username: str = "",
        password: str = "",
        ca_file: str = "",
        timeout: float = 30,
    ) -> None:
        self.host = host
        self.port = port
        self.security = security
        self.username = username
        self.password = password
        self.timeout = timeout
        self.tls = ssl.create_default_context(cafile=ca_file or None)

    @classmethod
    def from_settings(cls, settings: dict) -> SMTPSender:
        return cls(
            settings["mail.host"],
            settings["mail.port"],
            security=settings["mail.security"],
            username=settings["mail.username"],
            password=settings["mail.smtp_password"],
            ca_file=settings["mail.ca_file"],
            timeout=settings["mail.timeout"],
        )

    @contextlib.contextmanager
    def connect(self) -> Iterator[SMTPSender._Connection]:
        try:
            client: smtplib.SMTP
            if self.security == "ssl":
                client = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout, context=self.tls
                )
            else:
                client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            try:
                client.ehlo()
                if self.security == "starttls":
                    client.starttls(context=self.tls)
                    client.ehlo()
                if self.username:
                    client.login(self.username, self.password)
            except BaseException:
                client.close()
                raise
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(
                f"cannot connect to {self.host}:{self.port}: {exc}"
            ) from None
        try:
            yield self._Connection(client)
        finally:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                client.quit()
            client.close()

    class _Connection:
        def __init__(self, client: smtplib.SMTP) -> None:
            self.client = client

        def send(self, message: EmailMessage) -> None:
            try:
                self.client.send_message(message)
            except (OSError, smtplib.SMTPException) as exc:
                raise DeliveryError(str(exc)) from None


class FileSender:
    """Development: each message becomes one ``.eml`` file in a folder."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    @classmethod
    def from_settings(cls, settings: dict) -> FileSender:
        directory = Path(settings["mail.directory"])
        if not directory.is_absolute():
            here = settings.get("here") or Path.cwd()
            directory = Path(here) / directory
        return cls(directory)

    @contextlib.contextmanager
    def connect(self) -> Iterator[FileSender]:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DeliveryError(f"cannot create {self.directory}: {exc}") from None
        yield self

    def send(self, message: EmailMessage) -> None:
        stamp = utcnow().strftime("%Y%m%dT%H%M%S%f")
        final = self.directory / f"{stamp}-{secrets.token_hex(4)}.eml"
        partial = final.with_suffix(".part")
        try:
            partial.write_bytes(message.as_bytes())
            partial.replace(final)
        except OSError as exc:
            raise DeliveryError(f"cannot write {final}: {exc}") from None


class MemorySender:
    """Tests: messages collected in a list, ``fail`` to simulate an outage."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.fail = False
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: dict) -> MemorySender:
        return cls()

    @contextlib.contextmanager
    def connect(self) -> Iterator[MemorySender]:
        if self.fail:
            raise DeliveryError("the memory sender is set to fail")
        yield self

    def send(self, message: EmailMessage) -> None:
        with self._lock:
            self.messages.append(message)


def make_sender(settings: dict):
    cls = DottedNameResolver().maybe_resolve(settings["mail.backend"])
    return cls.from_settings(settings)


@dataclass
class DeliveryReport:
    sent: int = 0
    failed: int = 0
    jobs: int = 0


class OutboxWorker:
    """Sends what the outbox holds; safe to run on many nodes at once."""

    def __init__(
        self,
        engine,
        sender,
        codec: OutboxCodec,
        *,
        batch_size: int = 50,
        retry_seconds: int = 60,
        retry_max_seconds: int = 3600,
        jobs: Mapping[str, Callable[[Session, OutboxMessage], None]] | None = None,
    ) -> None:
        self.engine = engine
        self.sender = sender
        self.codec = codec
        # Job name (without JOB_PREFIX) -> handler(session, row), run in the
        # session's transaction.
        self.jobs = dict(jobs or {})
        self.batch_size = batch_size
        self.retry = dt.timedelta(seconds=retry_seconds)
        self.retry_max = dt.timedelta(seconds=retry_max_seconds)

    @classmethod
    def from_settings(cls, settings: dict, engine, sender=None) -> OutboxWorker:
        from idp.services.tokens import (
            EMAIL_CHANGE_JOB,
            RESET_JOB,
            EmailChangeJob,
            ResetLinkJob,
        )

        codec = OutboxCodec(settings["idp.hmac_key"])
        return cls(
            engine,
            sender if sender is not None else make_sender(settings),
            codec,
            batch_size=settings["mail.batch_size"],
            retry_seconds=settings["mail.retry_seconds"],
            retry_max_seconds=settings["mail.retry_max_seconds"],
            jobs={
                RESET_JOB: ResetLinkJob.from_settings(settings, codec),
                EMAIL_CHANGE_JOB: EmailChangeJob.from_settings(settings, codec),
            },
        )

    def backoff(self, attempts: int) -> dt.timedelta:
        """Wait before attempt ``attempts + 1``: doubling, capped, jittered."""
        base = min(self.retry * 2 ** max(attempts - 1, 0), self.retry_max)
        return base * random.uniform(0.8, 1.0)  # noqa: S311 (jitter)

    def run(self, now: dt.datetime | None = None) -> DeliveryReport:
        """Send every message due at ``now`` (default: the current time)."""
        report = DeliveryReport()
        # Jobs first: the mail they queue goes out in this same run.
        for _ in range(self.batch_size):
            if not self._run_job(now or utcnow(), report):
                break
        while True:
            batch = self._claim(now or utcnow())
            if not batch:
                return report
            self._send(batch, report, now)

    @staticmethod
    def _due(now: dt.datetime, *, jobs: bool):
        is_job = OutboxMessage.template.startswith(JOB_PREFIX, autoescape=True)
        return (
            OutboxMessage.sent_at.is_(None),
            OutboxMessage.next_attempt_at <= now,
            is_job if jobs else ~is_job,
        )

    def run_job(self, session: Session, row: OutboxMessage) -> None:
        """Run the job ``row`` in ``session``'s transaction and delete its row.

        Raises whatever the job raises, and :class:`DeliveryError` for a job
        this worker has no handler for.
        """
        handler = self.jobs.get(row.template.removeprefix(JOB_PREFIX))
        if handler is None:
            raise DeliveryError(f"no handler for {row.template}")
        handler(session, row)
        session.delete(row)
        session.flush()

    def _run_job(self, now: dt.datetime, report: DeliveryReport) -> bool:
        """Run one due job; False when none is due."""
        with Session(self.engine) as session, session.begin():
            row = session.scalars(
                select(OutboxMessage)
                .where(*self._due(now, jobs=True))
                .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).first()
            if row is None:
                return False
            row_id, attempts = row.id, row.attempts + 1
            try:
                with session.begin_nested():
                    self.run_job(session, row)
            # Whatever went wrong, the job stays for a retry and the other
            # jobs and messages still go: a worker loop must not stop here.
            except Exception as exc:
                failure = exc
            else:
                report.jobs += 1
                return True
        self._failed(row_id, attempts, failure, now, count_attempt=True)
        report.failed += 1
        return True

    def _claim(self, now: dt.datetime) -> list[tuple[int, str, int]]:
        due = (
            select(OutboxMessage.id)
            .where(*self._due(now, jobs=False))
            .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
            .limit(self.batch_size)
            .with_for_update(skip_locked=True)
        )
        with Session(self.engine) as session, session.begin():
            # The batch is read (and locked) first, then updated by id: as a
            # subquery of the UPDATE, a nested-loop plan may rescan it per row
            # and claim more than one batch (see ratelimit._purge).
            due_ids = session.scalars(due).all()
            if not due_ids:
                return []
            claimed = session.scalars(
                update(OutboxMessage)
                .where(OutboxMessage.id.in_(due_ids))
                .values(
                    next_attempt_at=now + LEASE,
                    attempts=OutboxMessage.attempts + 1,
                )
                .returning(OutboxMessage.id)
                .execution_options(synchronize_session=False)
            ).all()
            if not claimed:
                return []
            rows = session.execute(
                select(OutboxMessage.id, OutboxMessage.message, OutboxMessage.attempts)
                .where(OutboxMessage.id.in_(claimed))
                .order_by(OutboxMessage.id)
            ).all()
        return [(id_, message, attempts) for id_, message, attempts in rows]

    def _send(self, batch, report: DeliveryReport, now) -> None:
        pending = list(batch)
        try:
            with self.sender.connect() as connection:
                while pending:
                    message_id, sealed, attempts = pending.pop(0)
                    try:
                        connection.send(parse_message(self.codec.open(sealed)))
                    except (DeliveryError, OutboxCodecError) as exc:
                        self._failed(message_id, attempts, exc, now)
                        report.failed += 1
                    else:
                        self._sent(message_id, now)
                        report.sent += 1
        except DeliveryError as exc:
            # The connection failed: nothing left in the batch was sent.
            for message_id, _sealed, attempts in pending:
                self._failed(message_id, attempts, exc, now)
                report.failed += 1

    def _sent(self, message_id: int, now) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == message_id)
                .values(sent_at=now or utcnow(), message="", last_error=None)
            )

    def _failed(
        self,
        message_id: int,
        attempts: int,
        exc: Exception,
        now,
        *,
        count_attempt: bool = False,
    ) -> None:
        error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_LENGTH]
        log.warning(
            "mail %s not delivered (attempt %s): %s", message_id, attempts, error
        )
        values = {
            "last_error": error,
            "next_attempt_at": (now or utcnow()) + self.backoff(attempts),
        }
        if count_attempt:
            # A claimed message counted its attempt at the claim; a job here.
            values["attempts"] = attempts
        with Session(self.engine) as session, session.begin():
            session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == message_id)
                .values(**values)
            )


class DeliveryThread(threading.Thread):
    """Runs an :class:`OutboxWorker` every few seconds inside the web process.

    For a single-node development server; production runs
    ``idp-admin CONFIG mail deliver --loop`` beside the web nodes. Like that
    loop, it also runs ``purger`` every ``purge_interval`` seconds, so a
    single node's tables stay bounded without another process.
    """

    def __init__(
        self,
        worker: OutboxWorker,
        interval: float,
        purger=None,
        purge_interval: float = 300,
    ) -> None:
        super().__init__(name="idp-mail-delivery", daemon=True)
        self.worker = worker
        self.interval = interval
        self.purger = purger
        self.purge_interval = purge_interval
        self.stopping = threading.Event()

    def run(self) -> None:
        def deliver() -> float:
            self.worker.run()
            return self.interval

        tasks = [
            Task("mail delivery", deliver, log.warning, url=self.worker.engine.url)
        ]
        if self.purger is not None:
            purger = self.purger

            def purge() -> float:
                purger.run()
                return self.purge_interval

            tasks.append(
                Task("purging", purge, log.warning, url=self.worker.engine.url)
            )
        keep_running(tasks, self.stopping)

    def stop(self) -> None:
        self.stopping.set()


def includeme(config) -> None:
    settings = config.get_settings()
    sender = make_sender(settings)
    config.registry["idp.mail.sender"] = sender
    if settings["mail.deliver_in_process"]:
        worker = OutboxWorker.from_settings(
            settings, config.registry["dbengine"], sender
        )
        from idp.services.purge import Purger

        thread = DeliveryThread(
            worker,
            settings["mail.poll_seconds"],
            Purger.from_settings(settings, config.registry["dbengine"]),
            settings["idp.purge.interval_seconds"],
        )
        config.registry["idp.mail.thread"] = thread
        config.action(("idp.mail.thread",), thread.start, order=10**6)
