import datetime as dt

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from idp.db import Base


class ThrottleCounter(Base):
    """A counter per key and fixed window, shared by every node."""

    __tablename__ = "throttle_counters"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    window_start: Mapped[dt.datetime] = mapped_column(primary_key=True)
    count: Mapped[int] = mapped_column(default=0)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)


class NumberLock(Base):
    """Until when the latest failure lock of a number runs, registered or not.

    Kept for every identity number that reaches its failure limit, not only
    for accounts, so that how many locks a number has had, and so the length
    the password step states for the next one, is the same for a number
    nobody registered (AUTH-01). ``key`` is the rate limiter's HMAC of the
    number, never the number.
    """

    __tablename__ = "number_locks"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    until: Mapped[dt.datetime] = mapped_column(index=True)
