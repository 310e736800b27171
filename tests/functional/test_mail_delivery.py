"""Mail, end to end: registration -> outbox -> worker -> a real SMTP server.

These tests use the committing app (real transactions) and an aiosmtpd
server on 127.0.0.1, so they show what a rolled-back test cannot: that the
outbox row really commits with the account, that the worker sends it over
STARTTLS + AUTH or implicit TLS, that an outage loses nothing, and that
concurrent workers never send a message twice.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
import webtest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from idp.db import Base, make_engine, utcnow
from idp.models import OutboxMessage, User
from idp.services.delivery import MemorySender, OutboxWorker
from idp.services.passwords import BcryptPasswordService
from idp.services.users import UserService
from tests.app import make_app
from tests.registration import fill, open_form, register, temporary_password_from
from tests.smtp import SMTPServer, make_certificate

pytestmark = pytest.mark.postgresql

LATER = dt.timedelta(days=2)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return make_certificate(tmp_path_factory.mktemp("smtp"))


@pytest.fixture
def smtp(certificate):
    server = SMTPServer(*certificate, implicit_tls=False)
    server.start()
    yield server
    server.stop()


def worker_for(app, engine, server: SMTPServer) -> OutboxWorker:
    settings = {**app.registry.settings, **server.settings()}
    return OutboxWorker.from_settings(settings, engine)


def student(number: int) -> dict:
    return {
        "mykad": f"080512-14-{number:04d}",
        "email": f"murid{number}@example.com.my",
        "email_confirm": f"murid{number}@example.com.my",
    }


def users_service(session) -> UserService:
    return UserService(
        session, BcryptPasswordService(rounds=4), None, temporary_hours=72
    )


def test_auth_12_temporary_password_from_the_delivered_email_works_once(
    committing_testapp, app, db_engine, smtp
):
    """AUTH-12: the emailed temporary password is single use and expires."""
    register(committing_testapp, "en", **student(1)).follow()
    register(committing_testapp, "en", **student(2)).follow()

    report = worker_for(app, db_engine, smtp).run()
    assert (report.sent, report.failed) == (2, 0)
    by_recipient = {m["To"]: m for m in smtp.messages}
    assert set(by_recipient) == {"murid1@example.com.my", "murid2@example.com.my"}
    assert smtp.envelopes[0][0] == "no-reply@idme.moe.gov.my"

    with Session(db_engine) as session, session.begin():
        first = session.scalars(
            select(User).where(User.email == "murid1@example.com.my")
        ).one()
        password = temporary_password_from(by_recipient["murid1@example.com.my"])
        service = users_service(session)
        assert service.consume_temporary_password(first, "wrong" + password) is False
        assert service.consume_temporary_password(first, password) is True
        assert service.consume_temporary_password(first, password) is False
        assert first.must_change_password is True

        # The second account's password, presented after its expiry.
        second = session.scalars(
            select(User).where(User.email == "murid2@example.com.my")
        ).one()
        password = temporary_password_from(by_recipient["murid2@example.com.my"])
        service.clock = lambda: (
            second.temp_password_expires_at + dt.timedelta(seconds=1)
        )
        assert service.consume_temporary_password(second, password) is False
        service.clock = lambda: (
            second.temp_password_expires_at - dt.timedelta(seconds=1)
        )
        assert service.consume_temporary_password(second, password) is True

    with Session(db_engine) as session:
        rows = session.scalars(select(OutboxMessage)).all()
        assert all(row.sent_at is not None and row.message == "" for row in rows)


def test_data_04_smtp_outage_delays_mail_and_loses_none(
    committing_testapp, app, db_engine, certificate
):
    """DATA-04: 20 registrations while SMTP is down are all delivered once, later."""
    server = SMTPServer(*certificate, implicit_tls=False)  # not started: down
    worker = worker_for(app, db_engine, server)
    for number in range(20):
        assert register(committing_testapp, **student(number)).status_int == 303

    report = worker.run()
    assert (report.sent, report.failed) == (0, 20)
    with Session(db_engine) as session:
        rows = session.scalars(select(OutboxMessage)).all()
        assert len(rows) == 20
        assert all(row.attempts == 1 and row.sent_at is None for row in rows)
        assert all("cannot connect" in row.last_error for row in rows)
        assert all(row.next_attempt_at > utcnow() for row in rows)

    server.start()
    try:
        assert worker.run().sent == 0  # nothing is due before its backoff
        assert worker.run(now=utcnow() + LATER).sent == 20
        assert worker.run(now=utcnow() + LATER).sent == 0
    finally:
        server.stop()
    recipients = [to for _sender, (to,) in server.envelopes]
    assert sorted(recipients) == sorted(f"murid{n}@example.com.my" for n in range(20))


def test_implicit_tls_and_wrong_credentials(
    committing_testapp, app, db_engine, certificate
):
    server = SMTPServer(*certificate, implicit_tls=True)
    server.start()
    try:
        register(committing_testapp, **student(1))
        settings = {**app.registry.settings, **server.settings()}
        wrong = {**settings, "mail.smtp_password": "not-the-password"}
        report = OutboxWorker.from_settings(wrong, db_engine).run()
        assert (report.sent, report.failed) == (0, 1)
        with Session(db_engine) as session:
            (row,) = session.scalars(select(OutboxMessage)).all()
            assert "535" in row.last_error  # authentication refused
        report = OutboxWorker.from_settings(settings, db_engine).run(
            now=utcnow() + LATER
        )
        assert (report.sent, report.failed) == (1, 0)
        assert [m["To"] for m in server.messages] == ["murid1@example.com.my"]
    finally:
        server.stop()


def test_starttls_refuses_a_server_whose_certificate_is_not_trusted(
    committing_testapp, app, db_engine, smtp
):
    register(committing_testapp, **student(1))
    untrusted = {**app.registry.settings, **smtp.settings(), "mail.ca_file": ""}
    report = OutboxWorker.from_settings(untrusted, db_engine).run()
    assert (report.sent, report.failed) == (0, 1)
    assert smtp.messages == []


class SlowSender(MemorySender):
    """Takes a while per message, so concurrent workers overlap."""

    def send(self, message) -> None:
        time.sleep(0.01)
        super().send(message)


def test_data_04_concurrent_workers_never_send_a_message_twice(
    committing_testapp, app, db_engine
):
    """DATA-04: workers on several nodes share the outbox; each message goes once."""
    for number in range(12):
        register(committing_testapp, **student(number))
    sender = SlowSender()
    settings = {**app.registry.settings, "mail.batch_size": 2}
    workers = [
        OutboxWorker.from_settings(settings, db_engine, sender) for _ in range(4)
    ]
    start = threading.Barrier(len(workers))
    reports = []

    def run(worker):
        start.wait()
        reports.append(worker.run())

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sum(report.sent for report in reports) == 12
    assert sum(report.failed for report in reports) == 0
    ids = [message["Message-ID"] for message in sender.messages]
    assert len(ids) == len(set(ids)) == 12
    with Session(db_engine) as session:
        pending = session.scalar(
            select(func.count()).where(OutboxMessage.sent_at.is_(None))
        )
        assert pending == 0


def test_data_01_concurrent_registrations_of_one_number_make_one_account(
    committing_testapp, app, settings, db_url
):
    """DATA-01: 20 simultaneous registrations of one number over two nodes: 1 user.

    Two app instances with their own engines and pools stand for two nodes
    sharing the database; every browser gets the neutral page, none a 5xx.
    """
    second_engine = make_engine({"sqlalchemy.url": db_url})
    nodes = [app, make_app(settings, second_engine)]
    environ = committing_testapp.extra_environ
    browsers = [webtest.TestApp(nodes[i % 2], extra_environ=environ) for i in range(20)]
    forms = [
        fill(open_form(browser), **{**student(number), "mykad": "080512-14-5678"})
        for number, browser in enumerate(browsers)
    ]
    start = threading.Barrier(len(forms))
    statuses = []

    def submit(form):
        start.wait()
        statuses.append(form.submit(expect_errors=True).status_int)

    threads = [threading.Thread(target=submit, args=(form,)) for form in forms]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert statuses == [303] * 20
        with Session(second_engine) as session:
            assert session.scalar(select(func.count()).select_from(User)) == 1
            # One welcome email; the others came within the first hour: no notice.
            assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 1
    finally:
        second_engine.dispose()


def stop_and_empty(thread, db_engine) -> None:
    """Stop a node's delivery thread, then empty what its test committed."""
    thread.stop()
    thread.join(timeout=10)
    with db_engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())


def test_development_server_delivers_mail_from_a_background_thread(
    settings, db_engine, tmp_path
):
    """mail.deliver_in_process: the single-node server writes .eml files itself."""
    node = make_app(
        {
            **settings,
            "mail.backend": "idp.services.delivery.FileSender",
            "mail.directory": str(tmp_path / "mail"),
            "mail.deliver_in_process": "true",
            "mail.poll_seconds": "1",
        },
        db_engine,
    )
    thread = node.registry["idp.mail.thread"]
    try:
        browser = webtest.TestApp(
            node,
            extra_environ={
                "HTTP_HOST": "idp.test",
                "HTTP_ORIGIN": "https://idp.test",
                "wsgi.url_scheme": "https",
            },
        )
        assert register(browser, **student(7)).status_int == 303
        deadline = time.monotonic() + 20
        while not list((tmp_path / "mail").glob("*.eml")):
            assert time.monotonic() < deadline, "no .eml file was written"
            time.sleep(0.1)
        (eml,) = (tmp_path / "mail").glob("*.eml")
        assert b"murid7@example.com.my" in eml.read_bytes()
    finally:
        stop_and_empty(thread, db_engine)


def test_development_server_purges_from_its_background_thread(settings, db_engine):
    """The single-node server's delivery thread also keeps tables bounded."""
    from idp.models import CaptchaChallenge

    now = utcnow()
    with Session(db_engine) as session, session.begin():
        for label, expires in (
            ("old", now - dt.timedelta(minutes=1)),
            ("live", now + dt.timedelta(minutes=10)),
        ):
            session.add(
                CaptchaChallenge(
                    token_hash=label.ljust(64, "0"),
                    answer_hash="0" * 64,
                    purpose="login",
                    binding="0" * 64,
                    expires_at=expires,
                )
            )
    node = make_app(
        {**settings, "mail.deliver_in_process": "true", "mail.poll_seconds": "1"},
        db_engine,
    )
    thread = node.registry["idp.mail.thread"]
    try:
        deadline = time.monotonic() + 20
        while True:
            with Session(db_engine) as session:
                left = set(session.scalars(select(CaptchaChallenge.token_hash)))
            if len(left) == 1:
                break
            assert time.monotonic() < deadline, "the expired challenge was not purged"
            time.sleep(0.1)
        assert left == {"live".ljust(64, "0")}
    finally:
        stop_and_empty(thread, db_engine)
