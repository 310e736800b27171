"""Senders and the worker's retry schedule."""

from __future__ import annotations

import datetime as dt
from email.message import EmailMessage

import pytest

from idp.services.delivery import (
    DeliveryError,
    FileSender,
    MemorySender,
    OutboxWorker,
    SMTPSender,
    make_sender,
)


def message() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "no-reply@idme.moe.gov.my"
    msg["To"] = "ali@example.com"
    msg["Subject"] = "Hi"
    msg.set_content("body")
    return msg


def opening(sender):
    """Open a connection as the worker does, and close it again."""
    with sender.connect() as connection:
        return connection


def test_backoff_doubles_and_is_capped():
    worker = OutboxWorker(None, None, None, retry_seconds=60, retry_max_seconds=3600)
    waits = [worker.backoff(attempt) for attempt in range(1, 10)]
    for attempt, wait in enumerate(waits, start=1):
        ceiling = min(60 * 2 ** (attempt - 1), 3600)
        assert (
            dt.timedelta(seconds=ceiling * 0.8) <= wait <= dt.timedelta(seconds=ceiling)
        )
    assert waits[-1] <= dt.timedelta(hours=1)


def test_file_sender_writes_one_eml_per_message(tmp_path):
    sender = FileSender(tmp_path / "mail")
    with sender.connect() as connection:
        connection.send(message())
        connection.send(message())
    files = sorted((tmp_path / "mail").glob("*.eml"))
    assert len(files) == 2
    assert not list((tmp_path / "mail").glob("*.part"))
    assert b"Subject: Hi" in files[0].read_bytes()


def test_file_sender_reports_an_unwritable_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DeliveryError):
        opening(FileSender(blocker / "mail"))


def test_file_sender_folder_is_relative_to_the_ini(tmp_path):
    sender = FileSender.from_settings(
        {"mail.directory": "var/mail", "here": str(tmp_path)}
    )
    assert sender.directory == tmp_path / "var" / "mail"


def test_memory_sender_can_simulate_an_outage():
    sender = MemorySender()
    sender.fail = True
    with pytest.raises(DeliveryError):
        opening(sender)
    sender.fail = False
    with sender.connect() as connection:
        connection.send(message())
    assert len(sender.messages) == 1


def test_smtp_sender_reports_a_refused_connection():
    from tests.smtp import free_port

    sender = SMTPSender("127.0.0.1", free_port(), security="none", timeout=5)
    with pytest.raises(DeliveryError, match="cannot connect"):
        opening(sender)


def test_backend_is_chosen_by_dotted_name():
    settings = {"mail.backend": "idp.services.delivery.MemorySender"}
    assert isinstance(make_sender(settings), MemorySender)
