import datetime as dt
import enum
import uuid

from sqlalchemy import CheckConstraint, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from idp.db import Base, new_uuid, utcnow


class IdentifierKind(enum.StrEnum):
    MYKAD = "mykad"
    PASSPORT = "passport"


class UserCategory(enum.StrEnum):
    STUDENT = "student"
    PARENT = "parent"
    EDUCATOR = "educator"
    AGENCY = "agency"
    PRIVATE_INSTITUTION = "private_institution"
    PUBLIC = "public"


# Who is in the decoy pool (idp/services/security_image.py): every user who
# chose an image and phrase, whatever else their state. Narrower would
# expose the rest: a harvest of the pool's pairs (typing numbers nobody
# holds) would tell a registered number whose pair is outside it. The
# partial index makes the identifier step's decoy read one index range,
# however many users have no pair yet; migration 0012_decoy_pool creates it.
DECOY_POOL_WHERE = "security_image IS NOT NULL AND security_phrase IS NOT NULL"


class User(Base):
    """A registered person.

    ``identifier`` is normalised (12 digits for MyKad, ``CCC:NUMBER`` for a
    passport) and ``email`` lower-cased before they are stored, so the unique
    constraints catch every spelling of the same person.
    """

    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint(
            "identifier_kind IN ({})".format(
                ", ".join(f"'{kind.value}'" for kind in IdentifierKind)
            ),
            name="identifier_kind",
        ),
        Index(
            "ix_users_decoy_pool",
            "id",
            sqlite_where=text(DECOY_POOL_WHERE),
            postgresql_where=text(DECOY_POOL_WHERE),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_uuid)
    identifier_kind: Mapped[str] = mapped_column(String(16))
    identifier: Mapped[str] = mapped_column(String(40), unique=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    full_name: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(20))
    category: Mapped[str] = mapped_column(String(32))
    institution: Mapped[str | None] = mapped_column(String(200))
    locale: Mapped[str] = mapped_column(String(5), default="ms")
    security_image: Mapped[str | None] = mapped_column(String(64))
    security_phrase: Mapped[str | None] = mapped_column(String(80))
    password_hash: Mapped[str | None] = mapped_column(String(100))
    password_changed_at: Mapped[dt.datetime | None]
    must_change_password: Mapped[bool] = mapped_column(default=False)
    temp_password_expires_at: Mapped[dt.datetime | None]
    locked_until: Mapped[dt.datetime | None]
    disabled_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    roles = relationship("Role", secondary="user_roles", back_populates="users")

    def usable(self, now: dt.datetime | None = None) -> bool:
        """True if the user may be signed in at all: neither disabled by an
        operator nor under a lock that runs at ``now`` (default: the present)."""
        if self.disabled_at is not None:
            return False
        return self.locked_until is None or self.locked_until <= (now or utcnow())

    def __repr__(self) -> str:
        # Never the identifier or email: reprs end up in logs.
        return f"<User {self.id}>"
