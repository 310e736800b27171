"""Composing email: bilingual templates, escaping, headers, the sealed outbox."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest

from idp.services import mail
from idp.services.mail import Composer, OutboxCodec, OutboxCodecError, parse_message

SETTINGS = {
    "mail.sender": "idMe <no-reply@idme.moe.gov.my>",
    "idp.base_url": "https://idme.moe.gov.my",
    "idp.name.ms": "idMe",
    "idp.name.en": "idMe",
    "idp.timezone": "Asia/Kuala_Lumpur",
}


@pytest.fixture(scope="module")
def composer():
    return Composer(SETTINGS)


def user(**overrides):
    values = {
        "email": "ali@example.com.my",
        "locale": "ms",
        "full_name": "Ali bin Abu",
        "identifier_kind": "mykad",
        "identifier": "080512145678",
    }
    return SimpleNamespace(**{**values, **overrides})


class Recorder:
    """An outbox that keeps the composed message instead of storing it."""

    def __init__(self, composer):
        self.composer = composer
        self.messages = []

    def add(self, name, *, recipient, locale, context, dedupe_key=None):
        message = self.composer.compose(
            name, recipient=recipient, locale=locale, context=context
        )
        self.messages.append((message, dedupe_key))
        return message


EXPIRES = dt.datetime(2026, 11, 28, 2, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("locale", "first", "second"), [("ms", "Kepada", "Dear"), ("en", "Dear", "Kepada")]
)
def test_the_recipients_language_comes_first(composer, locale, first, second):
    outbox = Recorder(composer)
    mail.temporary_password(
        outbox, user(locale=locale), password="abcd", expires_at=EXPIRES
    )
    ((message, _key),) = outbox.messages
    plain = message.get_body(("plain",)).get_content()
    assert plain.index(first) < plain.index(second)
    assert (
        message["Content-Language"] == f"{locale}, {'en' if locale == 'ms' else 'ms'}"
    )
    subject_ms = "Kata laluan sementara idMe anda"
    subject_en = "Your idMe temporary password"
    subjects = [subject_ms, subject_en] if locale == "ms" else [subject_en, subject_ms]
    assert message["Subject"] == " / ".join(subjects)


def test_temporary_password_mail_content(composer):
    outbox = Recorder(composer)
    mail.temporary_password(
        outbox, user(), password="k7mq3xw9pf2hzr4t", expires_at=EXPIRES
    )
    ((message, key),) = outbox.messages
    assert key is None
    assert message["From"] == "idMe <no-reply@idme.moe.gov.my>"
    assert message["To"] == "ali@example.com.my"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Message-ID"].endswith("@idme.moe.gov.my>")
    plain = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    for body in (plain, html):
        assert "k7mq3xw9pf2hzr4t" in body
        assert "XXXXXX-XX-5678" in body
        assert "080512" not in body
        assert "https://idme.moe.gov.my/" in body
    # Local time in Malaysia (UTC+8), not UTC.
    assert "28 November 2026, 10:30" in plain


def test_passport_holders_see_a_masked_passport(composer):
    outbox = Recorder(composer)
    mail.already_registered(
        outbox,
        user(identifier_kind="passport", identifier="IDN:A1234567"),
        dedupe_key="k",
    )
    ((message, key),) = outbox.messages
    assert key == "k"
    assert "IDN ****4567" in message.get_body(("plain",)).get_content()
    assert "A1234567" not in message.as_string()


def test_web_06_html_mail_escapes_what_users_typed(composer):
    """WEB-06: a name with markup is text in the HTML part, as typed in the plain one."""
    outbox = Recorder(composer)
    name = '<img src=x onerror="alert(1)">'
    mail.already_registered(outbox, user(full_name=name))
    ((message, _),) = outbox.messages
    html = message.get_body(("html",)).get_content()
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in html
    assert name in message.get_body(("plain",)).get_content()


def test_web_09_a_recipient_with_a_line_break_cannot_add_headers(composer):
    """WEB-09: the email API refuses CR/LF in an address; no header is injected."""
    with pytest.raises(ValueError):
        composer.compose(
            "already-registered",
            recipient="ali@example.com\r\nBcc: victim@example.com",
            locale="ms",
            context={"full_name": "Ali", "identifier": "XXXXXX-XX-1234"},
        )
    # The control: the same address without the injection composes.
    message = composer.compose(
        "already-registered",
        recipient="ali@example.com",
        locale="ms",
        context={"full_name": "Ali", "identifier": "XXXXXX-XX-1234"},
    )
    assert "Bcc" not in message


def test_codec_round_trip_and_tampering():
    codec = OutboxCodec("k" * 40)
    sealed = codec.seal(b"Subject: hi\r\n\r\nbody")
    assert b"body" not in sealed.encode()
    assert codec.open(sealed) == b"Subject: hi\r\n\r\nbody"
    flipped = sealed[:-3] + ("A" if sealed[-3] != "A" else "B") + sealed[-2:]
    for bad in (flipped, "v2." + sealed[3:], "garbage", ""):
        with pytest.raises(OutboxCodecError):
            codec.open(bad)
    with pytest.raises(OutboxCodecError):
        OutboxCodec("another key" * 4).open(sealed)


def test_stored_message_parses_back_to_the_same_message(composer):
    message = composer.compose(
        "already-registered",
        recipient="ali@example.com",
        locale="en",
        context={"full_name": "Ali", "identifier": "XXXXXX-XX-1234"},
    )
    again = parse_message(message.as_bytes())
    assert again["Subject"] == message["Subject"]

    def html(msg):
        return msg.get_body(("html",)).get_content().replace("\r\n", "\n")

    assert html(again) == html(message)


@pytest.mark.parametrize(
    ("locale", "revealed"), [("en", "was not revealed"), ("ms", "tidak terdedah")]
)
def test_auth_29_a_failure_lock_mail_says_what_happened_and_what_to_do(
    composer, locale, revealed
):
    """AUTH-29: the owner learns the lock ends by itself or with a reset by email."""
    outbox = Recorder(composer)
    mail.account_locked(outbox, user(locale=locale), until=EXPIRES)
    ((message, _key),) = outbox.messages
    for body in (
        message.get_body(("plain",)).get_content(),
        message.get_body(("html",)).get_content(),
    ):
        assert "XXXXXX-XX-5678" in body
        assert revealed in body
        assert "https://idme.moe.gov.my/password/forgot" in body
        # Local time in Malaysia (UTC+8), not UTC.
        assert "10:30" in body
        assert "meja bantuan" not in body and "helpdesk" not in body


def test_an_operator_lock_mail_points_to_the_helpdesk(composer):
    """The control: only an operator's lock sends the owner to the helpdesk."""
    outbox = Recorder(composer)
    mail.account_locked_by_helpdesk(outbox, user(locale="en"), locked_at=EXPIRES)
    ((message, _key),) = outbox.messages
    plain = message.get_body(("plain",)).get_content()
    assert "The helpdesk locked the idMe account XXXXXX-XX-5678" in plain
    assert "Meja bantuan telah mengunci akaun idMe XXXXXX-XX-5678" in plain
    assert "/password/forgot" not in plain
