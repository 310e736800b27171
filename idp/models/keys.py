import datetime as dt

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from idp.db import Base, utcnow


class KeyRecord(Base):
    """A key pair the IdP holds, its certificate and its place in a rollover.

    States: ``next`` (published in metadata, not yet signing), ``active``
    (signing), ``retired`` (no longer published). The private key stays in
    ``certs/``; only its file name is recorded.
    """

    __tablename__ = "key_records"

    id: Mapped[int] = mapped_column(primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    use: Mapped[str] = mapped_column(String(16), default="signing")
    state: Mapped[str] = mapped_column(String(16))
    cert_pem: Mapped[str] = mapped_column(Text)
    key_file: Mapped[str] = mapped_column(String(255))
    not_after: Mapped[dt.datetime]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    published_at: Mapped[dt.datetime | None]
    activated_at: Mapped[dt.datetime | None]
    retired_at: Mapped[dt.datetime | None]
