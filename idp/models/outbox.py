import datetime as dt

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from idp.db import Base, utcnow


class OutboxMessage(Base):
    """An email waiting for delivery, written in the transaction that caused it.

    ``message`` is the whole RFC 5322 message, sealed (encrypted and
    authenticated) by :class:`idp.services.mail.OutboxCodec`, because it may
    carry a temporary password; it is emptied once the message is sent.
    ``dedupe_key``, when set, makes a second message with the same key a
    no-op (a notice sent at most once a day, whatever the retries).
    ``next_attempt_at`` doubles as the lease of a worker that claimed it.

    A row whose ``template`` starts with ``job:`` is work for the delivery
    worker rather than a message (``Outbox.defer``): ``message`` holds the
    job's sealed data, ``recipient`` is empty, and the worker deletes the row
    once the job ran.
    """

    __tablename__ = "mail_outbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    template: Mapped[str] = mapped_column(String(64))
    dedupe_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    recipient: Mapped[str] = mapped_column(String(254))
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[dt.datetime | None] = mapped_column(index=True)
